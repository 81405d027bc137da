//! Network namespaces, veth pairs and child processes for the namespace
//! tests. Everything created here is removed by name or PID when its guard
//! is dropped, also when a test panics.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, for namespaces and links
/// (interface names may have at most 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// Runs a command and panics with its output if it fails.
pub fn must(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|error| panic!("failed to start {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    /// Its name under /run/netns.
    pub name: String,
}

impl Namespace {
    /// Creates a namespace with loopback up and IPv6 duplicate address
    /// detection off, so that the link-local addresses of its interfaces
    /// serve neighbour discovery as soon as a link is up. With detection on,
    /// a router namespace cannot resolve its IPv6 neighbours for about a
    /// second, and a test that forwards IPv6 at once loses its first query.
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        must(Command::new("ip").args(["netns", "add", &name]));
        let namespace = Self { name };
        must(namespace.command("sysctl").args([
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]));
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `ip ARGS` inside the namespace and panics if it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        must(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Creates a veth pair with one end in each namespace, addresses given as
/// CIDR strings, and brings both ends up. Returns the two interface names.
pub fn veth_pair(
    left: &Namespace,
    left_address: Option<&str>,
    right: &Namespace,
    right_address: Option<&str>,
) -> (String, String) {
    let left_name = unique_name("vl");
    let right_name = unique_name("vr");
    must(Command::new("ip").args([
        "link", "add", &left_name, "netns", &left.name, "type", "veth", "peer", "name", &right_name, "netns",
        &right.name,
    ]));
    for (namespace, name, address) in [(left, &left_name, left_address), (right, &right_name, right_address)] {
        if let Some(address) = address {
            namespace.ip(&["addr", "add", address, "dev", name, "nodad"]);
        }
        namespace.ip(&["link", "set", name, "up"]);
    }
    (left_name, right_name)
}

/// A child process, killed by PID on drop.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    /// What the process is, for messages.
    pub label: String,
}

impl Process {
    /// Starts `command` with its output captured to files under `log_dir`.
    pub fn spawn(label: &str, command: &mut Command, log_dir: &Path) -> Self {
        let stdout = std::fs::File::create(log_dir.join(format!("{label}.out"))).expect("create log");
        let stderr = std::fs::File::create(log_dir.join(format!("{label}.err"))).expect("create log");
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {label}: {error}"));
        Self { child: Some(child), label: label.to_owned() }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True if the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the PID is our
        // own child's, which cannot be reused before we reap it.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: as in `signal`.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Stops the process as [`stop`](Self::stop) does and asserts that it exited with success.
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        let status = self.stop(timeout);
        // In a `Drop` during a panic, a second panic would abort the test.
        assert!(
            std::thread::panicking() || status.is_some_and(|status| status.success()),
            "{} did not exit cleanly on SIGTERM: {status:?}",
            self.label
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a spawned `dnsgate run` logs "dnsgate is running" to `log`, asserts it did, and returns the log.
pub fn wait_for_daemon(process: &mut Process, log: &Path, timeout: Duration) -> String {
    let ready = wait_for(timeout, || {
        process.exited() || std::fs::read_to_string(log).is_ok_and(|text| text.contains("dnsgate is running"))
    });
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!process.exited(), "{} exited at start:\n{text}", process.label);
    assert!(ready, "{} did not start within {timeout:?}:\n{text}", process.label);
    text
}

/// Starts `xdp-pass` on `interface` inside `namespace` and waits up to 20 s until it has attached.
pub fn start_xdp_pass(namespace: &Namespace, interface: &str, logs: &Path, label: &str) -> Process {
    start_xdp_pass_within(namespace, interface, logs, label, Duration::from_secs(20))
}

/// Starts `xdp-pass` as [`start_xdp_pass`] does, but waits up to `timeout` (longer on an emulated CPU).
pub fn start_xdp_pass_within(
    namespace: &Namespace,
    interface: &str,
    logs: &Path,
    label: &str,
    timeout: Duration,
) -> Process {
    // A native `XDP_TX` frame reaches a veth peer only when the peer runs an
    // XDP program too; its output goes to `logs`/`label`.out and .err.
    let mut command = namespace.command(workspace_binary("xdp-pass").to_str().unwrap());
    command.arg(interface);
    let mut process = Process::spawn(label, &mut command, logs);
    let out = logs.join(format!("{label}.out"));
    let attached = wait_for(timeout, || {
        process.exited() || std::fs::read_to_string(&out).is_ok_and(|text| text.contains("attached"))
    });
    let errors = std::fs::read_to_string(logs.join(format!("{label}.err"))).unwrap_or_default();
    assert!(!process.exited(), "xdp-pass ({label}) exited before attaching to {interface}:\n{errors}");
    assert!(attached, "xdp-pass ({label}) did not attach to {interface} within {timeout:?}:\n{errors}");
    process
}

/// Runs the `dnsgate` command line outside the namespaces against the daemon at `socket` and `pin_dir`.
pub fn dnsgate_cli(socket: &Path, pin_dir: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(workspace_binary("dnsgate"));
    command.arg("--socket").arg(socket).arg("--pin-dir").arg(pin_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.args(args).output().expect("run dnsgate")
}

/// Runs `dnsgate --json ARGS` as [`dnsgate_cli`] does, asserts that it succeeded and parses its output.
pub fn dnsgate_json(socket: &Path, pin_dir: &Path, config: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let output = dnsgate_cli(socket, pin_dir, config, &full);
    assert!(
        output.status.success(),
        "dnsgate {args:?} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("dnsgate {args:?} printed invalid JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
    })
}

/// Path of a binary built by this workspace (`dnsgate`, `xdp-pass`), next
/// to the test executable's profile directory. `cargo xtask test` builds
/// them before running the tests.
pub fn workspace_binary(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile directory");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build it first with `cargo build -p dnsgate --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp directory.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bpffs instance of the test's own, for `--pin-dir`, unmounted on drop.
///
/// `ip netns exec` gives the command a fresh sysfs, which hides the host's
/// /sys/fs/bpf, so a daemon started that way and a `dnsgate stats` run
/// outside would not see the same pins there. A mount elsewhere is shared.
#[derive(Debug)]
pub struct BpfFs(pub PathBuf);

impl BpfFs {
    /// Mounts a new bpffs on a fresh directory under /run.
    pub fn mount() -> Self {
        let path = PathBuf::from("/run").join(unique_name("dgbpf"));
        std::fs::create_dir_all(&path).expect("create bpffs mount point");
        must(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path));
        Self(path)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
