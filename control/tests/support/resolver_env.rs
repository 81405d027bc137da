//! Test environment of the resolver-core tests: an upstream network
//! namespace running unbound with local data only, certificates made at
//! test time, a small DNS-over-QUIC server, a UDP relay that can drop a
//! path, a recording UDP upstream, and helpers that drive the resolver
//! through its `DnsHandler` interface.
//!
//! Every namespace, link and process is named after the test run's PID and
//! removed on drop.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this file"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnsgate::resolver::Resolver;
use dnsgate::resolver::server::{DnsHandler, Request, Transport};
use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// Returns whether `CI=true` is set, which turns every skip into a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Returns false, after saying why, when the test cannot run here; panics
/// instead under CI.
pub fn skip(test: &str, reason: &str) -> bool {
    let message = format!("{test}: skipped because {reason}");
    if in_ci() {
        panic!("{message}, and CI=true forbids skipping");
    }
    eprintln!("{message}");
    false
}

/// Checks for root (network namespaces) and unbound.
pub fn require_namespace_and_unbound(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return skip(test, "it needs root to create network namespaces");
    }
    if Command::new("unbound")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return skip(test, "unbound is not installed (apt-get install unbound)");
    }
    true
}

/// A private CA and the certificates it issues.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// PEM of the CA certificate.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dnsgate test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues a server certificate for `names` (host names or IP addresses);
    /// returns the certificate and key PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// An upstream namespace linked to the host by a veth pair, with unbound
/// serving UDP and TCP on 53, DoT on 853 and DoH on 443 from local data.
pub struct UpstreamNetns {
    pub namespace: String,
    host_link: String,
    /// The namespace's address, where unbound listens.
    pub addr: Ipv4Addr,
    pub dir: tempfile::TempDir,
    /// The CA file that verifies unbound's certificate.
    pub ca_file: PathBuf,
    unbound: Option<Child>,
}

/// The unbound test zone.
pub const ZONE_DATA: &[&str] = &[
    "test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 30",
    "www.test. 300 IN A 192.0.2.10",
    "www.test. 300 IN AAAA 2001:db8::10",
    "short.test. 1 IN A 192.0.2.11",
    "alias.test. 300 IN CNAME www.test.",
    "cloaked.test. 300 IN CNAME pixel.tracker.test.",
    "pixel.tracker.test. 300 IN A 192.0.2.66",
];

fn run(command: &str, args: &[&str]) {
    let status = Command::new(command)
        .args(args)
        .status()
        .unwrap_or_else(|error| panic!("failed to run {command}: {error}"));
    assert!(
        status.success(),
        "{command} {} failed with {status}",
        args.join(" ")
    );
}

impl UpstreamNetns {
    /// Creates the namespace and starts unbound with a certificate from
    /// `ca` for its address and `dns.upstream.test`.
    pub fn start(ca: &TestCa) -> Self {
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let namespace = format!("dgcore{pid}u{instance}");
        let host_link = format!("dgc{}h{instance}", pid % 1_000_000);
        let peer_link = format!("dgc{}n{instance}", pid % 1_000_000);
        // A /30 per instance inside 198.19.0.0/16 (benchmarking range, RFC
        // 2544), spread by PID so parallel runs rarely share one.
        let index = (pid.wrapping_mul(7).wrapping_add(instance)) % 16_384;
        let base = Ipv4Addr::new(198, 19, (index / 64) as u8, ((index % 64) * 4) as u8);
        let host_addr = Ipv4Addr::from(u32::from(base) + 1);
        let addr = Ipv4Addr::from(u32::from(base) + 2);

        run("ip", &["netns", "add", &namespace]);
        let mut env = Self {
            namespace: namespace.clone(),
            host_link: host_link.clone(),
            addr,
            dir: tempfile::tempdir().unwrap(),
            ca_file: PathBuf::new(),
            unbound: None,
        };
        run(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", &peer_link, "netns",
                &namespace,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_addr}/30"), "dev", &host_link],
        );
        run("ip", &["link", "set", &host_link, "up"]);
        run(
            "ip",
            &[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                &peer_link,
            ],
        );
        run("ip", &["-n", &namespace, "link", "set", &peer_link, "up"]);
        run("ip", &["-n", &namespace, "link", "set", "lo", "up"]);

