//! The whole resolver path with real clients: a client namespace asks a
//! router namespace, where `dnsgate run` has the XDP program on its LAN end,
//! and the router forwards allowed names over DoT to unbound in an upstream
//! namespace, which serves a small zone of its own.
//!
//! ```text
//! client 198.18.60.1 -- 198.18.60.2 router 198.18.61.1 -- 198.18.61.2 upstream
//! ```
//!
//! kdig, dig and dnspython run as separate processes in the client
//! namespace, always with the router's address given explicitly. For every
//! tool and transport an allowed name must come back with the address only
//! the upstream's zone has, and a listed name with the blocked answer
//! `0.0.0.0`. Each case asks a name of its own, so no answer can come from
//! another case's cache entry, and unbound's query log must show every
//! allowed name and never the blocked one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
    time::Duration,
};

use dnsgate_tests::{
    netns::{
        must, start_xdp_pass, veth_pair, wait_for, wait_for_daemon, workspace_binary, BpfFs, Namespace, Process,
        TempDir,
    },
    require_root, require_tool,
};

const CLIENT_ADDRESS: &str = "198.18.60.1";
const ROUTER_LAN_ADDRESS: &str = "198.18.60.2";
const ROUTER_WAN_ADDRESS: &str = "198.18.61.1";
const UPSTREAM_ADDRESS: &str = "198.18.61.2";
/// The zone unbound serves, and the name its certificate carries.
const ZONE: &str = "zone.test";
const UPSTREAM_TLS_NAME: &str = "upstream.zone.test";
/// A name of the block list; a plain domain list blocks the exact name.
const BLOCKED_NAME: &str = "tracker.example";
const BLOCKED_ANSWER: &str = "0.0.0.0";

/// Every case: the tool, the transport, and the label of its allowed name
/// in the zone. Each label has its own address in the zone (by position).
const CASES: &[(&str, &str, &str)] = &[
    ("kdig", "udp", "kdig-udp"),
    ("kdig", "tcp", "kdig-tcp"),
    ("kdig", "tls", "kdig-tls"),
    ("kdig", "https", "kdig-https"),
    ("kdig", "quic", "kdig-quic"),
    ("dig", "tls", "dig-tls"),
    ("dig", "https", "dig-https"),
    ("dnspython", "dot", "py-dot"),
    ("dnspython", "doh", "py-doh"),
    ("dnspython", "doq", "py-doq"),
];

/// The tests share nothing, but each starts three namespaces, unbound and
/// a daemon loading an XDP program; one at a time is gentler on a small
/// machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The allowed name of a case and the address the zone gives it.
fn allowed(label: &str) -> (String, String) {
    let index = CASES.iter().position(|case| case.2 == label).expect("label is in CASES");
    (format!("{label}.{ZONE}"), format!("192.0.2.{}", 10 + index))
}

/// Client, router and upstream namespaces with unbound and dnsgate running.
/// Fields drop in order: processes first, then namespaces, the bpffs and
/// the directory with the logs.
struct Topology {
    daemon: Process,
    _unbound: Process,
    _pass: Process,
    client: Namespace,
    _router: Namespace,
    _upstream: Namespace,
    pin_dir: PathBuf,
    _bpffs: BpfFs,
    dir: TempDir,
}

impl Topology {
    fn start(prefix: &str) -> Self {
        let dir = TempDir::new(prefix);
        let client = Namespace::new("dgresc");
        let router = Namespace::new("dgresr");
        let upstream = Namespace::new("dgresu");
        let (client_if, router_lan_if) = veth_pair(
            &client,
            Some(&format!("{CLIENT_ADDRESS}/24")),
            &router,
            Some(&format!("{ROUTER_LAN_ADDRESS}/24")),
        );
        let (_router_wan_if, _upstream_if) = veth_pair(
            &router,
            Some(&format!("{ROUTER_WAN_ADDRESS}/24")),
            &upstream,
            Some(&format!("{UPSTREAM_ADDRESS}/24")),
        );
        let unbound = start_unbound(&upstream, &router, &dir.0);
        let pass = start_xdp_pass(&client, &client_if, &dir.0, "xdp-pass");
        let bpffs = BpfFs::mount();
        let pin_dir = bpffs.0.join("dnsgate");
        let daemon = start_dnsgate(&router, &router_lan_if, &pin_dir, &dir.0);
        Self {
            daemon,
            _unbound: unbound,
            _pass: pass,
            client,
            _router: router,
            _upstream: upstream,
            pin_dir,
            _bpffs: bpffs,
            dir,
        }
    }

