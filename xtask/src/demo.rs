//! `cargo xtask demo`: the whole product on one machine, with network
//! namespaces and real DNS clients.
//!
//! Topology: client <-> router <-> upstream, each a namespace joined by veth
//! pairs. The upstream runs unbound from Debian with a small demo zone,
//! served over DoT (the machine has no internet, so the demo brings its own
//! upstream). The router runs `dnsgate run` with the XDP program attached
//! natively to its LAN end and forwards over DoT. The client asks with kdig,
//! dig and dnspython. Every step's outcome is checked, and the demo exits
//! non-zero if one fails.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::prereq::{ensure_debian, ensure_ebpf_toolchain, output, run_checked, NAMESPACE_TOOLS};

const CLIENT_NS: &str = "dgdemo-client";
const ROUTER_NS: &str = "dgdemo-router";
const UPSTREAM_NS: &str = "dgdemo-upstream";
const CLIENT_IF: &str = "dgdemo-c0";
const ROUTER_IF: &str = "dgdemo-r0";
const ROUTER_WAN_IF: &str = "dgdemo-r1";
const UPSTREAM_IF: &str = "dgdemo-u0";
const CLIENT_ADDR: &str = "198.18.100.1";
const ROUTER_ADDR: &str = "198.18.100.2";
const ROUTER_WAN_ADDR: &str = "198.18.101.1";
const UPSTREAM_ADDR: &str = "198.18.101.2";
/// Name and address of the allowed demo record the upstream serves.
const ALLOWED_NAME: &str = "www.demo.test";
const ALLOWED_ADDR: &str = "192.0.2.80";
/// A name whose CNAME points at a name of the demo block list.
const CLOAKED_NAME: &str = "metrics.demo.test";
const CLOAK_TARGET: &str = "tracker.example.net";
/// A bpffs of the demo's own: `ip netns exec` hides the host's
/// /sys/fs/bpf from the daemon, and `dnsgate stats` outside must see the
/// daemon's pins.
const BPFFS: &str = "/run/dnsgate-demo-bpf";
const PIN_DIR: &str = "/run/dnsgate-demo-bpf/dnsgate";
const STATE_DIR: &str = "target/demo";

#[derive(clap::Args)]
pub struct Args {
    /// Block list to load (any supported format). Defaults to the small
    /// list in demo/blocklist.txt.
    #[arg(long, value_name = "PATH")]
    blocklist: Option<PathBuf>,
    /// Leave the topology running and print how to explore it.
    #[arg(long)]
    keep: bool,
}

/// Removes what a previous or interrupted run left behind. Safe to call
/// when nothing is there.
fn clean_up() {
    kill_from_pid_file(&Path::new(STATE_DIR).join("dnsgate.pid"));
    kill_from_pid_file(&Path::new(STATE_DIR).join("xdp-pass.pid"));
    kill_from_pid_file(&Path::new(STATE_DIR).join("unbound.pid"));
    for namespace in [CLIENT_NS, ROUTER_NS, UPSTREAM_NS] {
        let _ = Command::new("ip").args(["netns", "del", namespace]).stderr(Stdio::null()).status();
    }
    let _ = Command::new("umount").arg(BPFFS).stderr(Stdio::null()).status();
    let _ = std::fs::remove_dir(BPFFS);
}

fn kill_from_pid_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        let _ = Command::new("kill").arg(pid.to_string()).stderr(Stdio::null()).status();
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = std::fs::remove_file(path);
}

struct Demo {
    interrupted: Arc<AtomicBool>,
    children: Vec<Child>,
    dnsgate: PathBuf,
    failures: Vec<String>,
}

impl Demo {
    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    fn step(&mut self, title: &str) -> Result<()> {
        self.check_interrupted()?;
        println!("\n== {title}");
        Ok(())
    }

    fn expect(&mut self, what: &str, ok: bool, detail: &str) {
        if ok {
            println!("   ok: {what}");
        } else {
            println!("   FAILED: {what} ({detail})");
            self.failures.push(format!("{what}: {detail}"));
        }
    }

