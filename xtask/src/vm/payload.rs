//! Guest payloads: test binaries cross-built for the guest's static musl
//! target, found through cargo's JSON messages, and what each run in the
//! guest must show to pass.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Arch, run_checked};

/// Extended regular expression (as `grep -E` reads it) that the guest
/// matches against the output of a payload expected to be rejected. Every
/// verifier log ends with this summary line, on 5.10 as on 6.18, so a match
/// shows the rejection came from the verifier and reached the output.
pub const VERIFIER_SUMMARY_ERE: &str = "processed [0-9]+ insns";

/// Matches the same lines as [`VERIFIER_SUMMARY_ERE`], on the host.
pub fn is_verifier_summary(line: &str) -> bool {
    line.match_indices("processed ").any(|(start, word)| {
        let rest = &line[start + word.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(" insns")
    })
}

/// Test targets of `dnsgate-tests` that the guest runs. The guest has
/// busybox, iproute2 and this workspace's binaries only, while most of the
/// package's tests drive real DNS clients and peers (kdig, dig, unbound,
/// setpriv) or unpack OpenWrt packages, which would all fail there for want
/// of the tool, not of the kernel. These need nothing else: the XDP and TC
/// test runs, and a namespace test that queries with the `dns-query` helper.
/// A name here that cargo does not build fails the run, so a renamed file
/// cannot silently drop out of the VM.
const DATAPLANE_GUEST_TARGETS: &[&str] = &["xdp_test_run", "intercept_test_run", "ratelimit_test_run", "vm_netns_native"];

/// Set of test binaries that go into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadSet {
    /// The stand-in crate under tests/vm/probe, which needs no eBPF
    /// toolchain.
    Probe,
    /// The `dnsgate-tests` integration tests that need nothing the guest
    /// lacks ([`DATAPLANE_GUEST_TARGETS`]), with the `dnsgate` and
    /// `dnsgate-tests` binaries as helpers.
    Dataplane,
}

/// Condition a payload's run must meet for the guest to count it as passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Exit status 0.
    Success,
    /// A non-zero exit status and a verifier log in the output.
    VerifierRejects,
}

impl Expectation {
    /// Word the guest's init reads from the manifest.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::VerifierRejects => "verifier-rejects",
        }
    }
}

/// One binary to run in the guest.
#[derive(Clone, Debug)]
pub struct Payload {
    /// File name under /payload in the guest, unique within the image.
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub expect: Expectation,
}

/// A binary the tests start by path, such as the `dnsgate` daemon. The guest
/// has it at /payload/bin/<name> and exports `<NAME>_BIN` with that path.
#[derive(Clone, Debug)]
pub struct Helper {
    pub name: String,
    pub binary: PathBuf,
}

impl Helper {
    /// `dnsgate` -> `DNSGATE_BIN`, `xdp-pass` -> `XDP_PASS_BIN`: the variable
    /// the integration tests read before looking next to their own binary.
    pub fn env_var(&self) -> String {
        format!("{}_BIN", self.name.to_uppercase().replace('-', "_"))
    }
}

/// Everything one architecture's guests run.
pub struct Bundle {
    pub payloads: Vec<Payload>,
    pub helpers: Vec<Helper>,
}

/// How to build one payload set.
struct Build {
    /// `-p` package in the main workspace, or `None` for the probe's own
    /// workspace.
    package: Option<&'static str>,
    /// Feature that swaps in the program the verifier must reject.
    broken_feature: &'static str,
    /// Test target of the broken build that loads the program, and the
    /// libtest arguments that select the loading test.
    broken_target: &'static str,
    broken_args: &'static [&'static str],
    /// Packages whose binaries go into the guest as helpers.
    helper_packages: &'static [&'static str],
    /// Test targets that run in the guest, or `None` for every test
    /// executable the package builds, unit tests included.
    guest_targets: Option<&'static [&'static str]>,
}

impl PayloadSet {
    /// Returns whether the set has C dependencies that need a C compiler
    /// for the guest target: dnsgate's TLS stack pulls in `ring`.
    pub fn needs_c_toolchain(self) -> bool {
        self == Self::Dataplane
    }