    /// The router's generated certificate, which clients validate against.
    fn router_cert(&self) -> PathBuf {
        self.dir.0.join("state/tls/cert.pem")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default()
    }

    fn blocked_counter(&self) -> u64 {
        let output = must(
            Command::new(workspace_binary("dnsgate")).arg("--pin-dir").arg(&self.pin_dir).args(["stats", "--json"]),
        );
        let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats --json prints JSON");
        stats["dataplane"]["blocked"].as_u64().unwrap_or_else(|| panic!("no blocked counter in {stats}"))
    }

    /// Runs every case of `tool` and panics with all failures at once, the
    /// daemon's and unbound's logs attached.
    fn check_cases(&self, tool: &str, query: impl Fn(&Self, &str, &str) -> Query) {
        let mut failures = Vec::new();
        for &(case_tool, transport, label) in CASES.iter().filter(|case| case.0 == tool) {
            let (name, address) = allowed(label);
            for (name, expected) in [(name.as_str(), address.as_str()), (BLOCKED_NAME, BLOCKED_ANSWER)] {
                let result = query(self, transport, name);
                if result.addresses != [expected] {
                    failures.push(format!(
                        "{case_tool} over {transport}: {name} A gave {:?}, expected [{expected:?}]\n  stdout: {}\n  stderr: {}",
                        result.addresses,
                        result.stdout.trim(),
                        result.stderr.trim()
                    ));
                }
            }
        }
        // Every allowed name went to the upstream, and the listed one never.
        let upstream_log = self.log("unbound.log");
        for &(case_tool, transport, label) in CASES.iter().filter(|case| case.0 == tool) {
            let (name, _) = allowed(label);
            if !upstream_log.contains(&format!("{name}. A IN")) {
                failures.push(format!("{case_tool} over {transport}: unbound's log has no query for {name}"));
            }
        }
        if upstream_log.contains(BLOCKED_NAME) {
            failures.push(format!("the blocked name {BLOCKED_NAME} reached the upstream"));
        }
        assert!(
            failures.is_empty(),
            "{} failure(s):\n{}\n\n--- dnsgate log ---\n{}\n--- unbound log ---\n{}",
            failures.len(),
            failures.join("\n"),
            self.log("dnsgate.err"),
            upstream_log
        );
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let status = self.daemon.stop(Duration::from_secs(10));
        assert!(
            std::thread::panicking() || status.is_some_and(|status| status.success()),
            "dnsgate did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.log("dnsgate.err")
        );
    }
}

