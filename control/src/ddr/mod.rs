//! Discovery of Designated Resolvers (RFC 9462): the SVCB records that
//! point LAN clients from plain DNS to the router's encrypted listeners,
//! and the report of which discovery each client can complete.
//!
//! * [`svcb`] builds the records (RFC 9460, RFC 9461) without I/O.
//! * [`addresses`] finds the router's addresses on the arrival interface.
//! * [`designated`] plugs both into the resolver's local zones.
//! * [`report`] lists which discovery works at each address.

pub mod addresses;
pub mod designated;
pub mod report;
pub mod svcb;

pub use addresses::{AddressLookup, FixedAddresses, SystemInterfaces};
pub use designated::{DdrError, Designated};
pub use report::{AddressDiscovery, discovery_report, is_private};
pub use svcb::{EncryptedProtocol, Endpoint, endpoints, service_records};

use std::net::IpAddr;
use std::sync::Arc;

use crate::certs::CertInfo;
use crate::config::Config;
use crate::resolver::DesignatedResolvers;

/// Builds the DDR hook of the resolver from the configuration, or `None`
/// when `[ddr] enabled` is false.
pub fn designated_from_config(config: &Config) -> Result<Option<Arc<dyn DesignatedResolvers>>, DdrError> {
    if !config.ddr.enabled {
        tracing::info!("DDR is off: _dns.resolver.arpa gets NODATA and clients stay on plain DNS");
        return Ok(None);
    }
    let designated = Designated::new(
        &config.tls.resolver_name(),
        endpoints(&config.server),
        config.ddr.ttl,
        Arc::new(SystemInterfaces::new()),
    )?;
    let designated = match &config.ddr.redirect_target {
        Some(target) => {
            tracing::info!(target, addresses = ?config.ddr.redirect_addresses, "announcing a redirection in _dns.<resolver name>");
            designated.with_redirection(target, &config.ddr.redirect_addresses)?
        }
        None => designated,
    };
    Ok(Some(Arc::new(designated)))
}

/// Logs, for every served address, which discovery clients can complete
/// there with `certificate`.
pub fn log_discovery(addresses: &[IpAddr], certificate: &CertInfo) {
    for entry in discovery_report(addresses, certificate) {
        if entry.verified || entry.opportunistic {
            tracing::info!(address = %entry.address, "DDR: {}", entry.explanation);
        } else {
            tracing::warn!(address = %entry.address, "DDR: {}", entry.explanation);
        }
    }
}

/// Reports the discovery clients can complete at every address the daemon
/// serves on: the LAN interfaces' addresses other than link-local ones,
/// and `[tls] listen`. `dnsgate status` can show this beside the
/// certificate.
pub fn served_discovery(config: &Config, certificate: &CertInfo) -> Vec<AddressDiscovery> {
    let mut addresses: Vec<IpAddr> = addresses::addresses_of(&config.dataplane.lan_interfaces)
        .into_iter()
        .filter(|address| match address {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => addresses::advertisable_v6(v6),
        })
        .collect();
    addresses.extend(config.tls.listen.iter().copied());
    addresses.sort();
    addresses.dedup();
    discovery_report(&addresses, certificate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertMode;

    #[test]
    fn served_discovery_covers_listen_addresses() {
        let mut config = Config::default();
        config.tls.listen = vec!["192.168.9.1".parse().unwrap(), "198.18.0.1".parse().unwrap()];
        let certificate = CertInfo {
            mode: CertMode::Generated,
            dns_names: vec!["dnsgate.lan".into()],
            ips: vec!["192.168.9.1".parse().unwrap()],
            not_after_unix: i64::MAX,
            self_signed: true,
        };
        let report = served_discovery(&config, &certificate);
        let addresses: Vec<String> = report.iter().map(|entry| entry.address.to_string()).collect();
        assert_eq!(addresses, ["192.168.9.1", "198.18.0.1"]);
        assert!(report[0].verified);
        assert!(report[0].explanation.contains("generated certificate"), "{}", report[0].explanation);
        assert!(!report[1].opportunistic);
    }

    #[test]
    fn disabled_ddr_gives_no_hook() {
        let mut config = Config::default();
        config.ddr.enabled = false;
        assert!(designated_from_config(&config).unwrap().is_none());
        config.ddr.enabled = true;
        config.ddr.redirect_target = Some("b.example".into());
        let error = designated_from_config(&config).err().expect("a redirection without addresses was accepted");
        assert!(matches!(error, DdrError::RedirectionWithoutAddress { .. }), "{error}");
    }
}