    fn spawn_in(&mut self, namespace: &str, program: &Path, args: &[&str], log: &str) -> Result<u32> {
        let log_path = Path::new(STATE_DIR).join(log);
        let log_file = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    fn stats(&self) -> Result<serde_json::Value> {
        let text = output(Command::new(&self.dnsgate).args(["--pin-dir", PIN_DIR, "stats", "--json"]))
            .context("dnsgate stats failed")?;
        serde_json::from_str(&text).context("dnsgate stats --json did not print JSON")
    }
}

fn ip_netns(namespace: &str, args: &[&str]) -> Result<()> {
    run_checked(Command::new("ip").args(["-n", namespace]).args(args))
}

/// The first name in a list that is blocked exactly as written: a plain
/// domain, a hosts entry or an adblock `||name^` rule.
fn first_blocked_name(list: &Path) -> Result<String> {
    let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        let candidate = if first.parse::<std::net::IpAddr>().is_ok() {
            match fields.next() {
                Some(name) => name,
                None => continue,
            }
        } else {
            first.strip_prefix("||").and_then(|rest| rest.strip_suffix('^')).unwrap_or(first)
        };
        let valid = candidate.contains('.')
            && !matches!(candidate, "localhost" | "localhost.localdomain" | "broadcasthost" | "0.0.0.0")
            && candidate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        if valid {
            return Ok(candidate.to_ascii_lowercase());
        }
    }
    bail!("no plainly blocked name found in {}", list.display())
}

/// The absolute path of a binary that `cargo build --release` just built,
/// in `CARGO_TARGET_DIR` when that is set.
fn release_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let path = target.join("release").join(name);
    std::fs::canonicalize(&path).with_context(|| format!("the release build left no {}", path.display()))
}

fn kdig(namespace: &str, args: &[&str]) -> String {
    let result = Command::new("ip")
        .args(["netns", "exec", namespace, "kdig", &format!("@{ROUTER_ADDR}"), "+timeout=2", "+retry=0", "+short"])
        .args(args)
        .output();
    let Ok(result) = result else {
        return String::new();
    };
    let answer = String::from_utf8_lossy(&result.stdout).trim().to_owned();
    // An empty answer fails the step; kdig's own messages say why.
    if answer.is_empty() {
        for line in String::from_utf8_lossy(&result.stderr).lines().take(6) {
            println!("      kdig: {line}");
        }
        if !result.status.success() {
            println!("      kdig exited with {}", result.status);
        }
    }
    answer
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        is_root(),
        "the demo creates network namespaces and loads an XDP program: run it as root"
    );
    ensure_ebpf_toolchain()?;
    ensure_debian(NAMESPACE_TOOLS)?;
    println!("== building dnsgate (release) and the xdp-pass test helper");
    run_checked(Command::new("cargo").args(["build", "--release", "--package", "dnsgate", "--package", "dnsgate-tests", "--bins"]))?;

    let blocklist = args.blocklist.clone().unwrap_or_else(|| PathBuf::from("demo/blocklist.txt"));
    let blocklist = std::fs::canonicalize(&blocklist).with_context(|| format!("block list {} not found", blocklist.display()))?;
    let blocked_name = first_blocked_name(&blocklist)?;

    clean_up();
    std::fs::create_dir_all(STATE_DIR)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let mut demo = Demo {
        interrupted,
        children: Vec::new(),
        dnsgate: release_binary("dnsgate")?,
        failures: Vec::new(),
    };
    let result = run_steps(&mut demo, &blocklist, &blocked_name, args.keep);
    if args.keep && result.is_ok() && demo.failures.is_empty() {
        // The children keep running; their PIDs are in target/demo.
        std::mem::forget(std::mem::take(&mut demo.children));
        print_keep_help();
        return Ok(());
    }
    println!("\n== tearing down");
    for mut child in demo.children.drain(..) {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    clean_up();
    result?;
    if !demo.failures.is_empty() {
        bail!("{} demo check(s) failed:\n  {}", demo.failures.len(), demo.failures.join("\n  "));
    }
    println!("\nAll demo checks passed.");
    Ok(())
}

