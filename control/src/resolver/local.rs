//! Names the resolver answers itself or sends to the LAN's own name server,
//! and never upstream:
//!
//! * `localhost` (RFC 6761 §6.3) and the loopback reverse zones (RFC 6303
//!   §4): loopback addresses and `localhost` PTRs;
//! * `resolver.arpa` (RFC 9462): `_dns.resolver.arpa` SVCB comes from the
//!   designated-resolver hook, NODATA without one;
//! * the resolver's own names that the designated-resolver hook claims,
//!   such as `_dns.<resolver name>` SVCB (RFC 9462 §5);
//! * the LAN's names: the configured domain, `home.arpa` (RFC 8375) and the
//!   reverse zones of private, shared and link-local ranges (RFC 6303 §4,
//!   RFC 7793), which go to the configured LAN name server or get NXDOMAIN;
//! * Firefox's canary `use-application-dns.net` and, when enabled, iCloud
//!   Private Relay's `mask.icloud.com` and `mask-h2.icloud.com`: NXDOMAIN.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::config::LocalConfig;
use super::message::{ClientQuery, response_to, synthesized_soa};

/// Supplies the SVCB records of `_dns.resolver.arpa` (RFC 9462 §4) once
/// the encrypted listeners are known.
pub trait DesignatedResolvers: Send + Sync {
    /// Returns the SVCB records for a query that arrived on `local`. An
    /// empty list gives NODATA.
    fn svcb_records(&self, query: &ClientQuery, local: SocketAddr) -> Vec<Record>;

    /// Returns the A and AAAA records of the SVCB targets for the
    /// additional section (RFC 9462 §4). The default adds none.
    fn target_addresses(&self, _local: SocketAddr) -> Vec<Record> {
        Vec::new()
    }

    /// Returns the response to a query for one of the resolver's own
    /// names, such as `_dns.<resolver name>` SVCB (RFC 9462 §5), or
    /// `None` for any other name. The default claims no name.
    fn own_name_answer(&self, _query: &ClientQuery, _local: SocketAddr) -> Option<Message> {
        None
    }
}

/// The destination of a query for a local name.
#[derive(Debug)]
pub enum LocalRoute {
    /// Not a local name: cache and upstreams.
    Upstream,
    /// Answered here with this response.
    Answer(Message),
    /// A LAN name: ask the LAN name server, or NXDOMAIN owned by `zone`
    /// when none is configured.
    LanNames {
        /// The local zone the name belongs to.
        zone: Name,
    },
}

/// The table of local zones.
pub struct LocalZones {
    localhost: Name,
    loopback_reverse: [Name; 2],
    resolver_arpa: Name,
    dns_resolver_arpa: Name,
    lan_zones: Vec<Name>,
    nxdomain_names: Vec<Name>,
    ttl: u32,
    designated: Option<Arc<dyn DesignatedResolvers>>,
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("built-in zone names are valid")
}

/// Lists the reverse zones of IPv4 and IPv6 ranges that are only used
/// inside networks.
fn private_reverse_zones() -> Vec<Name> {
    let mut zones = vec![
        // 10.0.0.0/8, 192.168.0.0/16 (RFC 1918) and 169.254.0.0/16 (RFC 3927).
        name("10.in-addr.arpa."),
        name("168.192.in-addr.arpa."),
        name("254.169.in-addr.arpa."),
        // fc00::/7 (RFC 4193) and fe80::/10 (RFC 4291).
        name("c.f.ip6.arpa."),
        name("d.f.ip6.arpa."),
        name("8.e.f.ip6.arpa."),
        name("9.e.f.ip6.arpa."),
        name("a.e.f.ip6.arpa."),
        name("b.e.f.ip6.arpa."),
    ];
    // 172.16.0.0/12 (RFC 1918).
    zones.extend((16..=31).map(|octet| name(&format!("{octet}.172.in-addr.arpa."))));
    // 100.64.0.0/10, shared address space (RFC 6598, RFC 7793).
    zones.extend((64..=127).map(|octet| name(&format!("{octet}.100.in-addr.arpa."))));
    zones
}

