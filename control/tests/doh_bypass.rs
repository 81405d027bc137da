//! `[intercept] doh_resolver_lists` end to end: `dnsgate run --no-xdp` on a
//! loopback address, with a temporary list file, answers NXDOMAIN for the
//! listed names and their subdomains, counts them in `stats --json`, and
//! picks up a changed list on `dnsgate reload`.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Picks a loopback address from the process id, so parallel runs do not meet.
fn loopback_address() -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 0, ((pid >> 8) & 0xff) as u8, (pid & 0xff).max(2) as u8)
}

/// Finds a port free for both UDP and TCP on `address`.
fn free_port(address: Ipv4Addr) -> Option<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((address, 0)).ok()?;
        let port = udp.local_addr().ok()?.port();
        if TcpListener::bind((address, port)).is_ok() {
            return Some(port);
        }
    }
    None
}

struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    address: Ipv4Addr,
    port: u16,
}

impl Daemon {
    fn start(list: &str) -> Option<Self> {
        let address = loopback_address();
        let Some(port) = free_port(address) else {
            assert!(!in_ci(), "cannot bind {address} on loopback");
            eprintln!("skipping: cannot bind {address} on loopback");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let list_path = dir.path().join("doh-resolvers.txt");
        std::fs::write(&list_path, list).unwrap();
        let config_path = dir.path().join("dnsgate.toml");
        let config = format!(
            "[intercept]\ndoh_resolver_lists = [{list_path:?}]\n\
             [server]\ndns_port = {port}\ndot_port = 0\ndoq_port = 0\ndoh_port = 0\n\
             [metrics]\nenabled = false\n\
             [ddr]\nfollow_upstream_redirections = false\n"
        );
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("dnsgate.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dnsgate"))
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(dir.path().join("admin.sock"))
            .arg("--pin-dir")
            .arg(dir.path().join("pins"))
            .args(["run", "--no-xdp", "--listen", &address.to_string(), "--state-dir"])
            .arg(dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsgate did not start");
        let mut daemon = Self { dir, child, address, port };
        daemon.wait_ready();
        Some(daemon)
    }

    fn list_path(&self) -> PathBuf {
        self.dir.path().join("doh-resolvers.txt")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsgate.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kdig("ready.invalid.", "A").contains("->>HEADER<<-") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dnsgate exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "dnsgate did not answer within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kdig(&self, name: &str, qtype: &str) -> String {
        let output = Command::new("kdig")
            .arg(format!("@{}", self.address))
            .args(["-p", &self.port.to_string(), "+time=2", "+retry=0", "-t", qtype, name])
            .output()
            .expect("kdig did not run");
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    fn admin(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_dnsgate"))
            .arg("--socket")
            .arg(self.dir.path().join("admin.sock"))
            .args(args)
            .output()
            .expect("dnsgate did not run");
        assert!(
            output.status.success(),
            "dnsgate {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn counter(&self) -> u64 {
        let stats: serde_json::Value = serde_json::from_str(&self.admin(&["--json", "stats"])).unwrap();
        stats["resolver"]["doh_bypass_nxdomain"]
            .as_u64()
            .unwrap_or_else(|| panic!("stats lack resolver.doh_bypass_nxdomain: {stats}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kdig_missing() -> bool {
    if Command::new("kdig").arg("--version").output().is_ok() {
        return false;
    }
    assert!(!in_ci(), "kdig (knot-dnsutils) is needed for this test");
    eprintln!("skipping: kdig (knot-dnsutils) is not installed");
    true
}

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split([',', ';']).next())
        .unwrap_or_else(|| panic!("no status in kdig output:\n{output}"))
}

#[test]
fn listed_doh_names_get_nxdomain_and_are_counted() {
    if kdig_missing() {
        return;
    }
    let Some(daemon) = Daemon::start("# DoH resolvers\n0.0.0.0 dns.example\n") else {
        return;
    };
    assert_eq!(daemon.counter(), 0);

    let output = daemon.kdig("dns.example.", "A");
    assert_eq!(status(&output), "NXDOMAIN", "{output}");
    assert!(output.contains(";; QUESTION SECTION:\n;; dns.example."), "question echoed:\n{output}");
    assert!(output.contains("IN\tA\n"), "question type echoed:\n{output}");
    assert_eq!(daemon.counter(), 1);

    // Same suffix string, different name: not this feature's NXDOMAIN
    // (no upstream is configured, so SERVFAIL).
    let output = daemon.kdig("notdns.example.", "A");
    assert_ne!(status(&output), "NXDOMAIN", "{output}");
    assert_eq!(daemon.counter(), 1);

    // Subdomains and other types are covered too.
    let output = daemon.kdig("doh.dns.example.", "HTTPS");
    assert_eq!(status(&output), "NXDOMAIN", "{output}");
    assert_eq!(daemon.counter(), 2);

    // A reload reads the list again.
    std::fs::write(daemon.list_path(), "||doh.other.example^\n").unwrap();
    daemon.admin(&["reload"]);
    let output = daemon.kdig("doh.other.example.", "AAAA");
    assert_eq!(status(&output), "NXDOMAIN", "{output}");
    let output = daemon.kdig("dns.example.", "A");
    assert_ne!(status(&output), "NXDOMAIN", "removed from the list:\n{output}");
    assert_eq!(daemon.counter(), 3);
}
