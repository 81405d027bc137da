//! The benchmark's network: a client namespace and a router namespace joined
//! by a veth pair, a bpffs of its own, and the daemons started inside.
//!
//! Every name includes this process's PID, and everything is removed by
//! name or PID when its guard is dropped, on every exit path.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::prereq::run_checked;

/// Client address on the veth pair (RFC 2544 benchmarking range, reachable
/// only inside the namespaces).
pub const CLIENT_ADDR: &str = "198.18.0.1";
/// Router address on the veth pair.
pub const ROUTER_ADDR: &str = "198.18.0.2";
/// The upstream resolver, on the router namespace's loopback.
pub const UPSTREAM_ADDR: &str = "127.0.0.1";
/// The upstream resolver's port.
pub const UPSTREAM_PORT: u16 = 5300;

/// Namespaces, links and the bpffs mount of one benchmark run.
#[derive(Debug)]
pub struct Topology {
    /// Namespace of the load generator.
    pub client_ns: String,
    /// Namespace of the server under test and its upstream.
    pub router_ns: String,
    /// The client's veth end.
    pub client_if: String,
    /// The router's veth end.
    pub router_if: String,
    /// A bpffs mount of the run's own for `dnsgate --pin-dir`, because
    /// `ip netns exec` hides the host's /sys/fs/bpf.
    pub bpffs: PathBuf,
}

impl Topology {
    /// Creates the namespaces and the veth pair, with addresses and links up.
    pub fn create() -> Result<Self> {
        let id = std::process::id();
        let topology = Self {
            client_ns: format!("dgb{id}c"),
            router_ns: format!("dgb{id}r"),
            client_if: format!("dgb{id}c0"),
            router_if: format!("dgb{id}r0"),
            bpffs: PathBuf::from(format!("/run/dgb{id}-bpf")),
        };
        // From here on, Drop removes whatever was created.
        run_checked(Command::new("ip").args(["netns", "add", &topology.client_ns]))?;
        run_checked(Command::new("ip").args(["netns", "add", &topology.router_ns]))?;
        run_checked(Command::new("ip").args([
            "link",
            "add",
            &topology.client_if,
            "netns",
            &topology.client_ns,
            "type",
            "veth",
            "peer",
            "name",
            &topology.router_if,
            "netns",
            &topology.router_ns,
        ]))?;
        let ends = [
            (&topology.client_ns, &topology.client_if, CLIENT_ADDR),
            (&topology.router_ns, &topology.router_if, ROUTER_ADDR),
        ];
        for (namespace, interface, address) in ends {
            ip(namespace, &["addr", "add", &format!("{address}/24"), "dev", interface])?;
            ip(namespace, &["link", "set", "lo", "up"])?;
            ip(namespace, &["link", "set", interface, "up"])?;
        }
        std::fs::create_dir_all(&topology.bpffs)?;
        run_checked(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&topology.bpffs))?;
        Ok(topology)
    }

    /// The `--pin-dir` for dnsgate.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("dnsgate")
    }

    /// Whether an XDP program is attached to the router's veth end. A
    /// filter left there by dnsgate would answer blocked names for the
    /// peer measured next.
    pub fn router_xdp_attached(&self) -> Result<bool> {
        let output = Command::new("ip")
            .args(["-n", &self.router_ns, "-d", "link", "show", "dev", &self.router_if])
            .output()
            .context("failed to run ip link show")?;
        if !output.status.success() {
            bail!("ip link show dev {} failed: {}", self.router_if, String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).contains("prog/xdp"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it.
        for namespace in [&self.client_ns, &self.router_ns] {
            let _ = Command::new("ip").args(["netns", "del", namespace]).stderr(Stdio::null()).status();
        }
        let _ = Command::new("umount").arg(&self.bpffs).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

fn ip(namespace: &str, args: &[&str]) -> Result<()> {
    run_checked(Command::new("ip").args(["-n", namespace]).args(args))
}

/// A command that runs `program` in `namespace`, pinned to `core`.
///
/// `ip netns exec` and `taskset` both exec the next program, so the child's
/// PID is the program's own.
pub fn command_in(namespace: &str, core: usize, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace, "taskset", "-c", &core.to_string()]).arg(program);
    command
}

/// A daemon started for the benchmark, stopped by PID on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// What it is, for messages.
    pub label: String,
    /// Its combined standard output and error.
    pub log: PathBuf,
    /// When it was started.
    pub started: Instant,
}

impl Daemon {
    /// Starts `command` with its output going to `log`.
    pub fn spawn(label: &str, command: &mut Command, log: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("failed to start {label}: {command:?}"))?;
        Ok(Self { child, label: label.to_owned(), log, started })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("{} exited with {status}; its log ({}):\n{log}", self.label, self.log.display());
        }
        Ok(())
    }

    /// Waits until the log contains `marker`.
    pub fn wait_for_log(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::read_to_string(&self.log).unwrap_or_default().contains(marker) {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} did not log {marker:?} within {timeout:?}; see {}", self.label, self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size now, in bytes (`VmRSS` in /proc/PID/status).
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .with_context(|| format!("no VmRSS line in {path}"))?;
        Ok(kib * 1024)
    }

    /// Sum of the `memlock` of the BPF maps the process holds open, in bytes.
    pub fn map_memlock_bytes(&self) -> Result<u64> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut total = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
            let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
            if !text.lines().any(|line| line.starts_with("map_type:")) {
                continue;
            }
            if let Some(value) = text.lines().find_map(|line| line.strip_prefix("memlock:")) {
                total += value.trim().parse::<u64>().context("invalid memlock value in fdinfo")?;
            }
        }
        Ok(total)
    }

    /// Sends SIGTERM, waits up to 10 s, then kills.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // The PID is our unreaped child's, so it cannot belong to another
        // process yet.
        let _ = Command::new("kill").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}
