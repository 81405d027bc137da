//! The `dnsgate` subcommands against a running daemon in a namespace
//! topology: a client namespace sends real queries (kdig) to a router
//! namespace where `dnsgate run` has the XDP program attached natively. The
//! CLI runs outside the namespaces and reaches the daemon through its admin
//! socket, and every `--json` reply is parsed and compared with what the
//! test did.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use dnsgate_tests::{
    netns::{
        dnsgate_cli, dnsgate_json, start_xdp_pass, veth_pair, wait_for, wait_for_daemon, workspace_binary, BpfFs,
        Namespace, Process, TempDir,
    },
    require_root, require_tool,
};
use serde_json::Value;

const CLIENT_ADDRESS: &str = "198.18.9.1";
const ROUTER_ADDRESS: &str = "198.18.9.2";

/// Client and router namespaces joined by a veth pair, with a pass-through
/// XDP program on the client end so native `XDP_TX` frames arrive.
struct Topology {
    client: Namespace,
    router: Namespace,
    router_if: String,
    _pass: Process,
}

impl Topology {
    fn new(logs: &Path) -> Self {
        let client = Namespace::new("dgc");
        let router = Namespace::new("dgr");
        let (client_if, router_if) = veth_pair(
            &client,
            Some(&format!("{CLIENT_ADDRESS}/24")),
            &router,
            Some(&format!("{ROUTER_ADDRESS}/24")),
        );
        let pass = start_xdp_pass(&client, &client_if, logs, "xdp-pass");
        Self { client, router, router_if, _pass: pass }
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
        std::fs::write(&paths.blocklist, "||ads.example^\ntracker.example\n").unwrap();
        paths.write_config("null");
        paths
    }

