//! The answers of Discovery of Designated Resolvers (RFC 9462): SVCB for
//! `_dns.resolver.arpa` and `_dns.<resolver name>`, and the resolver
//! name's own A / AAAA records, all built from the addresses of the
//! interface the query arrived on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::ProtoError;
use hickory_proto::rr::rdata::svcb::SVCB;
use hickory_proto::rr::rdata::{A, AAAA, NULL};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::addresses::{AddressLookup, advertisable_v6};
use super::svcb::{Endpoint, service_records};
use crate::resolver::DesignatedResolvers;
use crate::resolver::message::{ClientQuery, response_to};

/// Errors from building a [`Designated`].
#[derive(Debug, thiserror::Error)]
pub enum DdrError {
    /// The resolver name is not a valid DNS name.
    #[error("invalid resolver name {name:?}: {reason}; set [tls] resolver_name to a DNS name such as router.example")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// The parser's reason.
        reason: String,
    },
    /// A redirection target was configured without addresses.
    #[error("the redirection target {target} has no addresses; set [ddr] redirect_addresses")]
    RedirectionWithoutAddress {
        /// The target name.
        target: String,
    },
}

/// The DDR answers of one router. Cheap to share behind an `Arc`.
pub struct Designated {
    target: Name,
    own_svcb_name: Name,
    endpoints: Vec<Endpoint>,
    ttl: u32,
    addresses: Arc<dyn AddressLookup>,
    redirection: Option<Redirection>,
}

/// Another server that `_dns.<resolver name>` points clients to
/// (draft-ietf-add-encrypted-dns-server-redirection). Clients follow it only
/// when that server's certificate is valid for this resolver's name.
struct Redirection {
    target: Name,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl Designated {
    /// Builds the answers for `resolver_name` (the SVCB TargetName and the
    /// certificate's name), advertising `endpoints` in the order given.
    pub fn new(
        resolver_name: &str,
        endpoints: Vec<Endpoint>,
        ttl: u32,
        addresses: Arc<dyn AddressLookup>,
    ) -> Result<Self, DdrError> {
        let invalid = |reason: String| DdrError::InvalidName { name: resolver_name.to_owned(), reason };
        let fqdn = format!("{}.", resolver_name.trim_end_matches('.'));
        let target = Name::from_ascii(&fqdn).map_err(|error| invalid(error.to_string()))?;
        if target.is_root() {
            return Err(invalid("the root name cannot be a resolver name".into()));
        }
        let own_svcb_name = Name::from_ascii("_dns")
            .and_then(|label| label.append_domain(&target))
            .map_err(|error| invalid(error.to_string()))?;
        Ok(Self { target, own_svcb_name, endpoints, ttl, addresses, redirection: None })
    }

    /// Announces `target` at `addresses`, with the same endpoints, in the
    /// answer to `_dns.<resolver name>` instead of this router. The answer
    /// to `_dns.resolver.arpa` still names this router.
    pub fn with_redirection(mut self, target: &str, addresses: &[IpAddr]) -> Result<Self, DdrError> {
        let invalid = |reason: String| DdrError::InvalidName { name: target.to_owned(), reason };
        let target = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).map_err(|error| invalid(error.to_string()))?;
        if addresses.is_empty() {
            return Err(DdrError::RedirectionWithoutAddress { target: target.to_string() });
        }
        let v4 = addresses.iter().filter_map(|ip| if let IpAddr::V4(v4) = ip { Some(*v4) } else { None }).collect();
        let v6 = addresses.iter().filter_map(|ip| if let IpAddr::V6(v6) = ip { Some(*v6) } else { None }).collect();
        self.redirection = Some(Redirection { target, v4, v6 });
        Ok(self)
    }

    /// Returns the advertised endpoints, most preferred first.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Returns the SVCB TargetName.
    pub fn target(&self) -> &Name {
        &self.target
    }

