//! Helpers shared by the integration tests: privilege checks, frame and
//! query builders, and independent checksum verification.

pub mod frames;
pub mod netns;

/// Returns true if the test may use `bpf()`, network namespaces and XDP.
///
/// Outside CI a test without root prints why it skips and returns early;
/// in CI (`CI=true`) nothing that matters may skip, so it panics instead.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let message = format!("{test}: skipped because it needs root (bpf(), XDP and network namespaces)");
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}, and CI=true forbids skipping");
    }
    eprintln!("{message}");
    false
}

/// Finds a program on PATH, or explains how to install it.
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    let message = format!("{tool} not found: install the Debian package {package} (cargo xtask test does)");
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    false
}