/// True if this process runs as root: `/proc/self` belongs to the
/// effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn run_steps(demo: &mut Demo, blocklist: &Path, blocked_name: &str, keep: bool) -> Result<()> {
    demo.step("creating the namespaces: client <-> router <-> upstream")?;
    std::fs::create_dir_all(BPFFS)?;
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    for namespace in [CLIENT_NS, ROUTER_NS, UPSTREAM_NS] {
        run_checked(Command::new("ip").args(["netns", "add", namespace]))?;
        ip_netns(namespace, &["link", "set", "lo", "up"])?;
    }
    for (left_ns, left_if, left_addr, right_ns, right_if, right_addr) in [
        (CLIENT_NS, CLIENT_IF, CLIENT_ADDR, ROUTER_NS, ROUTER_IF, ROUTER_ADDR),
        (ROUTER_NS, ROUTER_WAN_IF, ROUTER_WAN_ADDR, UPSTREAM_NS, UPSTREAM_IF, UPSTREAM_ADDR),
    ] {
        run_checked(Command::new("ip").args([
            "link", "add", left_if, "netns", left_ns, "type", "veth", "peer", "name", right_if, "netns", right_ns,
        ]))?;
        ip_netns(left_ns, &["addr", "add", &format!("{left_addr}/24"), "dev", left_if])?;
        ip_netns(right_ns, &["addr", "add", &format!("{right_addr}/24"), "dev", right_if])?;
        ip_netns(left_ns, &["link", "set", left_if, "up"])?;
        ip_netns(right_ns, &["link", "set", right_if, "up"])?;
    }
    println!("   client {CLIENT_ADDR} -- {ROUTER_ADDR} router {ROUTER_WAN_ADDR} -- {UPSTREAM_ADDR} upstream");

    demo.step("starting the upstream: unbound with the demo zone over DoT")?;
    start_upstream(demo)?;
    println!("   unbound serves demo.test. on {UPSTREAM_ADDR} port 53 and DoT port 853, nothing else");

    demo.step("attaching a pass-through XDP program to the client's veth end")?;
    println!("   (veth delivers a native XDP_TX frame only to a peer running XDP; a real NIC needs no such thing)");
    let xdp_pass = release_binary("xdp-pass")?;
    let pid = demo.spawn_in(CLIENT_NS, &xdp_pass, &[CLIENT_IF], "xdp-pass.log")?;
    std::fs::write(Path::new(STATE_DIR).join("xdp-pass.pid"), pid.to_string())?;
    wait_for_log(demo, "xdp-pass.log", "attached", Duration::from_secs(30))?;

    demo.step(&format!("starting dnsgate in the router namespace with {}", blocklist.display()))?;
    let config_path = write_router_config(blocklist)?;
    let dnsgate = demo.dnsgate.clone();
    let config_arg = config_path.to_string_lossy().into_owned();
    let pid = demo.spawn_in(ROUTER_NS, &dnsgate, &["--pin-dir", PIN_DIR, "run", "--config", &config_arg], "dnsgate.log")?;
    std::fs::write(Path::new(STATE_DIR).join("dnsgate.pid"), pid.to_string())?;
    let log = wait_for_log(demo, "dnsgate.log", "dnsgate is running", Duration::from_secs(300))?;
    for line in log.lines().filter(|line| line.contains("list loaded") || line.contains("attached")) {
        println!("   {line}");
    }
    println!("   configuration: {}", config_path.display());

    demo.step(&format!("a blocked name, {blocked_name}, answered by the kernel"))?;
    let before = demo.stats()?;
    let answer = kdig(CLIENT_NS, &[blocked_name, "A"]);
    println!("   kdig @{ROUTER_ADDR} {blocked_name} A  ->  {answer:?}");
    demo.expect("the blocked A query gets 0.0.0.0", answer == "0.0.0.0", &answer);
    let answer = output(
        Command::new("ip")
            .args(["netns", "exec", CLIENT_NS, "dig", &format!("@{ROUTER_ADDR}"), blocked_name, "AAAA", "+short"])
            .args(["+timeout=2", "+tries=1"]),
    )
    .unwrap_or_default();
    println!("   dig  @{ROUTER_ADDR} {blocked_name} AAAA  ->  {:?}", answer.trim());
    demo.expect("the blocked AAAA query gets ::", answer.trim() == "::", answer.trim());
    let after = demo.stats()?;
    let counter = |stats: &serde_json::Value, name: &str| stats["dataplane"][name].as_u64().unwrap_or(0);
    println!(
        "   kernel counter 'blocked': {} before, {} after",
        counter(&before, "blocked"),
        counter(&after, "blocked")
    );
    demo.expect(
        "the kernel counted both answers",
        counter(&after, "blocked") - counter(&before, "blocked") == 2,
        "counter delta",
    );

    demo.step(&format!("an allowed name, {ALLOWED_NAME}, resolved through the encrypted upstream"))?;
    let before = demo.stats()?;
    let answer = kdig(CLIENT_NS, &[ALLOWED_NAME, "A"]);
    println!("   kdig @{ROUTER_ADDR} {ALLOWED_NAME} A  ->  {answer:?}");
    demo.expect("the allowed name resolves", answer == ALLOWED_ADDR, &answer);
    let after = demo.stats()?;
    demo.expect(
        "the kernel passed it on to user space",
        counter(&after, "allowed") > counter(&before, "allowed"),
        "allowed counter did not move",
    );
    let upstream_log = std::fs::read_to_string(Path::new(STATE_DIR).join("upstream/unbound.log")).unwrap_or_default();
    demo.expect(
        "the upstream saw the query",
        upstream_log.contains(&format!("{ALLOWED_NAME}. A IN")),
        "not in unbound's query log",
    );

    demo.step("the same name over DoT, DoQ and DoH from the client")?;
    let ca = std::fs::canonicalize(Path::new(STATE_DIR).join("state/tls/cert.pem"))?;
    let ca_arg = format!("+tls-ca={}", ca.display());
    for (label, transport) in [("DoT", "+tls"), ("DoQ", "+quic"), ("DoH", "+https")] {
        // A later +timeout overrides kdig's default: a TLS or QUIC handshake
        // on a loaded two-core machine can take longer than two seconds.
        // +tls-ca goes first: kdig 3.2.6 crashes on `+quic +tls-ca=FILE`.
        let answer = kdig(CLIENT_NS, &[&ca_arg, transport, "+timeout=5", ALLOWED_NAME, "A"]);
        println!("   kdig {transport} @{ROUTER_ADDR} {ALLOWED_NAME}  ->  {answer:?}");
        demo.expect(&format!("{label} answers with the upstream's address"), answer == ALLOWED_ADDR, &answer);
    }
    let answer = kdig(CLIENT_NS, &["+tls", &ca_arg, blocked_name, "A"]);
    println!("   kdig +tls @{ROUTER_ADDR} {blocked_name}  ->  {answer:?}");
    demo.expect("DoT gets the same blocked answer from user space", answer == "0.0.0.0", &answer);

    demo.step(&format!("a CNAME-cloaked name: {CLOAKED_NAME} is a CNAME for the blocked {CLOAK_TARGET}"))?;
    let answer = kdig(CLIENT_NS, &[CLOAKED_NAME, "A"]);
    println!("   kdig @{ROUTER_ADDR} {CLOAKED_NAME} A  ->  {answer:?}");
    demo.expect("the cloaked name is blocked", answer == "0.0.0.0", &answer);

    demo.step("DDR: the client discovers the router's encrypted endpoints")?;
    let answer = kdig(CLIENT_NS, &["-t", "SVCB", "_dns.resolver.arpa"]);
    for line in answer.lines() {
        println!("   {line}");
    }
    demo.expect("_dns.resolver.arpa has SVCB records", answer.lines().any(|line| line.contains("alpn")), &answer);

    demo.step("dnsgate stats")?;
    let stats = output(Command::new(&demo.dnsgate).args(["--pin-dir", PIN_DIR, "stats"])).unwrap_or_default();
    print!("{stats}");
    let _ = keep;
    Ok(())
}