    /// Splits the addresses beside `local` into the hints to advertise.
    fn hints(&self, local: IpAddr) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for address in self.addresses.addresses_beside(local.to_canonical()) {
            match address {
                IpAddr::V4(address) => v4.push(address),
                IpAddr::V6(address) if advertisable_v6(&address) => v6.push(address),
                IpAddr::V6(_) => {}
            }
        }
        (v4, v6)
    }

    fn svcb_for(&self, owner: &Name, local: SocketAddr) -> Vec<Record> {
        let (v4, v6) = self.hints(local.ip());
        self.svcb_records_to(owner, &self.target, &v4, &v6)
    }

    fn svcb_records_to(&self, owner: &Name, target: &Name, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<Record> {
        service_records(&self.endpoints, target, v4, v6)
            .into_iter()
            .filter_map(|svcb| match uncompressed_rdata(&svcb) {
                Ok(rdata) => Some(Record::from_rdata(owner.clone(), self.ttl, rdata)),
                Err(error) => {
                    tracing::warn!(%error, "encoding an SVCB record failed; it is left out of the DDR answer");
                    None
                }
            })
            .collect()
    }

    fn address_records(&self, local: SocketAddr, qtype: Option<RecordType>) -> Vec<Record> {
        let (v4, v6) = self.hints(local.ip());
        let mut records = Vec::new();
        if qtype.is_none_or(|qtype| qtype == RecordType::A) {
            records.extend(v4.into_iter().map(|ip| Record::from_rdata(self.target.clone(), self.ttl, RData::A(A(ip)))));
        }
        if qtype.is_none_or(|qtype| qtype == RecordType::AAAA) {
            records.extend(v6.into_iter().map(|ip| Record::from_rdata(self.target.clone(), self.ttl, RData::AAAA(AAAA(ip)))));
        }
        records
    }
}

/// Encodes the RDATA on its own, so the TargetName is written in full, and
/// wraps the bytes as opaque RDATA. RFC 9460 §2.2 forbids compressing the
/// TargetName, and hickory-proto 0.25 compresses it when the record is
/// encoded inside a message, which kdig then decodes as a wrong name.
fn uncompressed_rdata(svcb: &SVCB) -> Result<RData, ProtoError> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    svcb.emit(&mut encoder)?;
    Ok(RData::Unknown { code: RecordType::SVCB, rdata: NULL::with(bytes) })
}

impl Designated {
    fn redirection_answer(&self, query: &ClientQuery, redirection: &Redirection) -> Message {
        let mut response = response_to(query, ResponseCode::NoError);
        response.set_authoritative(true);
        response.add_answers(self.svcb_records_to(query.name(), &redirection.target, &redirection.v4, &redirection.v6));
        let target = &redirection.target;
        let addresses = redirection.v4.iter().map(|ip| RData::A(A(*ip))).chain(redirection.v6.iter().map(|ip| RData::AAAA(AAAA(*ip))));
        response.add_additionals(addresses.map(|rdata| Record::from_rdata(target.clone(), self.ttl, rdata)));
        response
    }
}

impl DesignatedResolvers for Designated {
    fn svcb_records(&self, query: &ClientQuery, local: SocketAddr) -> Vec<Record> {
        self.svcb_for(query.name(), local)
    }

    fn target_addresses(&self, local: SocketAddr) -> Vec<Record> {
        self.address_records(local, None)
    }

    /// Answers `_dns.<resolver name>` SVCB (RFC 9462 §5, the query a
    /// client sends over the encrypted connection to confirm the
    /// designation) and A / AAAA of the resolver name. Both are answered on
    /// every transport, because a client must look up the resolver name
    /// before it can open an encrypted connection.
    fn own_name_answer(&self, query: &ClientQuery, local: SocketAddr) -> Option<Message> {
        let qname = query.name();
        if *qname == self.own_svcb_name
            && query.qtype() == RecordType::SVCB
            && let Some(redirection) = &self.redirection
        {
            return Some(self.redirection_answer(query, redirection));
        }
        let records = if *qname == self.own_svcb_name {
            match query.qtype() {
                RecordType::SVCB => self.svcb_for(qname, local),
                _ => Vec::new(),
            }
        } else if *qname == self.target {
            match query.qtype() {
                RecordType::A | RecordType::AAAA => self.address_records(local, Some(query.qtype())),
                _ => Vec::new(),
            }
        } else {
            return None;
        };
        let mut response = response_to(query, ResponseCode::NoError);
        response.set_authoritative(true);
        let answered_svcb = query.qtype() == RecordType::SVCB && !records.is_empty();
        response.add_answers(records);
        if answered_svcb {
            response.add_additionals(self.address_records(local, None));
        }
        Some(response)
    }
}