impl LocalZones {
    /// Builds the table from the configuration. A LAN domain that is not a
    /// valid name is left out with a warning.
    pub fn new(config: &LocalConfig, designated: Option<Arc<dyn DesignatedResolvers>>) -> Self {
        let mut lan_zones = vec![name("home.arpa.")];
        let domain = config.domain.trim().trim_end_matches('.');
        if !domain.is_empty() {
            match Name::from_ascii(format!("{domain}.")) {
                Ok(zone) => lan_zones.push(zone),
                Err(error) => tracing::warn!(domain, %error, "ignoring invalid local domain"),
            }
        }
        lan_zones.extend(private_reverse_zones());

        let mut nxdomain_names = Vec::new();
        if config.firefox_canary_nxdomain {
            nxdomain_names.push(name("use-application-dns.net."));
        }
        if config.block_private_relay {
            nxdomain_names.push(name("mask.icloud.com."));
            nxdomain_names.push(name("mask-h2.icloud.com."));
        }
        Self {
            localhost: name("localhost."),
            loopback_reverse: [
                name("127.in-addr.arpa."),
                name("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa."),
            ],
            resolver_arpa: name("resolver.arpa."),
            dns_resolver_arpa: name("_dns.resolver.arpa."),
            lan_zones,
            nxdomain_names,
            ttl: config.ttl,
            designated,
        }
    }

    /// Decides where `query` is answered.
    pub fn route(&self, query: &ClientQuery, local: SocketAddr) -> LocalRoute {
        let qname = query.name();
        if self.localhost.zone_of(qname) {
            return LocalRoute::Answer(self.localhost_answer(query));
        }
        if let Some(zone) = self
            .loopback_reverse
            .iter()
            .find(|zone| zone.zone_of(qname))
        {
            return LocalRoute::Answer(self.loopback_ptr(query, zone));
        }
        if self.resolver_arpa.zone_of(qname) {
            return LocalRoute::Answer(self.resolver_arpa_answer(query, local));
        }
        if let Some(designated) = &self.designated
            && let Some(response) = designated.own_name_answer(query, local)
        {
            return LocalRoute::Answer(response);
        }
        if let Some(zone) = self.nxdomain_names.iter().find(|zone| zone.zone_of(qname)) {
            return LocalRoute::Answer(self.negative(query, zone, ResponseCode::NXDomain));
        }
        if let Some(zone) = self.lan_zones.iter().find(|zone| zone.zone_of(qname)) {
            return LocalRoute::LanNames { zone: zone.clone() };
        }
        LocalRoute::Upstream
    }

    /// NXDOMAIN or NODATA with the zone's SOA (RFC 2308 §3).
    pub fn negative(&self, query: &ClientQuery, zone: &Name, rcode: ResponseCode) -> Message {
        let mut response = response_to(query, rcode);
        response.set_authoritative(true);
        response.add_name_server(synthesized_soa(zone, self.ttl));
        response
    }

    fn positive(&self, query: &ClientQuery, rdata: Vec<RData>) -> Message {
        let mut response = response_to(query, ResponseCode::NoError);
        response.set_authoritative(true);
        for data in rdata {
            response.add_answer(Record::from_rdata(query.name().clone(), self.ttl, data));
        }
        response
    }

