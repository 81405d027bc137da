//! `cargo xtask bench`: dnsgate measured side by side with the DNS servers
//! users would pick instead, on this machine, in one run.
//!
//! A client namespace and a router namespace are joined by a veth pair.
//! dnsperf (h2load for DoH) in the client namespace offers the same load
//! to each server in turn; every server runs alone in the router namespace with the same
//! block list and the same upstream (dnsmasq on the router's loopback,
//! answering from local data). The XDP program is also timed per packet
//! with `BPF_PROG_TEST_RUN`. The figures go to `benchmarks.json` and the
//! tables to `BENCHMARKS.md`, at the repository root for a full run and
//! under `target/bench-quick/` for `--quick`.

mod lists;
mod load;
mod peers;
mod report;
mod topology;
mod xdp;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Map, Value, json};

use crate::prereq::{ensure_debian, ensure_ebpf_toolchain, output, run_checked};
use lists::{ALLOWED_NAMES, ListFiles, allowed_name, blocked_names, spread, write_list_files, write_query_file};
use load::{Load, Transport};
use peers::{Listeners, Server, Setup};
use topology::{Daemon, Topology};

#[derive(clap::Args)]
pub struct Args {
    /// Smoke run for CI: small lists and short runs, written under
    /// target/bench-quick/; the committed BENCHMARKS.md and benchmarks.json
    /// are not touched.
    #[arg(long)]
    quick: bool,
    /// Install hickory-dns 0.26.3 with `cargo install` (slow) into
    /// target/bench-tools if it is missing, to compare DoQ. A full run
    /// does this unless --no-install-hickory is given.
    #[arg(long)]
    no_install_hickory: bool,
}

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    /// Block-list sizes of the blocked-name comparison.
    service_lists: Vec<usize>,
    /// Offered load of the plain-DNS runs, queries per second.
    plain_qps: u32,
    /// Offered load of the encrypted runs, queries per second.
    encrypted_qps: u32,
    /// Length of each load run, in seconds.
    seconds: u32,
    /// Concurrent sockets or connections per run.
    clients: u32,
    /// List sizes of the memory and start-up comparison.
    memory_lists: Vec<usize>,
    /// Rule counts of the XDP test runs.
    xdp_rules: Vec<usize>,
    /// Repetitions of each XDP test run.
    xdp_repeat: u32,
    /// Names compiled by compile_bench.
    compile_names: usize,
    /// Longest a server may take to start with the largest list.
    startup_timeout: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                service_lists: vec![1_000],
                plain_qps: 20_000,
                encrypted_qps: 5_000,
                seconds: 2,
                clients: 4,
                memory_lists: vec![10_000],
                xdp_rules: vec![1_000],
                xdp_repeat: 100_000,
                compile_names: 10_000,
                startup_timeout: Duration::from_secs(60),
            }
        } else {
            Self {
                quick,
                service_lists: vec![1_000, 300_000],
                plain_qps: 100_000,
                encrypted_qps: 20_000,
                seconds: 10,
                clients: 8,
                memory_lists: vec![100_000, 1_000_000],
                xdp_rules: vec![1_000, 100_000, 1_000_000],
                xdp_repeat: 1_000_000,
                compile_names: 1_000_000,
                startup_timeout: Duration::from_secs(600),
            }
        }
    }
}

/// Tools the benchmark runs, with the Debian packages that provide them.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("taskset", "util-linux"),
    ("kdig", "knot-dnsutils"),
    ("dnsperf", "dnsperf"),
    // DoH load: dnsperf's DoH client loses responses that share a read.
    ("h2load", "nghttp2-client"),
    ("dnsmasq", "dnsmasq-base"),
    ("unbound", "unbound"),
    ("openssl", "openssl"),
    ("strip", "binutils"),
];

