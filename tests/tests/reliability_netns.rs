//! Reliability of the dataplane across controller failures, in a namespace
//! topology: a client namespace sends real queries (kdig) to a router
//! namespace where `dnsgate run` attaches the XDP program natively.
//!
//! * adoption: after `kill -9` the pinned program keeps answering blocked
//!   names; a restarted daemon adopts the same program (same id), a normal
//!   stop leaves it attached, a pin left by another map layout is replaced
//!   in place, and `dnsgate stop --detach` removes it;
//! * a second daemon on the same pin directory is refused in one line that
//!   names the PID of the first;
//! * chaos: a steady bounded query stream while the controller is killed,
//!   restarted, reloaded with a bad configuration and then a good one, with
//!   the unanswered queries counted per phase;
//! * configuration errors at start name the key and the reason.
//!
//! Allowed names are answered by user space: `localhost` needs no upstream,
//! so "answered" means the controller serves. The chaos test runs twice.
//! Without a fallback resolver, allowed names go unanswered while the
//! controller is dead; the documented recovery is that they are answered
//! again within [`ALLOWED_RECOVERY`] of the restarted daemon's start. With
//! `dataplane.fallback_port` set to a dnsmasq on port 54 of the router, they
//! are answered by dnsmasq from [`FALLBACK_AFTER_SECS`] after the kill on,
//! with port 53 as the replies' source.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dnsgate_tests::{
    netns::{
        BpfFs, Namespace, Process, TempDir, dnsgate_cli, start_xdp_pass, veth_pair, wait_for, wait_for_daemon,
        workspace_binary,
    },
    require_root, require_tool,
};
use serde_json::Value;

const CLIENT_ADDRESS: &str = "198.18.11.1";
const ROUTER_ADDRESS: &str = "198.18.11.2";

/// How long after `dnsgate run` starts allowed names must be answered again
/// (documented in ARCHITECTURE.md; loading the lists and the program takes
/// about a second here).
const ALLOWED_RECOVERY: Duration = Duration::from_secs(30);

/// `dataplane.fallback_after_secs` in the chaos test with a fallback.
const FALLBACK_AFTER_SECS: u64 = 1;
/// Port of the fallback dnsmasq, as on OpenWrt.
const FALLBACK_PORT: u16 = 54;

/// Client and router namespaces joined by a veth pair, with a pass-through
/// XDP program on the client end so native `XDP_TX` frames arrive.
struct Topology {
    client: Namespace,
    router: Namespace,
    client_if: String,
    router_if: String,
    pass: Process,
}

impl Topology {
    fn new(logs: &Path) -> Self {
        let client = Namespace::new("dgrelc");
        let router = Namespace::new("dgrelr");
        let (client_if, router_if) = veth_pair(
            &client,
            Some(&format!("{CLIENT_ADDRESS}/24")),
            &router,
            Some(&format!("{ROUTER_ADDRESS}/24")),
        );
        let pass = start_xdp_pass(&client, &client_if, logs, "xdp-pass");
        Self {
            client,
            router,
            client_if,
            router_if,
            pass,
        }
    }

