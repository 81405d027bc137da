//! Encrypted DNS server redirection (draft-ietf-add-encrypted-dns-server-
//! redirection) between two upstream namespaces, each running
//! `dnsgate run --no-xdp`. Server A announces server B in its answer to
//! `_dns.dns.example`; the client side (`redirect::follow_redirections`)
//! follows only when B's certificate is valid for `dns.example`, the name
//! A authenticated as.
//!
//! Needs root and `ip netns`; without them the tests print why and pass,
//! unless `CI=true` is set.

#[path = "support/resolver_env.rs"]
mod resolver_env;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dnsgate::redirect::{Decision, follow_redirections};
use dnsgate::resolver::upstream::{Outcome, UpstreamPool};
use dnsgate::resolver::{ResolverConfig, UpstreamConfig};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use resolver_env::{TestCa, skip};

static INSTANCE: AtomicU32 = AtomicU32::new(0);

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().expect("the command did not start");
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn prerequisites_missing(test: &str) -> bool {
    // `skip` panics under CI=true and otherwise only prints the reason.
    if !nix::unistd::geteuid().is_root() {
        skip(test, "network namespaces need root");
        return true;
    }
    let works = Command::new("ip").args(["netns", "list"]).output().is_ok_and(|output| output.status.success());
    if !works {
        skip(test, "`ip netns` is not available");
        return true;
    }
    false
}