pub fn run(args: Args) -> Result<()> {
    ensure!(
        crate::demo::is_root(),
        "the benchmark creates network namespaces and loads XDP programs: run it as root"
    );
    let plan = Plan::new(args.quick);
    ensure_ebpf_toolchain()?;
    ensure_debian(TOOLS)?;
    let mut unavailable: Vec<(Server, String)> = Vec::new();
    if let Err(error) = ensure_debian(&[("dnsdist", "dnsdist")]) {
        unavailable.push((Server::Dnsdist, format!("could not be installed with apt-get: {error:#}")));
    }
    println!("== building dnsgate, xdp-bench, xdp-pass and compile_bench (release)");
    run_checked(Command::new("cargo").args([
        "build", "--release", "--package", "dnsgate", "--package", "dnsgate-tests", "--bins", "--example",
        "compile_bench",
    ]))?;
    let hickory = find_or_install_hickory(&plan, args.no_install_hickory);
    let hickory = match hickory {
        Ok(path) => Some(path),
        Err(reason) => {
            unavailable.push((Server::Hickory, reason));
            None
        }
    };

    let root = std::env::current_dir()?;
    let out_dir = if plan.quick { root.join("target/bench-quick") } else { root.clone() };
    let work = root.join("target/bench-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&out_dir)?;
    let (cert, key) = peers::generate_certificate(&work)?;
    let setup = Setup {
        dnsgate: root.join("target/release/dnsgate"),
        hickory,
        work: work.clone(),
        cert,
        key,
    };

    let mut results = Map::new();
    results.insert("mode".into(), json!(if plan.quick { "quick" } else { "full" }));
    results.insert("generated_by".into(), json!(if plan.quick { "cargo xtask bench --quick" } else { "cargo xtask bench" }));
    results.insert("date".into(), json!(output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).unwrap_or_default().trim()));
    results.insert("machine".into(), machine());
    results.insert("versions".into(), versions(&setup));
    results.insert("conditions".into(), conditions(&plan));

    let peers_here: Vec<Server> = [Server::Dnsmasq, Server::Unbound, Server::Dnsdist]
        .into_iter()
        .filter(|server| !unavailable.iter().any(|(missing, _)| missing == server))
        .collect();

    println!("== XDP program per packet (BPF_PROG_TEST_RUN)");
    let xdp_bench = root.join("target/release/xdp-bench");
    let mut xdp_rows = Vec::new();
    for &rules in &plan.xdp_rules {
        let row = xdp::xdp_run(&xdp_bench, rules, plan.xdp_repeat)?;
        println!("   {rules} rules: {row}");
        xdp_rows.push(row);
    }
    results.insert("xdp".into(), Value::Array(xdp_rows));

    println!("== compiling {} names (compile_bench)", plan.compile_names);
    let compile = xdp::compile_run(&root.join("target/release/examples/compile_bench"), plan.compile_names)?;
    println!("   {compile}");
    results.insert("compile".into(), compile);

    let (unstripped, stripped) = xdp::binary_sizes(&setup.dnsgate, &work)?;
    let mut binary = json!({ "bytes": unstripped, "stripped_bytes": stripped });
    if !plan.quick {
        // The static musl builds that go into the OpenWrt packages; two
        // release builds with LTO, so only the full run makes them.
        println!("== building the static OpenWrt binaries (x86_64, aarch64)");
        let sizes = crate::package::static_binary_sizes(&["x86_64", "aarch64"])?;
        binary["openwrt"] = Value::Array(
            sizes.into_iter().map(|(arch, bytes)| json!({ "arch": arch, "stripped_bytes": bytes })).collect(),
        );
    }
    results.insert("binary".into(), binary);

    let real = lists::real_names()?;
    let topology = Topology::create()?;
    let _client_xdp = start_client_xdp_pass(&topology, &root, &work)?;
    let _upstream = peers::start_upstream(&topology, &setup)?;
    let context = Context { plan: &plan, topology: &topology, setup: &setup };

    let mut service = Vec::new();
    for &size in &plan.service_lists {
        let list = write_list_files(&work, &format!("list{size}"), &blocked_names(&real, size))?;
        let queries = work.join(format!("blocked{size}.queries"));
        write_query_file(&queries, &spread(&blocked_names(&real, size), 10_000))?;
        for server in std::iter::once(Server::Dnsgate).chain(peers_here.iter().copied()) {
            let row = context.measure("blocked", server, &list, &queries, Transport::Udp, Listeners::Plain, false);
            service.push(context.row_or_fail(row, "blocked", server, size, Transport::Udp)?);
        }
    }

    let small = write_list_files(&work, "allowed-list", &blocked_names(&real, plan.service_lists[0]))?;
    let allowed_queries = work.join("allowed.queries");
    let allowed: Vec<String> = (0..ALLOWED_NAMES).map(allowed_name).collect();
    write_query_file(&allowed_queries, &allowed)?;
    for server in std::iter::once(Server::Dnsgate).chain(peers_here.iter().copied()) {
        let row = context.measure("allowed", server, &small, &allowed_queries, Transport::Udp, Listeners::Plain, true);
        service.push(context.row_or_fail(row, "allowed", server, small.names, Transport::Udp)?);
    }

    let encrypted_peers: Vec<Server> =
        peers_here.iter().copied().filter(|server| matches!(server, Server::Unbound | Server::Dnsdist)).collect();
    for transport in [Transport::Dot, Transport::Doh] {
        for server in std::iter::once(Server::Dnsgate).chain(encrypted_peers.iter().copied()) {
            let row = context.measure("allowed", server, &small, &allowed_queries, transport, Listeners::Encrypted, true);
            service.push(context.row_or_fail(row, "allowed", server, small.names, transport)?);
        }
    }
    // hickory-dns is the only other DoQ server here.
    let doq_servers = std::iter::once(Server::Dnsgate).chain(setup.hickory.as_ref().map(|_| Server::Hickory));
    for server in doq_servers {
        let row = context.measure("allowed", server, &small, &allowed_queries, Transport::Doq, Listeners::Encrypted, true);
        service.push(context.row_or_fail(row, "allowed", server, small.names, Transport::Doq)?);
    }
    results.insert("service".into(), Value::Array(service));

    let mut memory = Vec::new();
    for &size in &plan.memory_lists {
        let names = blocked_names(&real, size);
        let list = write_list_files(&work, &format!("memory{size}"), &names)?;
        for server in std::iter::once(Server::Dnsgate).chain(peers_here.iter().copied()) {
            println!("== start-up and memory: {} with {size} names", server.name());
            let row = context.memory_row(server, &list, &names[size / 2]);
            memory.push(match row {
                Ok(row) => row,
                Err(error) if !plan.quick && server != Server::Dnsgate => {
                    println!("   {} failed: {error:#}", server.name());
                    json!({ "server": server.name(), "names": size, "error": format!("{error:#}") })
                }
                Err(error) => return Err(error),
            });
        }
    }
    results.insert("memory".into(), Value::Array(memory));

    results.insert(
        "peers_unavailable".into(),
        Value::Array(
            unavailable.iter().map(|(server, reason)| json!({ "server": server.name(), "reason": reason })).collect(),
        ),
    );
    results.insert("not_measured".into(), json!([]));
    let summary = report::summary(&results);
    results.insert("summary".into(), summary);

    drop(context);
    let results = Value::Object(results);
    let json_path = out_dir.join("benchmarks.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    let markdown_path = out_dir.join("BENCHMARKS.md");
    std::fs::write(&markdown_path, report::markdown(&results))?;
    println!("\n== wrote {} and {}", markdown_path.display(), json_path.display());
    Ok(())
}

/// What every measurement needs.
struct Context<'a> {
    plan: &'a Plan,
    topology: &'a Topology,
    setup: &'a Setup,
}