    /// Deletes the veth pair and creates it again with the same names and
    /// addresses (new interface indexes), as a router does when a port
    /// goes away and comes back.
    fn recreate_link(&mut self, logs: &Path) {
        let _ = self.pass.stop(Duration::from_secs(5));
        self.router.ip(&["link", "del", &self.router_if]);
        let status = Command::new("ip")
            .args([
                "link",
                "add",
                &self.client_if,
                "netns",
                &self.client.name,
                "type",
                "veth",
                "peer",
                "name",
            ])
            .args([&self.router_if, "netns", &self.router.name])
            .status()
            .unwrap();
        assert!(status.success(), "recreating the veth pair failed");
        self.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDRESS}/24"),
            "dev",
            &self.client_if,
            "nodad",
        ]);
        self.router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_ADDRESS}/24"),
            "dev",
            &self.router_if,
            "nodad",
        ]);
        self.client.ip(&["link", "set", &self.client_if, "up"]);
        self.router.ip(&["link", "set", &self.router_if, "up"]);
        self.pass = start_xdp_pass(&self.client, &self.client_if, logs, "xdp-pass-2");
    }

    /// The id of the XDP program attached to the router's port, from
    /// `ip link` (the kernel's view, independent of dnsgate).
    fn program_id(&self) -> Option<u64> {
        let output = self
            .router
            .ip(&["-d", "link", "show", "dev", &self.router_if]);
        let text = String::from_utf8_lossy(&output.stdout);
        text.split("prog/xdp id ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Paths one daemon uses; they stay the same across restarts.
struct Paths {
    pin_dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    state: PathBuf,
    blocklist: PathBuf,
    logs: PathBuf,
    /// Lines added to the `[dataplane]` table of the configuration.
    dataplane_extra: String,
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
            dataplane_extra: String::new(),
        };
        std::fs::write(&paths.blocklist, "||ads.example^\ntracker.example\n").unwrap();
        paths.write_config();
        paths
    }

    fn write_config(&self) {
        let text = format!(
            "[dataplane]\nblock_mode = \"null\"\n{}\n[metrics]\nenabled = false\n\n\
             [[lists]]\nlocation = \"{}\"\nformat = \"adblock\"\n",
            self.dataplane_extra,
            self.blocklist.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs `dnsgate --socket … --pin-dir … --config … ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        dnsgate_cli(&self.socket, &self.pin_dir, Some(&self.config), args)
    }

    fn layout_dir(&self) -> PathBuf {
        self.pin_dir
            .join(format!("v{}", dnsgate_common::maps::LAYOUT_VERSION))
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `dnsgate run` command for `paths`, run in the router namespace.
fn run_command(router: &Namespace, interface: &str, paths: &Paths, socket: &Path) -> Command {
    let mut command = router.command(workspace_binary("dnsgate").to_str().unwrap());
    command
        .arg("--pin-dir")
        .arg(&paths.pin_dir)
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(&paths.config)
        .args(["run", "--lan-iface", interface, "--state-dir"])
        .arg(&paths.state);
    command
}

/// A running daemon.
struct Daemon {
    process: Process,
    label: String,
    log: PathBuf,
}

impl Daemon {
    fn start(router: &Namespace, interface: &str, paths: &Paths, label: &str) -> Self {
        Self::start_with(router, interface, paths, label, &[])
    }

    fn start_with(
        router: &Namespace,
        interface: &str,
        paths: &Paths,
        label: &str,
        extra: &[&str],
    ) -> Self {
        let mut command = run_command(router, interface, paths, &paths.socket);
        command.args(extra);
        let mut process = Process::spawn(label, &mut command, &paths.logs);
        let log = paths.logs.join(format!("{label}.err"));
        wait_for_daemon(&mut process, &log, Duration::from_secs(60));
        Self {
            process,
            label: label.to_owned(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then wait until the process is gone.
    fn kill(mut self) {
        self.process.signal(libc::SIGKILL);
        assert!(
            wait_for(Duration::from_secs(10), || self.process.exited()),
            "{} survived SIGKILL",
            self.label
        );
    }

    /// Waits for the exit after `dnsgate stop`; true on a clean exit.
    fn wait_exit(mut self) -> bool {
        let exited = wait_for(Duration::from_secs(15), || self.process.exited());
        assert!(exited, "{} did not exit after `dnsgate stop`", self.label);
        self.process
            .stop(Duration::from_secs(1))
            .is_some_and(|status| status.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(10));
    }
}

/// Sends one kdig query and returns the addresses: `None` when nothing
/// came back in time. Like a stub resolver, kdig tries twice, one second
/// each, so one reply delayed by a busy machine does not count as lost.
fn query(client: &str, name: &str) -> Option<Vec<String>> {
    let output = Command::new("ip")
        .args(["netns", "exec", client, "kdig"])
        .args([
            &format!("@{ROUTER_ADDRESS}"),
            name,
            "A",
            "+timeout=1",
            "+retry=1",
            "+short",
        ])
        .output()
        .expect("run kdig");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || stdout.contains("timed out") || stdout.contains("failed") {
        return None;
    }
    Some(
        stdout
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with(';'))
            .map(str::to_owned)
            .collect(),
    )
}

fn blocked(client: &str, name: &str) -> bool {
    query(client, name).is_some_and(|addresses| addresses == ["0.0.0.0"])
}

fn allowed(client: &str) -> bool {
    query(client, "localhost").is_some_and(|addresses| addresses == ["127.0.0.1"])
}

fn require_all(test: &str) -> bool {
    require_root(test) && require_tool("kdig", "knot-dnsutils")
}

#[test]
fn pinned_program_survives_the_controller_and_is_adopted() {
    if !require_all("pinned_program_survives_the_controller_and_is_adopted") {
        return;
    }
    let logs = TempDir::new("dgrel-adopt");
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let small = ["--rule-buckets", "1024"];
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "first",
        &small,
    );
    let id = topology.program_id().expect("the program is attached");
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(
        allowed(&topology.client.name),
        "user space answers localhost"
    );
    let link = paths
        .layout_dir()
        .join(format!("link-native-{}", topology.router_if));
    assert!(link.exists(), "the link is pinned at {}", link.display());

    // kill -9: the kernel keeps answering blocked names with the pinned
    // program; allowed names have nobody to answer them.
    daemon.kill();
    assert_eq!(
        topology.program_id(),
        Some(id),
        "the program stays attached after SIGKILL"
    );
    for name in ["ads.example", "www.ads.example", "tracker.example"] {
        assert!(
            blocked(&topology.client.name, name),
            "{name} is answered by the kernel while the controller is dead"
        );
    }
    assert!(
        !allowed(&topology.client.name),
        "nothing answers allowed names while the controller is dead"
    );
    let down = paths.cli(&["--json", "stats"]);
    assert!(down.status.success(), "{}", text(&down));
    let down: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(down["controller"], "down");
    assert!(
        down["dataplane"]["blocked"].as_u64().unwrap() >= 4,
        "the pinned counters count the kernel's answers: {down}"
    );

    // Restart: the same program is adopted, with no detach in between.
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "second",
        &small,
    );
    assert!(
        daemon.log().contains("adopted the XDP program"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        topology.program_id(),
        Some(id),
        "the restarted daemon adopts the program instead of replacing it"
    );
    let status = paths.cli(&["--json", "status"]);
    let status: Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status)));
    assert_eq!(
        status["dataplane"]["program_id"].as_u64(),
        Some(id),
        "status reports the adopted program: {status}"
    );
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(allowed(&topology.client.name));

    // A plain stop is fail-open: the program stays, blocked names are answered.
    let stop = paths.cli(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&stop).contains("stays attached"), "{}", text(&stop));
    assert!(daemon.wait_exit(), "the daemon exits cleanly on stop");
    assert_eq!(
        topology.program_id(),
        Some(id),
        "stop without --detach keeps the program attached"
    );
    assert!(blocked(&topology.client.name, "tracker.example"));

    // Pins of another map layout are replaced in place, not read.
    let foreign = paths.pin_dir.join("v1");
    std::fs::rename(paths.layout_dir(), &foreign).expect("rename the layout directory on bpffs");
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "third",
        &small,
    );
    let replaced = topology.program_id().expect("still attached");
    assert_ne!(replaced, id, "a program of another layout is replaced");
    assert!(
        daemon.log().contains("replaced the XDP program"),
        "{}",
        daemon.log()
    );
    assert!(!foreign.exists(), "the other layout's pins are removed");
    assert!(link.exists(), "the link is pinned again under this layout");
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(allowed(&topology.client.name));

    // Rule maps too small for what the next start needs are replaced too.
    let stop = paths.cli(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(daemon.wait_exit());
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "fourth",
        &["--rule-buckets", "4096"],
    );
    assert!(
        daemon.log().contains("cannot be adopted"),
        "{}",
        daemon.log()
    );
    let grown = topology.program_id().expect("still attached");
    assert_ne!(
        grown, replaced,
        "the program on the larger maps replaces the old one"
    );
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(allowed(&topology.client.name));

    // A killed daemon's filter is removed by stop --detach without it.
    daemon.kill();
    assert!(topology.program_id().is_some(), "fail-open after SIGKILL");
    let stop = paths.cli(&["stop", "--detach"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&stop).contains("detached the XDP filter it left"), "{}", text(&stop));
    assert_eq!(topology.program_id(), None, "the pins held the only link");
    let again = paths.cli(&["stop", "--detach"]);
    assert!(text(&again).contains("no XDP filter was pinned"), "{}", text(&again));
    let daemon = Daemon::start_with(&topology.router, &topology.router_if, &paths, "fifth", &[]);
    assert!(blocked(&topology.client.name, "ads.example"));

    // stop --detach removes the program and the pins.
    let stop = paths.cli(&["stop", "--detach"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(daemon.wait_exit());
    assert_eq!(
        topology.program_id(),
        None,
        "stop --detach detaches the program"
    );
    assert!(
        !paths.layout_dir().exists(),
        "stop --detach removes the pins"
    );
    assert!(
        query(&topology.client.name, "ads.example").is_none(),
        "with nothing attached and nothing running, no answer"
    );
}

#[test]
fn defunct_link_is_replaced_not_adopted() {
    if !require_all("defunct_link_is_replaced_not_adopted") {
        return;
    }
    let logs = TempDir::new("dgrel-defunct");
    let bpffs = BpfFs::mount();
    let mut topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "first",
        &["--rule-buckets", "1024"],
    );
    assert!(blocked(&topology.client.name, "ads.example"));
    daemon.kill();

    // The port disappears and comes back under the same name while no
    // controller runs: the pinned link filters nothing any more.
    topology.recreate_link(&logs.0);
    assert_eq!(
        topology.program_id(),
        None,
        "a new interface starts without XDP"
    );
    let daemon = Daemon::start_with(
        &topology.router,
        &topology.router_if,
        &paths,
        "second",
        &["--rule-buckets", "1024"],
    );
    assert!(
        daemon.log().contains("no longer filters this interface"),
        "{}",
        daemon.log()
    );
    assert!(
        topology.program_id().is_some(),
        "the restarted daemon attaches to the new interface"
    );
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(allowed(&topology.client.name));
    drop(daemon);
}

#[test]
fn second_daemon_on_the_same_pin_dir_is_refused() {
    if !require_all("second_daemon_on_the_same_pin_dir_is_refused") {
        return;
    }
    let logs = TempDir::new("dgrel-second");
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "first");
    let id = topology.program_id().expect("attached");

    // Another socket, the same pin directory and interface.
    let output = run_command(
        &topology.router,
        &topology.router_if,
        &paths,
        &logs.0.join("other.sock"),
    )
    .output()
    .expect("run a second dnsgate");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("dnsgate:"))
        .collect();
    assert_eq!(message.len(), 1, "one error line: {stderr}");
    let expected = format!(
        "another dnsgate daemon (PID {}) already runs with --pin-dir",
        daemon.process.pid()
    );
    assert!(message[0].contains(&expected), "{}", message[0]);
    assert!(
        message[0].contains("dnsgate stop"),
        "the message says what to do: {}",
        message[0]
    );

    // Another pin directory and socket, the same interface: the kernel's
    // link is busy, and the message names the PID holding it.
    let other = Paths {
        pin_dir: bpffs.0.join("other"),
        socket: logs.0.join("third.sock"),
        config: paths.config.clone(),
        state: logs.0.join("state-third"),
        blocklist: paths.blocklist.clone(),
        logs: paths.logs.clone(),
        dataplane_extra: String::new(),
    };
    let output = run_command(&topology.router, &topology.router_if, &other, &other.socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "already has an XDP program attached by PID {}",
        daemon.process.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        !other.layout_dir().exists(),
        "a failed start leaves no pins of its own behind"
    );

    // The same socket: refused by the admin socket first.
    let output = run_command(&topology.router, &topology.router_if, &paths, &paths.socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already listens"),
        "{}",
        text(&output)
    );

    // The first daemon is untouched.
    assert_eq!(topology.program_id(), Some(id));
    assert!(blocked(&topology.client.name, "ads.example"));
    assert!(allowed(&topology.client.name));

    // Once it is dead (stale pins, no lock), a new daemon starts and adopts.
    daemon.kill();
    let again = Daemon::start(&topology.router, &topology.router_if, &paths, "after-kill");
    assert_eq!(topology.program_id(), Some(id));
    drop(again);
    assert_eq!(topology.program_id(), Some(id), "SIGTERM is fail-open too");

    // A daemon without XDP removes the filter an earlier run left, so no
    // stale rules keep applying.
    let mut command = run_command(&topology.router, &topology.router_if, &paths, &paths.socket);
    command.arg("--no-xdp");
    let mut process = Process::spawn("no-xdp", &mut command, &logs.0);
    wait_for_daemon(&mut process, &logs.0.join("no-xdp.err"), Duration::from_secs(60));
    assert_eq!(
        topology.program_id(),
        None,
        "--no-xdp detaches the pinned filter"
    );
    assert!(!paths.layout_dir().exists());
    let _ = process.stop(Duration::from_secs(10));
}

/// The phases of the chaos test, in order.
const PHASES: [&str; 6] = ["steady", "killed", "killed, later", "restarted", "bad reload", "good reload"];
const STEADY: usize = 0;
const KILLED: usize = 1;
const KILLED_LATER: usize = 2;
const RESTARTED: usize = 3;
const BAD_RELOAD: usize = 4;
const GOOD_RELOAD: usize = 5;

/// Per-phase counts of one query stream.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Queries started in the phase.
    sent: usize,
    /// Queries started and finished in the phase.
    settled: usize,
    /// Settled queries that got no answer.
    unanswered: usize,
    /// Queries started in the phase that got no answer, settled or not.
    failed: usize,
}

/// A query stream in its own thread: one query, then a pause, until told
/// to stop, at most `MAX_QUERIES` queries.
struct Stream {
    counts: Arc<Mutex<Vec<Counts>>>,
    first_answer_after: Arc<Mutex<Option<Instant>>>,
    handle: std::thread::JoinHandle<()>,
}

const MAX_QUERIES: usize = 2000;

impl Stream {
    fn start(
        client: String,
        phase: Arc<AtomicUsize>,
        running: Arc<AtomicBool>,
        check: fn(&str) -> bool,
        mark: Arc<Mutex<Option<Instant>>>,
    ) -> Self {
        let counts = Arc::new(Mutex::new(vec![Counts::default(); PHASES.len()]));
        let recorded = counts.clone();
        let first_answer_after = Arc::new(Mutex::new(None));
        let first = first_answer_after.clone();
        let handle = std::thread::spawn(move || {
            let mut sent = 0;
            while running.load(Ordering::SeqCst) && sent < MAX_QUERIES {
                let before = phase.load(Ordering::SeqCst);
                let answered = check(&client);
                sent += 1;
                // A query that a phase change overtook (the daemon killed
                // while kdig starts, say) is not held to either phase's
                // expectation.
                let settled = phase.load(Ordering::SeqCst) == before;
                {
                    let mut counts = recorded.lock().unwrap();
                    counts[before].sent += 1;
                    if !answered {
                        counts[before].failed += 1;
                    }
                    if settled {
                        counts[before].settled += 1;
                        if !answered {
                            counts[before].unanswered += 1;
                        }
                    }
                }
                // The first answer once the restart is marked.
                if answered && mark.lock().unwrap().is_some() {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            counts,
            first_answer_after,
            handle,
        }
    }
}

#[test]
fn chaos_kill_restart_and_reloads_never_lose_blocked_answers() {
    if !require_all("chaos_kill_restart_and_reloads_never_lose_blocked_answers") {
        return;
    }
    chaos("dgrel-chaos", false);
}

#[test]
fn chaos_with_fallback_resolver() {
    let test = "chaos_with_fallback_resolver";
    if !require_all(test) || !require_tool("dnsmasq", "dnsmasq-base") {
        return;
    }
    chaos("dgrel-fallback", true);
}

/// Starts dnsmasq on the fallback port of the router's address, answering
/// `localhost` as dnsgate does, with no upstream and no files read.
fn start_fallback_dnsmasq(router: &Namespace, logs: &Path) -> Process {
    let mut command = router.command("dnsmasq");
    command.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        &format!("--port={FALLBACK_PORT}"),
        &format!("--listen-address={ROUTER_ADDRESS}"),
        "--address=/localhost/127.0.0.1",
        &format!("--pid-file={}", logs.join("dnsmasq.pid").display()),
        "--user=root",
    ]);
    let mut dnsmasq = Process::spawn("dnsmasq", &mut command, logs);
    let ready = wait_for(Duration::from_secs(10), || {
        dnsmasq.exited()
            || router
                .command("kdig")
                .args([&format!("@{ROUTER_ADDRESS}"), "-p", &FALLBACK_PORT.to_string(), "localhost", "+short"])
                .args(["+timeout=1", "+retry=0"])
                .output()
                .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "127.0.0.1")
    });
    let errors = std::fs::read_to_string(logs.join("dnsmasq.err")).unwrap_or_default();
    assert!(!dnsmasq.exited(), "dnsmasq exited: {errors}");
    assert!(ready, "dnsmasq did not answer on port {FALLBACK_PORT}: {errors}");
    dnsmasq
}

/// Runs a steady bounded query stream while the controller is killed with
/// SIGKILL, restarted, reloaded with a bad configuration and then with a
/// good one. With `fallback`, a dnsmasq on port 54 is the fallback.
fn chaos(label: &str, fallback: bool) {
    let logs = TempDir::new(label);
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let mut paths = Paths::new(&logs.0, &bpffs);
    let _dnsmasq = fallback.then(|| start_fallback_dnsmasq(&topology.router, &logs.0));
    if fallback {
        paths.dataplane_extra =
            format!("fallback_port = {FALLBACK_PORT}\nfallback_after_secs = {FALLBACK_AFTER_SECS}\n");
        paths.write_config();
    }
    let daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "chaos-1");
    let status = paths.cli(&["--json", "status"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status)));
    let expected = fallback.then(|| serde_json::json!({ "port": FALLBACK_PORT, "after_seconds": FALLBACK_AFTER_SECS }));
    assert_eq!(status["dataplane"]["fallback"], expected.unwrap_or(Value::Null), "status reports the fallback: {status}");
    let human = text(&paths.cli(&["status"]));
    let line = if fallback { format!("go to port {FALLBACK_PORT}") } else { "fallback:   off".to_owned() };
    assert!(human.contains(&line), "status text names the fallback:\n{human}");

    let phase = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let restart_mark: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let no_mark = Arc::new(Mutex::new(None));
    let blocked_stream = Stream::start(
        topology.client.name.clone(),
        phase.clone(),
        running.clone(),
        |client| blocked(client, "ads.example"),
        no_mark,
    );
    let allowed_stream = Stream::start(
        topology.client.name.clone(),
        phase.clone(),
        running.clone(),
        allowed,
        restart_mark.clone(),
    );
    let dwell = Duration::from_secs(3);
    let started = Instant::now();

    // steady
    std::thread::sleep(dwell);
    // killed: blocked names stay answered; allowed ones only with the
    // fallback, once its delay is over.
    phase.store(KILLED, Ordering::SeqCst);
    daemon.kill();
    std::thread::sleep(Duration::from_secs(FALLBACK_AFTER_SECS) + Duration::from_millis(1500));
    phase.store(KILLED_LATER, Ordering::SeqCst);
    std::thread::sleep(dwell);
    // restarted: allowed names must come back within ALLOWED_RECOVERY.
    phase.store(RESTARTED, Ordering::SeqCst);
    let spawned = Instant::now();
    *restart_mark.lock().unwrap() = Some(spawned);
    let daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "chaos-2");
    let recovered = wait_for(ALLOWED_RECOVERY, || {
        allowed_stream.first_answer_after.lock().unwrap().is_some()
    });
    std::thread::sleep(dwell);
    // bad reload: refused with the key, the running configuration stays.
    phase.store(BAD_RELOAD, Ordering::SeqCst);
    std::fs::write(
        &paths.config,
        "[dataplane]\nblock_mode = \"nxdomain\"\nrule_buckets = 0\n",
    )
    .unwrap();
    let reload = paths.cli(&["reload"]);
    assert!(
        !reload.status.success(),
        "a bad configuration is refused: {}",
        text(&reload)
    );
    assert!(
        text(&reload).contains("dataplane.rule_buckets"),
        "the key is named: {}",
        text(&reload)
    );
    assert!(
        text(&reload).contains("running configuration stays"),
        "{}",
        text(&reload)
    );
    std::fs::write(&paths.config, "[dataplane\nblock_mode = \"null\"\n").unwrap();
    daemon.process.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("reload on SIGHUP failed")),
        "a bad file on SIGHUP is logged: {}",
        daemon.log()
    );
    std::thread::sleep(dwell);
    // good reload: a new blocked name takes effect.
    phase.store(GOOD_RELOAD, Ordering::SeqCst);
    std::fs::write(
        &paths.blocklist,
        "||ads.example^\ntracker.example\nlate.example\n",
    )
    .unwrap();
    paths.write_config();
    let reload = paths.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(
        blocked(&topology.client.name, "late.example"),
        "the good reload is in force"
    );
    std::thread::sleep(dwell);
    running.store(false, Ordering::SeqCst);
    let total = started.elapsed();

    blocked_stream.handle.join().unwrap();
    allowed_stream.handle.join().unwrap();
    let blocked_counts = blocked_stream.counts.lock().unwrap().clone();
    let allowed_counts = allowed_stream.counts.lock().unwrap().clone();
    let recovery = allowed_stream
        .first_answer_after
        .lock()
        .unwrap()
        .map(|at| at.duration_since(spawned));
    println!(
        "chaos test, {:.1} s, unanswered/settled (started and finished in the phase) per phase:",
        total.as_secs_f64()
    );
    println!("  {:<14} {:>14} {:>14}", "phase", "blocked", "allowed");
    for (index, name) in PHASES.iter().enumerate() {
        println!(
            "  {:<14} {:>8}/{:<5} {:>8}/{:<5}",
            name,
            blocked_counts[index].unanswered,
            blocked_counts[index].settled,
            allowed_counts[index].unanswered,
            allowed_counts[index].settled
        );
    }
    println!("  allowed names answered again {recovery:?} after the restarted daemon was spawned");

    for (index, name) in PHASES.iter().enumerate() {
        assert!(
            blocked_counts[index].sent > 0,
            "the blocked stream ran in phase {name}"
        );
        assert_eq!(
            blocked_counts[index].unanswered, 0,
            "blocked names went unanswered in phase {name}"
        );
    }
    assert!(
        recovered,
        "allowed names were not answered within {ALLOWED_RECOVERY:?} of the restart"
    );
    for index in [STEADY, BAD_RELOAD, GOOD_RELOAD] {
        assert!(allowed_counts[index].sent > 0);
        assert_eq!(
            allowed_counts[index].unanswered, 0,
            "allowed names went unanswered in phase {}",
            PHASES[index]
        );
    }
    assert!(allowed_counts[KILLED_LATER].sent > 0);
    if fallback {
        assert!(allowed_counts[KILLED_LATER].settled > 0, "queries ran while the fallback answered");
        assert_eq!(
            allowed_counts[KILLED_LATER].unanswered, 0,
            "the fallback did not answer allowed names {FALLBACK_AFTER_SECS} s after the kill"
        );
        let counters = paths.cli(&["stats", "--json"]);
        let stats: Value = serde_json::from_slice(&counters.stdout).unwrap_or_default();
        let kernel = &stats["dataplane"];
        assert!(
            kernel["fallback"].as_u64().is_some_and(|count| count >= allowed_counts[KILLED_LATER].settled as u64),
            "every allowed query of the dead phase went to the fallback: {}",
            text(&counters)
        );
        assert!(
            kernel["fallback_replies"].as_u64().is_some_and(|count| count >= allowed_counts[KILLED_LATER].settled as u64),
            "{}",
            text(&counters)
        );
    } else {
        assert!(
            allowed_counts[KILLED].failed + allowed_counts[KILLED_LATER].failed > 0,
            "the controller really was dead in phases {} and {}",
            PHASES[KILLED],
            PHASES[KILLED_LATER]
        );
    }
    drop(daemon);
}

#[test]
fn configuration_errors_at_start_name_the_key() {
    let logs = TempDir::new("dgrel-config");
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "unknown-key",
            "[dataplane]\nblock_mod = \"null\"\n",
            &["block_mod", "line 2"],
        ),
        (
            "wrong-type",
            "[dataplane]\nblock_ttl = \"ten\"\n",
            &["block_ttl"],
        ),
        (
            "zero-buckets",
            "[dataplane]\nrule_buckets = 0\n",
            &["dataplane.rule_buckets", "at least 1", "line 2"],
        ),
        (
            "querylog",
            "[querylog]\ncapacity = 0\n",
            &["querylog.capacity", "between 1 and", "line 2"],
        ),
        (
            "syntax",
            "[dataplane\n",
            &["invalid configuration in", "line 1"],
        ),
    ];
    for (label, body, expected) in cases {
        let path = logs.0.join(format!("{label}.toml"));
        std::fs::write(&path, body).unwrap();
        // `run` reads the configuration before it touches the socket, the
        // kernel or the network, so no root is needed.
        let output = Command::new(workspace_binary("dnsgate"))
            .arg("--socket")
            .arg(logs.0.join(format!("{label}.sock")))
            .arg("--pin-dir")
            .arg(logs.0.join("pins"))
            .arg("--config")
            .arg(&path)
            .args(["run", "--no-xdp", "--state-dir"])
            .arg(logs.0.join("state"))
            .output()
            .expect("run dnsgate");
        assert_eq!(output.status.code(), Some(1), "{label}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        for part in expected {
            assert!(
                stderr.contains(part),
                "{label}: the error names {part:?}: {stderr}"
            );
        }
    }
    let missing = Command::new(workspace_binary("dnsgate"))
        .arg("--config")
        .arg(logs.0.join("absent.toml"))
        .args(["run", "--no-xdp"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("reading the configuration file"),
        "{}",
        text(&missing)
    );
}