    fn build_spec(self) -> Build {
        match self {
            Self::Probe => Build {
                package: None,
                broken_feature: "broken-verifier-test",
                broken_target: "guest",
                broken_args: &["--exact", "probe_program_loads"],
                helper_packages: &[],
                guest_targets: None,
            },
            // The `dnsgate` package embeds the eBPF object, so its feature
            // reaches the object that tests/xdp_test_run.rs loads.
            Self::Dataplane => Build {
                package: Some("dnsgate-tests"),
                broken_feature: "dnsgate/broken-verifier-test",
                broken_target: "xdp_test_run",
                broken_args: &[],
                helper_packages: &["dnsgate", "dnsgate-tests"],
                guest_targets: Some(DATAPLANE_GUEST_TARGETS),
            },
        }
    }
}

/// Rejects guest test arguments the init's word splitting would mangle.
pub fn check_test_args(args: &[String]) -> Result<()> {
    for arg in args {
        let safe = |c: char| c.is_ascii_alphanumeric() || "-_=:./,+".contains(c);
        if arg.is_empty() || !arg.chars().all(safe) {
            bail!(
                "invalid test argument {arg:?}: only letters, digits and -_=:./,+ reach the guest unchanged"
            );
        }
    }
    Ok(())
}

/// Builds the payload set for `arch` and returns stripped copies of its
/// binaries under `cache`, the broken build's rejecting binary last when
/// `broken_verifier` is set.
pub fn build(
    root: &Path,
    cache: &Path,
    arch: Arch,
    set: PayloadSet,
    broken_verifier: bool,
    test_args: &[String],
) -> Result<Bundle> {
    let dir = cache.join("payloads").join(arch.name());
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("failed to clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("bin"))?;

    // Helpers are copied out as soon as cargo has built them. The test
    // builds below link the package's binaries again at the same paths,
    // and the broken-verifier build would leave helpers such as xdp-pass
    // holding the program the verifier rejects.
    let spec = set.build_spec();
    let mut helpers = Vec::new();
    for package in spec.helper_packages {
        for artifact in cargo_binaries(root, arch, set, CargoRun::Bins { package })? {
            let binary = strip_debug(&artifact.path, &dir.join("bin").join(&artifact.target))?;
            helpers.push(Helper {
                name: artifact.target,
                binary,
            });
        }
    }

    let mut payloads = Vec::new();
    for payload in build_payloads(root, arch, set, broken_verifier, test_args)? {
        let binary = strip_debug(&payload.binary, &dir.join(&payload.name))?;
        payloads.push(Payload { binary, ..payload });
    }
    Ok(Bundle { payloads, helpers })
}

/// Writes `source` without debug information to `target`. Debug builds of
/// the dataplane binaries are over 100 MB each, and the guest unpacks its
/// initramfs into RAM. Symbols stay, so panics still name functions.
fn strip_debug(source: &Path, target: &Path) -> Result<PathBuf> {
    run_checked(
        Command::new("llvm-strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(target)
            .arg(source),
    )?;
    Ok(target.to_path_buf())
}

/// Builds the test executables of `set`, the broken build's rejecting one
/// last when `broken_verifier` is set, and returns them where cargo left
/// them.
fn build_payloads(
    root: &Path,
    arch: Arch,
    set: PayloadSet,
    broken_verifier: bool,
    test_args: &[String],
) -> Result<Vec<Payload>> {
    let spec = set.build_spec();
    let artifacts = cargo_binaries(
        root,
        arch,
        set,
        CargoRun::Tests {
            package: spec.package,
            feature: None,
        },
    )?;
    let mut payloads = Vec::new();
    for artifact in select_guest_targets(artifacts, spec.guest_targets)? {
        payloads.push(Payload {
            name: artifact.payload_name(),
            binary: artifact.path,
            args: test_args.to_vec(),
            expect: Expectation::Success,
        });
    }
    if payloads.is_empty() {
        bail!("cargo built no test binaries for the {set:?} payload set");
    }

    if broken_verifier {
        let run = CargoRun::Tests {
            package: spec.package,
            feature: Some(spec.broken_feature),
        };
        let artifacts = cargo_binaries(root, arch, set, run)?;
        let Some(artifact) = artifacts
            .into_iter()
            .find(|artifact| artifact.target == spec.broken_target)
        else {
            bail!(
                "the build with feature {} has no test target {}, which must contain the test that loads the program",
                spec.broken_feature,
                spec.broken_target
            );
        };
        payloads.push(Payload {
            name: format!("{}-broken-verifier", artifact.target),
            binary: artifact.path,
            args: spec
                .broken_args
                .iter()
                .map(|arg| (*arg).to_owned())
                .collect(),
            expect: Expectation::VerifierRejects,
        });
    }
    Ok(payloads)
}

/// Keeps the test executables named in `targets` (integration test files,
/// not unit tests), in the order cargo built them, or all of them when
/// `targets` is `None`. Fails if a named target was not built.
fn select_guest_targets(
    artifacts: Vec<Artifact>,
    targets: Option<&[&str]>,
) -> Result<Vec<Artifact>> {
    let Some(targets) = targets else {
        return Ok(artifacts);
    };
    let selected: Vec<Artifact> = artifacts
        .into_iter()
        .filter(|artifact| !artifact.unit && targets.contains(&artifact.target.as_str()))
        .collect();
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|target| !selected.iter().any(|artifact| artifact.target == *target))
        .collect();
    if !missing.is_empty() {
        bail!(
            "cargo built no test target {} for the guest; update DATAPLANE_GUEST_TARGETS in xtask/src/vm/payload.rs if a test file was renamed",
            missing.join(", ")
        );
    }
    Ok(selected)
}

/// A test executable from cargo's `compiler-artifact` messages.
struct Artifact {
    /// Target name, such as `guest` for tests/guest.rs.
    target: String,
    /// Whether this is a library's unit-test binary rather than a tests/ file.
    unit: bool,
    path: PathBuf,
}

impl Artifact {
    fn payload_name(&self) -> String {
        if self.unit {
            format!("{}-unit", self.target)
        } else {
            self.target.clone()
        }
    }
}

/// One cargo invocation for the guest target.
#[derive(Clone, Copy)]
enum CargoRun<'a> {
    /// `cargo test --no-run`: the test executables of `package` (or of the
    /// probe's workspace when `None`), built with `feature` if given.
    Tests {
        package: Option<&'a str>,
        feature: Option<&'a str>,
    },
    /// `cargo build --bins`: the binaries of one main-workspace package.
    Bins { package: &'a str },
}

/// Runs cargo for the guest's musl target and returns the executables it
/// reports.
fn cargo_binaries(
    root: &Path,
    arch: Arch,
    set: PayloadSet,
    run: CargoRun,
) -> Result<Vec<Artifact>> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (package, feature, tests) = match run {
        CargoRun::Tests { package, feature } => {
            command.args(["test", "--no-run"]);
            (package, feature, true)
        }
        CargoRun::Bins { package } => {
            command.args(["build", "--bins"]);
            (Some(package), None, false)
        }
    };
    command.args([
        "--message-format=json-render-diagnostics",
        "--target",
        arch.rust_target(),
    ]);
    match package {
        Some(package) => {
            command.args(["-p", package]);
        }
        None => {
            // The probe is its own workspace with its own target directory,
            // so building it never waits for the main workspace's lock.
            command
                .arg("--manifest-path")
                .arg(root.join("tests/vm/probe/Cargo.toml"))
                .env("CARGO_TARGET_DIR", root.join("target/vm-probe"));
        }
    }
    if let Some(feature) = feature {
        command.args(["--features", feature]);
    }
    // Rust ships no aarch64 musl cross linker, so rust-lld links them.
    let linker_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER";
    if arch == Arch::Aarch64 && env::var_os(linker_var).is_none() {
        command.env(linker_var, "rust-lld");
    }
    // cc-rs reads `CC_<target>` and `AR_<target>`. A value already set wins.
    let target_suffix = arch.rust_target().replace('-', "_");
    let (_, cc, ar) = arch.c_toolchain();
    for (var, tool) in [
        (format!("CC_{target_suffix}"), cc),
        (format!("AR_{target_suffix}"), ar),
    ] {
        if env::var_os(&var).is_none() {
            command.env(var, tool);
        }
    }

    let description = match (run, feature) {
        (CargoRun::Bins { package }, _) => format!("{package} binaries for {}", arch.rust_target()),
        (CargoRun::Tests { .. }, None) => format!("{set:?} tests for {}", arch.rust_target()),
        (CargoRun::Tests { .. }, Some(feature)) => {
            format!("{set:?} tests for {} with {feature}", arch.rust_target())
        }
    };
    println!("vm-test: building the {description}");
    let output = command
        .output()
        .with_context(|| format!("failed to start cargo for the {description}"))?;
    if !output.status.success() {
        bail!(
            "cargo failed to build the {description} ({}); its errors are above",
            output.status
        );
    }
    let stdout = String::from_utf8(output.stdout).context("cargo printed invalid UTF-8")?;
    parse_artifacts(&stdout, tests)
}

