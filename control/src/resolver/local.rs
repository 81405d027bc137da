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
//!   Private Relay's `mask.icloud.com` and `mask-h2.icloud.com`: NXDOMAIN;
//! * the names of DoH resolvers from `[intercept] doh_resolver_lists`, and
//!   their subdomains: NXDOMAIN, so that clients cannot find those resolvers.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

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
    /// NXDOMAIN for the name of a DoH resolver on a configured list.
    DohBypass(Message),
    /// A LAN name: ask the LAN name server, or NXDOMAIN owned by `zone`
    /// when none is configured.
    LanNames {
        /// The local zone the name belongs to.
        zone: Name,
    },
}

/// Names of DoH resolvers answered NXDOMAIN, with their subdomains.
///
/// The names are kept normalised (ASCII lowercase, no trailing dot) in a
/// hash set. A query name is looked up once per suffix, so the cost grows
/// with the number of its labels, not with the size of the lists.
#[derive(Debug, Clone, Default)]
pub struct DohBypassNames {
    names: HashSet<Box<str>>,
}

impl DohBypassNames {
    /// Builds the set from names; each is lowercased and loses a trailing
    /// dot. Empty names are left out.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names = names
            .into_iter()
            .map(|name| name.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .map(String::into_boxed_str)
            .collect();
        Self { names }
    }

    /// Number of names in the set.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Checks whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Returns the listed name that `qname` is or lies below, if any.
    /// `qname` may be in any case and may end in a dot.
    pub fn matching(&self, qname: &str) -> Option<&str> {
        if self.names.is_empty() {
            return None;
        }
        let lower = qname.trim_end_matches('.').to_ascii_lowercase();
        let mut suffix = lower.as_str();
        loop {
            if let Some(found) = self.names.get(suffix) {
                return Some(found);
            }
            // Labels end at a dot; the next suffix starts after it.
            suffix = suffix.split_once('.')?.1;
        }
    }
}