/// Writes the demo zone's unbound configuration and a certificate made with
/// openssl, then starts unbound in the upstream namespace.
fn start_upstream(demo: &mut Demo) -> Result<()> {
    let dir = std::fs::canonicalize(STATE_DIR)?.join("upstream");
    std::fs::create_dir_all(&dir)?;
    run_checked(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .args(["-subj", "/CN=upstream.demo.test"])
            .args(["-addext", &format!("subjectAltName=DNS:upstream.demo.test,IP:{UPSTREAM_ADDR}")])
            // OpenSSL 3 marks a self-signed certificate as a CA by default,
            // and webpki rejects a CA certificate as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .stderr(Stdio::null()),
    )?;
    let d = dir.display();
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
    interface: {UPSTREAM_ADDR}@53
    interface: {UPSTREAM_ADDR}@853
    tls-port: 853
    tls-service-key: "{d}/key.pem"
    tls-service-pem: "{d}/cert.pem"
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: yes
    module-config: "iterator"
    local-zone: "." refuse
    local-zone: "demo.test." static
    local-data: "{ALLOWED_NAME}. 300 IN A {ALLOWED_ADDR}"
    local-data: "{CLOAKED_NAME}. 300 IN CNAME {CLOAK_TARGET}."
    local-data: "upstream.demo.test. 300 IN A {UPSTREAM_ADDR}"
remote-control:
    control-enable: no
"#
    );
    let config_path = dir.join("unbound.conf");
    std::fs::write(&config_path, config)?;
    let unbound = PathBuf::from("/usr/sbin/unbound");
    let config_arg = config_path.to_string_lossy().into_owned();
    let pid = demo.spawn_in(UPSTREAM_NS, &unbound, &["-d", "-c", &config_arg], "unbound.out")?;
    std::fs::write(Path::new(STATE_DIR).join("unbound.pid"), pid.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        demo.check_interrupted()?;
        let answer = output(
            Command::new("ip")
                .args(["netns", "exec", ROUTER_NS, "kdig", &format!("@{UPSTREAM_ADDR}"), "+short", "+timeout=1"])
                .args(["+retry=0", ALLOWED_NAME]),
        )
        .unwrap_or_default();
        if answer.trim() == ALLOWED_ADDR {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(Path::new(STATE_DIR).join("unbound.out")).unwrap_or_default();
            bail!("unbound did not start in the upstream namespace:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The router's configuration: the LAN port, the list, a one-line list
/// with the cloaking target (so the CNAME step works with any list), and
/// the upstream over DoT with the demo CA.
fn write_router_config(blocklist: &Path) -> Result<PathBuf> {
    let dir = std::fs::canonicalize(STATE_DIR)?;
    let cloak_list = dir.join("cloak-target.txt");
    std::fs::write(&cloak_list, format!("{CLOAK_TARGET}\n"))?;
    let text = format!(
        r#"state_dir = "{state}"

[dataplane]
lan_interfaces = ["{ROUTER_IF}"]

[[lists]]
location = "{list}"

[[lists]]
location = "{cloak_list}"

[[resolver.upstreams]]
url = "tls://{UPSTREAM_ADDR}:853"
tls_name = "upstream.demo.test"
ca_file = "{ca}"
"#,
        state = dir.join("state").display(),
        list = blocklist.display(),
        cloak_list = cloak_list.display(),
        ca = dir.join("upstream/cert.pem").display(),
    );
    let path = dir.join("dnsgate.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Waits until a child's log contains `marker`; fails early if a child
/// exits. Returns the log.
fn wait_for_log(demo: &mut Demo, log: &str, marker: &str, timeout: Duration) -> Result<String> {
    let path = Path::new(STATE_DIR).join(log);
    let deadline = Instant::now() + timeout;
    loop {
        demo.check_interrupted()?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(marker) {
            return Ok(text);
        }
        let exited = demo.children.iter_mut().any(|child| child.try_wait().ok().flatten().is_some());
        if exited || Instant::now() > deadline {
            bail!("waiting for {marker:?} in {} failed; the log:\n{text}", path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_keep_help() {
    println!("\n== the topology keeps running; explore it with:");
    println!("   ip netns exec {CLIENT_NS} kdig @{ROUTER_ADDR} doubleclick.net");
    println!("   ip netns exec {CLIENT_NS} kdig +tls @{ROUTER_ADDR} {ALLOWED_NAME}");
    println!("   ip netns exec {CLIENT_NS} kdig -t SVCB @{ROUTER_ADDR} _dns.resolver.arpa");
    println!("   ip netns exec {CLIENT_NS} dig @{ROUTER_ADDR} ads.example.com AAAA");
    println!("   target/release/dnsgate --pin-dir {PIN_DIR} stats");
    println!("   ip netns exec {ROUTER_NS} bpftool net show");
    println!("   cat {STATE_DIR}/dnsgate.log");
    println!("   run `cargo xtask demo` again (or kill the PIDs in {STATE_DIR}/*.pid and delete the namespaces) to clean up");
}
