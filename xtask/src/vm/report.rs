//! Reads the guest's console protocol into a verdict per kernel and prints
//! the per-kernel result and the closing summary.
//!
//! The guest's init prints these lines (see tests/vm/init.sh):
//!
//! ```text
//! DNSGATE-VM-KERNEL: <uname -r> <uname -m>
//! DNSGATE-VM-SETUP-FAILED: <step>
//! DNSGATE-VM-PAYLOAD-BEGIN: <name> btf=<present|hidden|absent>
//! DNSGATE-VM-PAYLOAD-END: <name> btf=<state> exit=<status> verdict=<pass|fail>
//! DNSGATE-VM-RESULT: <pass|fail>
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::kernel::KernelPackage;
use super::payload::{Payload, is_verifier_summary};
use super::qemu::BootOutput;

const KERNEL_PREFIX: &str = "DNSGATE-VM-KERNEL: ";
const SETUP_FAILED_PREFIX: &str = "DNSGATE-VM-SETUP-FAILED: ";
const BEGIN_PREFIX: &str = "DNSGATE-VM-PAYLOAD-BEGIN: ";
const END_PREFIX: &str = "DNSGATE-VM-PAYLOAD-END: ";
const RESULT_PREFIX: &str = "DNSGATE-VM-RESULT: ";

/// Lines of a failed payload's output shown when it contains no verifier log.
const OUTPUT_TAIL_LINES: usize = 40;
/// Most lines of a verifier log shown in the report; the full log is in the
/// console log file.
const VERIFIER_LOG_MAX_LINES: usize = 400;

/// One run of one payload in one BTF pass.
pub struct PayloadRun {
    pub name: String,
    /// `present`, `hidden` or `absent`: whether /sys/kernel/btf/vmlinux
    /// existed during the run.
    pub btf: String,
    pub exit: Option<i32>,
    pub passed: bool,
    pub output: Vec<String>,
}

/// Everything known about one kernel's boot.
pub struct KernelOutcome {
    pub kernel: KernelPackage,
    pub reported_release: Option<String>,
    pub runs: Vec<PayloadRun>,
    /// Reason the kernel failed; `None` when it passed.
    pub failure: Option<String>,
    pub elapsed: Duration,
    pub accelerator: &'static str,
    pub log_path: PathBuf,
    /// Last console lines, for a guest that stopped before any payload.
    tail: Vec<String>,
}

impl KernelOutcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    pub fn from_boot(
        kernel: KernelPackage,
        payloads: &[Payload],
        boot: BootOutput,
        log_path: PathBuf,
    ) -> Self {
        let mut console = Console::parse(&boot.lines);
        let failure = judge(&kernel, payloads, &boot, &console);
        if let Some(run) = console.open_run.take() {
            // A payload that never finished still shows its output.
            console.runs.push(run);
        }
        let tail_start = boot.lines.len().saturating_sub(OUTPUT_TAIL_LINES);
        Self {
            kernel,
            reported_release: console.reported_release,
            runs: console.runs,
            failure,
            elapsed: boot.elapsed,
            accelerator: boot.accelerator,
            log_path,
            tail: boot.lines[tail_start..].to_vec(),
        }
    }

    /// Prints the verdict and, for a failure, the output that explains it.
    pub fn print_result(&self) {
        let label = format!("{} {}", self.kernel.arch.name(), self.kernel.release);
        let seconds = self.elapsed.as_secs_f64();
        match &self.failure {
            None => {
                println!(
                    "PASS {label}: {} payload runs in {seconds:.1} s ({})",
                    self.runs.len(),
                    self.accelerator
                );
                for run in self
                    .runs
                    .iter()
                    .filter(|run| run.output.iter().any(|line| is_verifier_summary(line)))
                {
                    if let Some(reason) = rejection_reason(&run.output) {
                        println!(
                            "     {} (btf={}): rejected by the verifier as required: {reason}",
                            run.name, run.btf
                        );
                    }
                }
            }
            Some(reason) => {
                println!(
                    "FAIL {label} after {seconds:.1} s ({}): {reason}",
                    self.accelerator
                );
                let failed: Vec<&PayloadRun> = self.runs.iter().filter(|run| !run.passed).collect();
                let mut printed_payloads = Vec::new();
                for run in &failed {
                    println!(
                        "---- {} (btf={}, exit {}) on {label} ----",
                        run.name,
                        run.btf,
                        exit_text(run.exit)
                    );
                    // The BTF passes of one payload usually fail alike, so
                    // the output is shown once per payload.
                    if printed_payloads.contains(&run.name) {
                        println!("  (output as in the run above; all of it is in the console log)");
                    } else {
                        for line in excerpt(&run.output) {
                            println!("  {line}");
                        }
                        printed_payloads.push(run.name.clone());
                    }
                    if let Some(reason) = rejection_reason(&run.output) {
                        println!("  verifier rejection: {reason}");
                    }
                }
                if failed.is_empty() && self.tail.is_empty() {
                    println!("---- {label} printed nothing on its console ----");
                } else if failed.is_empty() {
                    println!("---- last console lines of {label} ----");
                    for line in &self.tail {
                        println!("  {line}");
                    }
                }
                println!("     full console log: {}", self.log_path.display());
            }
        }
    }
}

