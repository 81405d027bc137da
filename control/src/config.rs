//! The daemon's TOML configuration file. Every key has a default, so
//! `dnsgate run --lan-iface IF` works with no file at all: blocking, DDR and
//! the encrypted listeners serve at once, and allowed names need an
//! upstream, since no public resolver is built in.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use dnsgate_common::maps::BlockMode;
use serde::{Deserialize, Serialize};

use crate::{
    lists::{Budget, SourceSpec},
    resolver::{server::ServerConfig, BlockStyle, ResolverConfig},
};

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dnsgate/dnsgate.toml";
/// Default state directory (generated certificate, list caches, custom rules).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dnsgate";
/// Name the resolver is known by when `[tls] resolver_name` is not set.
pub const DEFAULT_RESOLVER_NAME: &str = "dnsgate.lan";
/// Upper bound of `querylog.capacity`: about 10 MB of entries.
pub const MAX_QUERYLOG_CAPACITY: usize = 100_000;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for state kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// The kernel filter.
    pub dataplane: DataplaneSettings,
    /// Block and allow lists, one `[[lists]]` table each.
    pub lists: Vec<SourceSpec>,
    /// Limits a compiled rule set must stay within.
    pub budget: Budget,
    /// The forwarding resolver.
    pub resolver: ResolverConfig,
    /// The LAN listeners.
    pub server: ServerConfig,
    /// The certificate of the encrypted listeners.
    pub tls: TlsSettings,
    /// Discovery of the encrypted listeners (DDR, RFC 9462).
    pub ddr: DdrSettings,
    /// The Prometheus endpoint.
    pub metrics: MetricsSettings,
    /// The log of recent queries.
    pub querylog: QueryLogSettings,
    /// Interception of DNS sent to other resolvers.
    pub intercept: InterceptSettings,
}

/// The `[metrics]` table: where the Prometheus text endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Address and port of the endpoint, loopback by default so only the
    /// router itself can scrape it. Port 0 picks a free port, which
    /// `dnsgate status` shows.
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true, listen: std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 9153)) }
    }
}

/// The `[querylog]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLogSettings {
    /// Queries kept in memory for `dnsgate log`; older ones are dropped.
    pub capacity: usize,
    /// How client addresses are recorded.
    pub client_privacy: ClientPrivacy,
    /// Log the queries the XDP program answers in the kernel too. They
    /// reach user space as events through a perf buffer per CPU; turning
    /// this off spares that copy on every blocked query.
    pub kernel_answers: bool,
    /// Most queries answered in the kernel logged per second and CPU; the
    /// rest are counted as `events_skipped`. 0 logs every one.
    pub kernel_answers_per_second: u32,
}

impl Default for QueryLogSettings {
    fn default() -> Self {
        Self {
            capacity: 1000,
            client_privacy: ClientPrivacy::Full,
            kernel_answers: true,
            kernel_answers_per_second: 1000,
        }
    }
}

/// How much of a client's address the query log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientPrivacy {
    /// The whole address.
    #[default]
    Full,
    /// The network part only: IPv4 /24, IPv6 /48.
    Truncate,
    /// No address.
    Omit,
}

/// How blocked names are answered, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlockModeSetting {
    /// `0.0.0.0` / `::` (or the sinkhole addresses) for A / AAAA, NODATA
    /// for other types.
    #[default]
    Null,
    /// NXDOMAIN.
    Nxdomain,
    /// REFUSED.
    Refused,
}

