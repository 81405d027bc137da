//! Starting dnsgate, the peers it is compared with, and the upstream they
//! all forward to, each with local data only.
//!
//! Every server runs in the router namespace, which has no route beyond the
//! veth pair, and is configured so it never queries anything but the
//! upstream on that namespace's loopback.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    lists::{ALLOWED_NAMES, ALLOWED_ZONE, ListFiles, allowed_name},
    topology::{CLIENT_ADDR, Daemon, ROUTER_ADDR, Topology, UPSTREAM_ADDR, UPSTREAM_PORT, command_in},
};

/// How long one start-up probe waits for its answer.
const PROBE_TIMEOUT_MS: u64 = 100;

/// Core the servers under test run on.
pub const SERVER_CORE: usize = 1;
/// Core the load generator and the upstream share.
pub const CLIENT_CORE: usize = 0;

/// A DNS server in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Dnsgate,
    Dnsmasq,
    Unbound,
    Dnsdist,
    Hickory,
}

impl Server {
    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dnsgate => "dnsgate",
            Self::Dnsmasq => "dnsmasq",
            Self::Unbound => "unbound",
            Self::Dnsdist => "dnsdist",
            Self::Hickory => "hickory-dns",
        }
    }
}

/// Which transports a server serves in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// UDP and TCP on port 53.
    Plain,
    /// Plain, plus DoT on 853, DoH on 443 and, where supported, DoQ on 853.
    Encrypted,
}

/// Paths to programs and files every server start needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The release `dnsgate` binary.
    pub dnsgate: PathBuf,
    /// The `hickory-dns` binary, if it could be installed.
    pub hickory: Option<PathBuf>,
    /// Scratch directory for configurations and logs.
    pub work: PathBuf,
    /// Certificate (PEM) the peers present; dnsgate generates its own.
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
}

/// Generates a self-signed ECDSA certificate for the peers' TLS listeners.
pub fn generate_certificate(work: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = work.join("peer-cert.pem");
    let key = work.join("peer-key.pem");
    crate::prereq::run_checked(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=bench.test", "-addext"])
            .arg(format!("subjectAltName=IP:{ROUTER_ADDR}"))
            // OpenSSL marks a self-signed certificate as a CA, which rustls
            // (dnsgate, hickory-dns, doq-load) refuses as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null()),
    )?;
    Ok((cert, key))
}

/// Starts the upstream: dnsmasq on the router namespace's loopback,
/// answering every name under [`ALLOWED_ZONE`] from its own data.
pub fn start_upstream(topology: &Topology, setup: &Setup) -> Result<Daemon> {
    let mut command = command_in(&topology.router_ns, CLIENT_CORE, Path::new("dnsmasq"));
    command
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--pid-file="])
        .arg(format!("--listen-address={UPSTREAM_ADDR}"))
        .arg(format!("--port={UPSTREAM_PORT}"))
        .arg("--bind-interfaces")
        .arg(format!("--address=/{ALLOWED_ZONE}/192.0.2.1"))
        // dnsmasq gives its own data a TTL of 0 by default, which no cache
        // keeps: the allowed-name runs would measure forwarding, not a warm
        // cache.
        .arg("--local-ttl=3600");
    let mut daemon = Daemon::spawn("upstream", &mut command, setup.work.join("upstream.log"))?;
    wait_until_answering(&mut daemon, &topology.router_ns, UPSTREAM_ADDR, UPSTREAM_PORT, &allowed_name(0), Duration::from_secs(20))?;
    Ok(daemon)
}

/// Starts `server` with `list` loaded and the upstream configured, and
/// waits until it answers a blocked name from the client namespace.
/// Returns the daemon and the time from start to the first answer.
pub fn start(
    server: Server,
    topology: &Topology,
    setup: &Setup,
    list: &ListFiles,
    probe: &str,
    listeners: Listeners,
    timeout: Duration,
) -> Result<(Daemon, Duration)> {
    let label = format!("{}-{}", server.name(), list.names);
    let log = setup.work.join(format!("{label}.log"));
    if topology.router_xdp_attached()? {
        bail!(
            "an XDP program is still attached to {} in {}: it would respond in place of {}",
            topology.router_if,
            topology.router_ns,
            server.name()
        );
    }
    let mut daemon = match server {
        Server::Dnsgate => start_dnsgate(topology, setup, list, &label, log)?,
        Server::Dnsmasq => start_dnsmasq(topology, list, &label, log)?,
        Server::Unbound => start_unbound(topology, setup, list, listeners, &label, log)?,
        Server::Dnsdist => start_dnsdist(topology, setup, list, listeners, &label, log)?,
        Server::Hickory => start_hickory(topology, setup, &label, log)?,
    };
    // hickory-dns only forwards (it is measured on allowed names), so it
    // is probed with one.
    let allowed_probe = allowed_name(0);
    let probe = if server == Server::Hickory { allowed_probe.as_str() } else { probe };
    wait_until_answering(&mut daemon, &topology.client_ns, ROUTER_ADDR, 53, probe, timeout)?;
    let startup = daemon.started.elapsed();
    if server == Server::Dnsgate {
        // The first answer can come from the kernel before user space has
        // bound its sockets; the log line says every listener is up.
        daemon.wait_for_log("dnsgate is running", timeout)?;
    }
    Ok((daemon, startup))
}