/// Facts read from the guest's protocol lines.
struct Console {
    reported_release: Option<String>,
    setup_failures: Vec<String>,
    runs: Vec<PayloadRun>,
    /// A payload that began and never ended.
    open_run: Option<PayloadRun>,
    /// The `DNSGATE-VM-RESULT` verdict, if the guest got that far.
    result: Option<bool>,
}

impl Console {
    fn parse(lines: &[String]) -> Self {
        let mut console = Self {
            reported_release: None,
            setup_failures: Vec::new(),
            runs: Vec::new(),
            open_run: None,
            result: None,
        };
        for line in lines {
            if let Some(rest) = line.strip_prefix(KERNEL_PREFIX) {
                console.reported_release = rest.split_whitespace().next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix(SETUP_FAILED_PREFIX) {
                console.setup_failures.push(rest.to_owned());
            } else if let Some(rest) = line.strip_prefix(BEGIN_PREFIX) {
                let (name, fields) = split_fields(rest);
                console.open_run = Some(PayloadRun {
                    name,
                    btf: field(&fields, "btf").unwrap_or_default(),
                    exit: None,
                    passed: false,
                    output: Vec::new(),
                });
            } else if let Some(rest) = line.strip_prefix(END_PREFIX) {
                let (_, fields) = split_fields(rest);
                if let Some(mut run) = console.open_run.take() {
                    run.exit = field(&fields, "exit").and_then(|value| value.parse().ok());
                    run.passed = field(&fields, "verdict").as_deref() == Some("pass");
                    console.runs.push(run);
                }
            } else if let Some(rest) = line.strip_prefix(RESULT_PREFIX) {
                console.result = Some(rest.trim() == "pass");
            } else if let Some(run) = console.open_run.as_mut() {
                run.output.push(line.clone());
            }
        }
        console
    }
}

/// Returns why the kernel failed, or `None` when it passed.
fn judge(
    kernel: &KernelPackage,
    payloads: &[Payload],
    boot: &BootOutput,
    console: &Console,
) -> Option<String> {
    if boot.timed_out {
        let running = console
            .open_run
            .as_ref()
            .map(|run| format!("; {} (btf={}) was running", run.name, run.btf))
            .unwrap_or_default();
        return Some(format!(
            "timed out after {} s{running}",
            boot.elapsed.as_secs()
        ));
    }
    let Some(result) = console.result else {
        let qemu = boot.qemu_stderr.trim();
        let qemu = if qemu.is_empty() {
            String::new()
        } else {
            format!("; QEMU: {qemu}")
        };
        return Some(format!(
            "the guest stopped without a result line (kernel panic or init failure; QEMU {}){qemu}",
            boot.status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "killed".to_owned())
        ));
    };
    if console.reported_release.as_deref() != Some(kernel.release.as_str()) {
        return Some(format!(
            "the guest reported kernel {:?}, expected {}",
            console.reported_release, kernel.release
        ));
    }
    if !console.setup_failures.is_empty() {
        return Some(format!(
            "guest setup failed: {}",
            console.setup_failures.join("; ")
        ));
    }
    let failed: Vec<String> = console
        .runs
        .iter()
        .filter(|run| !run.passed)
        .map(|run| {
            format!(
                "{} (btf={}, exit {})",
                run.name,
                run.btf,
                exit_text(run.exit)
            )
        })
        .collect();
    if !failed.is_empty() {
        return Some(format!("failed: {}", failed.join(", ")));
    }
    if let Some(missing) = payloads
        .iter()
        .find(|payload| !console.runs.iter().any(|run| run.name == payload.name))
    {
        return Some(format!("payload {} never ran", missing.name));
    }
    if !result {
        return Some(
            "the guest reported fail with every payload passing; see the console log".to_owned(),
        );
    }
    None
}