        let dir = env.dir.path().to_owned();
        let (cert, key) = ca.issue(&[&addr.to_string(), "dns.upstream.test"]);
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        env.ca_file = dir.join("ca.pem");
        std::fs::write(&env.ca_file, &ca.pem).unwrap();
        std::fs::write(dir.join("unbound.conf"), unbound_config(&dir, addr)).unwrap();
        env.start_unbound();
        env
    }

    fn start_unbound(&mut self) {
        let dir = self.dir.path().to_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, "unbound", "-d", "-c"])
            .arg(dir.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("unbound.stderr")).unwrap())
            .spawn()
            .expect("failed to start unbound");
        self.unbound = Some(child);
        self.wait_ready();
    }

    /// Waits until unbound answers on UDP and accepts TCP on 853 and 443.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let udp_ok =
                blocking_udp_query(SocketAddr::new(self.addr.into(), 53), "www.test.").is_some();
            let tcp_ok = [53, 853, 443].iter().all(|port| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::new(self.addr.into(), *port),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if udp_ok && tcp_ok {
                return;
            }
            if let Some(status) = self
                .unbound
                .as_mut()
                .and_then(|child| child.try_wait().unwrap())
            {
                panic!("unbound exited with {status}: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "unbound did not become ready: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("unbound.stderr")).unwrap_or_default();
        text.push_str(
            &std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default(),
        );
        text
    }

    /// Stops unbound, so every upstream in the namespace is dead.
    pub fn stop_unbound(&mut self) {
        if let Some(mut child) = self.unbound.take() {
            // `ip netns exec` execs unbound, so this PID is unbound's own.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// unbound's query log.
    pub fn query_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    /// Waits until unbound has logged a query for `name`, or five seconds.
    pub fn wait_logged(&self, name: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.query_log().contains(name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Number of queries unbound logged for `name` (as `name. TYPE IN`).
    pub fn logged_count(&self, name: &str, qtype: &str) -> usize {
        let needle = format!(" {name} {qtype} IN");
        self.query_log().matches(&needle).count()
    }

    pub fn socket(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addr), port)
    }
}

impl Drop for UpstreamNetns {
    fn drop(&mut self) {
        self.stop_unbound();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .stderr(Stdio::null())
            .status();
    }
}

fn unbound_config(dir: &Path, addr: Ipv4Addr) -> String {
    let dir = dir.display();
    let mut config = format!(
        r#"server:
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: "{dir}/unbound.log"
    log-queries: yes
    verbosity: 1
    do-daemonize: no
    num-threads: 1
    interface: {addr}@53
    interface: {addr}@853
    interface: {addr}@443
    tls-port: 853
    https-port: 443
    http-endpoint: "/dns-query"
    tls-service-key: "{dir}/key.pem"
    tls-service-pem: "{dir}/cert.pem"
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: yes
    module-config: "iterator"
    prefetch: no
    local-zone: "." refuse
    local-zone: "test." static
"#
    );
    for record in ZONE_DATA {
        config.push_str(&format!("    local-data: \"{record}\"\n"));
    }
    config.push_str(&format!(
        "    local-data: \"dns.upstream.test. 300 IN A {addr}\"\n"
    ));
    config.push_str("remote-control:\n    control-enable: no\n");
    config
}

/// Sends one plain UDP query from a blocking socket; for readiness checks.
fn blocking_udp_query(addr: SocketAddr, name: &str) -> Option<Message> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let query = query_bytes(name, RecordType::A, None);
    socket.send_to(&query, addr).ok()?;
    let mut buffer = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buffer).ok()?;
    Message::from_vec(&buffer[..len]).ok()
}

