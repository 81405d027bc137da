//! Host prerequisites of the VM tests, installed on first use: apt sources
//! for the kernel suites, the arm64 dpkg architecture, QEMU from
//! bookworm-backports, and the musl Rust targets.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Arch, output_checked, run_checked};

/// Suites whose kernels make up the matrix, beside bookworm (6.1) that the
/// machine already has: bullseye (5.10, older than the 5.15 of OpenWrt
/// 23.05, so the verifier floor) and bookworm-backports (6.12, as on
/// OpenWrt 25.x). bookworm-backports also provides QEMU 10.
const EXTRA_SUITES: [&str; 2] = ["bullseye", "bookworm-backports"];

const SOURCES_PATH: &str = "/etc/apt/sources.list.d/dnsgate-vm.sources";
const PREFERENCES_PATH: &str = "/etc/apt/preferences.d/dnsgate-vm.pref";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const APT_LISTS: &str = "/var/lib/apt/lists";

/// Keeps bullseye from ever replacing an installed package: it is there
/// only for `apt-get download` of its kernel.
const PREFERENCES: &str = "\
# Written by `cargo xtask vm-test`: bullseye is there only for its kernel
# packages, so it must never replace an installed bookworm package.
Package: *
Pin: release n=bullseye
Pin-Priority: 100
";

/// Waits up to this long for another apt or dpkg run to release its lock.
const APT_LOCK_TIMEOUT_SECS: u32 = 600;

/// Installs what is missing. `c_toolchain` adds the C compilers that
/// payloads with C dependencies need for the guest targets.
pub fn ensure_prerequisites(
    root: &Path,
    arches: &[Arch],
    c_toolchain: bool,
    install: bool,
) -> Result<()> {
    let mut index_stale = ensure_apt_sources(install)?;
    if arches.contains(&Arch::Aarch64) {
        index_stale |= ensure_foreign_architecture(Arch::Aarch64, install)?;
    }
    if index_stale || !apt_index_has_suites(arches)? {
        require(install, "refresh the apt package index", "apt-get update")?;
        println!("vm-test: running apt-get update for the kernel suites");
        run_checked(apt_get().arg("update"))?;
    }
    ensure_packages(arches, install)?;
    if c_toolchain {
        for arch in arches {
            let (packages, _, _) = arch.c_toolchain();
            install_missing(packages, None, install)?;
        }
    }
    ensure_rust_targets(root, arches, install)
}

/// Fails with a message naming `command` when installing is turned off.
fn require(install: bool, action: &str, command: &str) -> Result<()> {
    require_with(install, action, &format!("run `{command}` as root"))
}

/// Fails with a message that ends in `fix` when installing is turned off.
fn require_with(install: bool, action: &str, fix: &str) -> Result<()> {
    if !install {
        bail!("vm-test needs to {action}, but --no-install was given: {fix}, or drop --no-install");
    }
    Ok(())
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("-o")
        .arg(format!("DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECS}"));
    command
}

/// Adds a sources entry for every extra suite that no configured source
/// names yet. Returns whether anything was written.
fn ensure_apt_sources(install: bool) -> Result<bool> {
    let configured = configured_suites()?;
    let missing: Vec<&str> = EXTRA_SUITES
        .iter()
        .copied()
        .filter(|suite| !configured.contains(*suite))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let suites = missing.join(" ");
    let sources = format!(
        "# Written by `cargo xtask vm-test`: Debian kernels for the VM test matrix\n\
         # and QEMU from bookworm-backports.\n\
         Types: deb\n\
         URIs: {DEBIAN_MIRROR}\n\
         Suites: {suites}\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    require_with(
        install,
        &format!("add the apt suites {suites}"),
        &format!("as root, write this to {SOURCES_PATH}:\n{sources}and run `apt-get update`"),
    )?;

    println!(
        "vm-test: adding apt suites {suites} (kernels for the matrix, QEMU) in {SOURCES_PATH}"
    );
    std::fs::write(SOURCES_PATH, sources)
        .with_context(|| format!("failed to write {SOURCES_PATH}"))?;
    if missing.contains(&"bullseye") {
        std::fs::write(PREFERENCES_PATH, PREFERENCES)
            .with_context(|| format!("failed to write {PREFERENCES_PATH}"))?;
    }
    Ok(true)
}

