//! The per-client rate limit under a flood, in a namespace topology: two
//! client namespaces, each joined to the router namespace by its own veth
//! pair, and `dnsgate run` attached natively to both router ends. Client A
//! floods the router's port 53 from a UDP socket for a bounded time while
//! client B sends a steady, bounded series of kdig queries. The test runs
//! this once with the limit off (the default) and once, after a reload,
//! with it on, prints B's answered fraction for both, and asserts the
//! second: B is served and the kernel's drops are A's.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dnsgate_tests::{
    frames::dns_query,
    netns::{
        dnsgate_json, start_xdp_pass, veth_pair, wait_for_daemon, workspace_binary, BpfFs, Namespace, Process, TempDir,
    },
    require_root, require_tool,
};
use serde_json::Value;

const A_ADDRESS: &str = "198.18.20.1";
const A_ROUTER: &str = "198.18.20.2";
const B_ADDRESS: &str = "198.18.21.1";
const B_ROUTER: &str = "198.18.21.2";

/// How long client A floods, at most.
const FLOOD_TIME: Duration = Duration::from_secs(3);
/// Datagrams client A sends, at most.
const FLOOD_MAX: u64 = 3_000_000;
/// Queries client B sends in each phase, at most.
const B_QUERIES: usize = 30;
/// Pause between B's queries: B stays well under the limit below.
const B_INTERVAL: Duration = Duration::from_millis(60);
/// The limit of the second phase, per client: B sends at most about 16
/// queries per second.
const RATE: u32 = 50;
const BURST: u32 = 50;

/// The router namespace and the two clients, each with a pass-through XDP
/// program on its end so native `XDP_TX` frames arrive.
struct Topology {
    a: Namespace,
    b: Namespace,
    router: Namespace,
    router_ifs: [String; 2],
    _pass: Vec<Process>,
}

impl Topology {
    fn new(logs: &Path) -> Self {
        let a = Namespace::new("dgrla");
        let b = Namespace::new("dgrlb");
        let router = Namespace::new("dgrlr");
        let (a_if, router_a) = veth_pair(&a, Some(&format!("{A_ADDRESS}/24")), &router, Some(&format!("{A_ROUTER}/24")));
        let (b_if, router_b) = veth_pair(&b, Some(&format!("{B_ADDRESS}/24")), &router, Some(&format!("{B_ROUTER}/24")));
        let mut pass = Vec::new();
        for (namespace, interface, label) in [(&a, &a_if, "xdp-pass-a"), (&b, &b_if, "xdp-pass-b")] {
            pass.push(start_xdp_pass(namespace, interface, logs, label));
        }
        Self { a, b, router, router_ifs: [router_a, router_b], _pass: pass }
    }
}

/// Paths of the daemon.
struct Paths {
    pin_dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    state: PathBuf,
    blocklist: PathBuf,
    logs: PathBuf,
}

impl Paths {
    fn new(logs: &Path, bpffs: &BpfFs) -> Self {
        let paths = Self {
            pin_dir: bpffs.0.join("dnsgate"),
            socket: logs.join("dnsgate.sock"),
            config: logs.join("dnsgate.toml"),
            state: logs.join("state"),
            blocklist: logs.join("blocklist.txt"),
            logs: logs.to_owned(),
        };
        std::fs::write(&paths.blocklist, "||ads.example^\n").unwrap();
        paths.write_config(None);
        paths
    }

