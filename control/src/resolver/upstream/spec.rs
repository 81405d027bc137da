//! Upstream addresses written as URLs, in the form dnsproxy and AdGuard Home
//! users know: `udp://`, `tcp://`, `tls://`, `quic://` and `https://`,
//! followed by `host[:port]` and, for `https://` only, a path.
//!
//! A bare `host[:port]` without a scheme means plain DNS over UDP, as in
//! those tools. Default ports are 53 for UDP and TCP (RFC 1035 §4.2), 853
//! for DoT (RFC 7858 §3.1) and DoQ (RFC 9250 §4.1.1), and 443, the HTTPS
//! port, for DoH, whose default path is `/dns-query`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain DNS over UDP, falling back to TCP for truncated answers.
    Udp,
    /// Plain DNS over TCP (RFC 7766).
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over QUIC (RFC 9250).
    Quic,
    /// DNS over HTTPS with HTTP/2 (RFC 8484).
    Https,
}

impl Protocol {
    /// Returns the URL scheme of the protocol.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Quic => "quic",
            Self::Https => "https",
        }
    }

    /// Returns the port used when the URL names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 53,
            Self::Tls | Self::Quic => 853,
            Self::Https => 443,
        }
    }

    /// Returns whether the protocol runs over TLS and so needs a server
    /// name.
    pub const fn is_encrypted(self) -> bool {
        matches!(self, Self::Tls | Self::Quic | Self::Https)
    }
}

/// The host part of an upstream URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name, resolved through the bootstrap servers. Stored in
    /// lowercase without the trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// One upstream resolver, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpstreamSpec {
    /// The protocol.
    pub protocol: Protocol,
    /// The host to connect to.
    pub host: Host,
    /// The port to connect to.
    pub port: u16,
    /// The HTTP path for DoH; empty for the other protocols.
    pub path: String,
}

/// The default DoH path (RFC 8484 §4.1 leaves it to the server; this is the
/// one every public DoH service uses).
pub const DEFAULT_DOH_PATH: &str = "/dns-query";

/// Why an upstream URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamSpecError {
    /// The URL is empty.
    #[error(
        "upstream URL is empty; write one such as tls://192.0.2.1 or https://dns.example/dns-query"
    )]
    Empty,
    /// The scheme is not one of the five known ones.
    #[error(
        "upstream URL `{url}` has unknown scheme `{scheme}`; use udp://, tcp://, tls://, quic:// or https://"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The host is neither an IP address nor a valid host name.
    #[error(
        "upstream URL `{url}` has invalid host `{host}`; give an IP address (IPv6 in brackets) or a host name"
    )]
    InvalidHost {
        /// The URL as given.
        url: String,
        /// The host found.
        host: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("upstream URL `{url}` has invalid port `{port}`; give a number from 1 to 65535")]
    InvalidPort {
        /// The URL as given.
        url: String,
        /// The port found.
        port: String,
    },
    /// A path, query or fragment was given for a protocol that has none.
    #[error("upstream URL `{url}` has a path, which only https:// upstreams take")]
    UnexpectedPath {
        /// The URL as given.
        url: String,
    },
    /// A known scheme without `://` after it, as in `tls//192.0.2.1` or
    /// `tls:/192.0.2.1`.
    #[error("upstream URL `{url}` lacks `://` after `{scheme}`; write it as {suggestion}")]
    MalformedScheme {
        /// The URL as given.
        url: String,
        /// The scheme found.
        scheme: String,
        /// The URL with `://` in place.
        suggestion: String,
    },
    /// User information (`user@`) was given.
    #[error("upstream URL `{url}` contains user information (`@`), which upstreams do not take")]
    UserInfo {
        /// The URL as given.
        url: String,
    },
}

