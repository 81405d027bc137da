//! SVCB records that describe the encrypted listeners, in the DNS mapping
//! of RFC 9461 on the SVCB wire format of RFC 9460. Pure functions: no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::svcb::{Alpn, IpHint, SVCB, SvcParamKey, SvcParamValue, Unknown};
use hickory_proto::rr::rdata::{A, AAAA};
use serde::Serialize;

use crate::resolver::server::ServerConfig;

/// SvcParamKey of `dohpath` (RFC 9461 §5), which hickory-proto 0.25 does
/// not name.
pub const SVC_PARAM_DOHPATH: u16 = 7;

/// An encrypted DNS transport that can be advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptedProtocol {
    /// DNS over TLS (RFC 7858), ALPN `dot`.
    Tls,
    /// DNS over HTTPS (RFC 8484) on HTTP/2, ALPN `h2`.
    Https,
    /// DNS over QUIC (RFC 9250), ALPN `doq`.
    Quic,
}

impl EncryptedProtocol {
    /// Returns the ALPN protocol ID registered for the transport.
    pub fn alpn(self) -> &'static str {
        match self {
            Self::Tls => "dot",
            Self::Https => "h2",
            Self::Quic => "doq",
        }
    }
}

/// One encrypted listener as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The transport.
    pub protocol: EncryptedProtocol,
    /// The port, TCP for DoT and DoH, UDP for DoQ.
    pub port: u16,
    /// The URI template of DoH (RFC 9461 §5), such as `/dns-query{?dns}`.
    pub dohpath: Option<String>,
}

/// Lists the enabled encrypted listeners of `config`, most preferred
/// first. A port of 0 means the listener is off and is left out.
///
/// DoT comes first because more clients implement it than the others
/// (Android, systemd-resolved, dnspython), DoH second and DoQ last. A client
/// that supports several picks the lowest SvcPriority (RFC 9460 §2.4.1).
pub fn endpoints(config: &ServerConfig) -> Vec<Endpoint> {
    let candidates = [
        (EncryptedProtocol::Tls, config.dot_port),
        (EncryptedProtocol::Https, config.doh_port),
        (EncryptedProtocol::Quic, config.doq_port),
    ];
    candidates
        .into_iter()
        .filter(|(_, port)| *port != 0)
        .map(|(protocol, port)| Endpoint {
            protocol,
            port,
            dohpath: (protocol == EncryptedProtocol::Https).then(|| dohpath_template(&config.doh_path)),
        })
        .collect()
}

/// Builds the `dohpath` URI template for a DoH path: the `dns` variable
/// carries the query in GET requests (RFC 9461 §5, RFC 8484 §4.1).
pub fn dohpath_template(path: &str) -> String {
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    format!("{path}{{?dns}}")
}

/// Builds one ServiceMode SVCB record per endpoint, SvcPriority 1, 2, …
/// in the order given, with `target` as TargetName and the given address
/// hints. Empty hint lists are left out, as RFC 9460 §7.3 allows.
pub fn service_records(endpoints: &[Endpoint], target: &Name, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<SVCB> {
    endpoints
        .iter()
        .zip(1u16..)
        .map(|(endpoint, priority)| SVCB::new(priority, target.clone(), service_params(endpoint, v4, v6)))
        .collect()
}

/// Lists the SvcParams of one endpoint in ascending key order, as the
/// wire format requires (RFC 9460 §2.2).
fn service_params(endpoint: &Endpoint, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<(SvcParamKey, SvcParamValue)> {
    let mut params = vec![
        (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec![endpoint.protocol.alpn().to_owned()]))),
        (SvcParamKey::Port, SvcParamValue::Port(endpoint.port)),
    ];
    if !v4.is_empty() {
        let hints = v4.iter().copied().map(A).collect();
        params.push((SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(hints))));
    }
    if !v6.is_empty() {
        let hints = v6.iter().copied().map(AAAA).collect();
        params.push((SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(IpHint(hints))));
    }
    if let Some(template) = &endpoint.dohpath {
        params.push((
            SvcParamKey::Unknown(SVC_PARAM_DOHPATH),
            SvcParamValue::Unknown(Unknown(template.as_bytes().to_vec())),
        ));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9461_endpoints_skip_disabled_ports() {
        let config = ServerConfig { doq_port: 0, ..ServerConfig::default() };
        let list = endpoints(&config);
        let protocols: Vec<_> = list.iter().map(|endpoint| endpoint.protocol).collect();
        assert_eq!(protocols, [EncryptedProtocol::Tls, EncryptedProtocol::Https]);
        assert_eq!(list[1].dohpath.as_deref(), Some("/dns-query{?dns}"));
        assert_eq!(list[0].dohpath, None);
    }

    #[test]
    fn rfc9461_5_dohpath_template_adds_slash() {
        assert_eq!(dohpath_template("q"), "/q{?dns}");
        assert_eq!(dohpath_template("/dns-query"), "/dns-query{?dns}");
    }

    #[test]
    fn rfc9460_2_2_params_in_key_order() {
        let list = endpoints(&ServerConfig::default());
        let target = Name::from_ascii("dnsgate.lan.").unwrap();
        let records = service_records(&list, &target, &[Ipv4Addr::new(192, 168, 1, 1)], &["fd00::1".parse().unwrap()]);
        assert_eq!(records.len(), 3);
        for (record, expected) in records.iter().zip(1u16..) {
            assert_eq!(record.svc_priority(), expected);
            let keys: Vec<u16> = record.svc_params().iter().map(|(key, _)| u16::from(*key)).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(keys, sorted);
        }
        let doh_keys: Vec<u16> = records[1].svc_params().iter().map(|(key, _)| u16::from(*key)).collect();
        assert_eq!(doh_keys, [1, 3, 4, 6, SVC_PARAM_DOHPATH]);
    }

    #[test]
    fn rfc9460_7_3_empty_hints_left_out() {
        let list = endpoints(&ServerConfig::default());
        let target = Name::from_ascii("dnsgate.lan.").unwrap();
        let records = service_records(&list, &target, &[Ipv4Addr::new(10, 0, 0, 1)], &[]);
        let keys: Vec<u16> = records[0].svc_params().iter().map(|(key, _)| u16::from(*key)).collect();
        assert_eq!(keys, [1, 3, 4]);
    }
}