fn exit_text(exit: Option<i32>) -> String {
    exit.map_or_else(|| "unknown".to_owned(), |code| code.to_string())
}

/// `name key=value key=value` -> name and the pairs.
fn split_fields(text: &str) -> (String, Vec<(String, String)>) {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or_default().to_owned();
    let fields = words
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    (name, fields)
}

fn field(fields: &[(String, String)], key: &str) -> Option<String> {
    fields
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.clone())
}

/// Returns the verifier log in `output`, from the line that introduces it through
/// its summary line, or the last lines of `output` when it contains none.
fn excerpt(output: &[String]) -> &[String] {
    let Some(summary) = output.iter().rposition(|line| is_verifier_summary(line)) else {
        return &output[output.len().saturating_sub(OUTPUT_TAIL_LINES)..];
    };
    let start = output[..summary]
        .iter()
        .rposition(|line| line.to_ascii_lowercase().contains("verifier"))
        .unwrap_or(summary.saturating_sub(OUTPUT_TAIL_LINES));
    let start = start.max((summary + 1).saturating_sub(VERIFIER_LOG_MAX_LINES));
    &output[start..=summary]
}

/// Returns the verifier's last message before its statistics, such as "invalid
/// access to packet, off=12 size=2". With statistics on, as aya requests,
/// the kernel ends the log with `verification time`, `stack depth` and the
/// `processed N insns` summary; older kernels print only the summary.
fn rejection_reason(output: &[String]) -> Option<&str> {
    let summary = output.iter().rposition(|line| is_verifier_summary(line))?;
    output[..summary]
        .iter()
        .rev()
        .map(|line| line.trim())
        .filter(|line| !line.starts_with("verification time") && !line.starts_with("stack depth"))
        .find(|line| !line.is_empty() && !line.starts_with(|c: char| c.is_ascii_digit()))
}