/// The `[dataplane]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneSettings {
    /// LAN interfaces; a bridge is expanded to its member ports.
    pub lan_interfaces: Vec<String>,
    /// Attach the XDP program (false: user space judges every query).
    pub xdp: bool,
    /// Buckets reserved per rule set (eight rules each).
    pub rule_buckets: u32,
    /// Load the program without the kernel's BTF.
    pub ignore_kernel_btf: bool,
    /// How blocked names are answered.
    pub block_mode: BlockModeSetting,
    /// TTL of blocked answers, in seconds.
    pub block_ttl: u32,
    /// Address for blocked A queries.
    pub sinkhole_v4: Ipv4Addr,
    /// Address for blocked AAAA queries.
    pub sinkhole_v6: Ipv6Addr,
    /// Detach the XDP program when the daemon stops. By default it stays
    /// attached and pinned (fail-open) for the next start to adopt.
    pub detach_on_stop: bool,
    /// Plain DNS queries per second each client may send before the
    /// kernel drops the excess; 0 (the default) turns the limit off.
    pub rate_limit_qps: u32,
    /// Queries a client may send at once above the rate; 0 means one
    /// second's worth (`rate_limit_qps`).
    pub rate_limit_burst: u32,
    /// UDP port of a resolver on the router (its stock one, such as
    /// dnsmasq) that answers allowed plain queries while the controller is
    /// down: once no heartbeat came for `fallback_after_secs`, the kernel
    /// sends them there. 0 (the default) turns the fallback off.
    pub fallback_port: u16,
    /// Seconds without a heartbeat from the controller after which the
    /// fallback takes over.
    pub fallback_after_secs: u32,
}

impl DataplaneSettings {
    /// Largest `rate_limit_qps` accepted.
    pub const MAX_RATE_LIMIT_QPS: u32 = 1_000_000;
    /// Default of `fallback_after_secs`.
    pub const DEFAULT_FALLBACK_AFTER_SECS: u32 = 3;
    /// Largest `fallback_after_secs` accepted.
    pub const MAX_FALLBACK_AFTER_SECS: u32 = 300;

    /// Returns the fallback as (port, seconds without a heartbeat before it
    /// takes over), or `None` while it is off.
    pub fn fallback(&self) -> Option<(u16, u32)> {
        (self.fallback_port != 0).then_some((self.fallback_port, self.fallback_after_secs))
    }

    /// The rate limit as (queries per second, burst), with the burst
    /// filled in; `None` while the limit is off.
    pub fn rate_limit(&self) -> Option<(u32, u32)> {
        if self.rate_limit_qps == 0 {
            return None;
        }
        let burst = if self.rate_limit_burst == 0 { self.rate_limit_qps } else { self.rate_limit_burst };
        Some((self.rate_limit_qps, burst))
    }
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        Self {
            lan_interfaces: Vec::new(),
            xdp: true,
            rule_buckets: dnsgate_common::maps::DEFAULT_RULE_BUCKETS,
            ignore_kernel_btf: false,
            block_mode: BlockModeSetting::Null,
            block_ttl: 10,
            sinkhole_v4: Ipv4Addr::UNSPECIFIED,
            sinkhole_v6: Ipv6Addr::UNSPECIFIED,
            detach_on_stop: false,
            rate_limit_qps: 0,
            rate_limit_burst: 0,
            fallback_port: 0,
            fallback_after_secs: DataplaneSettings::DEFAULT_FALLBACK_AFTER_SECS,
        }
    }
}

impl DataplaneSettings {
    /// The answer style shared by the kernel and user space.
    pub fn block_style(&self) -> BlockStyle {
        BlockStyle {
            mode: match self.block_mode {
                BlockModeSetting::Null => BlockMode::NullAddress,
                BlockModeSetting::Nxdomain => BlockMode::NxDomain,
                BlockModeSetting::Refused => BlockMode::Refused,
            },
            ttl: self.block_ttl,
            sinkhole_v4: self.sinkhole_v4,
            sinkhole_v6: self.sinkhole_v6,
        }
    }
}

/// The `[tls]` table. Without files, a self-signed certificate is
/// generated on first start and kept in the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
    /// Name the resolver is known by (certificate SAN, DDR target).
    pub resolver_name: Option<String>,
    /// Extra addresses the encrypted listeners bind to besides the LAN
    /// interfaces' own.
    pub listen: Vec<IpAddr>,
    /// Seconds between checks of `cert_file` and `key_file` for changes;
    /// a changed pair is loaded without a restart. 0 turns the checks off.
    pub reload_interval_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            resolver_name: None,
            listen: Vec::new(),
            reload_interval_secs: 10,
        }
    }
}

impl TlsSettings {
    /// Returns the resolver name in force, without a trailing dot.
    pub fn resolver_name(&self) -> String {
        let name = self.resolver_name.as_deref().unwrap_or(DEFAULT_RESOLVER_NAME);
        name.trim_end_matches('.').to_owned()
    }
}

