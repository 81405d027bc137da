//! `cargo xtask vm-test`: boots each Debian kernel of the test matrix in QEMU
//! and runs the dataplane test binaries inside, so a program that the
//! verifier of this machine's kernel accepts is also checked against the
//! older kernels routers run.
//!
//! One run goes through these steps, each in its own module:
//! 1. [`host`] installs what is missing: apt sources for the kernel suites,
//!    QEMU, the musl Rust targets.
//! 2. [`kernel`] lists every kernel series the configured suites offer, then
//!    downloads and unpacks each selected kernel and its modules.
//! 3. [`payload`] cross-builds the test binaries for the guest's musl target.
//! 4. [`initramfs`] packs busybox, the init script, modules and payloads.
//! 5. [`qemu`] boots the kernel with a deadline and records the serial
//!    console, and [`report`] turns what the guest printed into a verdict.
//!
//! The guest runs every payload twice when the kernel has BTF: once as is,
//! and once with `/sys/kernel/btf` hidden, because router kernels usually
//! ship without BTF.

mod arch;
mod host;
mod initramfs;
mod kernel;
mod payload;
mod qemu;
mod report;
mod userland;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use arch::Arch;
use kernel::KernelPackage;
use payload::PayloadSet;
use report::KernelOutcome;

/// Per-kernel deadline when `--timeout` is not given: boot, every payload in
/// both BTF passes, and power-off. Under TCG on a 2-core machine a kernel
/// took 4 to 17 s with the probe and 240 to 480 s with the dataplane tests
/// (the slower figure with benchmarks running beside it).
const DEFAULT_TIMEOUT_SECS: u64 = 1200;
/// Per-kernel deadline in `--ci` mode, where a hung guest must not eat the
/// whole CI budget but a loaded machine must not fail a healthy kernel.
const CI_TIMEOUT_SECS: u64 = 900;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run the CI subset: the oldest and the newest x86_64 kernel and the
    /// newest aarch64 kernel, each with the CI timeout (900 s unless
    /// --timeout is given).
    #[arg(long)]
    ci: bool,

    /// Seconds one kernel may take from boot to power-off before it counts
    /// as failed [default: 1200, or 900 with --ci].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,

    /// Test binaries to run in the guest: `probe` is the stand-in under
    /// tests/vm/probe, `dataplane` the `dnsgate-tests` test binaries.
    #[arg(long, value_enum, default_value_t = PayloadSet::Probe)]
    payload: PayloadSet,

    /// Also run the payload built with the `broken-verifier-test` feature and
    /// require the verifier to reject its program.
    #[arg(long)]
    broken_verifier: bool,

    /// eBPF object copied into the guest as /payload/dnsgate-ebpf.o; the
    /// payloads find its path in the DNSGATE_EBPF_OBJECT environment variable.
    #[arg(long, value_name = "PATH")]
    ebpf_object: Option<PathBuf>,

    /// Architectures to boot (repeatable) [default: x86_64 and aarch64].
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    arches: Vec<Arch>,

    /// Kernel series to boot, such as `5.10` (repeatable) [default: all].
    #[arg(long = "kernel", value_name = "SERIES")]
    kernels: Vec<String>,

    /// Fail instead of installing missing apt sources, packages or Rust
    /// targets.
    #[arg(long)]
    no_install: bool,

    /// Print every line of the serial console, kernel messages included.
    #[arg(long)]
    verbose: bool,

    /// Arguments passed to every test binary in the guest, such as a libtest
    /// filter. Whitespace and shell metacharacters are rejected.
    #[arg(last = true, value_name = "TEST_ARGS")]
    test_args: Vec<String>,
}

/// A kernel chosen for this run, with the timeout that applies to it.
struct Selected {
    package: KernelPackage,
    timeout: Duration,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let cache = root.join(".vm");
    let arches = if args.arches.is_empty() {
        vec![Arch::X86_64, Arch::Aarch64]
    } else {
        args.arches.clone()
    };
    let timeout = Duration::from_secs(args.timeout.unwrap_or(if args.ci {
        CI_TIMEOUT_SECS
    } else {
        DEFAULT_TIMEOUT_SECS
    }));
    payload::check_test_args(&args.test_args)?;
    if let Some(object) = &args.ebpf_object
        && !object.is_file()
    {
        bail!(
            "eBPF object {} not found: build it first or fix --ebpf-object",
            object.display()
        );
    }

    host::ensure_prerequisites(
        &root,
        &arches,
        args.payload.needs_c_toolchain(),
        !args.no_install,
    )?;