    fn write_config(&self, block_mode: &str) {
        let text = format!(
            "[dataplane]\nblock_mode = \"{block_mode}\"\n\n[metrics]\nlisten = \"127.0.0.1:9153\"\n\n\
             [[lists]]\nlocation = \"{}\"\nformat = \"adblock\"\n",
            self.blocklist.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs `dnsgate --socket … --pin-dir … --config … ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        dnsgate_cli(&self.socket, &self.pin_dir, Some(&self.config), args)
    }

    /// Runs a subcommand with `--json`, checks that it succeeded and parses
    /// its output.
    fn json(&self, args: &[&str]) -> Value {
        dnsgate_json(&self.socket, &self.pin_dir, Some(&self.config), args)
    }
}

/// A running daemon.
struct Daemon {
    process: Process,
    label: String,
}

impl Daemon {
    fn start(router: &Namespace, interface: &str, paths: &Paths, label: &str) -> Self {
        let mut command = router.command(workspace_binary("dnsgate").to_str().unwrap());
        command
            .arg("--pin-dir")
            .arg(&paths.pin_dir)
            .arg("--socket")
            .arg(&paths.socket)
            .arg("--config")
            .arg(&paths.config)
            .args(["run", "--lan-iface", interface, "--state-dir"])
            .arg(&paths.state);
        let mut process = Process::spawn(label, &mut command, &paths.logs);
        wait_for_daemon(&mut process, &paths.logs.join(format!("{label}.err")), Duration::from_secs(30));
        Self { process, label: label.to_owned() }
    }

    /// Waits for the daemon to exit after `dnsgate stop` and returns
    /// whether it exited with success.
    fn wait_exit(&mut self) -> bool {
        let exited = wait_for(Duration::from_secs(15), || self.process.exited());
        assert!(exited, "{} did not exit after `dnsgate stop`", self.label);
        self.process.stop(Duration::from_secs(1)).is_some_and(|status| status.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(10));
    }
}

/// One answer as kdig printed it.
#[derive(Debug)]
struct Answer {
    status: String,
    addresses: Vec<String>,
}

/// Sends one query from the client namespace with kdig.
fn kdig(client: &Namespace, name: &str, qtype: &str, transport: &str) -> Answer {
    let mut command = client.command("kdig");
    command.args([&format!("@{ROUTER_ADDRESS}"), name, qtype, "+timeout=2", "+retry=0"]);
    if !transport.is_empty() {
        command.arg(transport);
    }
    let output = command.output().expect("run kdig");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or("NONE")
        .trim()
        .to_owned();
    let mut addresses = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if (in_answer && line.trim().is_empty()) || line.starts_with(";; AUTHORITY") || line.starts_with(";; ADDITIONAL") {
            in_answer = false;
        } else if in_answer
            && !line.starts_with(';')
            && let Some(last) = line.split_whitespace().last()
        {
            addresses.push(last.to_owned());
        }
    }
    Answer { status, addresses }
}

fn is_blocked(answer: &Answer) -> bool {
    answer.status == "NOERROR" && answer.addresses == ["0.0.0.0"]
}

fn counter(value: &Value, section: &str, name: &str) -> u64 {
    value[section][name].as_u64().unwrap_or_else(|| panic!("no {section}.{name} in {value}"))
}

fn udp_queries(stats: &Value) -> u64 {
    stats["resolver"]["queries"]["udp"].as_u64().unwrap_or_else(|| panic!("no resolver.queries.udp in {stats}"))
}

/// Retries `check` for up to `timeout`, for changes applied in the
/// background (the user-space rebuild after a custom rule).
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    wait_for(timeout, &mut check)
}

fn require_all(test: &str) -> bool {
    require_root(test) && require_tool("kdig", "knot-dnsutils") && require_tool("setpriv", "util-linux")
}

#[test]
fn subcommands_report_what_the_test_did() {
    if !require_all("subcommands_report_what_the_test_did") {
        return;
    }
    let logs = TempDir::new("dgcli");
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let mut daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "dnsgate");

    // status: attached natively to the router's port, with the two rules.
    let status = paths.json(&["status"]);
    assert_eq!(status["dataplane"]["attached"], true, "{status}");
    assert_eq!(status["dataplane"]["interfaces"][0]["name"], topology.router_if.as_str());
    assert_eq!(status["dataplane"]["interfaces"][0]["mode"], "native");
    assert!(status["dataplane"]["program_id"].as_u64().is_some_and(|id| id > 0), "{status}");
    assert_eq!(status["rules"]["kernel"], 2);
    assert_eq!(status["lists"][0]["source"], paths.blocklist.to_str().unwrap());
    assert!(status["lists"][0]["age_seconds"].as_u64().is_some(), "{status}");
    assert_eq!(status["upstream_status"], "not_configured");
    let text = String::from_utf8_lossy(&paths.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("upstreams:  none configured"), "status in words: {text}");
    let udp = status["listeners"]["udp"].as_array().unwrap_or_else(|| panic!("no listeners in {status}"));
    assert!(udp.iter().any(|address| address == &format!("{ROUTER_ADDRESS}:53")), "{status}");
    assert!(text.contains(&format!("DoT      {ROUTER_ADDRESS}:853")), "the listeners in the text: {text}");
    assert_eq!(status["certificate"]["mode"], "generated");
    assert!(status["certificate"]["not_after_unix"].as_i64().is_some(), "{status}");
    // 198.18.0.0/15 is not private in the RFC 9462 sense, so only verified
    // discovery can work there, and only if the certificate names it.
    let discovery = status["certificate"]["discovery"].as_array().unwrap_or_else(|| panic!("no discovery in {status}"));
    let router = discovery.iter().find(|entry| entry["address"] == ROUTER_ADDRESS);
    let router = router.unwrap_or_else(|| panic!("no discovery entry for {ROUTER_ADDRESS} in {status}"));
    assert_eq!(router["opportunistic"], false, "{status}");
    let named = status["certificate"]["ips"].as_array().unwrap().iter().any(|ip| ip == ROUTER_ADDRESS);
    assert_eq!(router["verified"], named, "{status}");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    // stats: three kernel answers, two UDP and one TCP query in user space.
    let before = paths.json(&["stats"]);
    assert_eq!(before["controller"], "running");
    for name in ["ads.example", "www.ads.example", "tracker.example"] {
        assert!(is_blocked(&kdig(&topology.client, name, "A", "")), "{name} is on the list");
    }
    for name in ["allowed.example", "www.tracker.example"] {
        let answer = kdig(&topology.client, name, "A", "");
        assert_eq!(answer.status, "SERVFAIL", "{name}: no upstream is configured");
    }
    assert_eq!(kdig(&topology.client, "tcp.example", "AAAA", "+tcp").status, "SERVFAIL");
    let after = paths.json(&["stats"]);
    assert_eq!(counter(&after, "dataplane", "blocked") - counter(&before, "dataplane", "blocked"), 3);
    assert_eq!(udp_queries(&after) - udp_queries(&before), 2);
    assert_eq!(after["resolver"]["queries"]["tcp"].as_u64().unwrap() - before["resolver"]["queries"]["tcp"].as_u64().unwrap(), 1);
    assert_eq!(counter(&after, "resolver", "blocked"), counter(&before, "resolver", "blocked"));
    let text = String::from_utf8_lossy(&paths.cli(&["stats"]).stdout).into_owned();
    let line = text.lines().find(|line| line.trim_start().starts_with("blocked ")).unwrap_or_default();
    let blocked = counter(&after, "dataplane", "blocked");
    assert!(line.contains(&blocked.to_string()), "the count: {text}");
    assert!(line.contains("answered in the kernel"), "what it counts: {text}");

    // log: the three user-space queries, newest last.
    let log = paths.json(&["log", "--limit", "3"]);
    let entries = log.as_array().expect("log --json prints an array");
    let names: Vec<&str> = entries.iter().map(|entry| entry["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["allowed.example.", "www.tracker.example.", "tcp.example."]);
    assert_eq!(entries[2]["transport"], "tcp");
    assert_eq!(entries[2]["qtype"], "AAAA");
    assert_eq!(entries[0]["client"], CLIENT_ADDRESS);
    assert_eq!(entries[0]["decision"], "resolved");
    assert_eq!(entries[0]["rcode"], "SERVFAIL");

    // metrics: the same counters, read by a Prometheus text parser.
    let metrics = scrape_metrics(&topology.router);
    let stats = paths.json(&["stats"]);
    assert_eq!(metric(&metrics, "dnsgate_dataplane_blocked_total", None), counter(&stats, "dataplane", "blocked") as f64);
    assert_eq!(metric(&metrics, "dnsgate_resolver_queries_total", Some(("transport", "udp"))), udp_queries(&stats) as f64);
    let histogram_count = histogram_count(&metrics, "dnsgate_query_duration_seconds", "udp");
    assert_eq!(histogram_count, udp_queries(&stats));

    // query: the decision, the rule and its line, and the answer.
    let query = paths.json(&["query", "www.ads.example", "A"]);
    let explanation = &query["explanation"];
    assert_eq!(explanation["decision"]["action"], "block", "{query}");
    assert_eq!(explanation["kernel_verdict"], "block");
    assert_eq!(query["kernel_filter"], true, "{query}");
    assert_eq!(explanation["rules"][0]["source"], paths.blocklist.to_str().unwrap());
    assert_eq!(explanation["rules"][0]["line"], 1);
    assert_eq!(query["answer"]["rcode"], "NOERROR");
    assert!(query["answer"]["records"][0].as_str().unwrap().ends_with("0.0.0.0"), "{query}");

    // allow add beats the list's block in the kernel; rm restores it.
    let added = paths.json(&["allow", "add", "ads.example"]);
    assert_eq!(added["rule"], "||ads.example^");
    assert_eq!(paths.json(&["allow", "list"])["rules"], serde_json::json!(["||ads.example^"]));
    assert_eq!(kdig(&topology.client, "www.ads.example", "A", "").status, "SERVFAIL", "allowed names go to user space");
    paths.json(&["allow", "rm", "ads.example"]);
    assert!(is_blocked(&kdig(&topology.client, "www.ads.example", "A", "")));
    assert_eq!(paths.json(&["allow", "list"])["rules"], serde_json::json!([]));

    // pause and resume, in the kernel and in user space.
    let paused = paths.json(&["pause", "10m"]);
    let until = paused["paused_until_ms"].as_u64().unwrap();
    assert_eq!(paths.json(&["status"])["paused_until_ms"].as_u64(), Some(until));
    assert_eq!(kdig(&topology.client, "ads.example", "A", "").status, "SERVFAIL", "paused: passed on");
    assert_eq!(paths.json(&["query", "ads.example"])["paused"], true);
    assert_eq!(paths.json(&["resume"])["was_paused"], true);
    assert!(is_blocked(&kdig(&topology.client, "ads.example", "A", "")));
    assert_eq!(paths.json(&["status"])["paused_until_ms"], Value::Null);

    // lists update picks up a changed file; lists show counts it.
    std::fs::write(&paths.blocklist, "||ads.example^\ntracker.example\nnew.example\n").unwrap();
    assert_eq!(paths.json(&["lists", "update"])["kernel_rules"], 3);
    assert!(is_blocked(&kdig(&topology.client, "new.example", "A", "")));
    let lists = paths.json(&["lists", "show"]);
    assert_eq!(lists["lists"][0]["accepted"], 3);
    assert_eq!(lists["lists"][0]["invalid"]["count"], 0);

    // reload applies a new block mode; a bad file keeps the running one.
    paths.write_config("nxdomain");
    let reload = paths.json(&["reload"]);
    assert_eq!(reload["restart_needed"], serde_json::json!([]));
    assert_eq!(kdig(&topology.client, "ads.example", "A", "").status, "NXDOMAIN");
    let good_config = std::fs::read_to_string(&paths.config).unwrap();
    std::fs::write(&paths.config, format!("{good_config}\n[querylog]\ncapacity = 0\n")).unwrap();
    let failed = paths.cli(&["reload"]);
    assert!(!failed.status.success(), "a bad configuration must fail the reload");
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(message.contains("querylog.capacity"), "the error names the key: {message}");
    assert!(message.contains("running configuration stays"), "{message}");
    assert_eq!(kdig(&topology.client, "ads.example", "A", "").status, "NXDOMAIN", "the running configuration stays");

    // A key a reload cannot apply is reported until the file matches the
    // running daemon again, however many reloads come in between.
    std::fs::write(&paths.config, format!("{good_config}\n[querylog]\ncapacity = 500\n")).unwrap();
    for _ in 0..2 {
        assert_eq!(paths.json(&["reload"])["restart_needed"], serde_json::json!(["querylog"]));
    }
    std::fs::write(&paths.config, &good_config).unwrap();
    assert_eq!(paths.json(&["reload"])["restart_needed"], serde_json::json!([]));

    // An invalid name is an error, not an answer.
    let invalid = paths.cli(&["query", "bad..name"]);
    assert!(!invalid.status.success(), "{}", String::from_utf8_lossy(&invalid.stdout));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("not a valid domain name"));

    // check-config judges the file without the daemon.
    std::fs::write(&paths.config, format!("{good_config}\n[querylog]\ncapacity = 0\n")).unwrap();
    let checked = paths.cli(&["check-config"]);
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains("querylog.capacity"));
    std::fs::write(&paths.config, &good_config).unwrap();
    let checked = paths.json(&["check-config"]);
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["lists"][0]["accepted"], 3);

    // SIGHUP reloads too.
    paths.write_config("null");
    daemon.process.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || is_blocked(&kdig(&topology.client, "ads.example", "A", ""))),
        "SIGHUP did not reload the block mode"
    );

    // log --follow prints queries as they arrive.
    let mut follow = Command::new(workspace_binary("dnsgate"))
        .arg("--socket")
        .arg(&paths.socket)
        .args(["--json", "log", "--follow", "--limit", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start log --follow");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(300));
    kdig(&topology.client, "followed.example", "TXT", "");
    let line = lines.next().expect("log --follow printed a line").unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["name"], "followed.example.");
    assert_eq!(entry["qtype"], "TXT");

    // stats without a daemon on the socket reads the pinned counters.
    let down = Command::new(workspace_binary("dnsgate"))
        .arg("--socket")
        .arg(logs.0.join("absent.sock"))
        .arg("--pin-dir")
        .arg(&paths.pin_dir)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let down: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(down["controller"], "down");
    assert!(counter(&down, "dataplane", "blocked") >= counter(&after, "dataplane", "blocked"));

    assert_eq!(paths.json(&["version"])["version"], env!("CARGO_PKG_VERSION"));

    // stop: the daemon exits cleanly, and then the CLI reports that it is
    // not running.
    assert_eq!(paths.json(&["stop"])["stopped"], true);
    assert!(daemon.wait_exit(), "dnsgate did not exit cleanly after `dnsgate stop`");
    let status = paths.cli(&["status"]);
    assert!(!status.status.success());
    let message = String::from_utf8_lossy(&status.stderr);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains("not running"), "{message}");
}

#[test]
fn custom_block_reaches_kernel_and_persists() {
    if !require_all("custom_block_reaches_kernel_and_persists") {
        return;
    }
    let logs = TempDir::new("dgcust");
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "dnsgate-first");
    assert_eq!(kdig(&topology.client, "custom.example", "A", "").status, "SERVFAIL");

    let before = paths.json(&["stats"]);
    let added = paths.json(&["block", "add", "custom.example"]);
    assert_eq!(added["kernel"], true);
    let added_at = Instant::now();
    // The requirement is one second from `block add` to the kernel answer.
    let blocked = wait_for(Duration::from_secs(1), || is_blocked(&kdig(&topology.client, "sub.custom.example", "A", "")));
    assert!(blocked, "the custom block was not answered within {:?}", added_at.elapsed());
    let after = paths.json(&["stats"]);
    assert!(counter(&after, "dataplane", "blocked") > counter(&before, "dataplane", "blocked"), "the kernel answered");
    assert_eq!(paths.json(&["block", "list"])["rules"], serde_json::json!(["||custom.example^"]));
    assert_eq!(added["changed"], true);
    let again = paths.cli(&["block", "add", "custom.example"]);
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.contains("was already there"), "a second add says so: {again}");
    // A hosts line is accepted too, and covers the exact name only.
    paths.json(&["block", "add", "0.0.0.0", "exact.example"]);
    assert!(is_blocked(&kdig(&topology.client, "exact.example", "A", "")));
    assert_eq!(kdig(&topology.client, "www.exact.example", "A", "").status, "SERVFAIL");
    // A rule that needs user space is rejected with the reason.
    let rejected = paths.cli(&["block", "add", "/^ad[0-9]+\\./"]);
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("user-space"));

    drop(daemon);
    let _daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "dnsgate-second");
    assert!(is_blocked(&kdig(&topology.client, "custom.example", "A", "")), "the rule survives a restart");
    let status = paths.json(&["status"]);
    assert_eq!(status["rules"]["custom_block"], 2);

    let removed = paths.json(&["block", "rm", "custom.example"]);
    assert_eq!(removed["rule"], "||custom.example^");
    assert_eq!(kdig(&topology.client, "custom.example", "A", "").status, "SERVFAIL", "removed from the kernel");
    assert!(
        eventually(Duration::from_secs(5), || paths.json(&["query", "custom.example"])["explanation"]["decision"]["action"] == "no_match"),
        "user space still blocks the removed rule"
    );
    let missing = paths.cli(&["block", "rm", "custom.example"]);
    assert!(!missing.status.success(), "removing a missing rule fails");
}

#[test]
fn admin_socket_rejects_other_users() {
    if !require_all("admin_socket_rejects_other_users") {
        return;
    }
    let logs = TempDir::new("dgperm");
    // Let other users reach the socket's directory, so only the socket's
    // own mode can keep them out.
    std::fs::set_permissions(&logs.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bpffs = BpfFs::mount();
    let topology = Topology::new(&logs.0);
    let paths = Paths::new(&logs.0, &bpffs);
    let _daemon = Daemon::start(&topology.router, &topology.router_if, &paths, "dnsgate");

    let metadata = std::fs::metadata(&paths.socket).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&metadata), 0);

    let binary = workspace_binary("dnsgate");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .arg("--socket")
        .arg(&paths.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(!output.status.success(), "a non-root user must not use the admin socket");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("permission denied"), "{message}");
    // Root still can.
    assert_eq!(paths.json(&["status"])["dataplane"]["attached"], true);
}

/// Fetches /metrics from inside the router namespace, where the endpoint
/// listens on loopback.
fn scrape_metrics(router: &Namespace) -> prometheus_parse::Scrape {
    let output = router
        .command("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "http://127.0.0.1:9153/metrics"])
        .output()
        .expect("run curl");
    assert!(output.status.success(), "scraping failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("the endpoint serves the Prometheus text format")
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == name && label.is_none_or(|(key, value)| sample.labels.get(key) == Some(value)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(value) | prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => value,
        ref other => panic!("{name} is not a plain value: {other:?}"),
    }
}

fn histogram_count(scrape: &prometheus_parse::Scrape, name: &str, transport: &str) -> u64 {
    let sample = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == name && sample.labels.get("transport") == Some(transport))
        .unwrap_or_else(|| panic!("no histogram {name} for {transport}"));
    let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
        panic!("{name} is not a histogram: {:?}", sample.value);
    };
    let infinite = buckets.iter().find(|bucket| bucket.less_than.is_infinite()).expect("a +Inf bucket");
    infinite.count as u64
}