impl Context<'_> {
    /// Starts `server`, offers the load and stops it. With `warm`, one
    /// pass over the query file first fills the server's cache.
    #[expect(clippy::too_many_arguments, reason = "one call site per scenario, each argument named there")]
    fn measure(
        &self,
        scenario: &str,
        server: Server,
        list: &ListFiles,
        queries: &Path,
        transport: Transport,
        listeners: Listeners,
        warm: bool,
    ) -> Result<Value> {
        println!("== {scenario} names, {} names listed, {} over {}", list.names, server.name(), transport.name());
        let probe = std::fs::read_to_string(&list.domains)?.lines().next().unwrap_or_default().to_owned();
        let (daemon, startup) =
            peers::start(server, self.topology, self.setup, list, &probe, listeners, self.plan.startup_timeout)?;
        let offered_qps = if transport == Transport::Udp { self.plan.plain_qps } else { self.plan.encrypted_qps };
        if warm {
            let warm_up = Load {
                queries,
                transport,
                offered_qps: 5_000,
                seconds: 1,
                clients: self.plan.clients,
                ca: &self.setup.cert,
            };
            load::run(self.topology, &warm_up).context("warm-up run failed")?;
        }
        let load = Load {
            queries,
            transport,
            offered_qps,
            seconds: self.plan.seconds,
            clients: self.plan.clients,
            ca: &self.setup.cert,
        };
        let result = load::run(self.topology, &load);
        daemon.stop();
        let result = result?;
        println!(
            "   {:.0} qps, p50 {:.3} ms, p99 {:.3} ms, loss {:.2}%",
            result.qps,
            result.p50_ms,
            result.p99_ms,
            result.loss_percent()
        );
        let mut row = result.to_json();
        let fields = row.as_object_mut().context("load figures are an object")?;
        fields.insert("startup_seconds".into(), json!(load::round(startup.as_secs_f64(), 3)));
        fields.insert("offered_qps".into(), json!(offered_qps));
        Ok(row)
    }

    /// Labels a measurement; a failed peer is recorded in a full run, but
    /// fails a quick run and any dnsgate run.
    fn row_or_fail(&self, row: Result<Value>, scenario: &str, server: Server, names: usize, transport: Transport) -> Result<Value> {
        let mut row = match row {
            Ok(row) => row,
            Err(error) if !self.plan.quick && server != Server::Dnsgate => {
                println!("   {} failed: {error:#}", server.name());
                json!({ "error": format!("{error:#}") })
            }
            Err(error) => return Err(error.context(format!("{scenario} run of {} failed", server.name()))),
        };
        let fields = row.as_object_mut().context("row is an object")?;
        fields.insert("scenario".into(), json!(scenario));
        fields.insert("server".into(), json!(server.name()));
        fields.insert("list_names".into(), json!(names));
        fields.insert("transport".into(), json!(transport.name()));
        Ok(row)
    }

    /// Start-up time and resident memory of `server` holding `list`.
    fn memory_row(&self, server: Server, list: &ListFiles, probe: &str) -> Result<Value> {
        let (daemon, startup) =
            peers::start(server, self.topology, self.setup, list, probe, Listeners::Plain, self.plan.startup_timeout)?;
        let rss = daemon.rss_bytes()?;
        let mut row = json!({
            "server": server.name(),
            "names": list.names,
            "startup_seconds": load::round(startup.as_secs_f64(), 3),
            "rss_bytes": rss,
        });
        if server == Server::Dnsgate {
            let memlock = daemon.map_memlock_bytes()?;
            row["kernel_bytes"] = json!(memlock);
            row["kernel_bytes_per_rule"] = json!(load::round(memlock as f64 / list.names as f64, 2));
        }
        println!("   {row}");
        daemon.stop();
        Ok(row)
    }
}

