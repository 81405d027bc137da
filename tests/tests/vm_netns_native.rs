//! The XDP program attached natively to a veth end in a router namespace,
//! checked with nothing but iproute2's `ip` and this workspace's binaries,
//! so the same test runs on the host and in the `cargo xtask vm-test`
//! guest, which has no kdig or dig. The client namespace queries with the
//! `dns-query` helper; the daemon's `status` and `stats` replies, read over
//! its admin socket, must show the native attachment and count the kernel's
//! answers.
//!
//! The test names avoid the text `netns_`: the VM run skips the host's
//! namespace tests (which need kdig) with `--skip netns_`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use dnsgate_tests::{
    netns::{
        dnsgate_json, start_xdp_pass_within, veth_pair, wait_for_daemon, workspace_binary, BpfFs, Namespace, Process,
        TempDir,
    },
    require_root,
};
use serde_json::Value;

const CLIENT_V4: &str = "198.18.11.1";
const ROUTER_V4: &str = "198.18.11.2";
const CLIENT_V6: &str = "fd00:11::1";
const ROUTER_V6: &str = "fd00:11::2";

/// Generous: the guest emulates its CPU (QEMU TCG), where the daemon's
/// start takes several times longer than on the host.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One reply as `dns-query` printed it.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    rcode: String,
    answers: Vec<String>,
}

/// Parses `rcode=NOERROR answers=0.0.0.0,::` (see tests/src/bin/dns-query.rs).
fn parse_reply(line: &str) -> Option<Reply> {
    let mut fields = line.split_whitespace();
    let rcode = fields.next()?.strip_prefix("rcode=")?.to_owned();
    let answers = fields.next()?.strip_prefix("answers=")?;
    let answers = answers.split(',').filter(|answer| !answer.is_empty()).map(str::to_owned).collect();
    Some(Reply { rcode, answers })
}