impl UpstreamSpec {
    /// Builds a plain UDP upstream for a socket address.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            protocol: Protocol::Udp,
            host: Host::Ip(addr.ip()),
            port: addr.port(),
            path: String::new(),
        }
    }

    /// The socket address when the host is a literal IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl FromStr for UpstreamSpec {
    type Err = UpstreamSpecError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(UpstreamSpecError::Empty);
        }
        let (protocol, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                let protocol = match scheme.to_ascii_lowercase().as_str() {
                    "udp" => Protocol::Udp,
                    "tcp" => Protocol::Tcp,
                    "tls" => Protocol::Tls,
                    "quic" => Protocol::Quic,
                    "https" => Protocol::Https,
                    _ => {
                        return Err(UpstreamSpecError::UnknownScheme {
                            url: url.to_owned(),
                            scheme: scheme.to_owned(),
                        });
                    }
                };
                (protocol, rest)
            }
            None => {
                malformed_scheme(url, trimmed)?;
                (Protocol::Udp, trimmed)
            }
        };

        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UpstreamSpecError::UserInfo {
                url: url.to_owned(),
            });
        }
        let path = match protocol {
            Protocol::Https if path.is_empty() || path == "/" => DEFAULT_DOH_PATH.to_owned(),
            Protocol::Https if path.starts_with('/') => path.to_owned(),
            Protocol::Https => format!("/{path}"),
            _ if path.is_empty() || path == "/" => String::new(),
            _ => {
                return Err(UpstreamSpecError::UnexpectedPath {
                    url: url.to_owned(),
                });
            }
        };

        let (host, port) = split_host_port(url, authority)?;
        let port = match port {
            None => protocol.default_port(),
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => {
                    return Err(UpstreamSpecError::InvalidPort {
                        url: url.to_owned(),
                        port: text.to_owned(),
                    });
                }
            },
        };
        Ok(Self {
            protocol,
            host,
            port,
            path,
        })
    }
}

/// Rejects a URL without `://` that starts with a known scheme followed by
/// `/` or `:/`, which is a typing error rather than a host name.
fn malformed_scheme(url: &str, trimmed: &str) -> Result<(), UpstreamSpecError> {
    let Some((head, rest)) = trimmed.split_once('/') else {
        return Ok(());
    };
    let scheme = head.strip_suffix(':').unwrap_or(head);
    if !["udp", "tcp", "tls", "quic", "https"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    Err(UpstreamSpecError::MalformedScheme {
        url: url.to_owned(),
        scheme: scheme.to_owned(),
        suggestion: format!("{scheme}://{}", rest.trim_start_matches('/')),
    })
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port<'a>(
    url: &str,
    authority: &'a str,
) -> Result<(Host, Option<&'a str>), UpstreamSpecError> {
    let invalid_host = |host: &str| UpstreamSpecError::InvalidHost {
        url: url.to_owned(),
        host: host.to_owned(),
    };

    if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid_host(authority))?;
        let ip: std::net::Ipv6Addr = inside.parse().map_err(|_| invalid_host(inside))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid_host(authority))?,
            ),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    // A bare IPv6 address has several colons and no port.
    if authority.matches(':').count() > 1 {
        let ip: std::net::Ipv6Addr = authority.parse().map_err(|_| invalid_host(authority))?;
        return Ok((Host::Ip(IpAddr::V6(ip)), None));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(invalid_host(host));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok((Host::Ip(IpAddr::V4(ip)), port));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && Name::from_ascii(&name).is_ok();
    if !valid {
        return Err(invalid_host(host));
    }
    Ok((Host::Name(name), port))
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol.scheme(), self.host)?;
        if self.port != self.protocol.default_port() {
            write!(f, ":{}", self.port)?;
        }
        if self.protocol == Protocol::Https {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for UpstreamSpec {
    type Error = UpstreamSpecError;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        url.parse()
    }
}

