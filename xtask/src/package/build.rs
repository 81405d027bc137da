//! Static musl builds of `dnsgate` for the package architectures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::arch::Target;
use crate::prereq::{ensure_debian, ensure_ebpf_toolchain, on_path, output, run_checked};

/// Builds the release `dnsgate` binary for `target` into the shared
/// `target/` directory, stripped of symbols, and returns its path.
///
/// `cargo rustc` passes `-C strip=symbols` to the binary crate alone, so the
/// dependencies keep the artifacts `cargo build --release --target …`
/// produces, and the XDP object that control's build script embeds is built
/// as usual.
pub fn build_binary(root: &Path, target: &Target) -> Result<PathBuf> {
    ensure_ebpf_toolchain()?;
    ensure_rust_target(target.rust_target)?;
    let tools: Vec<(&str, &str)> =
        [target.c_compiler, target.archiver].into_iter().zip(target.c_toolchain_packages().iter().copied()).collect();
    ensure_debian(&tools)?;

    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(root)
        .args(["rustc", "--release", "--package", "dnsgate", "--bin", "dnsgate", "--target", target.rust_target])
        .args(["--", "-C", "strip=symbols"]);
    let suffix = target.rust_target.replace('-', "_");
    let upper = suffix.to_uppercase();
    // Values the caller set win.
    for (variable, value) in [
        (format!("CC_{suffix}"), Some(target.c_compiler)),
        (format!("AR_{suffix}"), Some(target.archiver)),
        (format!("CARGO_TARGET_{upper}_LINKER"), target.linker),
    ] {
        if let Some(value) = value
            && std::env::var_os(&variable).is_none()
        {
            command.env(variable, value);
        }
    }
    eprintln!("xtask: building dnsgate for {} ({})", target.package_arch, target.rust_target);
    run_checked(&mut command)?;

    let binary = root.join("target").join(target.rust_target).join("release/dnsgate");
    if !binary.is_file() {
        bail!("cargo finished but {} does not exist", binary.display());
    }
    Ok(binary)
}

/// Installs the Rust standard library for `rust_target` with rustup if it is
/// missing.
fn ensure_rust_target(rust_target: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|line| line.trim() == rust_target) {
        return Ok(());
    }
    if !on_path("rustup") {
        bail!("the Rust target {rust_target} is not installed and rustup is not on PATH to install it");
    }
    eprintln!("xtask: installing the Rust target {rust_target} with rustup (standard library for the package)");
    run_checked(Command::new("rustup").args(["target", "add", rust_target])).with_context(|| {
        format!(
            "rustup could not install {rust_target}; without its standard library this architecture \
             cannot be built here"
        )
    })
}
