//! The `[resolver]` table of the daemon's TOML file. Every key has a
//! default, and the defaults name no public resolver: with no upstream
//! configured, names that are not answered locally get SERVFAIL.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::upstream::UpstreamSpec;

/// Settings of the forwarding resolver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Upstream resolvers, one `[[resolver.upstreams]]` table each.
    pub upstreams: Vec<UpstreamConfig>,
    /// Plain DNS servers (`udp://` or `tcp://` with an IP address) that
    /// resolve upstream host names for upstreams without a `bootstrap` list
    /// of their own.
    pub bootstrap: Vec<UpstreamSpec>,
    /// How long one attempt at one upstream may take, in milliseconds, before
    /// the next upstream is tried.
    pub timeout_ms: u64,
    /// Upstreams tried for one query at most (each once).
    pub max_attempts: u32,
    /// The answer cache.
    pub cache: CacheConfig,
    /// Names answered locally or by the LAN's own name server.
    pub local: LocalConfig,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            bootstrap: Vec::new(),
            timeout_ms: 2000,
            max_attempts: 3,
            cache: CacheConfig::default(),
            local: LocalConfig::default(),
        }
    }
}

impl ResolverConfig {
    /// Returns the time one upstream attempt may take.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// One upstream resolver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream's URL, such as `tls://192.0.2.1` or
    /// `https://dns.example/dns-query`.
    pub url: UpstreamSpec,
    /// The name the server certificate is checked against. Defaults to the
    /// URL's host (an IP address is checked against the certificate's IP
    /// addresses).
    #[serde(default)]
    pub tls_name: Option<String>,
    /// PEM file of the CA certificates to trust for this upstream instead of
    /// the built-in Mozilla root store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain DNS servers that resolve the URL's host name; the resolver-wide
    /// `bootstrap` list applies when this one is empty.
    #[serde(default)]
    pub bootstrap: Vec<UpstreamSpec>,
}

impl UpstreamConfig {
    /// Creates an upstream entry with only a URL, as `--upstream URL` gives.
    pub fn new(url: UpstreamSpec) -> Self {
        Self {
            url,
            tls_name: None,
            ca_file: None,
            bootstrap: Vec::new(),
        }
    }
}

/// Settings of the answer cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory the cache may use, in bytes (an estimate from the answers' wire
    /// size); 0 turns the cache off.
    pub size_bytes: usize,
    /// Lowest TTL an answer is cached and served with, in seconds.
    pub min_ttl: u32,
    /// Highest TTL an answer is cached and served with, in seconds.
    pub max_ttl: u32,
    /// Highest TTL of a negative answer (NXDOMAIN or NODATA), in seconds
    /// (RFC 2308 §5 suggests one to three hours).
    pub max_negative_ttl: u32,
    /// Answer from expired entries when every upstream fails (RFC 8767).
    pub serve_stale: bool,
    /// How long past expiry an entry may still be served stale, in seconds
    /// (RFC 8767 suggests one to three days).
    pub max_stale_age: u32,
    /// TTL of the records in a stale answer, in seconds (RFC 8767 §4
    /// recommends 30).
    pub stale_answer_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            size_bytes: 4 * 1024 * 1024,
            min_ttl: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3600,
            serve_stale: true,
            max_stale_age: 86_400,
            stale_answer_ttl: 30,
        }
    }
}

/// Names that never go upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// The LAN's domain. Names under it, under `home.arpa` (RFC 8375) and in
    /// the reverse zones of private and link-local ranges go to `server`.
    pub domain: String,
    /// The LAN's own name server (usually the DHCP server's DNS), as
    /// `udp://` or `tcp://` with an IP address. Without one, LAN names get
    /// NXDOMAIN.
    pub server: Option<UpstreamSpec>,
    /// Answer Firefox's canary `use-application-dns.net` with NXDOMAIN, which
    /// tells Firefox not to turn on its own DNS over HTTPS.
    pub firefox_canary_nxdomain: bool,
    /// Answer `mask.icloud.com` and `mask-h2.icloud.com` with NXDOMAIN, which
    /// turns iCloud Private Relay off for the network's clients.
    pub block_private_relay: bool,
    /// TTL of locally built answers, in seconds.
    pub ttl: u32,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            domain: "lan".to_owned(),
            server: None,
            firefox_canary_nxdomain: true,
            block_private_relay: false,
            ttl: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::upstream::Protocol;

    #[test]
    fn empty_table_gives_defaults() {
        let config: ResolverConfig = toml::from_str("").unwrap();
        assert_eq!(config, ResolverConfig::default());
        assert!(config.upstreams.is_empty());
    }

    #[test]
    fn upstream_tables_parse() {
        let text = r#"
            timeout_ms = 1500
            [[upstreams]]
            url = "tls://192.0.2.1"
            tls_name = "dns.example"
            ca_file = "/etc/dnsgate/ca.pem"
            [[upstreams]]
            url = "https://dns.example/dns-query"
            bootstrap = ["udp://192.0.2.53"]
            [cache]
            min_ttl = 30
            [local]
            domain = "home"
            server = "udp://127.0.0.1:5353"
        "#;
        let config: ResolverConfig = toml::from_str(text).unwrap();
        assert_eq!(config.timeout_ms, 1500);
        assert_eq!(config.upstreams.len(), 2);
        assert_eq!(config.upstreams[0].url.protocol, Protocol::Tls);
        assert_eq!(config.upstreams[0].tls_name.as_deref(), Some("dns.example"));
        assert_eq!(config.upstreams[1].bootstrap[0].port, 53);
        assert_eq!(config.cache.min_ttl, 30);
        assert_eq!(config.cache.max_ttl, CacheConfig::default().max_ttl);
        assert_eq!(config.local.domain, "home");
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_rejected() {
        let error = toml::from_str::<ResolverConfig>("upstream = []").unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
        let error =
            toml::from_str::<ResolverConfig>("[[upstreams]]\nurl = \"ftp://x\"").unwrap_err();
        assert!(error.to_string().contains("unknown scheme"), "{error}");
        let error =
            toml::from_str::<ResolverConfig>("[[upstreams]]\ntls_name = \"x\"").unwrap_err();
        assert!(error.to_string().contains("url"), "{error}");
    }
}