/// Suites named by `deb` lines in `*.list` files and `Suites:` fields in
/// `*.sources` files, whether or not their index has been fetched.
fn configured_suites() -> Result<BTreeSet<String>> {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path()),
        );
    }

    let mut suites = BTreeSet::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|ext| ext.to_str()) {
            Some("sources") => {
                let stanzas = text.split("\n\n");
                for stanza in stanzas.filter(|stanza| stanza_enabled_deb(stanza)) {
                    for line in stanza.lines() {
                        if let Some(value) = line.strip_prefix("Suites:") {
                            suites.extend(value.split_whitespace().map(str::to_owned));
                        }
                    }
                }
            }
            Some("list") => {
                for line in text.lines() {
                    let mut words = line.split_whitespace();
                    if words.next() != Some("deb") {
                        continue;
                    }
                    // Skip the optional `[arch=... signed-by=...]` block.
                    let mut rest: Vec<&str> = words.collect();
                    if rest.first().is_some_and(|word| word.starts_with('[')) {
                        let close = rest
                            .iter()
                            .position(|word| word.ends_with(']'))
                            .unwrap_or(0);
                        rest.drain(..=close);
                    }
                    if let Some(suite) = rest.get(1) {
                        suites.insert((*suite).to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(suites)
}

fn stanza_enabled_deb(stanza: &str) -> bool {
    let field = |name: &str| {
        stanza
            .lines()
            .find_map(|line| line.strip_prefix(name).map(|value| value.trim().to_owned()))
    };
    let is_deb = field("Types:").is_some_and(|types| types.split_whitespace().any(|t| t == "deb"));
    let enabled = field("Enabled:").is_none_or(|value| value != "no");
    is_deb && enabled
}

/// Adds `arch` as a dpkg foreign architecture so `apt-get download` finds
/// its kernels. Returns whether it was added.
fn ensure_foreign_architecture(arch: Arch, install: bool) -> Result<bool> {
    let foreign = output_checked(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.split_whitespace().any(|name| name == arch.debian()) {
        return Ok(false);
    }
    let command = format!("dpkg --add-architecture {}", arch.debian());
    require(
        install,
        &format!("add the dpkg architecture {}", arch.debian()),
        &command,
    )?;
    println!(
        "vm-test: adding dpkg architecture {} for its kernel packages",
        arch.debian()
    );
    run_checked(Command::new("dpkg").args(["--add-architecture", arch.debian()]))?;
    Ok(true)
}

/// Checks that the package index has been fetched for every extra suite and
/// guest architecture, by the index files apt keeps in /var/lib/apt/lists.
fn apt_index_has_suites(arches: &[Arch]) -> Result<bool> {
    let lists: Vec<String> = std::fs::read_dir(APT_LISTS)
        .with_context(|| format!("failed to list {APT_LISTS}"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    // `deb.debian.org_debian_dists_bullseye_main_binary-arm64_Packages.lz4`
    let has = |suite: &str, arch: Arch| {
        let index = format!("_dists_{suite}_main_binary-{}_Packages", arch.debian());
        lists.iter().any(|name| name.contains(&index))
    };
    Ok(EXTRA_SUITES
        .iter()
        .all(|suite| arches.iter().all(|&arch| has(suite, arch))))
}

fn package_installed(name: &str) -> Result<bool> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .context("failed to start dpkg-query")?;
    Ok(output.status.success() && String::from_utf8_lossy(&output.stdout).ends_with(" installed"))
}

/// Installs QEMU for every guest architecture from bookworm-backports, with
/// qemu-utils from the same suite because bookworm's QEMU 7.2 would replace
/// the machine's qemu-utils 10. The host tools come from the default suite:
/// binutils for `readelf`, iproute2 so `dpkg -S` finds the packages that
/// ship the libraries of the guest's `ip`, llvm for `llvm-strip` (which strips
/// binaries of any architecture), xz-utils and zstd for compressed modules.
fn ensure_packages(arches: &[Arch], install: bool) -> Result<()> {
    let mut qemu = vec!["qemu-utils"];
    qemu.extend(arches.iter().map(|arch| arch.qemu_package()));
    install_missing(&qemu, Some("bookworm-backports"), install)?;
    install_missing(
        &["binutils", "iproute2", "llvm", "xz-utils", "zstd"],
        None,
        install,
    )
}

fn install_missing(packages: &[&str], suite: Option<&str>, install: bool) -> Result<()> {
    let mut missing = Vec::new();
    for package in packages {
        if !package_installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }

    let target = suite
        .map(|suite| format!(" -t {suite}"))
        .unwrap_or_default();
    let command = format!("apt-get install{target} {}", missing.join(" "));
    require(install, &format!("install {}", missing.join(" ")), &command)?;
    println!(
        "vm-test: installing {}{}",
        missing.join(" "),
        suite.map(|s| format!(" from {s}")).unwrap_or_default()
    );
    let mut apt = apt_get();
    apt.args(["install", "-y", "--no-install-recommends"]);
    if let Some(suite) = suite {
        apt.args(["-t", suite]);
    }
    run_checked(apt.args(&missing))
}

fn ensure_rust_targets(root: &Path, arches: &[Arch], install: bool) -> Result<()> {
    let installed = output_checked(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(root),
    )?;
    for arch in arches {
        let target = arch.rust_target();
        if installed.lines().any(|line| line.trim() == target) {
            continue;
        }
        require(
            install,
            &format!("add the Rust target {target}"),
            &format!("rustup target add {target}"),
        )?;
        println!("vm-test: adding Rust target {target} for the guest binaries");
        run_checked(
            Command::new("rustup")
                .args(["target", "add", target])
                .current_dir(root),
        )?;
    }
    Ok(())
}
