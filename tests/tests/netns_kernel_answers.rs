//! The XDP program attached natively to veth in network namespaces, with
//! nothing listening on port 53 in the router's namespace: real clients
//! (kdig, dig) must get the kernel's answers, and the counters must match
//! the queries sent.

use std::{path::Path, process::Command, time::Duration};

use dnsgate_tests::{
    netns::{must, start_xdp_pass, veth_pair, wait_for_daemon, workspace_binary, BpfFs, Namespace, Process, TempDir},
    require_root, require_tool,
};

/// A running `dnsgate run` in a router namespace.
struct Router {
    daemon: Process,
    pin_dir: String,
    _bpffs: BpfFs,
    namespace: Namespace,
}

impl Router {
    fn start(namespace: Namespace, interface: &str, blocklist: &Path, logs: &Path) -> Self {
        let bpffs = BpfFs::mount();
        let pin_dir = bpffs.0.join("dnsgate").to_string_lossy().into_owned();
        let mut command = namespace.command(workspace_binary("dnsgate").to_str().unwrap());
        command
            .args(["--pin-dir", &pin_dir, "run", "--lan-iface", interface, "--state-dir"])
            .arg(logs.join("state"))
            .arg("--socket")
            .arg(logs.join("dnsgate.sock"))
            .arg("--blocklist")
            .arg(blocklist);
        let mut daemon = Process::spawn("dnsgate", &mut command, logs);
        wait_for_daemon(&mut daemon, &logs.join("dnsgate.err"), Duration::from_secs(20));
        Self { daemon, pin_dir, _bpffs: bpffs, namespace }
    }

    fn stats(&self) -> serde_json::Value {
        let output = must(
            Command::new(workspace_binary("dnsgate")).args(["--pin-dir", &self.pin_dir, "stats", "--json"]),
        );
        serde_json::from_slice(&output.stdout).expect("stats --json prints JSON")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.daemon.stop_cleanly(Duration::from_secs(10));
        let _ = &self.namespace;
    }
}

fn write_blocklist(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("blocklist.txt");
    std::fs::write(&path, "# test list\nblocked.test\nads.example\ntracker.example\n").unwrap();
    path
}

/// Sends one query and returns the answer lines; empty when there is no
/// answer (the tools then exit non-zero, which is expected here).
fn client_query(client: &Namespace, tool: &str, server: &str, name: &str, qtype: &str) -> String {
    let retry = if tool == "dig" { "+tries=1" } else { "+retry=0" };
    let output = client
        .command(tool)
        .args([&format!("@{server}"), name, qtype, "+short", "+timeout=2", retry])
        .output()
        .unwrap_or_else(|error| panic!("failed to run {tool}: {error}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["dataplane"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

#[test]
fn kdig_and_dig_get_kernel_answers_over_veth() {
    if !require_root("kdig_and_dig_get_kernel_answers_over_veth")
        || !require_tool("kdig", "knot-dnsutils")
        || !require_tool("dig", "bind9-dnsutils")
    {
        return;
    }
    let logs = TempDir::new("dgns");
    let client = Namespace::new("dgc");
    let router = Namespace::new("dgr");
    let (client_if, router_if) = veth_pair(&client, Some("198.18.7.1/24"), &router, Some("198.18.7.2/24"));
    router.ip(&["-6", "addr", "add", "fd00:7::2/64", "dev", &router_if, "nodad"]);
    client.ip(&["-6", "addr", "add", "fd00:7::1/64", "dev", &client_if, "nodad"]);
    let _pass = start_xdp_pass(&client, &client_if, &logs.0, "xdp-pass");
    let router = Router::start(router, &router_if, &write_blocklist(&logs.0), &logs.0);

    let before = router.stats();
    let cases = [
        ("kdig", "198.18.7.2", "blocked.test", "A", "0.0.0.0"),
        ("dig", "198.18.7.2", "www.BLOCKED.test", "A", ""),
        ("kdig", "198.18.7.2", "ads.example", "AAAA", "::"),
        ("dig", "fd00:7::2", "tracker.example", "A", "0.0.0.0"),
        ("kdig", "fd00:7::2", "blocked.test", "AAAA", "::"),
    ];
    for (tool, server, name, qtype, expected) in cases {
        let answer = client_query(&client, tool, server, name, qtype);
        // A plain domain list blocks the exact name only, so the subdomain
        // query goes to user space, where nothing listens: no answer.
        if expected.is_empty() {
            let addresses: Vec<&str> =
                answer.lines().filter(|line| line.parse::<std::net::IpAddr>().is_ok()).collect();
            assert!(addresses.is_empty(), "{tool} {name}: plain lists block exact names only, got {addresses:?}");
        } else {
            assert_eq!(answer, expected, "{tool} @{server} {name} {qtype}");
        }
    }
    let after = router.stats();
    assert_eq!(counter(&after, "blocked") - counter(&before, "blocked"), 4);
    // The subdomain query, refused by the router's stack since nothing
    // listens on port 53 there.
    assert_eq!(counter(&after, "allowed") - counter(&before, "allowed"), 1);
    assert_eq!(counter(&after, "seen") - counter(&before, "seen"), counter(&after, "blocked") - counter(&before, "blocked") + counter(&after, "allowed") - counter(&before, "allowed"));
    assert_eq!(counter(&after, "malformed"), 0);
}

#[test]
fn bridge_ports_both_get_kernel_answers() {
    if !require_root("bridge_ports_both_get_kernel_answers") || !require_tool("kdig", "knot-dnsutils") {
        return;
    }
    let logs = TempDir::new("dgbr");
    let router = Namespace::new("dgr");
    let first = Namespace::new("dgc");
    let second = Namespace::new("dgc");
    let bridge = dnsgate_tests::netns::unique_name("br");
    router.ip(&["link", "add", &bridge, "type", "bridge"]);
    router.ip(&["addr", "add", "198.18.8.254/24", "dev", &bridge]);
    router.ip(&["link", "set", &bridge, "up"]);
    let mut passes = Vec::new();
    for (index, client) in [&first, &second].into_iter().enumerate() {
        let address = format!("198.18.8.{}/24", index + 1);
        let (client_if, router_if) = veth_pair(client, Some(&address), &router, None);
        router.ip(&["link", "set", &router_if, "master", &bridge]);
        passes.push(start_xdp_pass(client, &client_if, &logs.0, &format!("xdp-pass-{index}")));
    }
    let router = Router::start(router, &bridge, &write_blocklist(&logs.0), &logs.0);
    let log = std::fs::read_to_string(logs.0.join("dnsgate.err")).unwrap();
    assert_eq!(log.matches("XDP program attached").count(), 2, "one attachment per bridge port:\n{log}");

    for client in [&first, &second] {
        assert_eq!(client_query(client, "kdig", "198.18.8.254", "blocked.test", "A"), "0.0.0.0");
    }
    assert_eq!(counter(&router.stats(), "blocked"), 2);
}
