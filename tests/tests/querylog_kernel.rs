//! Queries the XDP program answers in the kernel reach `dnsgate log`: a
//! client namespace sends blocked queries with kdig to a router namespace
//! where `dnsgate run` has the program attached natively, and the test reads
//! the log through the admin socket, as `dnsgate log --json` prints it.

use std::{path::PathBuf, time::Duration};

use dnsgate_tests::{
    netns::{
        dnsgate_json, start_xdp_pass, veth_pair, wait_for, wait_for_daemon, workspace_binary, BpfFs, Namespace, Process,
        TempDir,
    },
    require_root, require_tool,
};
use serde_json::Value;

const CLIENT_V4: &str = "198.18.11.1";
const ROUTER_V4: &str = "198.18.11.2";
const CLIENT_V6: &str = "fd00:51::1";
const ROUTER_V6: &str = "fd00:51::2";

/// Client and router namespaces joined by a veth pair with an IPv4 and an
/// IPv6 address on each end, a pass-through XDP program on the client end
/// (so native `XDP_TX` frames arrive) and a daemon in the router.
struct Setup {
    client: Namespace,
    _router: Namespace,
    _pass: Process,
    daemon: Process,
    socket: PathBuf,
    pin_dir: PathBuf,
    config: PathBuf,
    _bpffs: BpfFs,
    logs: TempDir,
}

impl Setup {
    /// Starts everything, with `querylog` as the body of the `[querylog]`
    /// table.
    fn start(querylog: &str) -> Self {
        let logs = TempDir::new("dgql");
        let bpffs = BpfFs::mount();
        let client = Namespace::new("dgqlc");
        let router = Namespace::new("dgqlr");
        let (client_if, router_if) =
            veth_pair(&client, Some(&format!("{CLIENT_V4}/24")), &router, Some(&format!("{ROUTER_V4}/24")));
        client.ip(&["addr", "add", &format!("{CLIENT_V6}/64"), "dev", &client_if, "nodad"]);
        router.ip(&["addr", "add", &format!("{ROUTER_V6}/64"), "dev", &router_if, "nodad"]);

        let pass = start_xdp_pass(&client, &client_if, &logs.0, "xdp-pass");

        let blocklist = logs.0.join("blocklist.txt");
        std::fs::write(&blocklist, "||ads.example^\ntracker.example\n").unwrap();
        let config = logs.0.join("dnsgate.toml");
        std::fs::write(
            &config,
            format!(
                "[metrics]\nenabled = false\n\n[querylog]\n{querylog}\n\n[[lists]]\nlocation = \"{}\"\nformat = \"adblock\"\n",
                blocklist.display()
            ),
        )
        .unwrap();
        let socket = logs.0.join("dnsgate.sock");
        let pin_dir = bpffs.0.join("dnsgate");
        let mut command = router.command(workspace_binary("dnsgate").to_str().unwrap());
        command
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .args(["run", "--lan-iface", &router_if, "--state-dir"])
            .arg(logs.0.join("state"));
        let mut daemon = Process::spawn("dnsgate", &mut command, &logs.0);
        wait_for_daemon(&mut daemon, &logs.0.join("dnsgate.err"), Duration::from_secs(30));
        Self { client, _router: router, _pass: pass, daemon, socket, pin_dir, config, _bpffs: bpffs, logs }
    }

    /// Runs `dnsgate --json ARGS` against the daemon and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        dnsgate_json(&self.socket, &self.pin_dir, Some(&self.config), args)
    }

    /// Sends one query with kdig and returns the status kdig printed.
    fn kdig(&self, server: &str, name: &str, qtype: &str) -> String {
        let output = self
            .client
            .command("kdig")
            .args([&format!("@{server}"), name, qtype, "+timeout=2", "+retry=0"])
            .output()
            .expect("run kdig");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.split("status: ").nth(1).and_then(|rest| rest.split(';').next()).unwrap_or("NONE").trim().to_owned()
    }

    /// The log entries the kernel answered, once there are `count` of them
    /// (the events reach the log a moment after the answers leave).
    fn kernel_entries(&self, count: usize) -> Vec<Value> {
        let mut entries = Vec::new();
        wait_for(Duration::from_secs(10), || {
            let log = self.json(&["log", "--limit", "100"]);
            entries = log.as_array().expect("log --json prints an array").iter().filter(|entry| entry["kernel"] == true).cloned().collect();
            entries.len() >= count
        });
        assert_eq!(entries.len(), count, "kernel entries in the log: {entries:?}\n{}", self.daemon_log());
        entries
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.logs.0.join("dnsgate.err")).unwrap_or_default()
    }

    fn counter(&self, name: &str) -> u64 {
        let stats = self.json(&["stats"]);
        stats["dataplane"][name].as_u64().unwrap_or_else(|| panic!("no dataplane.{name} in {stats}"))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.daemon.stop(Duration::from_secs(10));
    }
}

fn require_all(test: &str) -> bool {
    require_root(test) && require_tool("kdig", "knot-dnsutils")
}