    fn localhost_answer(&self, query: &ClientQuery) -> Message {
        match query.qtype() {
            RecordType::A => self.positive(query, vec![RData::A(A(Ipv4Addr::LOCALHOST))]),
            RecordType::AAAA => self.positive(query, vec![RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))]),
            _ => self.negative(query, &self.localhost, ResponseCode::NoError),
        }
    }

    fn loopback_ptr(&self, query: &ClientQuery, zone: &Name) -> Message {
        // A full address has 4 labels before in-addr.arpa, 32 before ip6.arpa.
        let full_labels = if zone.num_labels() == 3 { 6 } else { 34 };
        if query.name().num_labels() != full_labels {
            let rcode = if query.name().num_labels() < full_labels {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return self.negative(query, zone, rcode);
        }
        match query.qtype() {
            RecordType::PTR => self.positive(query, vec![RData::PTR(PTR(self.localhost.clone()))]),
            _ => self.negative(query, zone, ResponseCode::NoError),
        }
    }

    fn resolver_arpa_answer(&self, query: &ClientQuery, local: SocketAddr) -> Message {
        let qname = query.name();
        if *qname == self.dns_resolver_arpa {
            let (records, additionals) = match (query.qtype(), &self.designated) {
                (RecordType::SVCB, Some(designated)) => {
                    (designated.svcb_records(query, local), designated.target_addresses(local))
                }
                _ => (Vec::new(), Vec::new()),
            };
            if records.is_empty() {
                return self.negative(query, &self.resolver_arpa, ResponseCode::NoError);
            }
            let mut response = response_to(query, ResponseCode::NoError);
            response.set_authoritative(true);
            response.add_answers(records);
            response.add_additionals(additionals);
            return response;
        }
        let rcode = if *qname == self.resolver_arpa {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        self.negative(query, &self.resolver_arpa, rcode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::message::parse_client_query;
    use hickory_proto::op::Query;

    fn query(name: &str, qtype: RecordType) -> ClientQuery {
        let mut message = Message::new();
        message.set_id(7).set_recursion_desired(true);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        parse_client_query(&message.to_vec().unwrap()).ok().unwrap()
    }

    fn local() -> SocketAddr {
        "127.0.0.1:53".parse().unwrap()
    }

    fn answer(zones: &LocalZones, name: &str, qtype: RecordType) -> Message {
        match zones.route(&query(name, qtype), local()) {
            LocalRoute::Answer(message) => message,
            other => panic!("{name} {qtype}: expected a local answer, got {other:?}"),
        }
    }

    #[test]
    fn rfc6761_6_3_localhost_is_loopback() {
        let zones = LocalZones::new(&LocalConfig::default(), None);
        let response = answer(&zones, "app.LOCALHOST.", RecordType::A);
        assert_eq!(
            response.answers()[0].data(),
            &RData::A(A(Ipv4Addr::LOCALHOST))
        );
        let response = answer(&zones, "localhost.", RecordType::AAAA);
        assert_eq!(
            response.answers()[0].data(),
            &RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
        );
        let response = answer(&zones, "localhost.", RecordType::MX);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
        assert_eq!(response.name_servers()[0].record_type(), RecordType::SOA);
        let response = answer(&zones, "1.0.0.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            response.answers()[0].data(),
            &RData::PTR(PTR(name("localhost.")))
        );
    }

    #[test]
    fn rfc9462_resolver_arpa_is_nodata_without_hook() {
        let zones = LocalZones::new(&LocalConfig::default(), None);
        let response = answer(&zones, "_dns.resolver.arpa.", RecordType::SVCB);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
        let response = answer(&zones, "other.resolver.arpa.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
    }

    struct OneRecord;

    impl DesignatedResolvers for OneRecord {
        fn svcb_records(&self, query: &ClientQuery, _local: SocketAddr) -> Vec<Record> {
            let rdata = RData::Unknown {
                code: RecordType::SVCB,
                rdata: hickory_proto::rr::rdata::NULL::with(vec![0, 1, 0]),
            };
            vec![Record::from_rdata(query.name().clone(), 300, rdata)]
        }
    }

    #[test]
    fn rfc9462_4_designated_resolvers_hook() {
        let zones = LocalZones::new(&LocalConfig::default(), Some(Arc::new(OneRecord)));
        let response = answer(&zones, "_dns.resolver.arpa.", RecordType::SVCB);
        assert_eq!(response.answers().len(), 1);
        let response = answer(&zones, "_dns.resolver.arpa.", RecordType::A);
        assert!(
            response.answers().is_empty(),
            "only SVCB comes from the hook"
        );
    }

    #[test]
    fn lan_names_and_private_reverse_zones_stay_local() {
        let config = LocalConfig {
            domain: "home.example".into(),
            ..LocalConfig::default()
        };
        let zones = LocalZones::new(&config, None);
        for name in [
            "printer.home.example.",
            "nas.home.arpa.",
            "4.3.2.10.in-addr.arpa.",
            "1.0.20.172.in-addr.arpa.",
            "1.1.168.192.in-addr.arpa.",
            "9.8.100.100.in-addr.arpa.",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.",
        ] {
            assert!(
                matches!(
                    zones.route(&query(name, RecordType::PTR), local()),
                    LocalRoute::LanNames { .. }
                ),
                "{name}"
            );
        }
        for name in [
            "printer.lan.",
            "1.0.32.172.in-addr.arpa.",
            "1.0.0.8.in-addr.arpa.",
            "example.com.",
        ] {
            assert!(
                matches!(
                    zones.route(&query(name, RecordType::A), local()),
                    LocalRoute::Upstream
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn canary_and_private_relay() {
        let zones = LocalZones::new(&LocalConfig::default(), None);
        let response = answer(&zones, "use-application-dns.net.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
        assert!(matches!(
            zones.route(&query("mask.icloud.com.", RecordType::A), local()),
            LocalRoute::Upstream
        ));

        let config = LocalConfig {
            block_private_relay: true,
            firefox_canary_nxdomain: false,
            ..LocalConfig::default()
        };
        let zones = LocalZones::new(&config, None);
        assert_eq!(
            answer(&zones, "mask.icloud.com.", RecordType::A).response_code(),
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(&zones, "mask-h2.icloud.com.", RecordType::AAAA).response_code(),
            ResponseCode::NXDomain
        );
        assert!(matches!(
            zones.route(&query("use-application-dns.net.", RecordType::A), local()),
            LocalRoute::Upstream
        ));
    }
}
