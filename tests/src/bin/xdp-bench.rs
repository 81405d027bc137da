//! Times the XDP program per packet through `BPF_PROG_TEST_RUN`, for the
//! benchmark harness (`cargo xtask bench`).
//!
//! ```text
//! xdp-bench RULES REPEAT
//! ```
//!
//! Loads the embedded object with a rule set sized for RULES synthetic
//! exact-name block rules, publishes them and prints `key: value` lines:
//! the time to build and to publish the table, the kernel memory the maps
//! are charged (`memlock` in `/proc/self/fdinfo`), and per-packet times.
//!
//! The program rewrites a blocked query into its answer in the test run's
//! buffer, and the kernel reuses that buffer for every repetition, so the
//! blocked A query is timed as the median of single runs (at most
//! 200,000), each including the kernel's clock reads. The allowed query is
//! timed both ways, which shows that overhead; the allowed query and the
//! non-DNS UDP frame are also timed as the kernel's average over REPEAT
//! repetitions. Every verdict is checked, so a program that stops
//! answering cannot report a fast time.

use std::{net::IpAddr, process::ExitCode, time::Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::programs::{TestRun, TestRunOptions};
use dnsgate::dataplane::{Dataplane, LoadOptions, PROGRAM_NAME};
use dnsgate_common::{
    name::name_key,
    rules::{ACTION_BLOCK, ACTION_NONE, ALL_GROUPS, RuleValue},
    table::{RuleTable, buckets_for},
};
use dnsgate_tests::frames::{FrameSpec, dns_query, udp_frame};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TYPE_A: u16 = 1;
/// Cap on the one-run-per-syscall timings of the blocked frame, which cost
/// a syscall each.
const MAX_SINGLE_RUNS: u32 = 200_000;

/// Blocked name number `index`; the harness never needs to resolve it.
fn blocked_name(index: usize) -> String {
    format!("ads{index}.tracker{}.bench-block.test", index % 997)
}

/// Sum of the `memlock` fields of every BPF map this process holds open, in
/// bytes: what the kernel charges for the maps (Linux 4.10 and later).
fn map_memlock_bytes() -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").context("read /proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        if !text.lines().any(|line| line.starts_with("map_type:")) {
            continue;
        }
        let memlock = text
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .context("a map's fdinfo has no memlock line")?;
        total += memlock.trim().parse::<u64>().context("invalid memlock value")?;
    }
    Ok(total)
}

/// Runs `frame` `repeat` times in one test run and returns the kernel's
/// average duration in nanoseconds, after checking the verdict.
///
/// Only for frames the program passes unchanged: the kernel reuses one
/// buffer for every repetition, so an answered frame would be followed by
/// runs over its own answer.
fn time_repeated(dataplane: &Dataplane, frame: &[u8], repeat: u32, expected: u32, what: &str) -> Result<f64> {
    let result = test_run(dataplane, frame, repeat, what)?;
    ensure!(
        result.return_value == expected,
        "the {what} frame got XDP action {}, expected {expected}; kernel counters: {:?}",
        result.return_value,
        dataplane.counters()?
    );
    Ok(result.duration.as_nanos() as f64)
}

/// Runs `frame` once per test run, `runs` times, and returns the median of
/// the kernel-measured durations in nanoseconds. Each figure includes the
/// kernel's two clock reads around the single run.
fn time_single_runs(dataplane: &Dataplane, frame: &[u8], runs: u32, expected: u32, what: &str) -> Result<f64> {
    let mut durations = Vec::with_capacity(runs as usize);
    for _ in 0..runs.max(1) {
        let result = test_run(dataplane, frame, 1, what)?;
        ensure!(
            result.return_value == expected,
            "the {what} frame got XDP action {}, expected {expected}; kernel counters: {:?}",
            result.return_value,
            dataplane.counters()?
        );
        durations.push(result.duration.as_nanos() as u64);
    }
    durations.sort_unstable();
    Ok(durations[durations.len() / 2] as f64)
}

fn test_run(dataplane: &Dataplane, frame: &[u8], repeat: u32, what: &str) -> Result<aya::programs::TestRunResult> {
    let program = dataplane.program(PROGRAM_NAME)?;
    let mut out = vec![0u8; 2048];
    let options = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::default() };
    program.test_run(options).with_context(|| format!("test run of the {what} frame failed"))
}

fn run(rules: usize, repeat: u32) -> Result<()> {
    ensure!(rules > 0, "RULES must be at least 1");

    let started = Instant::now();
    let mut entries = Vec::with_capacity(rules);
    for index in 0..rules {
        let name = blocked_name(index);
        let key = name_key(&name).map_err(|error| anyhow!("invalid name {name}: {error:?}"))?;
        entries.push((key, RuleValue::new(ACTION_BLOCK, ACTION_NONE, ALL_GROUPS)));
    }
    let buckets = buckets_for(rules);
    let table = RuleTable::build(&entries, buckets)
        .map_err(|error| anyhow!("building the rule table failed: {error:?}"))?;
    let build_seconds = started.elapsed().as_secs_f64();

    let mut dataplane = Dataplane::load(&LoadOptions { rule_buckets: buckets, ..LoadOptions::default() })
        .context("load the XDP object")?;
    let client: IpAddr = "198.18.0.1".parse()?;
    let router: IpAddr = "198.18.0.2".parse()?;
    dataplane.set_router_addresses(&[router])?;
    let started = Instant::now();
    dataplane.publish(&table).context("publish the rule table")?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let memlock = map_memlock_bytes()?;

    let dns = FrameSpec { client, router, source_port: 40_000, destination_port: 53, vlan: None };
    let other = FrameSpec { destination_port: 443, ..dns };
    let blocked = udp_frame(&dns, &dns_query(1, &blocked_name(rules / 2), TYPE_A, None));
    let allowed = udp_frame(&dns, &dns_query(2, "www.allowed-name.example", TYPE_A, None));
    let non_dns = udp_frame(&other, &[0x5a; 64]);

    println!("rules: {rules}");
    println!("table_rules: {}", table.rules);
    println!("buckets: {buckets}");
    println!("repeat: {repeat}");
    println!("build_seconds: {build_seconds:.6}");
    println!("publish_seconds: {publish_seconds:.6}");
    println!("map_memlock_bytes: {memlock}");
    let single_runs = repeat.min(MAX_SINGLE_RUNS);
    println!("single_runs: {single_runs}");
    println!("blocked_a_ns: {:.1}", time_single_runs(&dataplane, &blocked, single_runs, XDP_TX, "blocked A")?);
    println!("allowed_single_ns: {:.1}", time_single_runs(&dataplane, &allowed, single_runs, XDP_PASS, "allowed")?);
    println!("allowed_ns: {:.1}", time_repeated(&dataplane, &allowed, repeat, XDP_PASS, "allowed")?);
    println!("non_dns_ns: {:.1}", time_repeated(&dataplane, &non_dns, repeat, XDP_PASS, "non-DNS")?);
    Ok(())
}

fn parse_args() -> Result<(usize, u32)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [rules, repeat] = args.as_slice() else {
        bail!("usage: xdp-bench RULES REPEAT");
    };
    let rules = rules.parse().with_context(|| format!("invalid rule count {rules:?}"))?;
    let repeat = repeat.parse().with_context(|| format!("invalid repeat count {repeat:?}"))?;
    Ok((rules, repeat))
}

fn main() -> ExitCode {
    match parse_args().and_then(|(rules, repeat)| run(rules, repeat)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xdp-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
