//! `cargo xtask test`: every test suite, after installing what it needs.
//!
//! The suites run in order and all run even when one fails; the last line
//! counts them, and the command fails if any failed. By default the slow
//! suites run a representative subset (the oldest and newest kernels in
//! QEMU, a quick benchmark); `--full` runs them whole, which with the full
//! benchmark rewrites BENCHMARKS.md and benchmarks.json.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};

use crate::prereq::{
    NAMESPACE_TOOLS, TEST_TOOLS, ensure_bpffs, ensure_debian, ensure_ebpf_toolchain, ensure_python, run_checked,
};

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
    ensure_debian(TEST_TOOLS)?;
    ensure_python(&[
        ("dns", "dnspython[doh,doq]"),
        ("aioquic", "aioquic"),
        ("httpx", "httpx"),
        ("h2", "httpx[http2]"),
    ])?;
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
        match run_recording_failures(&mut command) {
            Ok(()) => {}
            Err((error, lines)) => {
                eprintln!("xtask: {name} failed: {error:#}");
                failed.push((name, error, lines));
            }
        }
    }
    // The end of a CI log is what gets read first, so every failure is
    // repeated here with the lines of its suite's output that explain it.
    for (name, error, lines) in &failed {
        println!("\n==== {name} failed: {error:#}");
        for line in lines {
            println!("  {line}");
        }
    }
    println!("suites: {} passed, {} failed", total - failed.len(), failed.len());
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(name, _, _)| *name).collect();
        bail!("failed suites: {}", names.join(", "));
    }
    Ok(())
}

/// Most failure lines kept per suite for the closing summary.
const FAILURE_LINES_KEPT: usize = 60;

/// Runs `command`, passing its output through as it comes, and on failure
/// returns the error with the output lines that name failures.
fn run_recording_failures(command: &mut Command) -> Result<(), (anyhow::Error, Vec<String>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| (anyhow::anyhow!("failed to start {command:?}: {error}"), Vec::new()))?;
    let kept = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let forwarders = [
        spawn_forwarder(Box::new(stdout), false, Arc::clone(&kept)),
        spawn_forwarder(Box::new(stderr), true, Arc::clone(&kept)),
    ];

    let status = child.wait();
    for forwarder in forwarders {
        let _ = forwarder.join();
    }
    let lines = std::mem::take(&mut *kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err((anyhow::anyhow!("{command:?} failed with {status}"), lines)),
        Err(error) => Err((anyhow::anyhow!("waiting for {command:?} failed: {error}"), lines)),
    }
}

/// Copies `stream` line by line to this process's stdout or stderr and
/// keeps the lines that name failures in `kept`.
fn spawn_forwarder(
    stream: Box<dyn std::io::Read + Send>,
    to_stderr: bool,
    kept: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if to_stderr {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            if names_failure(&line) {
                let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if kept.len() < FAILURE_LINES_KEPT {
                    kept.push(line);
                }
            }
        }
    })
}

/// Whether an output line of a suite says what failed: a failed test or
/// target, a panic message, a VM kernel's verdict, an xtask error.
fn names_failure(line: &str) -> bool {
    let line = line.trim_start();
    line.contains("panicked at")
        || line.starts_with("FAIL ")
        || line.starts_with("test result: FAILED")
        || (line.starts_with("test ") && line.ends_with(" ... FAILED"))
        || line.starts_with("error: ")
        || line.starts_with("xtask: error")
        || line.starts_with("FAILED: ")
        || line.starts_with("skipped: ")
}

#[cfg(test)]
mod tests {
    use super::names_failure;

    #[test]
    fn failure_lines_are_recognised() {
        for line in [
            "thread 'x' (12) panicked at tests/tests/a.rs:3:5:",
            "test intercept::blocks ... FAILED",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored",
            "error: 1 target failed:",
            "FAIL x86_64 6.12.95: payload xdp_test_run failed",
            "xtask: error: failed suites: demo",
        ] {
            assert!(names_failure(line), "{line}");
        }
        for line in ["test intercept::blocks ... ok", "test result: ok. 3 passed", "PASS x86_64 5.10"] {
            assert!(!names_failure(line), "{line}");
        }
    }
}
