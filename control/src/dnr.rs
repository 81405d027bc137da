//! Discovery of Network-designated Resolvers (RFC 9463): the DHCPv4
//! option 162 and DHCPv6 option 144 payloads that announce the encrypted
//! listeners, and configuration lines for dnsmasq and odhcpd that carry
//! them. Pure functions: `dnsgate dnr` prints what they return.
//!
//! One DNR instance is built per endpoint, with the endpoint's SvcPriority
//! from DDR, the resolver name as Authentication Domain Name (ADN), the
//! router's addresses, and the SvcParams `alpn`, `port` and, for DoH,
//! `dohpath`. Address hints are left out of the SvcParams because the
//! option's own address field carries the addresses.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ddr::Endpoint;
use crate::ddr::svcb::SVC_PARAM_DOHPATH;

/// DHCPv4 option code of OPTION_V4_DNR (RFC 9463 §7.2).
pub const OPTION_V4_DNR: u8 = 162;
/// DHCPv6 option code of OPTION_V6_DNR (RFC 9463 §7.1).
pub const OPTION_V6_DNR: u16 = 144;

/// SvcParamKey of `alpn` (RFC 9460 §14.3.2).
const SVC_PARAM_ALPN: u16 = 1;
/// SvcParamKey of `port` (RFC 9460 §14.3.2).
const SVC_PARAM_PORT: u16 = 3;

/// Errors from building a payload.
#[derive(Debug, thiserror::Error)]
pub enum DnrError {
    /// The resolver name cannot be an ADN.
    #[error("invalid resolver name {name:?} for DNR: {reason}; set [tls] resolver_name to a DNS name")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// The problem.
        reason: &'static str,
    },
    /// There is no address to announce: outside ADN-only mode, every
    /// payload carries at least one address (RFC 9463 §4.1 and §5.1).
    #[error("no address to announce; pass --address or configure a LAN interface that has one")]
    NoAddress,
    /// A length field overflows.
    #[error("the DNR {what} is {length} bytes, more than its length field can hold ({max}); announce fewer addresses")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length needed.
        length: usize,
        /// The maximum.
        max: usize,
    },
}

/// The payloads for one router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnrPayloads {
    /// Data of one DHCPv4 option 162: every DNR instance, concatenated
    /// (RFC 9463 §5.1), without the code and length octets.
    pub v4: Option<Vec<u8>>,
    /// Data of each DHCPv6 option 144, one per DNR instance (RFC 9463
    /// §4.1), without the code and length fields.
    pub v6: Vec<Vec<u8>>,
}

/// Encodes `name` in uncompressed DNS wire format (RFC 1035 §3.1), as the
/// ADN field of RFC 9463 requires.
pub fn adn_wire(name: &str) -> Result<Vec<u8>, DnrError> {
    let invalid = |reason| DnrError::InvalidName { name: name.to_owned(), reason };
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(invalid("the root name cannot be an ADN"));
    }
    let mut wire = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(invalid("a label is empty"));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 bytes"));
        }
        if !label.is_ascii() {
            return Err(invalid("the name is not ASCII; give its punycode form"));
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.to_ascii_lowercase().as_bytes());
    }
    wire.push(0);
    if wire.len() > 255 {
        return Err(invalid("the name is longer than 255 bytes"));
    }
    Ok(wire)
}

/// Encodes the SvcParams of one endpoint in the SVCB wire format (RFC 9460
/// §2.2), keys in ascending order.
pub fn service_params_wire(endpoint: &Endpoint) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut push = |key: u16, value: &[u8]| {
        wire.extend_from_slice(&key.to_be_bytes());
        wire.extend_from_slice(&(value.len() as u16).to_be_bytes());
        wire.extend_from_slice(value);
    };
    let alpn = endpoint.protocol.alpn().as_bytes();
    let mut alpn_value = vec![alpn.len() as u8];
    alpn_value.extend_from_slice(alpn);
    push(SVC_PARAM_ALPN, &alpn_value);
    push(SVC_PARAM_PORT, &endpoint.port.to_be_bytes());
    if let Some(template) = &endpoint.dohpath {
        push(SVC_PARAM_DOHPATH, template.as_bytes());
    }
    wire
}

/// Builds the DHCPv4 and DHCPv6 payloads. SvcPriority follows the order of
/// `endpoints`, starting at 1, as in the DDR answers.
pub fn build_payloads(
    resolver_name: &str,
    endpoints: &[Endpoint],
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
) -> Result<DnrPayloads, DnrError> {
    let adn = adn_wire(resolver_name)?;
    if v4.is_empty() && v6.is_empty() {
        return Err(DnrError::NoAddress);
    }
    let v4_payload = if v4.is_empty() {
        None
    } else {
        let mut payload = Vec::new();
        for (endpoint, priority) in endpoints.iter().zip(1u16..) {
            payload.extend(v4_instance(priority, &adn, v4, endpoint)?);
        }
        Some(payload)
    };
    let mut v6_payloads = Vec::new();
    if !v6.is_empty() {
        for (endpoint, priority) in endpoints.iter().zip(1u16..) {
            v6_payloads.push(v6_instance(priority, &adn, v6, endpoint)?);
        }
    }
    Ok(DnrPayloads { v4: v4_payload, v6: v6_payloads })
}

fn checked_len(what: &'static str, length: usize, max: usize) -> Result<usize, DnrError> {
    if length > max {
        return Err(DnrError::TooLong { what, length, max });
    }
    Ok(length)
}

