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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
        Self::parse(&text, path)
    }

    /// Parses the text of a configuration file and checks its values.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|error| ConfigError::Parse { path: path.to_owned(), message: error.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dataplane.rule_buckets == 0 {
            return Err(ConfigError::Invalid { key: "dataplane.rule_buckets", reason: "must be at least 1".into() });
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert_file",
                reason: "cert_file and key_file must be given together".into(),
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
    fn wrong_type_is_rejected() {
        let error = Config::parse("[dataplane]\nblock_ttl = \"ten\"\n", Path::new("x.toml")).unwrap_err();
        assert!(error.to_string().contains("block_ttl"), "{error}");
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let error = Config::parse("[tls]\ncert_file = \"/a.pem\"\n", Path::new("x.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { key: "tls.cert_file", .. }));
    }
}