fn start_dnsgate(topology: &Topology, setup: &Setup, list: &ListFiles, label: &str, log: PathBuf) -> Result<Daemon> {
    let state = setup.work.join(format!("{label}-state"));
    std::fs::create_dir_all(&state)?;
    // Every setting but these comes from the command line: the
    // certificate all servers share, and the detach at exit, without which
    // the filter would stay attached (fail-open) and answer blocked names
    // for the peer measured next.
    let config = setup.work.join("dnsgate.toml");
    std::fs::write(
        &config,
        format!(
            "[dataplane]\ndetach_on_stop = true\n\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            setup.cert.display(),
            setup.key.display()
        ),
    )?;
    let mut command = command_in(&topology.router_ns, SERVER_CORE, &setup.dnsgate);
    command
        .arg("--pin-dir")
        .arg(topology.pin_dir())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--lan-iface", &topology.router_if, "--state-dir"])
        .arg(&state)
        .arg("--blocklist")
        .arg(format!("domains:{}", list.domains.display()))
        .arg("--upstream")
        .arg(format!("udp://{UPSTREAM_ADDR}:{UPSTREAM_PORT}"))
        .env("RUST_LOG", "info");
    Daemon::spawn(label, &mut command, log)
}

/// hickory-dns as a forwarder to the upstream, serving UDP and TCP on 53
/// and DoQ on 853 with the shared certificate. It runs as root in the
/// namespace, without dropping privileges.
fn start_hickory(topology: &Topology, setup: &Setup, label: &str, log: PathBuf) -> Result<Daemon> {
    let binary = setup.hickory.as_ref().context("hickory-dns is not installed")?;
    let config = setup.work.join("hickory-dns.toml");
    std::fs::write(
        &config,
        format!(
            "listen_addrs_ipv4 = [\"{ROUTER_ADDR}\"]\nlisten_port = 53\nquic_listen_port = 853\n\
             disable_tls = true\ndisable_https = true\ndrop_privileges = false\n\
             directory = \"{work}\"\n\
             tls_cert = {{ path = \"{cert}\", private_key = \"{key}\" }}\n\n\
             [[zones]]\nzone = \".\"\nzone_type = \"External\"\n\n\
             [zones.stores]\ntype = \"forward\"\n\n\
             [[zones.stores.name_servers]]\nip = \"{UPSTREAM_ADDR}\"\ntrust_negative_responses = true\n\
             connections = [{{ port = {UPSTREAM_PORT}, protocol = {{ type = \"udp\" }} }}]\n",
            work = setup.work.display(),
            cert = setup.cert.display(),
            key = setup.key.display(),
        ),
    )?;
    let mut command = command_in(&topology.router_ns, SERVER_CORE, binary);
    command.arg("--config").arg(&config);
    Daemon::spawn(label, &mut command, log)
}

fn start_dnsmasq(topology: &Topology, list: &ListFiles, label: &str, log: PathBuf) -> Result<Daemon> {
    let mut command = command_in(&topology.router_ns, SERVER_CORE, Path::new("dnsmasq"));
    command
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--pid-file="])
        .arg(format!("--listen-address={ROUTER_ADDR}"))
        .arg("--bind-interfaces")
        .arg(format!("--server={UPSTREAM_ADDR}#{UPSTREAM_PORT}"))
        .arg(format!("--cache-size={}", 10 * ALLOWED_NAMES))
        .arg(format!("--conf-file={}", list.dnsmasq.display()));
    Daemon::spawn(label, &mut command, log)
}