/// A query in wire form, with an OPT record when `edns` is given.
pub fn query_bytes(name: &str, qtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
    let mut message = Message::new();
    message.set_id(rand::random()).set_recursion_desired(true);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// The request a LAN client at 192.0.2.200 would send over `transport`.
pub fn request(message: Vec<u8>, transport: Transport) -> Request {
    Request {
        message,
        client: "192.0.2.200:40000".parse().unwrap(),
        local: "127.0.0.1:53".parse().unwrap(),
        transport,
    }
}

/// Resolves through the `DnsHandler` interface and parses the answer,
/// checking that the ID is the query's.
pub async fn ask(
    resolver: &Resolver,
    name: &str,
    qtype: RecordType,
    edns: Option<Edns>,
) -> Message {
    let bytes = query_bytes(name, qtype, edns);
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let handler: &dyn DnsHandler = resolver;
    let response = handler
        .handle(request(bytes, Transport::Udp))
        .await
        .expect("the resolver sent no answer");
    let response = Message::from_vec(&response).expect("the answer is not a valid DNS message");
    assert_eq!(response.id(), id, "answer ID differs from the query's");
    assert_eq!(response.message_type(), MessageType::Response);
    response
}

/// The IPv4 addresses in a response's answer section.
pub fn a_records(response: &Message) -> Vec<Ipv4Addr> {
    response
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The EDE info codes of a response.
pub fn ede_codes(response: &Message) -> Vec<u16> {
    dnsgate::resolver::message::extended_errors(response)
}

/// A datagram's bytes and source address.
pub type ReceivedDatagram = (Vec<u8>, SocketAddr);

/// A UDP upstream on 127.0.0.1 that records every query it receives and
/// answers A 192.0.2.1 for any name.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    /// Every datagram received, with its source address.
    pub queries: Arc<Mutex<Vec<ReceivedDatagram>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let recorded = queries.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_535];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let bytes = buffer[..len].to_vec();
                recorded.lock().unwrap().push((bytes.clone(), peer));
                let Ok(query) = Message::from_vec(&bytes) else {
                    continue;
                };
                let mut response = Message::new();
                response
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_available(true);
                response.add_queries(query.queries().to_vec());
                if let Some(question) = query.queries().first() {
                    let rdata = RData::A(A::new(192, 0, 2, 1));
                    response.add_answer(Record::from_rdata(question.name().clone(), 120, rdata));
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        });
        Self {
            addr,
            queries,
            task,
        }
    }

    pub fn received(&self) -> Vec<Message> {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .map(|(bytes, _)| Message::from_vec(bytes).unwrap())
            .collect()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS-over-QUIC server (RFC 9250) on 127.0.0.1 that forwards each
/// stream's query to a plain UDP upstream and returns the answer.
pub struct DoqServer {
    pub addr: SocketAddr,
    /// QUIC connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Streams accepted, one per query.
    pub streams: Arc<AtomicUsize>,
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl DoqServer {
    pub async fn start(ca: &TestCa, forward_to: SocketAddr) -> Self {
        let (cert_pem, key_pem) = ca.issue(&["127.0.0.1", "doq.test"]);
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        #[allow(deprecated, reason = "the project uses the ring provider")]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"doq".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let streams = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepting = endpoint.clone();
        let counted = streams.clone();
        let counted_connections = connections.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let counted = counted.clone();
                let counted_connections = counted_connections.clone();
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    counted_connections.fetch_add(1, Ordering::Relaxed);
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        counted.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let Ok(data) = recv.read_to_end(65_537).await else {
                                return;
                            };
                            if data.len() < 14 {
                                return;
                            }
                            let Some(answer) = forward_udp(forward_to, &data[2..]).await else {
                                return;
                            };
                            let mut frame = (answer.len() as u16).to_be_bytes().to_vec();
                            frame.extend_from_slice(&answer);
                            let _ = send.write_all(&frame).await;
                            let _ = send.finish();
                            // Keep the stream open until the peer has read the answer.
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            streams,
            endpoint,
            task,
        }
    }
}

impl Drop for DoqServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"");
        self.task.abort();
    }
}

/// Forwards one query over UDP with a fresh ID and restores the DoQ ID 0.
async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    let mut query = query.to_vec();
    let id: u16 = rand::random();
    query[0..2].copy_from_slice(&id.to_be_bytes());
    socket.send_to(&query, upstream).await.ok()?;
    let mut buffer = vec![0u8; 65_535];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
        .await
        .ok()?
        .ok()?;
    let mut answer = buffer[..len].to_vec();
    answer[0..2].copy_from_slice(&[0, 0]);
    Some(answer)
}

/// A UDP relay on 127.0.0.1 in front of one server, for one client, that
/// drops every datagram in both directions once `drop_all` is set: a path
/// that goes silent, as when a QUIC flow is cut by a NAT or a firewall.
pub struct UdpRelay {
    pub addr: SocketAddr,
    pub drop_all: Arc<AtomicBool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl UdpRelay {
    pub async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let drop_all = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));

        let forward = {
            let (front, back, drop_all, client) = (
                front.clone(),
                back.clone(),
                drop_all.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_535];
                while let Ok((len, peer)) = front.recv_from(&mut buffer).await {
                    *client.lock().unwrap() = Some(peer);
                    if !drop_all.load(Ordering::Relaxed) {
                        let _ = back.send(&buffer[..len]).await;
                    }
                }
            })
        };
        let backward = {
            let (front, back, drop_all, client) = (
                front.clone(),
                back.clone(),
                drop_all.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_535];
                while let Ok(len) = back.recv(&mut buffer).await {
                    let peer = *client.lock().unwrap();
                    if let (false, Some(peer)) = (drop_all.load(Ordering::Relaxed), peer) {
                        let _ = front.send_to(&buffer[..len], peer).await;
                    }
                }
            })
        };
        Self {
            addr,
            drop_all,
            tasks: [forward, backward],
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
