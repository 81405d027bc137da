//! The kind of DDR discovery a client can complete at each address the
//! router serves on, given the certificate in use (RFC 9462 §4).
//! `dnsgate status`, the logs and the docs use it, so an endpoint that some
//! clients cannot use is reported rather than silently left out.

use std::net::IpAddr;

use serde::Serialize;

use crate::certs::{CertInfo, CertMode};

/// The discovery a client can complete at one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressDiscovery {
    /// The address clients were given as their DNS server.
    pub address: IpAddr,
    /// Verified discovery (RFC 9462 §4): the certificate names this
    /// address, so a client that trusts the issuer can upgrade.
    pub verified: bool,
    /// Opportunistic discovery (RFC 9462 §4): the address is private, so
    /// a client may upgrade without checking the certificate.
    pub opportunistic: bool,
    /// A sentence for people saying why.
    pub explanation: String,
}

/// Returns whether `address` is private in the sense of RFC 9462 §4:
/// RFC 1918 for IPv4 and unique-local (RFC 4193) for IPv6.
pub fn is_private(address: IpAddr) -> bool {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Reports, for each address, which discovery clients can complete.
pub fn discovery_report(addresses: &[IpAddr], certificate: &CertInfo) -> Vec<AddressDiscovery> {
    addresses
        .iter()
        .map(|address| {
            let verified = certificate.ips.contains(address);
            let opportunistic = is_private(*address);
            let explanation = explain(*address, verified, opportunistic, certificate);
            AddressDiscovery { address: *address, verified, opportunistic, explanation }
        })
        .collect()
}

fn explain(address: IpAddr, verified: bool, opportunistic: bool, certificate: &CertInfo) -> String {
    let trust = match certificate.mode {
        CertMode::Generated => "only clients that were given the generated certificate as a trust anchor",
        CertMode::Supplied if certificate.self_signed => "only clients that trust this self-signed certificate",
        CertMode::Supplied => "clients that trust the certificate's issuer",
    };
    match (verified, opportunistic) {
        (true, true) => format!(
            "verified discovery for {trust}; opportunistic discovery for the rest, because {address} is private"
        ),
        (true, false) => format!("verified discovery for {trust}; no opportunistic discovery, because {address} is not private"),
        (false, true) => format!(
            "opportunistic discovery only: the certificate does not name {address}, and {address} is private"
        ),
        (false, false) => format!(
            "no discovery: the certificate does not name {address}, and {address} is not private; clients stay on plain DNS here"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(ips: &[&str], mode: CertMode) -> CertInfo {
        CertInfo {
            mode,
            dns_names: vec!["dnsgate.lan".into()],
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            not_after_unix: i64::MAX,
            self_signed: mode == CertMode::Generated,
        }
    }

    #[test]
    fn rfc9462_4_2_private_ranges() {
        for address in ["10.0.0.1", "172.16.0.1", "192.168.1.1", "fd00::1", "fc00::1"] {
            assert!(is_private(address.parse().unwrap()), "{address}");
        }
        for address in ["198.18.0.1", "8.8.8.8", "2001:db8::1", "fe80::1", "127.0.0.1"] {
            assert!(!is_private(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn report_covers_every_address() {
        let cert = certificate(&["192.168.1.1"], CertMode::Supplied);
        let addresses: Vec<IpAddr> = ["192.168.1.1", "fd00::1", "198.18.0.1"].iter().map(|ip| ip.parse().unwrap()).collect();
        let report = discovery_report(&addresses, &cert);
        assert_eq!(report.len(), 3);
        assert!(report[0].verified);
        assert!(report[0].opportunistic);
        assert!(!report[1].verified);
        assert!(report[1].opportunistic);
        assert!(!report[2].verified);
        assert!(!report[2].opportunistic);
        assert!(report[2].explanation.contains("plain DNS"), "{}", report[2].explanation);
    }
}
