//! Encrypted DNS server redirection (draft-ietf-add-encrypted-dns-server-
//! redirection), as a client of the upstreams. The controller sends each
//! encrypted upstream a query for `_dns.<upstream name>` SVCB over the
//! encrypted connection (RFC 9462 §5). It follows a redirection to another
//! server only when that server authenticates as the same origin, which
//! means its certificate is valid for the original upstream name.
//! Otherwise the upstream stays as configured and the reason is logged.
//!
//! The server side, announcing a configured redirection target in the
//! answer to `_dns.<resolver name>`, lives in [`crate::ddr::Designated`].
//!
//! NOTE: redirections are looked up once, when the daemon starts; a
//! redirection announced later is not seen until the next start.

use std::net::IpAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::ddr::svcb::SVC_PARAM_DOHPATH;
use crate::resolver::upstream::{DEFAULT_DOH_PATH, Host, Outcome, Protocol, UpstreamPool, UpstreamSpec};
use crate::resolver::{ResolverConfig, UpstreamConfig};

/// A server that an upstream's SVCB answer redirects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// SvcPriority; lower is preferred.
    pub priority: u16,
    /// The TargetName.
    pub target: Name,
    /// The address to connect to, with the upstream's protocol.
    pub spec: UpstreamSpec,
}

/// The outcome for one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The upstream is not encrypted or has no name to ask about.
    NotApplicable,
    /// The upstream announced no other server.
    NoRedirection,
    /// The redirection was followed.
    Followed {
        /// The server now used.
        to: UpstreamSpec,
    },
    /// The upstream stays as configured.
    Stayed {
        /// Why, in a sentence.
        reason: String,
    },
}

/// Returns the name the upstream's certificate is checked against: the
/// configured `tls_name`, or the URL's host when that is a name.
pub fn origin_name(upstream: &UpstreamConfig) -> Option<String> {
    if !upstream.url.protocol.is_encrypted() {
        return None;
    }
    match (&upstream.tls_name, &upstream.url.host) {
        (Some(name), _) => Some(name.trim_end_matches('.').to_ascii_lowercase()),
        (None, Host::Name(name)) => Some(name.clone()),
        (None, Host::Ip(_)) => None,
    }
}

/// Builds the `_dns.<origin>` SVCB query (RFC 9462 §5).
pub fn redirection_query(origin: &str) -> Option<Message> {
    let name = Name::from_ascii(format!("_dns.{origin}.")).ok()?;
    let mut query = Message::new();
    query.set_id(rand::random()).set_recursion_desired(true);
    query.add_query(Query::query(name, RecordType::SVCB));
    Some(query)
}

/// Lists the servers an SVCB answer offers for the upstream's protocol,
/// most preferred first. Records for other protocols, AliasMode records and
/// records without a usable address (a hint, or an A / AAAA record of the
/// target in the additional section) are left out.
pub fn candidates(protocol: Protocol, response: &Message) -> Vec<Candidate> {
    let wanted_alpn = match protocol {
        Protocol::Tls => "dot",
        Protocol::Quic => "doq",
        Protocol::Https => "h2",
        Protocol::Udp | Protocol::Tcp => return Vec::new(),
    };
    let mut found = Vec::new();
    for record in response.answers() {
        let RData::SVCB(svcb) = record.data() else { continue };
        if svcb.svc_priority() == 0 {
            continue;
        }
        let mut alpn_matches = false;
        let mut port = protocol.default_port();
        let mut path = DEFAULT_DOH_PATH.to_owned();
        let mut addresses: Vec<IpAddr> = Vec::new();
        for (key, value) in svcb.svc_params() {
            match (key, value) {
                (SvcParamKey::Alpn, SvcParamValue::Alpn(ids)) => alpn_matches = ids.0.iter().any(|id| id == wanted_alpn),
                (SvcParamKey::Port, SvcParamValue::Port(number)) => port = *number,
                (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(hint)) => {
                    addresses.extend(hint.0.iter().map(|a| IpAddr::V4(a.0)));
                }
                (SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(hint)) => {
                    addresses.extend(hint.0.iter().map(|aaaa| IpAddr::V6(aaaa.0)));
                }
                (SvcParamKey::Unknown(SVC_PARAM_DOHPATH), SvcParamValue::Unknown(bytes)) => {
                    if let Some(template) = std::str::from_utf8(&bytes.0).ok().and_then(|text| text.strip_suffix("{?dns}")) {
                        path = template.to_owned();
                    }
                }
                _ => {}
            }
        }
        if !alpn_matches {
            continue;
        }
        let target = svcb.target_name().clone();
        addresses.extend(response.additionals().iter().filter(|extra| *extra.name() == target).filter_map(
            |extra| match extra.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            },
        ));
        let Some(address) = addresses.first().copied() else { continue };
        let path = if protocol == Protocol::Https { path } else { String::new() };
        let spec = UpstreamSpec { protocol, host: Host::Ip(address), port, path };
        found.push(Candidate { priority: svcb.svc_priority(), target, spec });
    }
    found.sort_by_key(|candidate| candidate.priority);
    found
}