    let mut selected = Vec::new();
    for &arch in &arches {
        let matrix = kernel::discover(arch)?;
        matrix.print();
        let chosen = select(&matrix.kernels, arch, &args)?;
        selected.extend(
            chosen
                .into_iter()
                .map(|package| Selected { package, timeout }),
        );
    }
    if selected.is_empty() {
        bail!(
            "no kernel matches --kernel {:?}; the matrix printed above lists the series",
            args.kernels
        );
    }
    print_plan(&selected);

    let mut outcomes = Vec::new();
    for &arch in &arches {
        let kernels: Vec<&Selected> = selected.iter().filter(|s| s.package.arch == arch).collect();
        if kernels.is_empty() {
            continue;
        }
        let bundle = payload::build(
            &root,
            &cache,
            arch,
            args.payload,
            args.broken_verifier,
            &args.test_args,
        )?;
        let userland = initramfs::Userland::prepare(&cache, arch)?;
        let init_script = root.join("tests/vm/init.sh");
        for chosen in kernels {
            outcomes.push(run_kernel(
                &cache,
                chosen,
                &userland,
                &init_script,
                &bundle,
                &args,
            )?);
        }
    }

    report::print_summary(&outcomes, started.elapsed());
    let failed = outcomes.iter().filter(|outcome| !outcome.passed()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} kernels failed; the report above names them",
            outcomes.len()
        );
    }
    Ok(())
}

/// Picks the kernels of one architecture for this run, oldest first.
fn select(kernels: &[KernelPackage], arch: Arch, args: &Args) -> Result<Vec<KernelPackage>> {
    for series in &args.kernels {
        if !series
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        {
            bail!("invalid --kernel {series:?}: expected a series such as 5.10");
        }
    }
    let mut chosen: Vec<KernelPackage> = kernels
        .iter()
        .filter(|k| args.kernels.is_empty() || args.kernels.iter().any(|s| *s == k.series_string()))
        .cloned()
        .collect();

    if args.ci {
        // The oldest kernel is the verifier floor, the newest the one with
        // the most changed checks. aarch64 only guards the JIT and the
        // cross build, so its newest kernel is enough.
        chosen = match (arch, chosen.first(), chosen.last()) {
            (_, None, _) | (_, _, None) => Vec::new(),
            (Arch::Aarch64, _, Some(newest)) => vec![newest.clone()],
            (Arch::X86_64, Some(oldest), Some(newest)) if oldest == newest => vec![oldest.clone()],
            (Arch::X86_64, Some(oldest), Some(newest)) => vec![oldest.clone(), newest.clone()],
        };
    }
    Ok(chosen)
}

fn print_plan(selected: &[Selected]) {
    println!(
        "vm-test: booting {} kernel(s), oldest first per architecture:",
        selected.len()
    );
    for chosen in selected {
        println!(
            "  {:<8} {:<22} timeout {} s",
            chosen.package.arch.name(),
            chosen.package.release,
            chosen.timeout.as_secs()
        );
    }
}

fn run_kernel(
    cache: &Path,
    chosen: &Selected,
    userland: &initramfs::Userland,
    init_script: &Path,
    bundle: &payload::Bundle,
    args: &Args,
) -> Result<KernelOutcome> {
    let package = &chosen.package;
    let label = format!("{} {}", package.arch.name(), package.release);
    println!(
        "\n==> {label}: {} {} from {}",
        package.package, package.version, package.suite
    );

    let prepared = kernel::prepare(cache, package)?;
    let image_path =
        cache
            .join("images")
            .join(format!("{}-{}.cpio", package.arch.name(), package.release));
    let image = initramfs::Image {
        userland,
        init_script,
        modules: &prepared.modules,
        payloads: &bundle.payloads,
        helpers: &bundle.helpers,
        ebpf_object: args.ebpf_object.as_deref(),
        ci: std::env::var("CI").is_ok_and(|value| value == "true"),
    };
    image.write(&image_path)?;

    let log_path =
        cache
            .join("logs")
            .join(format!("{}-{}.log", package.arch.name(), package.release));
    let boot = qemu::Boot {
        arch: package.arch,
        kernel: &prepared.vmlinuz,
        initramfs: &image_path,
        timeout: chosen.timeout,
        log_path: &log_path,
    };
    let verbose = args.verbose;
    let output = qemu::boot(&boot, |line| {
        if verbose || report::is_guest_line(line) {
            println!("[{label}] {line}");
        }
    })?;
    let outcome = KernelOutcome::from_boot(package.clone(), &bundle.payloads, output, log_path);
    outcome.print_result();
    Ok(outcome)
}

/// Returns the workspace root, the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `command` to completion and fails unless it exits with status 0.
fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Runs `command`, fails unless it exits with status 0, and returns its
/// standard output as text.
fn output_checked(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("{command:?} printed invalid UTF-8"))
}