/// Encodes one DNR Instance of OPTION_V4_DNR (RFC 9463 §5.1): Instance
/// Data Length (2), Service Priority (2), ADN Length (1), ADN, Addr Length
/// (1), IPv4 addresses, SvcParams.
fn v4_instance(priority: u16, adn: &[u8], addresses: &[Ipv4Addr], endpoint: &Endpoint) -> Result<Vec<u8>, DnrError> {
    let address_len = checked_len("IPv4 address list", addresses.len() * 4, u8::MAX as usize)?;
    let params = service_params_wire(endpoint);
    let mut body = Vec::new();
    body.extend_from_slice(&priority.to_be_bytes());
    body.push(adn.len() as u8);
    body.extend_from_slice(adn);
    body.push(address_len as u8);
    for address in addresses {
        body.extend_from_slice(&address.octets());
    }
    body.extend_from_slice(&params);
    let body_len = checked_len("DHCPv4 instance", body.len(), u16::MAX as usize)?;
    let mut instance = (body_len as u16).to_be_bytes().to_vec();
    instance.extend(body);
    Ok(instance)
}

/// Encodes the data of one OPTION_V6_DNR (RFC 9463 §4.1): Service
/// Priority (2), ADN Length (2), ADN, Addr Length (2), IPv6 addresses,
/// SvcParams.
fn v6_instance(priority: u16, adn: &[u8], addresses: &[Ipv6Addr], endpoint: &Endpoint) -> Result<Vec<u8>, DnrError> {
    let address_len = checked_len("IPv6 address list", addresses.len() * 16, u16::MAX as usize)?;
    let mut data = Vec::new();
    data.extend_from_slice(&priority.to_be_bytes());
    data.extend_from_slice(&(adn.len() as u16).to_be_bytes());
    data.extend_from_slice(adn);
    data.extend_from_slice(&(address_len as u16).to_be_bytes());
    for address in addresses {
        data.extend_from_slice(&address.octets());
    }
    data.extend(service_params_wire(endpoint));
    checked_len("DHCPv6 option", data.len(), u16::MAX as usize)?;
    Ok(data)
}

/// Formats bytes as lowercase hex pairs joined by `separator`.
pub fn hex(bytes: &[u8], separator: &str) -> String {
    let mut text = String::with_capacity(bytes.len() * (2 + separator.len()));
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            text.push_str(separator);
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Returns the dnsmasq line that sends the DHCPv4 payload. dnsmasq takes a
/// value of colon-separated hex pairs as raw bytes.
pub fn dnsmasq_v4_line(payload: &[u8]) -> Result<String, DnrError> {
    checked_len("DHCPv4 option 162", payload.len(), u8::MAX as usize)?;
    Ok(format!("dhcp-option={},{}", OPTION_V4_DNR, hex(payload, ":")))
}

/// Returns the dnsmasq line that sends one DHCPv6 payload.
pub fn dnsmasq_v6_line(payload: &[u8]) -> String {
    format!("dhcp-option=option6:{},{}", OPTION_V6_DNR, hex(payload, ":"))
}

/// Returns the odhcpd UCI line for one endpoint: odhcpd builds the DNR
/// options itself from `<priority> <name> <addresses> <key=value>...`.
pub fn odhcpd_line(
    interface: &str,
    priority: u16,
    resolver_name: &str,
    addresses: &[String],
    endpoint: &Endpoint,
) -> String {
    let mut params = format!("alpn={} port={}", endpoint.protocol.alpn(), endpoint.port);
    if let Some(template) = &endpoint.dohpath {
        let _ = write!(params, " dohpath={template}");
    }
    format!(
        "uci add_list dhcp.{interface}.dnr='{priority} {} {} {params}'",
        resolver_name.trim_end_matches('.'),
        addresses.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddr::EncryptedProtocol;

    fn dot() -> Endpoint {
        Endpoint { protocol: EncryptedProtocol::Tls, port: 853, dohpath: None }
    }

    #[test]
    fn rfc1035_adn_is_uncompressed_wire_name() {
        assert_eq!(adn_wire("Router.LAN.").unwrap(), b"\x06router\x03lan\x00");
        assert!(matches!(adn_wire("."), Err(DnrError::InvalidName { .. })));
        assert!(matches!(adn_wire("a..b"), Err(DnrError::InvalidName { .. })));
    }

    #[test]
    fn rfc9460_2_2_alpn_and_port_params() {
        assert_eq!(service_params_wire(&dot()), [0, 1, 0, 4, 3, b'd', b'o', b't', 0, 3, 0, 2, 0x03, 0x55]);
    }

    #[test]
    fn missing_family_gives_no_payload() {
        let v6: Ipv6Addr = "fd00::1".parse().unwrap();
        let payloads = build_payloads("router.lan", &[dot()], &[], &[v6]).unwrap();
        assert_eq!(payloads.v4, None);
        assert_eq!(payloads.v6.len(), 1);
        assert!(matches!(build_payloads("router.lan", &[dot()], &[], &[]), Err(DnrError::NoAddress)));
    }

    #[test]
    fn dnsmasq_line_rejects_long_payload() {
        assert!(dnsmasq_v4_line(&[0; 256]).is_err());
        assert_eq!(dnsmasq_v4_line(&[1, 0xab]).unwrap(), "dhcp-option=162,01:ab");
        assert_eq!(dnsmasq_v6_line(&[1, 0xab]), "dhcp-option=option6:144,01:ab");
    }
}