/// Sends the three blocked queries every test uses: A over IPv4, AAAA
/// over IPv6 and TXT over IPv4, all answered in the kernel.
fn send_blocked(setup: &Setup) {
    assert_eq!(setup.kdig(ROUTER_V4, "ads.example", "A"), "NOERROR");
    assert_eq!(setup.kdig(ROUTER_V6, "www.ADS.example", "AAAA"), "NOERROR");
    assert_eq!(setup.kdig(ROUTER_V4, "tracker.example", "TXT"), "NOERROR");
}

fn find<'a>(entries: &'a [Value], name: &str) -> &'a Value {
    entries.iter().find(|entry| entry["name"] == name).unwrap_or_else(|| panic!("no entry for {name} in {entries:?}"))
}

#[test]
fn kernel_answers_reach_the_log() {
    if !require_all("kernel_answers_reach_the_log") {
        return;
    }
    let setup = Setup::start("client_privacy = \"full\"");
    send_blocked(&setup);
    // Not on the list: judged in user space (SERVFAIL, no upstream), so
    // logged without the kernel marker.
    assert_eq!(setup.kdig(ROUTER_V4, "allowed.example", "A"), "SERVFAIL");

    let entries = setup.kernel_entries(3);
    for (name, qtype, client) in
        [("ads.example.", "A", CLIENT_V4), ("www.ads.example.", "AAAA", CLIENT_V6), ("tracker.example.", "TXT", CLIENT_V4)]
    {
        let entry = find(&entries, name);
        assert_eq!(entry["qtype"], qtype, "{entry}");
        assert_eq!(entry["client"], client, "{entry}");
        assert_eq!(entry["decision"], "blocked", "{entry}");
        assert_eq!(entry["transport"], "udp", "{entry}");
        assert_eq!(entry["rcode"], "NOERROR", "{entry}");
        assert_eq!(entry["latency_us"], 0, "{entry}");
        assert!(entry["time_ms"].as_u64().is_some_and(|time| time > 0), "{entry}");
    }
    let log = setup.json(&["log", "--limit", "100"]);
    let user_space = find(log.as_array().unwrap(), "allowed.example.");
    assert_eq!(user_space["kernel"], false, "{user_space}");
    assert_eq!(user_space["client"], CLIENT_V4, "{user_space}");

    assert_eq!(setup.counter("blocked"), 3);
    assert_eq!(setup.counter("events_lost"), 0);
}

#[test]
fn excess_kernel_answers_counted_not_logged() {
    if !require_all("excess_kernel_answers_counted_not_logged") {
        return;
    }
    // One answer a second per CPU: each CPU logs its first answer, and the
    // queries below take well under a second.
    let setup = Setup::start("kernel_answers_per_second = 1");
    let started = std::time::Instant::now();
    for _ in 0..8 {
        assert_eq!(setup.kdig(ROUTER_V4, "ads.example", "A"), "NOERROR");
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert_eq!(setup.counter("blocked"), 8);
    let skipped = setup.counter("events_skipped");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(skipped > 0, "eight answers in {seconds} s at one a second per CPU: some are skipped");
    assert!(8 - skipped <= cpus * seconds, "{} answers logged on {cpus} CPUs in {seconds} s", 8 - skipped);
    assert_eq!(setup.counter("events_lost"), 0);
    // Every answer is either in the log or counted as skipped.
    setup.kernel_entries((8 - skipped) as usize);
}

#[test]
fn truncated_client_addresses() {
    if !require_all("truncated_client_addresses") {
        return;
    }
    let setup = Setup::start("client_privacy = \"truncate\"");
    send_blocked(&setup);
    let entries = setup.kernel_entries(3);
    assert_eq!(find(&entries, "ads.example.")["client"], "198.18.11.0");
    assert_eq!(find(&entries, "www.ads.example.")["client"], "fd00:51::");
    assert_eq!(find(&entries, "tracker.example.")["client"], "198.18.11.0");
}

#[test]
fn omitted_client_addresses() {
    if !require_all("omitted_client_addresses") {
        return;
    }
    let setup = Setup::start("client_privacy = \"omit\"");
    send_blocked(&setup);
    for entry in setup.kernel_entries(3) {
        assert_eq!(entry["client"], Value::Null, "{entry}");
        assert_eq!(entry["decision"], "blocked", "{entry}");
    }
}

#[test]
fn switched_off_kernel_answers_stay_out_of_the_log() {
    if !require_all("switched_off_kernel_answers_stay_out_of_the_log") {
        return;
    }
    let setup = Setup::start("kernel_answers = false");
    send_blocked(&setup);
    // A user-space query after the blocked ones: once it is in the log, any
    // kernel entry would have had ample time to arrive too.
    assert_eq!(setup.kdig(ROUTER_V4, "allowed.example", "A"), "SERVFAIL");
    assert_eq!(setup.counter("blocked"), 3, "the kernel still answers");
    let logged = wait_for(Duration::from_secs(10), || {
        setup.json(&["log"]).as_array().unwrap().iter().any(|entry| entry["name"] == "allowed.example.")
    });
    assert!(logged, "the user-space query never reached the log");
    std::thread::sleep(Duration::from_millis(500));
    let log = setup.json(&["log", "--limit", "100"]);
    let entries = log.as_array().unwrap();
    assert!(entries.iter().all(|entry| entry["kernel"] == false), "{log}");
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(setup.counter("events_lost"), 0);
}