/// Returns the executables in cargo's JSON message stream: test harnesses
/// when `tests` is set, plain binaries otherwise.
fn parse_artifacts(messages: &str, tests: bool) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for line in messages.lines().filter(|line| line.starts_with('{')) {
        let message: Value =
            serde_json::from_str(line).with_context(|| format!("invalid cargo message {line}"))?;
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != tests {
            continue;
        }
        let Some(path) = message["executable"].as_str() else {
            continue;
        };
        let target = message["target"]["name"]
            .as_str()
            .unwrap_or("test")
            .to_owned();
        let unit = message["target"]["kind"].as_array().is_some_and(|kinds| {
            kinds
                .iter()
                .any(|kind| kind == "lib" || kind == "rlib" || kind == "bin")
        });
        artifacts.push(Artifact {
            target,
            unit,
            path: PathBuf::from(path),
        });
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_test_executables_only() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"libc","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"name":"probe","kind":["lib"]},"profile":{"test":true},"executable":"/t/probe-1"}
{"reason":"compiler-artifact","target":{"name":"guest","kind":["test"]},"profile":{"test":true},"executable":"/t/guest-2"}
{"reason":"build-finished","success":true}"#;
        let artifacts = parse_artifacts(messages, true).unwrap();
        let names: Vec<String> = artifacts.iter().map(Artifact::payload_name).collect();
        assert_eq!(names, ["probe-unit", "guest"]);
        assert_eq!(artifacts[1].path, Path::new("/t/guest-2"));
    }

    #[test]
    fn artifacts_without_tests_are_binaries() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"xdp-pass","kind":["bin"]},"profile":{"test":false},"executable":"/t/xdp-pass"}
{"reason":"compiler-artifact","target":{"name":"guest","kind":["test"]},"profile":{"test":true},"executable":"/t/guest-2"}"#;
        let artifacts = parse_artifacts(messages, false).unwrap();
        assert_eq!(artifacts.len(), 1);
        assert_eq!(artifacts[0].target, "xdp-pass");
        let helper = Helper {
            name: artifacts[0].target.clone(),
            binary: artifacts[0].path.clone(),
        };
        assert_eq!(helper.env_var(), "XDP_PASS_BIN");
    }

    #[test]
    fn guest_targets_keep_listed_integration_tests_only() {
        let artifact = |target: &str, unit: bool| Artifact {
            target: target.to_owned(),
            unit,
            path: PathBuf::from(format!("/t/{target}")),
        };
        let built = || {
            vec![
                artifact("dnsgate_tests", true),
                artifact("cli_daemon", false),
                artifact("xdp_test_run", false),
                artifact("xdp-pass", true),
                artifact("intercept_test_run", false),
                artifact("ratelimit_test_run", false),
                artifact("vm_netns_native", false),
                artifact("package_ipk", false),
            ]
        };
        let selected = select_guest_targets(built(), Some(DATAPLANE_GUEST_TARGETS)).unwrap();
        let names: Vec<String> = selected.iter().map(Artifact::payload_name).collect();
        assert_eq!(
            names,
            ["xdp_test_run", "intercept_test_run", "ratelimit_test_run", "vm_netns_native"]
        );

        assert_eq!(select_guest_targets(built(), None).unwrap().len(), 8);
        let error = select_guest_targets(built(), Some(&["xdp_test_run", "gone"]))
            .err()
            .expect("a listed target that was not built is an error");
        assert!(error.to_string().contains("gone"), "{error}");
    }

    #[test]
    fn verifier_summary_matches_kernel_line() {
        let line = "processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0";
        assert!(is_verifier_summary(line));
        assert!(is_verifier_summary("verifier: processed 12 insns"));
        assert!(!is_verifier_summary("processed insns"));
        assert!(!is_verifier_summary("processed 7 instructions"));
    }

    #[test]
    fn test_args_reject_shell_syntax() {
        assert!(check_test_args(&["--exact".into(), "xdp::tx".into()]).is_ok());
        assert!(check_test_args(&["a b".into()]).is_err());
        assert!(check_test_args(&["$(reboot)".into()]).is_err());
        assert!(check_test_args(&[String::new()]).is_err());
    }
}