/// Writes a certificate for the upstream with openssl and starts unbound
/// with the zone over UDP/TCP and DoT, then waits until the router's
/// namespace gets an answer from it.
fn start_unbound(upstream: &Namespace, router: &Namespace, dir: &Path) -> Process {
    must(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-keyout")
            .arg(dir.join("upstream-key.pem"))
            .arg("-out")
            .arg(dir.join("upstream-cert.pem"))
            .args(["-subj", &format!("/CN={UPSTREAM_TLS_NAME}")])
            .args(["-addext", &format!("subjectAltName=DNS:{UPSTREAM_TLS_NAME},IP:{UPSTREAM_ADDRESS}")])
            // OpenSSL 3 marks a self-signed certificate as a CA by default,
            // and rustls rejects a CA certificate as a server certificate.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"]),
    );
    let d = dir.display();
    let mut records = String::new();
    for &(_, _, label) in CASES {
        let (name, address) = allowed(label);
        records.push_str(&format!("    local-data: \"{name}. 300 IN A {address}\"\n"));
    }
    let config = format!(
        r#"server:
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: "{d}/unbound.log"
    log-queries: yes
    do-daemonize: no
    num-threads: 1
    interface: {UPSTREAM_ADDRESS}@53
    interface: {UPSTREAM_ADDRESS}@853
    tls-port: 853
    tls-service-key: "{d}/upstream-key.pem"
    tls-service-pem: "{d}/upstream-cert.pem"
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: yes
    module-config: "iterator"
    local-zone: "." refuse
    local-zone: "{ZONE}." static
    local-data: "{UPSTREAM_TLS_NAME}. 300 IN A {UPSTREAM_ADDRESS}"
{records}remote-control:
    control-enable: no
"#
    );
    let config_path = dir.join("unbound.conf");
    std::fs::write(&config_path, config).unwrap();
    let mut command = upstream.command("unbound");
    command.arg("-d").arg("-c").arg(&config_path);
    let mut unbound = Process::spawn("unbound", &mut command, dir);
    let probe = format!("probe.{ZONE}");
    let answering = wait_for(Duration::from_secs(20), || {
        if unbound.exited() {
            return true;
        }
        let output = router
            .command("kdig")
            .args([&format!("@{UPSTREAM_ADDRESS}"), &probe, "A", "+timeout=1", "+retry=0"])
            .output()
            .expect("run kdig");
        // The zone is static, so a name not in it gets NXDOMAIN from the zone.
        String::from_utf8_lossy(&output.stdout).contains("status: NXDOMAIN")
    });
    let log = std::fs::read_to_string(dir.join("unbound.err")).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default();
    assert!(!unbound.exited(), "unbound exited in the upstream namespace:\n{log}");
    assert!(answering, "unbound did not start answering in the upstream namespace:\n{log}");
    unbound
}