/// The `[ddr]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdrSettings {
    /// Answer `_dns.resolver.arpa` SVCB with the encrypted listeners
    /// (false: NODATA, so clients stay on plain DNS).
    pub enabled: bool,
    /// TTL of the SVCB records and of the resolver name's addresses, in
    /// seconds.
    pub ttl: u32,
    /// Another server to announce in the answer to `_dns.<resolver name>`
    /// (encrypted DNS server redirection). Clients follow it only when its
    /// certificate is valid for this resolver's name.
    pub redirect_target: Option<String>,
    /// Addresses of `redirect_target`.
    pub redirect_addresses: Vec<IpAddr>,
    /// Ask each encrypted upstream for `_dns.<upstream name>` SVCB at start
    /// and follow a redirection to a server that authenticates as the same
    /// name.
    pub follow_upstream_redirections: bool,
}

impl Default for DdrSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: 300,
            redirect_target: None,
            redirect_addresses: Vec::new(),
            follow_upstream_redirections: true,
        }
    }
}

/// The `[intercept]` table: what happens to DNS that LAN clients send to
/// resolvers other than the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterceptSettings {
    /// Answer plain DNS (UDP/53) to other resolvers as the router would,
    /// from the address the client asked.
    pub enabled: bool,
    /// Answer TCP connections to port 853 (DoT) of other resolvers with a
    /// RST, so that clients fall back to plain DNS.
    pub refuse_dot: bool,
    /// Drop UDP to port 853 (DoQ) of other resolvers.
    pub drop_doq: bool,
    /// Clients and subnets left alone, as `ADDRESS` or `ADDRESS/PREFIX`.
    pub exempt: Vec<String>,
    /// Lists of DoH resolver names, as file paths or `http://` /
    /// `https://` URLs in any list format (detected as for `[[lists]]`).
    /// Each name and its subdomains are answered NXDOMAIN by user space.
    pub doh_resolver_lists: Vec<String>,
}

impl Default for InterceptSettings {
    fn default() -> Self {
        Self { enabled: true, refuse_dot: true, drop_doq: true, exempt: Vec::new(), doh_resolver_lists: Vec::new() }
    }
}

impl InterceptSettings {
    /// The DoH resolver lists as list sources, format detected.
    pub fn doh_resolver_sources(&self) -> Vec<SourceSpec> {
        self.doh_resolver_lists
            .iter()
            .map(|location| SourceSpec::new(location.clone(), crate::lists::ListFormat::Auto, crate::lists::ListRole::Block))
            .collect()
    }

    /// The exemptions as (network, prefix length).
    pub fn exempt_networks(&self) -> Result<Vec<(IpAddr, u8)>, ConfigError> {
        self.exempt.iter().map(|entry| parse_network(entry)).collect()
    }
}

/// Parses `ADDRESS` or `ADDRESS/PREFIX`; a bare address is a single host.
fn parse_network(entry: &str) -> Result<(IpAddr, u8), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { key: "intercept.exempt", reason };
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let address: IpAddr = address
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{entry:?} is not an IP address or ADDRESS/PREFIX")))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(prefix) => prefix
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|prefix| *prefix <= max)
            .ok_or_else(|| invalid(format!("{entry:?} has an invalid prefix length; use 0 to {max}")))?,
    };
    Ok((address, prefix))
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading the configuration file {path} failed: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key; the
    /// message names the key and line.
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A value in a file is out of range. The line is known when the key is
    /// on a line of its own under its table's header.
    #[error("invalid configuration in {path}{}: {key}: {reason}", line.map(|line| format!(", line {line}")).unwrap_or_default())]
    InvalidIn { path: PathBuf, line: Option<usize>, key: &'static str, reason: String },
}

impl ConfigError {
    /// Adds the file, and the line of the key when it can be found, to an
    /// [`Invalid`](Self::Invalid) error.
    fn located(self, path: &Path, text: &str) -> Self {
        match self {
            Self::Invalid { key, reason } => {
                Self::InvalidIn { path: path.to_owned(), line: key_line(text, key), key, reason }
            }
            other => other,
        }
    }
}