/// Attaches the pass-through XDP program to the client's veth end, without
/// which native `XDP_TX` answers are dropped by the veth peer.
fn start_client_xdp_pass(topology: &Topology, root: &Path, work: &Path) -> Result<Daemon> {
    let mut command =
        topology::command_in(&topology.client_ns, peers::CLIENT_CORE, &root.join("target/release/xdp-pass"));
    command.arg(&topology.client_if);
    let mut daemon = Daemon::spawn("xdp-pass", &mut command, work.join("xdp-pass.log"))?;
    daemon.wait_for_log("attached", Duration::from_secs(30))?;
    Ok(daemon)
}

/// hickory-dns from target/bench-tools, installed there by a full run.
fn find_or_install_hickory(plan: &Plan, no_install: bool) -> Result<PathBuf, String> {
    // The directory names the features: a build without the forwarder
    // cannot serve the benchmark.
    let root = PathBuf::from("target/bench-tools/hickory-0.26.3-resolver-quic");
    let binary = root.join("bin/hickory-dns");
    if binary.exists() {
        return std::fs::canonicalize(&binary).map_err(|error| error.to_string());
    }
    if plan.quick || no_install {
        return Err("not installed in target/bench-tools (a full run without --no-install-hickory installs it)".into());
    }
    println!("== installing hickory-dns 0.26.3 with cargo install (slow; cached in target/bench-tools)");
    let status = Command::new("cargo")
        .args(["install", "hickory-dns", "--version", "0.26.3", "--locked", "--no-default-features"])
        .args(["--features", "resolver,tls-ring,https-ring,quic-ring", "--root"])
        .arg(&root)
        .status();
    match status {
        Ok(status) if status.success() => std::fs::canonicalize(&binary).map_err(|error| error.to_string()),
        Ok(status) => Err(format!("cargo install hickory-dns failed with {status}")),
        Err(error) => Err(format!("cargo install could not start: {error}")),
    }
}

