//! `cargo xtask test`: every test suite, after installing what it needs.
//!
//! The suites run in order and all run even when one fails; the last line
//! counts them, and the command fails if any failed. By default the slow
//! suites run a representative subset (the oldest and newest kernels in
//! QEMU, a quick benchmark); `--full` runs them whole, which with the full
//! benchmark rewrites BENCHMARKS.md and benchmarks.json.

use std::process::Command;

use anyhow::{bail, Result};

use crate::prereq::{ensure_bpffs, ensure_debian, ensure_ebpf_toolchain, ensure_python, run_checked, NAMESPACE_TOOLS};

#[derive(clap::Args)]
pub struct Args {
    /// Run the slow suites in full (every VM kernel, the full benchmark)
    /// instead of the representative subset.
    #[arg(long)]
    full: bool,
    /// Run only the cargo test suites (unit, property, test-run and
    /// namespace tests).
    #[arg(long)]
    cargo_only: bool,
    /// Arguments passed to `cargo test` after `--`, e.g. a test name filter.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// The largest real list the demo suite loads, relative to the repository:
/// the shared test data lives beside it.
const LARGEST_LIST: &str = "../shared/data/blocklists/adblock_hagezi-pro_2026-03-08.txt";

pub fn run(args: Args) -> Result<()> {
    ensure_ebpf_toolchain()?;
    ensure_debian(NAMESPACE_TOOLS)?;
    ensure_python(&[("dns", "dnspython[doh,doq]"), ("aioquic", "aioquic"), ("httpx", "httpx"), ("h2", "httpx[http2]")])?;
    ensure_bpffs()?;

    // The namespace tests start these binaries as separate processes.
    run_checked(Command::new("cargo").args(["build", "--package", "dnsgate", "--package", "dnsgate-tests", "--bins"]))?;

    let mut suites: Vec<(&str, Command)> = Vec::new();
    let mut cargo_test = Command::new("cargo");
    cargo_test
        .args(["test", "--package", "dnsgate-common", "--package", "dnsgate", "--package", "dnsgate-tests"])
        .args(["--package", "xtask", "--features", "dnsgate-common/user", "--no-fail-fast"])
        .arg("--")
        .args(&args.cargo_args);
    suites.push(("cargo test", cargo_test));

    if !args.cargo_only {
        let mut vm = Command::new("cargo");
        vm.args(["xtask", "vm-test", "--broken-verifier", "--payload", "dataplane"]);
        if !args.full {
            vm.arg("--ci");
        }
        // The guest has no kdig or dig, so the namespace tests with real
        // clients run on the host only.
        vm.args(["--", "--skip", "netns_"]);
        suites.push(("vm-test", vm));

        let mut demo = Command::new("cargo");
        demo.args(["xtask", "demo"]);
        if std::path::Path::new(LARGEST_LIST).exists() {
            demo.args(["--blocklist", LARGEST_LIST]);
            suites.push(("demo with the largest real list", demo));
        } else {
            eprintln!("xtask: {LARGEST_LIST} not found; the demo runs on its own small list");
            suites.push(("demo", demo));
        }

        let mut bench = Command::new("cargo");
        bench.args(["xtask", "bench"]);
        if !args.full {
            bench.arg("--quick");
        }
        suites.push(("benchmark", bench));
    }

    let mut failed = Vec::new();
    let total = suites.len();
    for (name, mut command) in suites {
        eprintln!("\nxtask: running {name}");
        if let Err(error) = run_checked(&mut command) {
            eprintln!("xtask: {name} failed: {error:#}");
            failed.push(name);
        }
    }
    println!("suites: {} passed, {} failed", total - failed.len(), failed.len());
    if !failed.is_empty() {
        bail!("failed suites: {}", failed.join(", "));
    }
    Ok(())
}
