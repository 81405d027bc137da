//! `cargo xtask build`: the eBPF object and the release binary.

use std::process::Command;

use anyhow::Result;

use crate::prereq::{ensure_ebpf_toolchain, run_checked};

#[derive(clap::Args)]
pub struct Args {
    /// Build a debug binary instead of a release one.
    #[arg(long)]
    debug: bool,
}

pub fn run_build(release: bool) -> Result<()> {
    ensure_ebpf_toolchain()?;
    let mut command = Command::new("cargo");
    command.args(["build", "--package", "dnsgate"]);
    if release {
        command.arg("--release");
    }
    run_checked(&mut command)?;
    let profile = if release { "release" } else { "debug" };
    eprintln!("xtask: built target/{profile}/dnsgate with the XDP program embedded");
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    run_build(!args.debug)
}