    /// Writes the configuration, with the rate limit `(rate, burst)` or
    /// without one.
    fn write_config(&self, limit: Option<(u32, u32)>) {
        let limit = match limit {
            Some((rate, burst)) => format!("rate_limit_qps = {rate}\nrate_limit_burst = {burst}\n"),
            None => String::new(),
        };
        let text = format!(
            "[dataplane]\n{limit}\n[[lists]]\nlocation = \"{}\"\nformat = \"adblock\"\n",
            self.blocklist.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn json(&self, args: &[&str]) -> Value {
        dnsgate_json(&self.socket, &self.pin_dir, Some(&self.config), args)
    }

    fn rate_limited(&self) -> u64 {
        let stats = self.json(&["stats"]);
        stats["dataplane"]["rate_limited"].as_u64().unwrap_or_else(|| panic!("no dataplane.rate_limited in {stats}"))
    }
}

/// The daemon, stopped by PID on drop.
struct Daemon {
    process: Process,
}

impl Daemon {
    fn start(topology: &Topology, paths: &Paths) -> Self {
        let mut command = topology.router.command(workspace_binary("dnsgate").to_str().unwrap());
        command
            .arg("--pin-dir")
            .arg(&paths.pin_dir)
            .arg("--socket")
            .arg(&paths.socket)
            .arg("--config")
            .arg(&paths.config)
            .args(["run", "--lan-iface", &topology.router_ifs[0], "--lan-iface", &topology.router_ifs[1]])
            .arg("--state-dir")
            .arg(&paths.state);
        let mut process = Process::spawn("dnsgate", &mut command, &paths.logs);
        wait_for_daemon(&mut process, &paths.logs.join("dnsgate.err"), Duration::from_secs(30));
        Self { process }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(10));
    }
}

/// Moves the calling thread into the network namespace `name`. Only this
/// thread changes namespace; sockets it opens afterwards live there.
fn enter_namespace(name: &str) {
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("open the namespace file");
    // SAFETY: setns only reads the descriptor, which `file` keeps open for
    // the call; it affects the calling thread alone.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(result, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

/// Floods `target` with queries from inside namespace `name` until `stop`
/// is set, `FLOOD_TIME` passes or `FLOOD_MAX` datagrams are sent. Returns
/// the number sent.
fn flood(name: String, target: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    enter_namespace(&name);
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the flood socket");
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < FLOOD_MAX && start.elapsed() < FLOOD_TIME && !stop.load(Ordering::Relaxed) {
        let query = dns_query(sent as u16, &format!("q{}.flood.example", sent % 1000), 1, None);
        // A full socket buffer is part of a flood: ignore send errors.
        if socket.send_to(&query, target).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Whether one kdig query from `client` to the router got any answer.
fn kdig_answered(client: &Namespace, name: &str) -> bool {
    let output = client
        .command("kdig")
        .args([&format!("@{B_ROUTER}"), name, "A", "+timeout=1", "+retry=0", "+notcp"])
        .output()
        .expect("run kdig");
    let text = String::from_utf8_lossy(&output.stdout);
    text.contains("status: NOERROR") || text.contains("status: NXDOMAIN") || text.contains("status: SERVFAIL")
}

/// One phase: A floods while B queries. Returns (B's queries sent, B's
/// queries answered, datagrams A sent).
fn phase(topology: &Topology) -> (usize, usize, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let target: SocketAddr = format!("{A_ROUTER}:53").parse().unwrap();
    let flooder = {
        let name = topology.a.name.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || flood(name, target, stop))
    };
    // Let the flood get going before B starts.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut sent = 0;
    let mut answered = 0;
    while sent < B_QUERIES && start.elapsed() < FLOOD_TIME {
        // Kernel answers (blocked) and user-space answers (local zone).
        let name = if sent % 2 == 0 { "ads.example" } else { "localhost" };
        sent += 1;
        if kdig_answered(&topology.b, name) {
            answered += 1;
        }
        std::thread::sleep(B_INTERVAL);
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.join().expect("flood thread");
    (sent, answered, flooded)
}

#[test]
fn flood_from_one_client_leaves_the_other_served() {
    if !(require_root("flood_from_one_client_leaves_the_other_served")
        && require_tool("kdig", "knot-dnsutils")
        && require_tool("setpriv", "util-linux"))
    {
        return;
    }
    let logs = TempDir::new("dgrl");
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let _daemon = Daemon::start(&topology, &paths);

    // B is served before anything else happens.
    assert!(kdig_answered(&topology.b, "ads.example"), "client B gets no answer without a flood");

    // Off (the default): nothing is dropped for its rate.
    let (off_sent, off_answered, off_flood) = phase(&topology);
    let off_dropped = paths.rate_limited();
    println!(
        "limit off: client A sent {off_flood} datagrams; client B got {off_answered} of {off_sent} answers ({:.0} %); \
         rate_limited {off_dropped}",
        100.0 * off_answered as f64 / off_sent.max(1) as f64
    );
    assert_eq!(off_dropped, 0, "nothing may be rate limited while the limit is off");

    // Let the resolver drain the flood's backlog, then turn the limit on.
    std::thread::sleep(Duration::from_secs(2));
    paths.write_config(Some((RATE, BURST)));
    let reload = paths.json(&["reload"]);
    assert_eq!(reload["restart_needed"], serde_json::json!([]), "the rate limit applies on reload: {reload}");

    let (on_sent, on_answered, on_flood) = phase(&topology);
    let on_dropped = paths.rate_limited();
    println!(
        "limit on ({RATE}/s, burst {BURST}): client A sent {on_flood} datagrams; client B got {on_answered} of \
         {on_sent} answers ({:.0} %); rate_limited {on_dropped}",
        100.0 * on_answered as f64 / on_sent.max(1) as f64
    );
    assert!(on_sent >= 10, "client B sent only {on_sent} queries during the flood");
    assert!(
        on_answered * 100 >= on_sent * 95,
        "client B got only {on_answered} of {on_sent} answers with the limit on"
    );
    // The drops are A's: more than B sent in all, and no more than A sent
    // plus the queries B got no answer to.
    assert!(on_dropped > on_sent as u64, "rate_limited {on_dropped} is not more than B's {on_sent} queries");
    let b_lost = (on_sent - on_answered) as u64;
    assert!(
        on_dropped <= on_flood + b_lost,
        "rate_limited {on_dropped} exceeds the {on_flood} datagrams A sent plus B's {b_lost} unanswered queries"
    );
    let allowance = u64::from(BURST) + u64::from(RATE) * (FLOOD_TIME.as_secs() + 2);
    assert!(on_flood > allowance, "client A sent only {on_flood} datagrams, within its allowance: no flood");
    // B was never over its limit: its answers kept coming after the flood.
    assert!(kdig_answered(&topology.b, "localhost"), "client B gets no answer after the flood");
}