/// Asks every encrypted upstream of `config` for a redirection and
/// returns the configuration with the redirections that were followed,
/// together with the decision for each upstream.
pub async fn follow_redirections(config: &ResolverConfig) -> (ResolverConfig, Vec<Decision>) {
    let mut updated = config.clone();
    let mut decisions = Vec::with_capacity(config.upstreams.len());
    for upstream in &mut updated.upstreams {
        let decision = check_upstream(config, upstream).await;
        match &decision {
            Decision::Followed { to } => {
                tracing::info!(from = %upstream.url, %to, "following the upstream's redirection: the new server authenticated as the same name");
                upstream.tls_name = origin_name(upstream);
                upstream.url = to.clone();
            }
            Decision::Stayed { reason } => tracing::warn!(upstream = %upstream.url, "not following the upstream's redirection: {reason}"),
            Decision::NotApplicable | Decision::NoRedirection => {}
        }
        decisions.push(decision);
    }
    (updated, decisions)
}

async fn check_upstream(config: &ResolverConfig, upstream: &UpstreamConfig) -> Decision {
    let Some(origin) = origin_name(upstream) else { return Decision::NotApplicable };
    let Some(query) = redirection_query(&origin) else { return Decision::NotApplicable };
    let Some(response) = ask(config, upstream.clone(), &query).await else {
        return Decision::Stayed { reason: format!("{} did not answer _dns.{origin} SVCB", upstream.url) };
    };
    let offered = candidates(upstream.url.protocol, &response);
    // A redirection that includes the current server's address points back
    // at it, and the draft says to ignore it.
    if offered.is_empty() || offered.iter().any(|candidate| candidate.spec.host == upstream.url.host) {
        return Decision::NoRedirection;
    }
    let mut failures = Vec::new();
    for candidate in offered {
        // The candidate must present a certificate valid for the origin
        // name, and answer over that connection.
        let probe = UpstreamConfig { url: candidate.spec.clone(), tls_name: Some(origin.clone()), ..upstream.clone() };
        if ask(config, probe, &query).await.is_some() {
            return Decision::Followed { to: candidate.spec };
        }
        failures.push(format!("{} ({}) did not authenticate as {origin}, or did not respond", candidate.target, candidate.spec));
    }
    Decision::Stayed { reason: failures.join("; ") }
}

/// Sends `query` to one upstream alone; `None` when no response came back.
/// A SERVFAIL response counts, because it arrived over a connection whose
/// certificate was checked.
async fn ask(config: &ResolverConfig, upstream: UpstreamConfig, query: &Message) -> Option<Message> {
    let single = ResolverConfig { upstreams: vec![upstream], max_attempts: 1, ..config.clone() };
    let pool = UpstreamPool::new(&single).ok()?;
    match pool.resolve(query).await {
        Outcome::Answer(response, _) | Outcome::ServFail(response) => Some(response),
        Outcome::Unreachable => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddr::{EncryptedProtocol, Endpoint, service_records};
    use hickory_proto::rr::Record;

    fn answer_with(endpoints: &[Endpoint], hints: &[std::net::Ipv4Addr]) -> Message {
        let target = Name::from_ascii("b.example.").unwrap();
        let mut response = Message::new();
        for svcb in service_records(endpoints, &target, hints, &[]) {
            response.add_answer(Record::from_rdata(Name::from_ascii("_dns.dns.example.").unwrap(), 60, RData::SVCB(svcb)));
        }
        response
    }

    #[test]
    fn candidates_match_protocol_and_need_address() {
        let endpoints = [
            Endpoint { protocol: EncryptedProtocol::Https, port: 8443, dohpath: Some("/q{?dns}".into()) },
            Endpoint { protocol: EncryptedProtocol::Tls, port: 8853, dohpath: None },
        ];
        let response = answer_with(&endpoints, &["10.0.0.9".parse().unwrap()]);
        let found = candidates(Protocol::Tls, &response);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].spec.to_string(), "tls://10.0.0.9:8853");
        let found = candidates(Protocol::Https, &response);
        assert_eq!(found[0].spec.path, "/q");
        assert_eq!(found[0].spec.port, 8443);
        assert!(candidates(Protocol::Quic, &response).is_empty());
        assert!(candidates(Protocol::Tls, &answer_with(&endpoints, &[])).is_empty(), "no address, no candidate");
    }

    #[test]
    fn origin_needs_encryption_and_name() {
        let mut upstream = UpstreamConfig::new("tls://192.0.2.1".parse().unwrap());
        assert_eq!(origin_name(&upstream), None);
        upstream.tls_name = Some("DNS.example.".into());
        assert_eq!(origin_name(&upstream).as_deref(), Some("dns.example"));
        let plain = UpstreamConfig { tls_name: Some("dns.example".into()), ..UpstreamConfig::new("udp://192.0.2.1".parse().unwrap()) };
        assert_eq!(origin_name(&plain), None);
    }
}