/// Writes the router's configuration and starts `dnsgate run` in the
/// router namespace.
fn start_dnsgate(router: &Namespace, lan_if: &str, pin_dir: &Path, dir: &Path) -> Process {
    let blocklist = dir.join("blocklist.txt");
    std::fs::write(&blocklist, format!("# test list\nblocked.test\n{BLOCKED_NAME}\n")).unwrap();
    let config = format!(
        r#"state_dir = "{state}"

[dataplane]
lan_interfaces = ["{lan_if}"]
detach_on_stop = true

[metrics]
enabled = false

[[lists]]
location = "{list}"

[[resolver.upstreams]]
url = "tls://{UPSTREAM_ADDRESS}:853"
tls_name = "{UPSTREAM_TLS_NAME}"
ca_file = "{ca}"
"#,
        state = dir.join("state").display(),
        list = blocklist.display(),
        ca = dir.join("upstream-cert.pem").display(),
    );
    let config_path = dir.join("dnsgate.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = router.command(workspace_binary("dnsgate").to_str().unwrap());
    command
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("--socket")
        .arg(dir.join("dnsgate.sock"))
        .arg("--config")
        .arg(&config_path)
        .arg("run");
    let mut daemon = Process::spawn("dnsgate", &mut command, dir);
    wait_for_daemon(&mut daemon, &dir.join("dnsgate.err"), Duration::from_secs(60));
    daemon
}

/// What one client run printed: the A addresses of the answer, and its
/// output for messages.
struct Query {
    addresses: Vec<String>,
    stdout: String,
    stderr: String,
}

impl Query {
    fn from_output(output: &Output) -> Self {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let addresses = stdout
            .lines()
            .map(str::trim)
            .filter(|line| line.parse::<std::net::Ipv4Addr>().is_ok())
            .map(str::to_owned)
            .collect();
        Self { addresses, stdout, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
    }
}

/// Runs a client in the client namespace, killed by `timeout` if it hangs
/// longer than its own time limits allow.
fn run_client(client: &Namespace, program: &str, args: &[&str]) -> Query {
    let output = client
        .command("timeout")
        .args(["60", program])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("failed to run {program}: {error}"));
    Query::from_output(&output)
}

/// Skips (or fails in CI) unless python3 has dnspython with DoH and DoQ.
fn require_dnspython() -> bool {
    if !require_tool("python3", "python3") {
        return false;
    }
    let status = Command::new("python3").args(["-c", "import dns.query, httpx, h2, aioquic"]).status();
    if status.is_ok_and(|status| status.success()) {
        return true;
    }
    let message = "dnspython with DoH and DoQ not found: pip install 'dnspython[doh,doq]' 'httpx[http2]'";
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    false
}

fn require_common(test: &str) -> bool {
    require_root(test)
        && require_tool("unbound", "unbound")
        && require_tool("openssl", "openssl")
        && require_tool("kdig", "knot-dnsutils")
}

#[test]
fn kdig_over_every_transport_gets_upstream_and_blocked_answers() {
    if !require_common("kdig_over_every_transport_gets_upstream_and_blocked_answers") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let topology = Topology::start("dgresk");
    let ca = format!("+tls-ca={}", topology.router_cert().display());
    let server = format!("@{ROUTER_LAN_ADDRESS}");

    // Plain UDP to a listed name is the kernel's to answer: its counter
    // moves by exactly this one query.
    let before = topology.blocked_counter();
    let answer =
        run_client(&topology.client, "kdig", &[&server, BLOCKED_NAME, "A", "+short", "+timeout=5", "+retry=0"]);
    assert_eq!(answer.addresses, [BLOCKED_ANSWER], "kdig over udp: {}", answer.stderr);
    assert_eq!(topology.blocked_counter() - before, 1, "kdig over udp: the XDP program answers the listed name");

    topology.check_cases("kdig", |topology, transport, name| {
        let mut args = vec![server.as_str(), name, "A", "+short", "+timeout=5", "+retry=0"];
        match transport {
            "udp" => {}
            "tcp" => args.push("+tcp"),
            "tls" | "https" | "quic" => {
                args.push(&ca);
                args.push(match transport {
                    "tls" => "+tls",
                    "https" => "+https",
                    _ => "+quic",
                });
            }
            other => panic!("no kdig transport {other}"),
        }
        run_client(&topology.client, "kdig", &args)
    });
}

#[test]
fn dig_over_tls_and_https_gets_upstream_and_blocked_answers() {
    if !require_common("dig_over_tls_and_https_gets_upstream_and_blocked_answers")
        || !require_tool("dig", "bind9-dnsutils")
    {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let topology = Topology::start("dgresd");
    let ca = format!("+tls-ca={}", topology.router_cert().display());
    let server = format!("@{ROUTER_LAN_ADDRESS}");
    topology.check_cases("dig", |topology, transport, name| {
        let transport_arg = match transport {
            "tls" => "+tls",
            "https" => "+https",
            other => panic!("no dig transport {other}"),
        };
        run_client(
            &topology.client,
            "dig",
            &[&server, name, "A", "+short", "+timeout=5", "+tries=1", &ca, transport_arg],
        )
    });
}

/// Asks one A query with dnspython's query functions, never its stub
/// resolver (which would read the machine's resolv.conf), validating the
/// router's certificate, and prints the rcode and the answer's addresses.
const DNSPYTHON_QUERY: &str = r#"
import sys
import dns.message, dns.query, dns.rcode, dns.rdatatype
transport, where, name, ca = sys.argv[1:5]
query = dns.message.make_query(name, "A")
if transport == "dot":
    response = dns.query.tls(query, where, port=853, timeout=5, verify=ca)
elif transport == "doh":
    response = dns.query.https(query, where, port=443, path="/dns-query", timeout=5, verify=ca)
elif transport == "doq":
    response = dns.query.quic(query, where, port=853, timeout=5, verify=ca)
else:
    sys.exit("unknown transport " + transport)
print("rcode", dns.rcode.to_text(response.rcode()))
for rrset in response.answer:
    if rrset.rdtype == dns.rdatatype.A:
        for rdata in rrset:
            print(rdata.address)
"#;

#[test]
fn dnspython_over_dot_doh_and_doq_gets_upstream_and_blocked_answers() {
    if !require_common("dnspython_over_dot_doh_and_doq_gets_upstream_and_blocked_answers") || !require_dnspython() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let topology = Topology::start("dgresp");
    let ca = topology.router_cert().to_string_lossy().into_owned();
    topology.check_cases("dnspython", |topology, transport, name| {
        run_client(&topology.client, "python3", &["-c", DNSPYTHON_QUERY, transport, ROUTER_LAN_ADDRESS, name, &ca])
    });
}
