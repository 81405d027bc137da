//! Boots one guest in QEMU, records its serial console line by line and
//! stops it when the deadline passes.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Arch;

/// Guest memory in MiB before adding room for the initramfs.
const GUEST_BASE_MEMORY_MIB: u64 = 768;

pub struct Boot<'a> {
    pub arch: Arch,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// Deadline from start to QEMU's exit.
    pub timeout: Duration,
    /// File that receives every console line.
    pub log_path: &'a Path,
}

/// Result of one boot.
pub struct BootOutput {
    /// Console lines, without line terminators.
    pub lines: Vec<String>,
    pub timed_out: bool,
    /// QEMU's exit status; `None` when it had to be killed.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub accelerator: &'static str,
    /// QEMU's own error output, for a QEMU that failed to start the guest.
    pub qemu_stderr: String,
}

/// Boots the guest and calls `on_line` for every console line as it arrives.
pub fn boot(boot: &Boot, mut on_line: impl FnMut(&str)) -> Result<BootOutput> {
    let accelerator = boot.arch.accelerator();
    // panic=-1 reboots at once on a panic, and -no-reboot turns that reboot
    // into QEMU's exit, so a crashed guest ends the run instead of hanging.
    let append = format!("console={} panic=-1 quiet loglevel=4", boot.arch.console());
    // The kernel keeps the compressed archive and its unpacked copy in RAM
    // at the same time, and the payloads run from that copy.
    let image_mib = fs::metadata(boot.initramfs)
        .with_context(|| format!("failed to read {}", boot.initramfs.display()))?
        .len()
        .div_ceil(1024 * 1024);
    let memory = format!("{}M", GUEST_BASE_MEMORY_MIB + 3 * image_mib);
    let mut command = Command::new(boot.arch.qemu_binary());
    command
        .args(boot.arch.machine_args())
        .args(["-accel", accelerator, "-m", &memory, "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    if let Some(parent) = boot.log_path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut log = File::create(boot.log_path)
        .with_context(|| format!("failed to create console log {}", boot.log_path.display()))?;

    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start {}", boot.arch.qemu_binary()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut raw = Vec::new();
        while stdout
            .read_until(b'\n', &mut raw)
            .is_ok_and(|read| read > 0)
        {
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            raw.clear();
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = started + boot.timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                on_line(&line);
                lines.push(line);
            }
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    let status = if timed_out {
        // Kills only the QEMU process this function started.
        child.kill().context("failed to kill the timed-out QEMU")?;
        child.wait()?;
        None
    } else {
        Some(child.wait()?)
    };
    let elapsed = started.elapsed();
    reader.join().expect("console reader thread panicked");
    let qemu_stderr = stderr_reader.join().expect("stderr reader thread panicked");
    if !qemu_stderr.is_empty() {
        writeln!(log, "--- qemu stderr ---\n{qemu_stderr}")?;
    }
    Ok(BootOutput {
        lines,
        timed_out,
        status,
        elapsed,
        accelerator,
        qemu_stderr,
    })
}