fn first_line(command: &mut Command) -> String {
    let output = command.output();
    let Ok(output) = output else { return "not found".into() };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.lines().find(|line| !line.trim().is_empty()).unwrap_or("unknown").trim().to_owned()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "memory_mib": memory_kib / 1024,
        "kernel": first_line(Command::new("uname").args(["-r"])),
        "os": os,
    })
}

fn versions(setup: &Setup) -> Value {
    let hickory = setup
        .hickory
        .as_ref()
        .map(|path| first_line(Command::new(path).arg("--version")))
        .unwrap_or_else(|| "not installed".into());
    json!({
        "dnsgate": first_line(Command::new(&setup.dnsgate).arg("--version")),
        "dnsmasq": first_line(Command::new("dnsmasq").arg("--version")),
        "unbound": first_line(Command::new("unbound").arg("-V")),
        "dnsdist": first_line(Command::new("dnsdist").arg("--version")),
        "hickory-dns": hickory,
        "dnsperf": first_line(Command::new("dnsperf").arg("-h"))
            .split_whitespace().last().map(str::to_owned).unwrap_or_default(),
        "h2load": first_line(Command::new("h2load").arg("--version")),
        "rustc": first_line(Command::new("rustc").arg("--version")),
    })
}

fn conditions(plan: &Plan) -> Value {
    json!({
        "generator": "dnsperf (UDP, DoT), h2load (DoH, GET) and doq-load (DoQ, this repository's QUIC client) \
                      in the client namespace over a veth pair",
        "cores": format!(
            "server under test on core {}, load generator and upstream dnsmasq on core {} (taskset)",
            peers::SERVER_CORE, peers::CLIENT_CORE
        ),
        "plain_offered_qps": plan.plain_qps,
        "encrypted_offered_qps": plan.encrypted_qps,
        "seconds_per_run": plan.seconds,
        "clients_per_run": plan.clients,
        "max_outstanding": 500,
        "query_timeout_seconds": 2,
        "blocked_answer": "A 0.0.0.0 from every server",
        "allowed_names": ALLOWED_NAMES,
        "xdp_test_run_repeat": plan.xdp_repeat,
    })
}