impl From<UpstreamSpec> for String {
    fn from(spec: UpstreamSpec) -> Self {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_default_ports() {
        let cases = [
            ("udp://192.0.2.1", Protocol::Udp, 53, ""),
            ("tcp://192.0.2.1", Protocol::Tcp, 53, ""),
            ("tls://192.0.2.1", Protocol::Tls, 853, ""),
            ("quic://192.0.2.1", Protocol::Quic, 853, ""),
            ("https://192.0.2.1", Protocol::Https, 443, "/dns-query"),
            ("192.0.2.1", Protocol::Udp, 53, ""),
        ];
        for (url, protocol, port, path) in cases {
            let spec: UpstreamSpec = url.parse().unwrap();
            assert_eq!(spec.protocol, protocol, "{url}");
            assert_eq!(spec.port, port, "{url}");
            assert_eq!(spec.path, path, "{url}");
            assert_eq!(spec.host, Host::Ip("192.0.2.1".parse().unwrap()), "{url}");
        }
    }

    #[test]
    fn parses_ports_paths_and_names() {
        let spec: UpstreamSpec = "https://DNS.Example.:8443/custom/path?x=1".parse().unwrap();
        assert_eq!(spec.host, Host::Name("dns.example".into()));
        assert_eq!(spec.port, 8443);
        assert_eq!(spec.path, "/custom/path?x=1");
        assert_eq!(spec.to_string(), "https://dns.example:8443/custom/path?x=1");

        let spec: UpstreamSpec = "tls://[2001:db8::1]:8853".parse().unwrap();
        assert_eq!(
            spec.socket_addr(),
            Some("[2001:db8::1]:8853".parse().unwrap())
        );
        assert_eq!(spec.to_string(), "tls://[2001:db8::1]:8853");

        let spec: UpstreamSpec = "2001:db8::53".parse().unwrap();
        assert_eq!(
            spec.socket_addr(),
            Some("[2001:db8::53]:53".parse().unwrap())
        );
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "udp://192.0.2.1:5353",
            "quic://dns.example",
            "https://[2001:db8::1]/dns-query",
            "tcp://dns.example:54",
        ] {
            let spec: UpstreamSpec = url.parse().unwrap();
            assert_eq!(spec.to_string(), url);
            assert_eq!(spec.to_string().parse::<UpstreamSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn rejects_bad_urls() {
        assert_eq!("".parse::<UpstreamSpec>(), Err(UpstreamSpecError::Empty));
        assert!(matches!(
            "sdns://abc".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::UnknownScheme { .. })
        ));
        assert!(matches!(
            "tls://192.0.2.1:0".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::InvalidPort { .. })
        ));
        assert!(matches!(
            "tls://192.0.2.1:99999".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::InvalidPort { .. })
        ));
        assert!(matches!(
            "udp://192.0.2.1/path".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::UnexpectedPath { .. })
        ));
        assert!(matches!(
            "tls://bad host".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::InvalidHost { .. })
        ));
        assert!(matches!(
            "tls://[2001:db8::1".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::InvalidHost { .. })
        ));
        assert!(matches!(
            "tls://user@192.0.2.1".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::UserInfo { .. })
        ));
        assert!(matches!(
            "tls://:853".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::InvalidHost { .. })
        ));
    }

    #[test]
    fn missing_scheme_separator_suggests_fix() {
        for (url, suggestion) in [
            ("tls//192.0.2.1", "tls://192.0.2.1"),
            ("tls:/192.0.2.1:853", "tls://192.0.2.1:853"),
            ("HTTPS//dns.example/dns-query", "HTTPS://dns.example/dns-query"),
        ] {
            let error = url.parse::<UpstreamSpec>().unwrap_err();
            assert!(
                matches!(&error, UpstreamSpecError::MalformedScheme { suggestion: found, .. } if found == suggestion),
                "{url}: {error}"
            );
            assert!(error.to_string().contains(suggestion), "{error}");
        }
        // A bare address is plain UDP, and a host that merely resembles a
        // scheme is still a host.
        assert_eq!("192.0.2.1".parse::<UpstreamSpec>().unwrap().protocol, Protocol::Udp);
        assert!(matches!(
            "tlsx/192.0.2.1".parse::<UpstreamSpec>(),
            Err(UpstreamSpecError::UnexpectedPath { .. })
        ));
    }

    #[test]
    fn error_names_the_url() {
        let message = "sdns://abc"
            .parse::<UpstreamSpec>()
            .unwrap_err()
            .to_string();
        assert!(message.contains("sdns://abc"), "{message}");
    }
}