/// A namespace linked to the host by a veth pair, with dnsgate serving on
/// the namespace end.
struct Server {
    namespace: String,
    address: IpAddr,
    dnsgate: Option<Child>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts dnsgate at `10.<octet>.<instance>.2` with a certificate for
    /// `names` from `ca`, and `extra` appended to its configuration.
    fn start(tag: &str, octet: u8, instance: u32, ca: &TestCa, resolver_name: &str, names: &[&str], extra: &str) -> Self {
        let namespace = format!("dgredir-{tag}");
        let host_link = format!("dg{octet}x{instance}x{}", std::process::id() % 100_000);
        let host_address = format!("10.{octet}.{instance}.1/24");
        let address: IpAddr = format!("10.{octet}.{instance}.2").parse().unwrap();
        run("ip", &["netns", "add", &namespace]);
        let mut server = Self { namespace, address, dnsgate: None, dir: tempfile::tempdir().unwrap() };
        run("ip", &["link", "add", &host_link, "type", "veth", "peer", "name", "s0", "netns", &server.namespace]);
        run("ip", &["addr", "add", &host_address, "dev", &host_link]);
        run("ip", &["link", "set", &host_link, "up"]);
        let inner = format!("{address}/24");
        run("ip", &["-n", &server.namespace, "addr", "add", &inner, "dev", "s0"]);
        run("ip", &["-n", &server.namespace, "link", "set", "s0", "up"]);
        run("ip", &["-n", &server.namespace, "link", "set", "lo", "up"]);

        let (cert, key) = ca.issue(names);
        let cert_path = server.dir.path().join("cert.pem");
        let key_path = server.dir.path().join("key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let config_path = server.dir.path().join("dnsgate.toml");
        let config = format!(
            "[tls]\ncert_file = {cert_path:?}\nkey_file = {key_path:?}\nresolver_name = {resolver_name:?}\n[metrics]\nenabled = false\n{extra}"
        );
        std::fs::write(&config_path, config).unwrap();
        server.spawn(&config_path);
        server
    }

    fn spawn(&mut self, config_path: &Path) {
        let log = std::fs::File::create(self.dir.path().join("dnsgate.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, env!("CARGO_BIN_EXE_dnsgate")])
            .arg("--config")
            .arg(config_path)
            .arg("--socket")
            .arg(self.dir.path().join("admin.sock"))
            .arg("--pin-dir")
            .arg(self.dir.path().join("pins"))
            .args(["run", "--no-xdp", "--lan-iface", "s0", "--state-dir"])
            .arg(self.dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsgate did not start");
        self.dnsgate = Some(child);
        self.wait_ready();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsgate.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let mut query = Message::new();
        query.set_id(77).add_query(Query::query(Name::from_ascii("localhost.").unwrap(), RecordType::A));
        let bytes = query.to_vec().unwrap();
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buffer = [0u8; 512];
        loop {
            let _ = socket.send_to(&bytes, SocketAddr::new(self.address, 53));
            if socket.recv(&mut buffer).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.dnsgate.as_mut().map(Child::try_wait) {
                panic!("dnsgate exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "dnsgate did not answer within 30 s:\n{}", self.log());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsgate.take() {
            // `ip netns exec` execs dnsgate, so this PID is dnsgate's own.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.namespace]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirection_followed_within_same_origin() {
    if prerequisites_missing("redirection_followed_within_same_origin") {
        return;
    }
    let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{instance}", std::process::id() % 100_000);
    let ca = TestCa::new();
    let server_b = Server::start(&format!("b{tag}"), 55, instance, &ca, "b.example", &["b.example", "dns.example"], "");
    let redirect = format!("[ddr]\nredirect_target = \"b.example\"\nredirect_addresses = [\"{}\"]\n", server_b.address);
    let server_a = Server::start(&format!("a{tag}"), 54, instance, &ca, "dns.example", &["dns.example"], &redirect);
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let upstream = UpstreamConfig {
        url: format!("tls://{}:853", server_a.address).parse().unwrap(),
        tls_name: Some("dns.example".into()),
        ca_file: Some(ca_path),
        bootstrap: Vec::new(),
    };
    let config = ResolverConfig { upstreams: vec![upstream], ..ResolverConfig::default() };

    let (updated, decisions) = follow_redirections(&config).await;
    let expected: dnsgate::resolver::UpstreamSpec = format!("tls://{}:853", server_b.address).parse().unwrap();
    assert_eq!(decisions, [Decision::Followed { to: expected.clone() }], "A log:\n{}", server_a.log());
    assert_eq!(updated.upstreams[0].url, expected);
    assert_eq!(updated.upstreams[0].tls_name.as_deref(), Some("dns.example"));

    // Queries now go to B, checked against the origin name.
    let pool = UpstreamPool::new(&updated).unwrap();
    let mut query = Message::new();
    query.set_id(9).set_recursion_desired(true);
    query.add_query(Query::query(Name::from_ascii("b.example.").unwrap(), RecordType::A));
    let Outcome::Answer(response, _) = pool.resolve(&query).await else { panic!("B did not answer after the redirection") };
    let addresses: Vec<IpAddr> = response
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, [server_b.address]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirection_refused_across_origins() {
    if prerequisites_missing("redirection_refused_across_origins") {
        return;
    }
    let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{instance}", std::process::id() % 100_000);
    let ca = TestCa::new();
    // B's certificate is valid, but for b.example only.
    let server_b = Server::start(&format!("b{tag}"), 55, instance, &ca, "b.example", &["b.example"], "");
    let redirect = format!("[ddr]\nredirect_target = \"b.example\"\nredirect_addresses = [\"{}\"]\n", server_b.address);
    let server_a = Server::start(&format!("a{tag}"), 54, instance, &ca, "dns.example", &["dns.example"], &redirect);
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let upstream = UpstreamConfig {
        url: format!("tls://{}:853", server_a.address).parse().unwrap(),
        tls_name: Some("dns.example".into()),
        ca_file: Some(ca_path),
        bootstrap: Vec::new(),
    };
    let config = ResolverConfig { upstreams: vec![upstream], ..ResolverConfig::default() };

    let (updated, decisions) = follow_redirections(&config).await;
    assert_eq!(updated, config, "the upstream must stay as configured");
    match &decisions[0] {
        Decision::Stayed { reason } => {
            assert!(reason.contains("did not authenticate as dns.example"), "{reason}");
            assert!(reason.contains(&server_b.address.to_string()), "{reason}");
        }
        other => panic!("expected the redirection to be refused, got {other:?}; A log:\n{}", server_a.log()),
    }
}