/// Returns whether a console line comes from the guest's userland rather than the
/// kernel's log, which stamps every line with `[ seconds.micros]`.
pub fn is_guest_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return true;
    };
    let stamp = rest.split(']').next().unwrap_or_default().trim();
    !(stamp.contains('.') && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// Prints one line per kernel and the closing count.
pub fn print_summary(outcomes: &[KernelOutcome], total: Duration) {
    println!("\nvm-test summary (times are boot to power-off):");
    for outcome in outcomes {
        let verdict = if outcome.passed() { "pass" } else { "FAIL" };
        println!(
            "  {verdict:<4} {:<8} {:<24} {:<8} {:>6.1} s  {} {} ({})",
            outcome.kernel.arch.name(),
            outcome
                .reported_release
                .as_deref()
                .unwrap_or(&outcome.kernel.release),
            outcome.accelerator,
            outcome.elapsed.as_secs_f64(),
            outcome.kernel.package,
            outcome.kernel.version,
            outcome.kernel.suite,
        );
    }
    let passed = outcomes.iter().filter(|outcome| outcome.passed()).count();
    println!("vm-test: total {:.1} s", total.as_secs_f64());
    println!(
        "vm-test: {passed} passed, {} failed",
        outcomes.len() - passed
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Arch;
    use crate::vm::payload::Expectation;

    fn kernel() -> KernelPackage {
        KernelPackage {
            arch: Arch::X86_64,
            suite: "bullseye".to_owned(),
            package: "linux-image-5.10.0-32-amd64".to_owned(),
            version: "5.10.223-1".to_owned(),
            release: "5.10.0-32-amd64".to_owned(),
            series: (5, 10),
        }
    }

    fn payloads() -> Vec<Payload> {
        vec![Payload {
            name: "guest".to_owned(),
            binary: "/t/guest".into(),
            args: Vec::new(),
            expect: Expectation::Success,
        }]
    }

    fn boot(lines: &[&str], timed_out: bool) -> BootOutput {
        BootOutput {
            lines: lines.iter().map(|line| (*line).to_owned()).collect(),
            timed_out,
            status: None,
            elapsed: Duration::from_secs(3),
            accelerator: "tcg",
            qemu_stderr: String::new(),
        }
    }

    fn outcome(lines: &[&str], timed_out: bool) -> KernelOutcome {
        KernelOutcome::from_boot(
            kernel(),
            &payloads(),
            boot(lines, timed_out),
            PathBuf::from("/log"),
        )
    }

    const GOOD: &[&str] = &[
        "[    0.000000] Linux version 5.10.0-32-amd64",
        "DNSGATE-VM-KERNEL: 5.10.0-32-amd64 x86_64",
        "DNSGATE-VM-PAYLOAD-BEGIN: guest btf=present",
        "test result: ok. 5 passed; 0 failed",
        "DNSGATE-VM-PAYLOAD-END: guest btf=present exit=0 verdict=pass",
        "DNSGATE-VM-RESULT: pass",
    ];

    #[test]
    fn complete_passing_boot_passes() {
        let outcome = outcome(GOOD, false);
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.runs.len(), 1);
        assert_eq!(
            outcome.runs[0].output,
            ["test result: ok. 5 passed; 0 failed"]
        );
    }

    #[test]
    fn failing_payload_is_named() {
        let mut lines = GOOD.to_vec();
        lines[4] = "DNSGATE-VM-PAYLOAD-END: guest btf=present exit=101 verdict=fail";
        lines[5] = "DNSGATE-VM-RESULT: fail";
        let failure = outcome(&lines, false).failure.expect("must fail");
        assert!(
            failure.contains("guest (btf=present, exit 101)"),
            "{failure}"
        );
    }

    #[test]
    fn missing_result_line_fails() {
        let failure = outcome(&GOOD[..5], false).failure.expect("must fail");
        assert!(failure.contains("without a result line"), "{failure}");
    }

    #[test]
    fn timeout_names_running_payload() {
        let failure = outcome(&GOOD[..4], true).failure.expect("must fail");
        assert!(
            failure.contains("timed out") && failure.contains("guest (btf=present) was running"),
            "{failure}"
        );
    }

    #[test]
    fn wrong_kernel_fails() {
        let mut lines = GOOD.to_vec();
        lines[1] = "DNSGATE-VM-KERNEL: 6.18.0 x86_64";
        let failure = outcome(&lines, false).failure.expect("must fail");
        assert!(failure.contains("expected 5.10.0-32-amd64"), "{failure}");
    }

    #[test]
    fn payload_that_never_ran_fails() {
        let lines = [GOOD[1], GOOD[5]];
        let failure = outcome(&lines, false).failure.expect("must fail");
        assert!(failure.contains("payload guest never ran"), "{failure}");
    }

    #[test]
    fn excerpt_keeps_verifier_log() {
        let output: Vec<String> = [
            "running 1 test",
            "BPF_PROG_LOAD of dnsgate_probe failed: Permission denied (os error 13)",
            "verifier log:",
            "6: (69) r5 = *(u16 *)(r2 +12)",
            "invalid access to packet, off=12 size=2, R2(id=0,off=12,r=0)",
            "verification time 7719 usec",
            "stack depth 0+0",
            "processed 7 insns (limit 1000000) max_states_per_insn 0",
            "test result: FAILED. 0 passed; 1 failed",
        ]
        .iter()
        .map(|line| (*line).to_owned())
        .collect();
        assert_eq!(excerpt(&output), &output[2..8]);
        assert_eq!(
            rejection_reason(&output),
            Some("invalid access to packet, off=12 size=2, R2(id=0,off=12,r=0)")
        );
    }

    #[test]
    fn kernel_log_lines_are_not_guest_lines() {
        assert!(!is_guest_line("[    1.234567] veth: loaded"));
        assert!(is_guest_line("test probe_program_loads ... ok"));
        assert!(is_guest_line("[btf] note"));
    }
}