/// The table of local zones.
pub struct LocalZones {
    localhost: Name,
    loopback_reverse: [Name; 2],
    resolver_arpa: Name,
    dns_resolver_arpa: Name,
    lan_zones: Vec<Name>,
    nxdomain_names: Vec<Name>,
    doh_bypass: ArcSwap<DohBypassNames>,
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
                Ok(zone) => lan_zones.push(zone.to_lowercase()),
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
            doh_bypass: ArcSwap::from_pointee(DohBypassNames::default()),
            ttl: config.ttl,
            designated,
        }
    }

    /// Replaces the names of DoH resolvers answered NXDOMAIN.
    pub fn set_doh_bypass(&self, names: DohBypassNames) {
        self.doh_bypass.store(Arc::new(names));
    }

    /// Number of names of DoH resolvers answered NXDOMAIN.
    pub fn doh_bypass_len(&self) -> usize {
        self.doh_bypass.load().len()
    }

    /// Decides where `query` is answered.
    pub fn route(&self, query: &ClientQuery, local: SocketAddr) -> LocalRoute {
        let qname = query.name();
        // Every zone here is stored lowercase, so the name is lowercased
        // once rather than once per zone by `Name::zone_of`. With about
        // ninety reverse zones, that took a tenth of a cached answer's time
        // in a profile.
        let lower = qname.to_lowercase();
        if self.localhost.zone_of_case(&lower) {
            return LocalRoute::Answer(self.localhost_answer(query));
        }
        if let Some(zone) = self
            .loopback_reverse
            .iter()
            .find(|zone| zone.zone_of_case(&lower))
        {
            return LocalRoute::Answer(self.loopback_ptr(query, zone));
        }
        if self.resolver_arpa.zone_of_case(&lower) {
            return LocalRoute::Answer(self.resolver_arpa_answer(query, local));
        }
        if let Some(designated) = &self.designated
            && let Some(response) = designated.own_name_answer(query, local)
        {
            return LocalRoute::Answer(response);
        }
        if let Some(zone) = self.nxdomain_names.iter().find(|zone| zone.zone_of_case(&lower)) {
            return LocalRoute::Answer(self.negative(query, zone, ResponseCode::NXDomain));
        }
        if let Some(listed) = self.doh_bypass.load().matching(&qname.to_ascii()) {
            // The listed name is valid: it came from the list parsers.
            let zone = Name::from_ascii(format!("{listed}.")).unwrap_or_else(|_| Name::root());
            return LocalRoute::DohBypass(self.negative(query, &zone, ResponseCode::NXDomain));
        }
        if let Some(zone) = self.lan_zones.iter().find(|zone| zone.zone_of_case(&lower)) {
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

    #[test]
    fn doh_bypass_matches_names_and_subdomains_only() {
        let names = DohBypassNames::new(["dns.example", "DoH.Example.NET."]);
        assert_eq!(names.len(), 2);
        assert_eq!(names.matching("dns.example."), Some("dns.example"));
        assert_eq!(names.matching("DNS.EXAMPLE"), Some("dns.example"));
        assert_eq!(names.matching("a.b.dns.example."), Some("dns.example"));
        assert_eq!(names.matching("doh.example.net."), Some("doh.example.net"));
        // The same characters at the end, but not on a label boundary.
        assert_eq!(names.matching("notdns.example."), None);
        assert_eq!(names.matching("xdoh.example.net."), None);
        // Parents and unrelated names.
        assert_eq!(names.matching("example."), None);
        assert_eq!(names.matching("example.net."), None);
        assert_eq!(names.matching("dns.example.org."), None);
        assert_eq!(names.matching("."), None);
        assert_eq!(DohBypassNames::default().matching("dns.example."), None);
    }

    fn doh_answer(zones: &LocalZones, name: &str, qtype: RecordType) -> Message {
        match zones.route(&query(name, qtype), local()) {
            LocalRoute::DohBypass(message) => message,
            other => panic!("{name} {qtype}: expected a DoH bypass answer, got {other:?}"),
        }
    }

    #[test]
    fn doh_bypass_answers_nxdomain_for_every_type() {
        let zones = LocalZones::new(&LocalConfig::default(), None);
        assert!(matches!(
            zones.route(&query("dns.example.", RecordType::A), local()),
            LocalRoute::Upstream
        ));
        zones.set_doh_bypass(DohBypassNames::new(["dns.example"]));
        assert_eq!(zones.doh_bypass_len(), 1);
        for (asked, qtype) in [
            ("dns.example.", RecordType::A),
            ("dns.example.", RecordType::AAAA),
            ("Dns.Example.", RecordType::HTTPS),
            ("_dns.dns.example.", RecordType::SVCB),
            ("deep.sub.dns.example.", RecordType::TXT),
        ] {
            let response = doh_answer(&zones, asked, qtype);
            assert_eq!(response.response_code(), ResponseCode::NXDomain, "{asked} {qtype}");
            assert_eq!(response.id(), 7);
            assert_eq!(response.queries().len(), 1);
            assert_eq!(response.queries()[0].name(), &Name::from_ascii(asked).unwrap());
            assert_eq!(response.queries()[0].query_type(), qtype);
            let soa = &response.name_servers()[0];
            assert_eq!(soa.record_type(), RecordType::SOA);
            assert_eq!(soa.name(), &name("dns.example."));
        }
        assert!(matches!(
            zones.route(&query("notdns.example.", RecordType::A), local()),
            LocalRoute::Upstream
        ));
        // A reload replaces the set.
        zones.set_doh_bypass(DohBypassNames::default());
        assert!(matches!(
            zones.route(&query("dns.example.", RecordType::A), local()),
            LocalRoute::Upstream
        ));
    }

    #[test]
    fn doh_bypass_from_lists_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            crate::lists::SourceSpec::new(
                path.display().to_string(),
                crate::lists::ListFormat::Auto,
                crate::lists::ListRole::Block,
            )
        };
        let sources = [
            write("hosts.txt", "# DoH resolvers\n0.0.0.0 dns.hosts.example\n0.0.0.0 doh.hosts.example\n"),
            write("adblock.txt", "! DoH resolvers\n||dns.adblock.example^\n@@||allowed.adblock.example^\n"),
            write("plain.txt", "dns.plain.example\nDOH.Plain.Example\n"),
        ];
        let loaded = crate::lists::load_names(&sources, &crate::lists::NoFetcher).unwrap();
        let formats: Vec<_> = loaded.reports.iter().map(|report| report.format).collect();
        assert_eq!(
            formats,
            [crate::lists::ListFormat::Hosts, crate::lists::ListFormat::Adblock, crate::lists::ListFormat::Domains]
        );
        let names = DohBypassNames::new(loaded.names.iter());
        assert_eq!(names.len(), 5, "{:?}", loaded.names);
        let zones = LocalZones::new(&LocalConfig::default(), None);
        zones.set_doh_bypass(names);
        for listed in [
            "dns.hosts.example.",
            "www.doh.hosts.example.",
            "dns.adblock.example.",
            "a.dns.adblock.example.",
            "dns.plain.example.",
            "doh.plain.example.",
        ] {
            let response = doh_answer(&zones, listed, RecordType::A);
            assert_eq!(response.response_code(), ResponseCode::NXDomain, "{listed}");
            assert_eq!(response.queries()[0].name(), &Name::from_ascii(listed).unwrap());
        }
        // An exception in an adblock list allows, so it is not a DoH name.
        for other in ["allowed.adblock.example.", "hosts.example.", "notdns.plain.example."] {
            assert!(
                matches!(zones.route(&query(other, RecordType::A), local()), LocalRoute::Upstream),
                "{other}"
            );
        }
    }
}
