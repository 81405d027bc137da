//! Checking for and installing what the build, the tests and the demo need.
//!
//! Every install says what it installs and why before it runs, so a fresh
//! machine needs nothing but this repository and a Rust toolchain.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The bpf-linker version that reads the nightly's LLVM bitcode.
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// Runs a command, failing with its name if it cannot start or exits
/// non-zero.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output, or `None` if it could
/// not run or failed.
pub fn output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs nightly's rust-src and bpf-linker if they are missing.
pub fn ensure_ebpf_toolchain() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        bail!(
            "the eBPF program needs a nightly Rust toolchain and none is installed; \
             install one with `rustup toolchain install nightly --component rust-src`"
        );
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
            .unwrap_or_default();
    if !components.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("xtask: installing the nightly rust-src component (needed for -Z build-std=core)");
        run_checked(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} with cargo install (links the eBPF object)");
        run_checked(Command::new("cargo").args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"]))?;
    }
    Ok(())
}

/// Installs Debian packages whose tools are missing. `tools` pairs a
/// program to look for with the package that provides it.
pub fn ensure_debian(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages with apt-get: {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-qq"]))?;
    // Daemons such as unbound must not start as services on this machine:
    // the tests run their own copies with local data only. A policy-rc.d
    // that exits 101 tells the packages' scripts not to start anything.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let placed_policy = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if placed_policy {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let result = run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if placed_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// Installs PyPI packages whose modules cannot be imported.
pub fn ensure_python(modules: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = modules
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .status()
                .is_ok_and(|status| status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Python packages with pip: {}", missing.join(" "));
    run_checked(Command::new("python3").args(["-m", "pip", "install", "--quiet"]).args(&missing))
}

/// Mounts bpffs on /sys/fs/bpf if it is not mounted yet; pinned maps live
/// there.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|line| line.split_whitespace().nth(1) == Some("/sys/fs/bpf")) {
        return Ok(());
    }
    eprintln!("xtask: mounting bpffs on /sys/fs/bpf");
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// True if `tool` is an executable on PATH (or an absolute path).
pub fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// The tools the namespace tests and the demo run, with their packages.
pub const NAMESPACE_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("kdig", "knot-dnsutils"),
    ("dig", "bind9-dnsutils"),
    ("bpftool", "bpftool"),
    ("unbound", "unbound"),
    ("openssl", "openssl"),
    ("tcpdump", "tcpdump"),
];

/// Tools the cargo test suites run beyond [`NAMESPACE_TOOLS`]: dnsmasq as
/// the resolver of the interception tests, and Debian's static busybox as
/// the shell of the fake OpenWrt root in the package tests.
pub const TEST_TOOLS: &[(&str, &str)] = &[("dnsmasq", "dnsmasq-base"), ("/bin/busybox", "busybox-static")];
