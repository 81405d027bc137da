//! Listener settings: ports, the DoH path and the limits that keep one
//! flooding client from starving the others.
//!
//! Every key has a default, so an empty `[server]` table (or none at all)
//! gives working listeners on the standard ports.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings for the LAN listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Port for plain DNS over UDP and TCP (RFC 1035 section 4.2).
    pub dns_port: u16,
    /// Port for DNS over TLS (RFC 7858 section 3.1).
    pub dot_port: u16,
    /// UDP port for DNS over QUIC (RFC 9250 section 4.1.1).
    pub doq_port: u16,
    /// Port for DNS over HTTPS.
    pub doh_port: u16,
    /// Path of the DoH endpoint; `/dns-query` is the path RFC 8484 uses in
    /// its examples and the one clients try first.
    pub doh_path: String,
    /// Caps on connections, streams, sizes and timeouts.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            dns_port: 53,
            dot_port: 853,
            doq_port: 853,
            doh_port: 443,
            doh_path: "/dns-query".to_owned(),
            limits: Limits::default(),
        }
    }
}

/// Resource caps for the listeners.
///
/// The connection caps apply to each connection-oriented transport (TCP, DoT,
/// DoQ, DoH) separately. The default per-client caps are far lower than the
/// totals, so a client that floods one transport reaches its own cap long
/// before it can fill the shared one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum UDP queries being resolved at once, over all clients.
    pub max_udp_in_flight: usize,
    /// Maximum UDP queries being resolved at once for one client address.
    pub max_udp_in_flight_per_client: usize,
    /// Largest UDP response sent, in bytes, whatever larger size the client
    /// advertises in EDNS. 1232 avoids IP fragmentation on common paths.
    pub max_udp_response_size: u16,
    /// Maximum open connections per transport.
    pub max_connections: usize,
    /// Maximum open connections per transport from one client address.
    pub max_connections_per_client: usize,
    /// Maximum queries of one TCP or DoT connection being resolved at once;
    /// further pipelined queries wait in the socket buffer.
    pub max_in_flight_per_connection: usize,
    /// Maximum concurrent streams on one DoQ or DoH connection.
    pub max_streams_per_connection: u32,
    /// Largest query accepted, in bytes. Larger frames close a TCP or DoT
    /// connection, and get HTTP 413 on DoH.
    pub max_query_size: usize,
    /// Idle time after which a TCP or DoT connection is closed, in
    /// milliseconds (RFC 7766 section 6.2.3). Sent to clients in the
    /// edns-tcp-keepalive option, so it must fit in 6553.5 seconds.
    pub tcp_idle_timeout_ms: u64,
    /// Idle time after which a DoQ or DoH connection is closed, in
    /// milliseconds.
    pub encrypted_idle_timeout_ms: u64,
    /// Time allowed for a TLS or QUIC handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Time the resolver core may take for one query before the listener
    /// gives up on it, in milliseconds.
    pub query_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_udp_in_flight: 1024,
            max_udp_in_flight_per_client: 128,
            max_udp_response_size: 1232,
            max_connections: 256,
            max_connections_per_client: 16,
            max_in_flight_per_connection: 32,
            // RFC 9113 §6.5.2 recommends at least 100; HTTP/2 clients assume
            // 100 until the server's SETTINGS arrive.
            max_streams_per_connection: 100,
            max_query_size: 4096,
            tcp_idle_timeout_ms: 10_000,
            encrypted_idle_timeout_ms: 30_000,
            handshake_timeout_ms: 5_000,
            query_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    pub(crate) fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.tcp_idle_timeout_ms)
    }

    pub(crate) fn encrypted_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.encrypted_idle_timeout_ms)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// Returns the TCP idle timeout in the 100 ms units of the
    /// edns-tcp-keepalive option (RFC 7828 section 3.1), saturated to the
    /// largest value the 16-bit field holds.
    pub(crate) fn keepalive_units(&self) -> u16 {
        u16::try_from(self.tcp_idle_timeout_ms / 100).unwrap_or(u16::MAX)
    }
}

/// The addresses to listen on, one list per transport.
///
/// The caller passes LAN addresses only: the listeners serve whatever they
/// are bound to, and binding a WAN address would serve the internet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenAddrs {
    /// Plain DNS over UDP.
    pub udp: Vec<SocketAddr>,
    /// Plain DNS over TCP.
    pub tcp: Vec<SocketAddr>,
    /// DNS over TLS.
    pub tls: Vec<SocketAddr>,
    /// DNS over QUIC.
    pub quic: Vec<SocketAddr>,
    /// DNS over HTTPS.
    pub https: Vec<SocketAddr>,
}

impl ListenAddrs {
    /// Builds the full set of listen addresses for the given interface
    /// addresses, with the ports from `config`.
    pub fn on_ips(config: &ServerConfig, ips: &[IpAddr]) -> Self {
        let with_port = |port: u16| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        Self {
            udp: with_port(config.dns_port),
            tcp: with_port(config.dns_port),
            tls: with_port(config.dot_port),
            quic: with_port(config.doq_port),
            https: with_port(config.doh_port),
        }
    }

    /// Returns true when no listener needs TLS material.
    pub fn is_plain_only(&self) -> bool {
        self.tls.is_empty() && self.quic.is_empty() && self.https.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_standard_ports() {
        let config: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(config.dns_port, 53);
        assert_eq!(config.dot_port, 853);
        assert_eq!(config.doq_port, 853);
        assert_eq!(config.doh_port, 443);
        assert_eq!(config.doh_path, "/dns-query");
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn partial_limits_keep_other_defaults() {
        let config: ServerConfig =
            toml::from_str("doh_port = 8443\n[limits]\nmax_connections = 7\n").unwrap();
        assert_eq!(config.doh_port, 8443);
        assert_eq!(config.limits.max_connections, 7);
        assert_eq!(
            config.limits.max_query_size,
            Limits::default().max_query_size
        );
    }

    #[test]
    fn unknown_key_is_rejected() {
        let error = toml::from_str::<ServerConfig>("dot_prot = 853").unwrap_err();
        assert!(error.to_string().contains("dot_prot"), "{error}");
    }

    #[test]
    fn keepalive_units_saturate() {
        let mut limits = Limits::default();
        assert_eq!(limits.keepalive_units(), 100);
        limits.tcp_idle_timeout_ms = u64::MAX;
        assert_eq!(limits.keepalive_units(), u16::MAX);
    }

    #[test]
    fn on_ips_uses_configured_ports() {
        let config = ServerConfig {
            dot_port: 8853,
            ..ServerConfig::default()
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let addrs = ListenAddrs::on_ips(&config, &[ip]);
        assert_eq!(addrs.udp, vec![SocketAddr::new(ip, 53)]);
        assert_eq!(addrs.tls, vec![SocketAddr::new(ip, 8853)]);
        assert_eq!(addrs.https, vec![SocketAddr::new(ip, 443)]);
        assert!(!addrs.is_plain_only());
    }
}