/// Finds the 1-based line that sets `key` (`table.name`) in the text of a
/// configuration file: a `name = …` line under a `[table]` header. Dotted
/// keys and inline tables are not followed, which gives `None`.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let (table, name) = key.rsplit_once('.')?;
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_start_matches('[').split(']').next().unwrap_or_default().trim().to_owned();
            continue;
        }
        let set = line.split_once('=').is_some_and(|(left, _)| left.trim() == name);
        if current == table && set {
            return Some(index + 1);
        }
    }
    None
}

/// Replaces Rust's type names in a TOML error with what the value may be:
/// `expected u16` means nothing to someone who edits a configuration file.
fn plain_type_names(message: &str) -> String {
    const NAMES: [(&str, &str); 6] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
    ];
    let mut message = message.to_owned();
    for (rust, plain) in NAMES {
        if let Some(start) = message.find(rust) {
            let end = start + rust.len();
            // Only the whole word: `expected u16` but not `expected u160`.
            if !message[end..].starts_with(|character: char| character.is_ascii_alphanumeric()) {
                message.replace_range(start..end, plain);
            }
        }
    }
    message
}

impl Config {
    /// Reads `path`. A missing file at the default path means defaults; a
    /// missing file given explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        let mut config = Self::parse(&text, path)?;
        if let Some(base) = path.parent() {
            config.resolve_relative_paths(base);
        }
        Ok(config)
    }

    /// Takes the relative file paths of the file from `base`, the file's
    /// directory, as a reader of the file expects. The daemon's working
    /// directory is `/` under procd, so they would otherwise point there.
    fn resolve_relative_paths(&mut self, base: &Path) {
        let local = |location: &mut String| {
            if !location.contains("://") && Path::new(location.as_str()).is_relative() {
                *location = base.join(location.as_str()).to_string_lossy().into_owned();
            }
        };
        for list in &mut self.lists {
            local(&mut list.location);
        }
        self.intercept.doh_resolver_lists.iter_mut().for_each(local);
        let paths = [&mut self.state_dir, &mut self.tls.cert_file, &mut self.tls.key_file]
            .into_iter()
            .chain(self.resolver.upstreams.iter_mut().map(|upstream| &mut upstream.ca_file));
        for path in paths.flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Parses the text of a configuration file and checks its values.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: plain_type_names(&error.to_string()),
        })?;
        config.validate().map_err(|error| error.located(path, text))?;
        Ok(config)
    }

    /// Explains why `dataplane.fallback_port` cannot be used, if it cannot.
    /// The XDP program drops UDP that LAN clients send to that port on the
    /// router, so it must not be a UDP port the router serves to them.
    fn fallback_port_conflict(&self) -> Option<String> {
        let port = self.dataplane.fallback_port;
        if port == 0 {
            return None;
        }
        let advice = "set it to the UDP port the router's stock resolver listens on instead (dnsmasq moved to 54 \
                      on OpenWrt), or to 0 to turn the fallback off";
        let taken = [
            (53, "plain DNS, which the XDP program answers"),
            (self.server.dns_port, "server.dns_port"),
            (self.server.doq_port, "server.doq_port (DNS over QUIC)"),
        ];
        if let Some((_, what)) = taken.iter().find(|(taken, _)| *taken == port) {
            return Some(format!("{port} is the port of {what}: clients' UDP to it would be dropped; {advice}"));
        }
        let services = [
            (67, "DHCP"),
            (68, "DHCP"),
            (123, "NTP"),
            (546, "DHCPv6"),
            (547, "DHCPv6"),
            (1900, "SSDP"),
            (5353, "mDNS"),
            (5355, "LLMNR"),
        ];
        services.iter().find(|(service, _)| *service == port).map(|(_, name)| {
            format!("{port} is the port of {name}, which LAN clients use: their UDP to it would be dropped; {advice}")
        })
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.intercept.exempt_networks()?;
        if self.dataplane.rule_buckets == 0 {
            return Err(ConfigError::Invalid { key: "dataplane.rule_buckets", reason: "is 0 but must be at least 1".into() });
        }
        if self.dataplane.rate_limit_qps > DataplaneSettings::MAX_RATE_LIMIT_QPS {
            return Err(ConfigError::Invalid {
                key: "dataplane.rate_limit_qps",
                reason: format!(
                    "is {} but must be at most {} (0 turns the limit off)",
                    self.dataplane.rate_limit_qps,
                    DataplaneSettings::MAX_RATE_LIMIT_QPS
                ),
            });
        }
        if let Some(reason) = self.fallback_port_conflict() {
            return Err(ConfigError::Invalid { key: "dataplane.fallback_port", reason });
        }
        if !(1..=DataplaneSettings::MAX_FALLBACK_AFTER_SECS).contains(&self.dataplane.fallback_after_secs) {
            return Err(ConfigError::Invalid {
                key: "dataplane.fallback_after_secs",
                reason: format!(
                    "is {} but must be between 1 and {}",
                    self.dataplane.fallback_after_secs,
                    DataplaneSettings::MAX_FALLBACK_AFTER_SECS
                ),
            });
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert_file",
                reason: "cert_file and key_file must be given together".into(),
            });
        }
        if self.querylog.capacity == 0 || self.querylog.capacity > MAX_QUERYLOG_CAPACITY {
            return Err(ConfigError::Invalid {
                key: "querylog.capacity",
                reason: format!("is {} but must be between 1 and {MAX_QUERYLOG_CAPACITY}", self.querylog.capacity),
            });
        }
        Ok(())
    }

    /// The state directory in force.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsgate.toml");
        let text = "state_dir = \"state\"\n[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"/etc/key.pem\"\n\
                    [intercept]\ndoh_resolver_lists = [\"doh.txt\", \"https://lists.example/doh.txt\"]\n\
                    [[lists]]\nlocation = \"ads.txt\"\n[[lists]]\nlocation = \"/srv/lists/b.txt\"\n\
                    [[lists]]\nlocation = \"https://lists.example/c.txt\"\n\
                    [[resolver.upstreams]]\nurl = \"tls://192.0.2.1\"\nca_file = \"ca.pem\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path, true).unwrap();
        let base = dir.path();
        assert_eq!(config.lists[0].location, base.join("ads.txt").to_str().unwrap());
        assert_eq!(config.lists[1].location, "/srv/lists/b.txt");
        assert_eq!(config.lists[2].location, "https://lists.example/c.txt");
        assert_eq!(config.state_dir(), base.join("state"));
        assert_eq!(config.tls.cert_file, Some(base.join("tls/cert.pem")));
        assert_eq!(config.tls.key_file, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(config.intercept.doh_resolver_lists[0], base.join("doh.txt").to_str().unwrap());
        assert_eq!(config.intercept.doh_resolver_lists[1], "https://lists.example/doh.txt");
        assert_eq!(config.resolver.upstreams[0].ca_file, Some(base.join("ca.pem")));
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.resolver.upstreams.is_empty(), "no public resolver is built in");
    }

    #[test]
    fn unknown_key_is_named_in_error() {
        let error = Config::parse("[dataplane]\nblock_mod = \"nxdomain\"\n", Path::new("x.toml")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("block_mod"), "{message}");
        assert!(message.contains("x.toml"), "{message}");
    }

    #[test]
    fn unknown_list_key_is_named_in_error() {
        let text = "[[lists]]\nlocation = \"/etc/dnsgate/ads.txt\"\nfromat = \"hosts\"\n";
        let message = Config::parse(text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(message.contains("fromat"), "{message}");
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
state_dir = "/tmp/state"
[dataplane]
lan_interfaces = ["br-lan"]
block_mode = "nxdomain"
block_ttl = 60
[[lists]]
location = "/etc/dnsgate/ads.txt"
format = "hosts"
[[resolver.upstreams]]
url = "tls://192.0.2.53:853"
tls_name = "dns.example"
[server]
doh_port = 8443
[tls]
resolver_name = "router.lan"
"#;
        let config = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.lan_interfaces, ["br-lan"]);
        assert_eq!(config.dataplane.block_style().mode, BlockMode::NxDomain);
        assert_eq!(config.lists.len(), 1);
        assert_eq!(config.resolver.upstreams.len(), 1);
        assert_eq!(config.server.doh_port, 8443);
        assert_eq!(config.tls.resolver_name.as_deref(), Some("router.lan"));
    }

    #[test]
    fn fallback_keys_parse_and_are_checked() {
        assert_eq!(Config::default().dataplane.fallback(), None, "off by default");
        let config = Config::parse("[dataplane]\nfallback_port = 54\n", Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.fallback(), Some((54, DataplaneSettings::DEFAULT_FALLBACK_AFTER_SECS)));
        let config =
            Config::parse("[dataplane]\nfallback_port = 5335\nfallback_after_secs = 10\n", Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.fallback(), Some((5335, 10)));

        for (text, key) in [
            ("[dataplane]\nfallback_port = 53\n", "dataplane.fallback_port"),
            ("[server]\ndns_port = 5300\n[dataplane]\nfallback_port = 53\n", "dataplane.fallback_port"),
            ("[server]\ndns_port = 5300\n[dataplane]\nfallback_port = 5300\n", "dataplane.fallback_port"),
            ("[dataplane]\nfallback_port = 853\n", "dataplane.fallback_port"),
            ("[dataplane]\nfallback_port = 67\n", "dataplane.fallback_port"),
            ("[dataplane]\nfallback_port = 54\nfallback_after_secs = 0\n", "dataplane.fallback_after_secs"),
            ("[dataplane]\nfallback_after_secs = 301\n", "dataplane.fallback_after_secs"),
        ] {
            let error = Config::parse(text, Path::new("x.toml")).unwrap_err();
            assert!(matches!(error, ConfigError::InvalidIn { key: k, .. } if k == key), "{text}: {error}");
        }
        let error = Config::parse("[dataplane]\nfallback_port = 70000\n", Path::new("x.toml")).unwrap_err();
        assert!(error.to_string().contains("fallback_port"), "{error}");
    }

    #[test]
    fn rate_limit_off_by_default() {
        assert_eq!(Config::default().dataplane.rate_limit(), None);
        let config = Config::parse("[dataplane]\nrate_limit_burst = 5\n", Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.rate_limit(), None, "a burst without a rate leaves the limit off");
    }

    #[test]
    fn rate_limit_keys_parse() {
        let text = "[dataplane]\nrate_limit_qps = 20\nrate_limit_burst = 100\n";
        let config = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.rate_limit(), Some((20, 100)));
        let config = Config::parse("[dataplane]\nrate_limit_qps = 20\n", Path::new("x.toml")).unwrap();
        assert_eq!(config.dataplane.rate_limit(), Some((20, 20)), "the burst defaults to one second's worth");
    }

    #[test]
    fn rate_limit_above_maximum_is_rejected() {
        let text = format!("[dataplane]\nrate_limit_qps = {}\n", DataplaneSettings::MAX_RATE_LIMIT_QPS + 1);
        let error = Config::parse(&text, Path::new("x.toml")).unwrap_err();
        assert!(error.to_string().contains("dataplane.rate_limit_qps"), "{error}");
        let text = format!("[dataplane]\nrate_limit_qps = {}\n", DataplaneSettings::MAX_RATE_LIMIT_QPS);
        assert!(Config::parse(&text, Path::new("x.toml")).is_ok());
    }

    #[test]
    fn wrong_type_is_rejected() {
        let error = Config::parse("[dataplane]\nblock_ttl = \"ten\"\n", Path::new("x.toml")).unwrap_err();
        assert!(error.to_string().contains("block_ttl"), "{error}");
    }

    #[test]
    fn type_errors_name_the_range() {
        let error = Config::parse("[server]\ndns_port = 70000\n", Path::new("x.toml")).unwrap_err().to_string();
        assert!(error.contains("expected a whole number from 0 to 65535"), "{error}");
        assert!(!error.contains("u16"), "{error}");
        let error = Config::parse("[querylog]\ncapacity = -1\n", Path::new("x.toml")).unwrap_err().to_string();
        assert!(error.contains("expected a whole number of 0 or more"), "{error}");
        assert_eq!(plain_type_names("expected u160"), "expected u160", "only whole type names are replaced");
    }

    #[test]
    fn range_errors_name_file_and_line() {
        let text = "# dnsgate\n[server]\ndns_port = 5300\n\n[dataplane]\nblock_ttl = 60\n  fallback_after_secs = 0\n";
        let error = Config::parse(text, Path::new("/etc/dnsgate/dnsgate.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidIn { line: Some(7), .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid configuration in /etc/dnsgate/dnsgate.toml, line 7: dataplane.fallback_after_secs:"),
            "{message}"
        );

        // A key set under another table, or as a dotted key, has no line.
        assert_eq!(key_line("[server]\nfallback_after_secs = 0\n", "dataplane.fallback_after_secs"), None);
        assert_eq!(key_line("dataplane.fallback_after_secs = 0\n", "dataplane.fallback_after_secs"), None);
        assert_eq!(key_line("[[lists]]\nx = 1\n[querylog]\ncapacity = 0\n", "querylog.capacity"), Some(4));
        let error = Config::parse("dataplane.fallback_after_secs = 0\n", Path::new("x.toml")).unwrap_err();
        assert!(error.to_string().starts_with("invalid configuration in x.toml: dataplane"), "{error}");
    }

    #[test]
    fn ddr_and_tls_keys_parse() {
        let text = "[tls]\nreload_interval_secs = 0\n[ddr]\nenabled = false\nttl = 60\nredirect_target = \"b.example\"\nredirect_addresses = [\"192.0.2.9\"]\nfollow_upstream_redirections = false\n";
        let config = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.tls.reload_interval_secs, 0);
        assert!(!config.ddr.enabled);
        assert_eq!(config.ddr.ttl, 60);
        assert_eq!(config.ddr.redirect_target.as_deref(), Some("b.example"));
        assert_eq!(config.ddr.redirect_addresses, ["192.0.2.9".parse::<IpAddr>().unwrap()]);
        assert!(!config.ddr.follow_upstream_redirections);
        let defaults = Config::default();
        assert!(defaults.ddr.enabled);
        assert_eq!(defaults.tls.reload_interval_secs, 10);
        assert_eq!(defaults.tls.resolver_name(), "dnsgate.lan");
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let error = Config::parse("[tls]\ncert_file = \"/a.pem\"\n", Path::new("x.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidIn { key: "tls.cert_file", .. }), "{error}");
    }

    #[test]
    fn intercept_exempt_parses_hosts_and_subnets() {
        let settings = InterceptSettings {
            exempt: vec!["192.0.2.7".into(), "198.51.100.0/24".into(), "fd00::/8".into()],
            ..InterceptSettings::default()
        };
        let networks = settings.exempt_networks().unwrap();
        assert_eq!(networks[0], ("192.0.2.7".parse().unwrap(), 32));
        assert_eq!(networks[1], ("198.51.100.0".parse().unwrap(), 24));
        assert_eq!(networks[2], ("fd00::".parse().unwrap(), 8));
    }

    #[test]
    fn intercept_exempt_rejects_bad_entries() {
        for entry in ["192.0.2.0/33", "fd00::/129", "router", "192.0.2.0/x"] {
            let settings = InterceptSettings { exempt: vec![entry.into()], ..InterceptSettings::default() };
            let error = settings.exempt_networks().unwrap_err();
            assert!(matches!(error, ConfigError::Invalid { key: "intercept.exempt", .. }), "{entry}: {error}");
        }
    }

    #[test]
    fn intercept_is_on_by_default() {
        let settings = InterceptSettings::default();
        assert!(settings.enabled);
        assert!(settings.refuse_dot);
        assert!(settings.drop_doq);
        let config: Config = toml::from_str("[intercept]\nenabled = false\nexempt = [\"192.0.2.0/24\"]\n").unwrap();
        assert!(!config.intercept.enabled);
        assert_eq!(config.intercept.exempt, ["192.0.2.0/24"]);
    }

    #[test]
    fn intercept_doh_resolver_lists() {
        assert!(InterceptSettings::default().doh_resolver_lists.is_empty());
        let config: Config = toml::from_str(
            "[intercept]\ndoh_resolver_lists = [\"/etc/dnsgate/doh.txt\", \"https://lists.example/doh.txt\"]\n",
        )
        .unwrap();
        let sources = config.intercept.doh_resolver_sources();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[1].location, "https://lists.example/doh.txt");
        assert_eq!(sources[0].format, crate::lists::ListFormat::Auto);
        assert!(toml::from_str::<Config>("[intercept]\ndoh_lists = []\n").is_err());
    }
}