fn start_unbound(
    topology: &Topology,
    setup: &Setup,
    list: &ListFiles,
    listeners: Listeners,
    label: &str,
    log: PathBuf,
) -> Result<Daemon> {
    let mut config = format!(
        "server:\n    username: \"\"\n    chroot: \"\"\n    directory: \"{work}\"\n    pidfile: \"\"\n    \
         use-syslog: no\n    logfile: \"\"\n    verbosity: 0\n    num-threads: 1\n    \
         module-config: \"iterator\"\n    do-not-query-localhost: no\n    \
         access-control: {CLIENT_ADDR}/24 allow\n    interface: {ROUTER_ADDR}\n",
        work = setup.work.display()
    );
    if listeners == Listeners::Encrypted {
        config.push_str(&format!(
            "    interface: {ROUTER_ADDR}@853\n    interface: {ROUTER_ADDR}@443\n    tls-port: 853\n    \
             https-port: 443\n    http-endpoint: \"/dns-query\"\n    tls-service-key: \"{key}\"\n    \
             tls-service-pem: \"{cert}\"\n",
            key = setup.key.display(),
            cert = setup.cert.display()
        ));
    }
    config.push_str(&format!(
        "include: \"{list}\"\nforward-zone:\n    name: \".\"\n    forward-addr: {UPSTREAM_ADDR}@{UPSTREAM_PORT}\n",
        list = list.unbound.display()
    ));
    let path = setup.work.join(format!("{label}.unbound.conf"));
    std::fs::write(&path, config)?;
    let mut command = command_in(&topology.router_ns, SERVER_CORE, Path::new("unbound"));
    command.args(["-d", "-c"]).arg(&path);
    Daemon::spawn(label, &mut command, log)
}

fn start_dnsdist(
    topology: &Topology,
    setup: &Setup,
    list: &ListFiles,
    listeners: Listeners,
    label: &str,
    log: PathBuf,
) -> Result<Daemon> {
    // The security poll must be off before anything else, or dnsdist sends
    // a query out through the machine's resolver.
    let mut config = format!(
        "setSecurityPollSuffix(\"\")\nsetLocal(\"{ROUTER_ADDR}:53\")\nsetACL({{\"{CLIENT_ADDR}/24\"}})\n\
         newServer({{address=\"{UPSTREAM_ADDR}:{UPSTREAM_PORT}\", checkName=\"{probe}\"}})\n\
         getPool(\"\"):setCache(newPacketCache({entries}))\n\
         local blocked = newSuffixMatchNode()\n\
         for name in io.lines(\"{list}\") do blocked:add(name) end\n\
         addAction(SuffixMatchNodeRule(blocked, true), SpoofAction(\"0.0.0.0\"))\n",
        probe = allowed_name(0),
        entries = 10 * ALLOWED_NAMES,
        list = list.domains.display()
    );
    if listeners == Listeners::Encrypted {
        config.push_str(&format!(
            "addTLSLocal(\"{ROUTER_ADDR}:853\", \"{cert}\", \"{key}\")\n\
             addDOHLocal(\"{ROUTER_ADDR}:443\", \"{cert}\", \"{key}\", \"/dns-query\")\n",
            cert = setup.cert.display(),
            key = setup.key.display()
        ));
    }
    let path = setup.work.join(format!("{label}.dnsdist.lua"));
    std::fs::write(&path, config)?;
    let mut command = command_in(&topology.router_ns, SERVER_CORE, Path::new("dnsdist"));
    command.args(["--supervised", "--disable-syslog", "-C"]).arg(&path);
    Daemon::spawn(label, &mut command, log)
}

/// Polls `name` at `address`:`port` from `namespace` with kdig until an
/// answer with NOERROR arrives.
fn wait_until_answering(
    daemon: &mut Daemon,
    namespace: &str,
    address: &str,
    port: u16,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    // The project's one-shot client with a 100 ms timeout measures start-up
    // to a tenth of a second. kdig waits at least a second for a server that
    // has bound its socket but not loaded its list yet.
    let client = std::env::current_dir()?.join("target/release/dns-query");
    let deadline = Instant::now() + timeout;
    loop {
        let output = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(&client)
            .args([&format!("{address}:{port}"), name, "A", &PROBE_TIMEOUT_MS.to_string()])
            .output()
            .with_context(|| format!("failed to run {}", client.display()))?;
        if String::from_utf8_lossy(&output.stdout).starts_with("rcode=NOERROR") {
            return Ok(());
        }
        daemon.check_alive()?;
        if Instant::now() > deadline {
            bail!("{} did not answer {name} within {timeout:?}; see {}", daemon.label, daemon.log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
