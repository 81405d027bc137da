//! `cargo xtask package`: installable packages of dnsgate.
//!
//! `package openwrt` builds a static musl `dnsgate` for each requested
//! OpenWrt architecture and checks that the binary is static and for the
//! right CPU. It prints the stripped size, then packs the binary with the
//! files under `openwrt/` into an `.ipk` (opkg: OpenWrt 23.05 and 24.10)
//! and, when apk-tools 3 is available, an `.apk` (OpenWrt 25.x).

mod apk;
mod arch;
mod build;
mod elf;
mod ipk;
mod metadata;
mod payload;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use arch::Target;
use payload::Payload;

/// Size the stripped binary should stay under, in bytes: what a router with
/// 16 MB of flash can spare beside the system image.
const SIZE_GOAL: u64 = 6 * 1024 * 1024;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    distribution: Distribution,
}

#[derive(clap::Subcommand)]
enum Distribution {
    /// Build .ipk (and .apk) packages for OpenWrt.
    #[command(after_help = "Example:\n  cargo xtask package openwrt --arch x86_64 --arch aarch64_cortex-a53")]
    Openwrt(OpenwrtArgs),
}

#[derive(clap::Args)]
struct OpenwrtArgs {
    /// OpenWrt package architecture (repeatable), such as x86_64,
    /// aarch64_cortex-a53 or arm_cortex-a7_neon-vfpv4; `aarch64` means
    /// aarch64_generic [default: x86_64 and aarch64_generic].
    #[arg(long = "arch", value_name = "ARCH")]
    arches: Vec<String>,
    /// Directory the packages are written to [default: target/openwrt].
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// apk-tools 3 binary that writes the .apk [default: `apk` on PATH].
    #[arg(long, value_name = "PATH")]
    apk_tool: Option<PathBuf>,
    /// Write only the .ipk.
    #[arg(long)]
    no_apk: bool,
}

/// Build results of one architecture.
struct Built {
    package_arch: String,
    binary_size: u64,
    ipk: PathBuf,
    apk: Result<PathBuf, String>,
}

pub fn run(args: Args) -> Result<()> {
    let Distribution::Openwrt(args) = args.distribution;
    let root = workspace_root();
    let arch_names = if args.arches.is_empty() {
        vec!["x86_64".to_owned(), "aarch64".to_owned()]
    } else {
        args.arches.clone()
    };
    let targets = arch_names.iter().map(|name| Target::from_package_arch(name)).collect::<Result<Vec<_>>>()?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| root.join("target/openwrt"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("failed to create {}", out_dir.display()))?;
    let mtime = source_date_epoch(&root);
    let apk_tool = if args.no_apk { Err("--no-apk given".to_owned()) } else { apk::find_tool(args.apk_tool.as_deref()) };

    let mut built = Vec::new();
    for target in &targets {
        let binary = build::build_binary(&root, target)?;
        let bytes = std::fs::read(&binary).with_context(|| format!("failed to read {}", binary.display()))?;
        elf::check_static_executable(&bytes, target.elf_machine)
            .with_context(|| format!("{} cannot go into a package", binary.display()))?;

        let payload = Payload::collect(&root, &binary)?;
        let ipk = ipk::write(&root, &payload, &target.package_arch, mtime, &out_dir)?;
        let apk = match &apk_tool {
            Ok(tool) => apk::write(tool, &root, &payload, &target.package_arch, mtime, &root.join("target/tmp"), &out_dir)
                .map_err(|error| format!("{error:#}")),
            Err(reason) => Err(reason.clone()),
        };
        built.push(Built { package_arch: target.package_arch.clone(), binary_size: bytes.len() as u64, ipk, apk });
    }

    print_report(&built);
    Ok(())
}

/// Builds the static binary that goes into the OpenWrt package for each
/// architecture and returns `(package architecture, size in bytes)`; the
/// benchmark reports these sizes.
pub fn static_binary_sizes(arches: &[&str]) -> Result<Vec<(String, u64)>> {
    let root = workspace_root();
    let mut sizes = Vec::new();
    for arch in arches {
        let target = Target::from_package_arch(arch)?;
        let binary = build::build_binary(&root, &target)?;
        let size = std::fs::metadata(&binary).with_context(|| format!("failed to read {}", binary.display()))?.len();
        sizes.push((target.package_arch.clone(), size));
    }
    Ok(sizes)
}

fn print_report(built: &[Built]) {
    println!("\nOpenWrt packages (stripped static binary size per architecture):");
    for item in built {
        let verdict = if item.binary_size <= SIZE_GOAL { "under" } else { "OVER" };
        println!(
            "  {:<24} dnsgate {:>9} bytes ({:.2} MiB, {verdict} the {} MiB goal)",
            item.package_arch,
            item.binary_size,
            item.binary_size as f64 / (1024.0 * 1024.0),
            SIZE_GOAL / (1024 * 1024)
        );
        println!("  {:<24} {} ({} bytes)", "", item.ipk.display(), file_size(&item.ipk));
        match &item.apk {
            Ok(path) => println!("  {:<24} {} ({} bytes)", "", path.display(), file_size(path)),
            Err(reason) => println!("  {:<24} no .apk: {reason}", ""),
        }
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|metadata| metadata.len()).unwrap_or(0)
}

/// Returns the time stamped on every archive entry: `SOURCE_DATE_EPOCH` if
/// set, else the time of the last commit, so rebuilding a commit gives the
/// same packages.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|value| value.parse().ok()) {
        return epoch;
    }
    crate::prereq::output(Command::new("git").current_dir(root).args(["log", "-1", "--format=%ct"]))
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the workspace root").to_path_buf()
}
