//! `cargo xtask demo`: dnsgate answering blocked names from the kernel,
//! shown on one machine with network namespaces and real DNS clients.
//!
//! Topology: a client namespace and a router namespace joined by a veth
//! pair. The router runs `dnsgate run` with the XDP program attached
//! natively to its end; the client asks with kdig and dig. Every step's
//! outcome is checked, and the demo exits non-zero if one fails.

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
const CLIENT_IF: &str = "dgdemo-c0";
const ROUTER_IF: &str = "dgdemo-r0";
const CLIENT_ADDR: &str = "198.18.100.1";
const ROUTER_ADDR: &str = "198.18.100.2";
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
    for namespace in [CLIENT_NS, ROUTER_NS] {
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

fn kdig(namespace: &str, args: &[&str]) -> String {
    output(
        Command::new("ip")
            .args(["netns", "exec", namespace, "kdig", &format!("@{ROUTER_ADDR}"), "+timeout=2", "+retry=0", "+short"])
            .args(args),
    )
    .unwrap_or_default()
    .trim()
    .to_owned()
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
        dnsgate: std::fs::canonicalize("target/release/dnsgate")?,
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
    demo.step("creating the namespaces: dgdemo-client <-> dgdemo-router")?;
    std::fs::create_dir_all(BPFFS)?;
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    run_checked(Command::new("ip").args(["netns", "add", CLIENT_NS]))?;
    run_checked(Command::new("ip").args(["netns", "add", ROUTER_NS]))?;
    run_checked(Command::new("ip").args([
        "link", "add", CLIENT_IF, "netns", CLIENT_NS, "type", "veth", "peer", "name", ROUTER_IF, "netns", ROUTER_NS,
    ]))?;
    ip_netns(CLIENT_NS, &["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", CLIENT_IF])?;
    ip_netns(ROUTER_NS, &["addr", "add", &format!("{ROUTER_ADDR}/24"), "dev", ROUTER_IF])?;
    for (namespace, interface) in [(CLIENT_NS, CLIENT_IF), (ROUTER_NS, ROUTER_IF)] {
        ip_netns(namespace, &["link", "set", "lo", "up"])?;
        ip_netns(namespace, &["link", "set", interface, "up"])?;
    }
    println!("   client {CLIENT_ADDR} on {CLIENT_IF}, router {ROUTER_ADDR} on {ROUTER_IF}");

    demo.step("attaching a pass-through XDP program to the client's veth end")?;
    println!("   (veth delivers a native XDP_TX frame only to a peer running XDP; a real NIC needs no such thing)");
    let xdp_pass = std::fs::canonicalize("target/release/xdp-pass")?;
    let pid = demo.spawn_in(CLIENT_NS, &xdp_pass, &[CLIENT_IF], "xdp-pass.log")?;
    std::fs::write(Path::new(STATE_DIR).join("xdp-pass.pid"), pid.to_string())?;
    wait_for_log(demo, "xdp-pass.log", "attached", Duration::from_secs(30))?;

    demo.step(&format!("starting dnsgate in the router namespace with {}", blocklist.display()))?;
    let dnsgate = demo.dnsgate.clone();
    let blocklist_arg = blocklist.to_string_lossy().into_owned();
    let pid = demo.spawn_in(
        ROUTER_NS,
        &dnsgate,
        &["--pin-dir", PIN_DIR, "run", "--lan-iface", ROUTER_IF, "--state-dir", "target/demo/state", "--blocklist", &blocklist_arg],
        "dnsgate.log",
    )?;
    std::fs::write(Path::new(STATE_DIR).join("dnsgate.pid"), pid.to_string())?;
    let log = wait_for_log(demo, "dnsgate.log", "dnsgate is running", Duration::from_secs(120))?;
    for line in log.lines().filter(|line| line.contains("list loaded") || line.contains("attached")) {
        println!("   {line}");
    }

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
    let blocked = |stats: &serde_json::Value| stats["dataplane"]["blocked"].as_u64().unwrap_or(0);
    println!("   kernel counter 'blocked': {} before, {} after", blocked(&before), blocked(&after));
    demo.expect("the kernel counted both answers", blocked(&after) - blocked(&before) == 2, "counter delta");

    demo.step("dnsgate stats")?;
    let stats = output(Command::new(&demo.dnsgate).args(["--pin-dir", PIN_DIR, "stats"])).unwrap_or_default();
    print!("{stats}");
    let _ = keep;
    Ok(())
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
    println!("   ip netns exec {CLIENT_NS} dig @{ROUTER_ADDR} ads.example.com AAAA");
    println!("   target/release/dnsgate --pin-dir {PIN_DIR} stats");
    println!("   ip netns exec {ROUTER_NS} bpftool net show");
    println!("   cat {STATE_DIR}/dnsgate.log");
    println!("   run `cargo xtask demo` again (or kill the PIDs in {STATE_DIR}/*.pid and delete the namespaces) to clean up");
}