/// Sends one query from `client` to `server` and returns the reply, or
/// `None` when none came within dns-query's 2 s.
fn query(client: &Namespace, server: &str, name: &str, qtype: &str) -> Option<Reply> {
    let output = client
        .command(workspace_binary("dns-query").to_str().unwrap())
        .args([server, name, qtype])
        .output()
        .expect("run dns-query through ip netns exec");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.code() == Some(2) && stdout.trim() == "timeout" {
        return None;
    }
    assert!(
        output.status.success(),
        "dns-query {server} {name} {qtype} failed with {}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let reply = parse_reply(stdout.trim());
    Some(reply.unwrap_or_else(|| panic!("dns-query printed an unexpected line: {stdout:?}")))
}

/// `dnsgate run` in the router namespace, stopped with SIGTERM on drop.
struct Daemon {
    process: Process,
    pin_dir: PathBuf,
    socket: PathBuf,
    _bpffs: BpfFs,
}

impl Daemon {
    fn start(router: &Namespace, interface: &str, logs: &Path) -> Self {
        // A bpffs of the test's own: `ip netns exec` hides /sys/fs/bpf.
        let bpffs = BpfFs::mount();
        let pin_dir = bpffs.0.join("dnsgate");
        let socket = logs.join("dnsgate.sock");
        let blocklist = logs.join("blocklist.txt");
        std::fs::write(&blocklist, "# vm test list\nblocked.test\nads.example\n").unwrap();
        // Interception is off: its TC program needs the clsact qdisc, which
        // Debian builds as a module (sch_ingress) that the guest does not
        // load. This test is about the XDP program; intercept_test_run
        // checks the interception programs through test runs.
        let config = logs.join("dnsgate.toml");
        std::fs::write(&config, "[intercept]\nenabled = false\n").unwrap();
        let mut command = router.command(workspace_binary("dnsgate").to_str().unwrap());
        command
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .args(["run", "--lan-iface", interface, "--state-dir"])
            .arg(logs.join("state"))
            .arg("--blocklist")
            .arg(&blocklist);
        let mut process = Process::spawn("dnsgate", &mut command, logs);
        wait_for_daemon(&mut process, &logs.join("dnsgate.err"), START_TIMEOUT);
        Self { process, pin_dir, socket, _bpffs: bpffs }
    }

    /// Runs `dnsgate --json SUBCOMMAND` against this daemon's socket and
    /// parses the reply.
    fn json(&self, subcommand: &str) -> Value {
        dnsgate_json(&self.socket, &self.pin_dir, None, &[subcommand])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.process.stop_cleanly(Duration::from_secs(20));
    }
}

fn number(value: &Value, path: &[&str]) -> u64 {
    let mut node = value;
    for key in path {
        node = &node[*key];
    }
    node.as_u64().unwrap_or_else(|| panic!("no number at {} in {value}", path.join(".")))
}

#[test]
fn native_veth_blocks_in_kernel_and_passes_the_rest() {
    if !require_root("native_veth_blocks_in_kernel_and_passes_the_rest") {
        return;
    }
    let logs = TempDir::new("dgvmlog");
    let client = Namespace::new("dgvmc");
    let router = Namespace::new("dgvmr");
    let (client_if, router_if) =
        veth_pair(&client, Some(&format!("{CLIENT_V4}/24")), &router, Some(&format!("{ROUTER_V4}/24")));
    client.ip(&["-6", "addr", "add", &format!("{CLIENT_V6}/64"), "dev", &client_if, "nodad"]);
    router.ip(&["-6", "addr", "add", &format!("{ROUTER_V6}/64"), "dev", &router_if, "nodad"]);
    let _pass = start_xdp_pass_within(&client, &client_if, &logs.0, "xdp-pass", START_TIMEOUT);
    let daemon = Daemon::start(&router, &router_if, &logs.0);

    // The program is on the router's veth end in native mode, not generic.
    let status = daemon.json("status");
    assert_eq!(status["dataplane"]["attached"], true, "{status}");
    assert_eq!(status["dataplane"]["interfaces"][0]["name"], router_if.as_str(), "{status}");
    assert_eq!(status["dataplane"]["interfaces"][0]["mode"], "native", "{status}");

    // Blocked names: the kernel answers with the unspecified address of the
    // asked family, over either IP version.
    let before = daemon.json("stats");
    let blocked = [
        (ROUTER_V4, "blocked.test", "A", "0.0.0.0"),
        (ROUTER_V4, "ADS.example", "AAAA", "::"),
        (ROUTER_V6, "ads.example", "A", "0.0.0.0"),
        (ROUTER_V6, "blocked.test", "AAAA", "::"),
    ];
    for (server, name, qtype, address) in blocked {
        let reply = query(&client, server, name, qtype).unwrap_or_else(|| panic!("no answer to {name} {qtype} from {server}"));
        assert_eq!(reply, Reply { rcode: "NOERROR".into(), answers: vec![address.into()] }, "{name} {qtype} @{server}");
    }
    let after_blocked = daemon.json("stats");
    assert_eq!(
        number(&after_blocked, &["dataplane", "blocked"]) - number(&before, &["dataplane", "blocked"]),
        blocked.len() as u64,
        "kernel blocked counter: before {before}, after {after_blocked}"
    );
    assert_eq!(
        number(&after_blocked, &["resolver", "queries", "udp"]),
        number(&before, &["resolver", "queries", "udp"]),
        "blocked queries must not reach user space: {after_blocked}"
    );

    // An allowed name, and a subdomain of a plain-list entry (which blocks
    // the exact name only), pass the kernel and reach the resolver in user
    // space, which has no upstream and so answers SERVFAIL.
    for name in ["allowed.example", "www.blocked.test"] {
        let reply = query(&client, ROUTER_V4, name, "A").unwrap_or_else(|| panic!("no answer to {name} from user space"));
        assert_eq!(reply, Reply { rcode: "SERVFAIL".into(), answers: Vec::new() }, "{name}: no upstream is configured");
    }
    let after = daemon.json("stats");
    assert_eq!(number(&after, &["dataplane", "blocked"]), number(&after_blocked, &["dataplane", "blocked"]), "{after}");
    assert_eq!(
        number(&after, &["dataplane", "allowed"]) - number(&after_blocked, &["dataplane", "allowed"]),
        2,
        "kernel allowed counter: {after}"
    );
    assert_eq!(
        number(&after, &["resolver", "queries", "udp"]) - number(&after_blocked, &["resolver", "queries", "udp"]),
        2,
        "user-space UDP queries: {after}"
    );
    assert_eq!(number(&after, &["dataplane", "malformed"]), 0, "{after}");
}

#[test]
fn reply_line_parses() {
    let reply = parse_reply("rcode=NOERROR answers=0.0.0.0,::").unwrap();
    assert_eq!(reply.rcode, "NOERROR");
    assert_eq!(reply.answers, ["0.0.0.0", "::"]);
    assert_eq!(parse_reply("rcode=SERVFAIL answers=").unwrap().answers, Vec::<String>::new());
    assert_eq!(parse_reply("timeout"), None);
}
