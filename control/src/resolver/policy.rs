//! The hook through which the rule matcher judges queries in user space,
//! and the answers built for its verdicts.
//!
//! Blocked answers are the kernel's, byte for byte, whenever the query is
//! one the kernel could have judged: they come from the same builder in
//! `dnsgate_common::response`. Other queries (over 512 bytes, another EDNS
//! version, more labels than the kernel walks) and CNAME-cloaked answers get
//! the same records built through hickory-proto.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dnsgate_common::maps::{BlockMode, DataplaneConfig};
use dnsgate_common::response::build_blocked;
use dnsgate_common::wire::parse_query;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::message::{
    ClientQuery, ExtendedError, add_extended_error, encode, response_to, synthesized_soa,
};

/// The verdict of the rule matcher on one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// No rule matched: resolve normally, and check the CNAME chain of the
    /// answer.
    Pass,
    /// An allow rule matched: resolve normally and trust the answer's CNAME
    /// chain, as an allow rule beats every block rule.
    Allow,
    /// A block rule matched.
    Block {
        /// The name the blocking rule is written for: the queried name or
        /// one of its parents. It owns the SOA of NODATA and NXDOMAIN
        /// answers.
        rule: Name,
        /// The shape of the answer.
        style: BlockStyle,
    },
    /// A rewrite rule matched: answer A and AAAA queries with these
    /// addresses (NODATA when the list for the type is empty) and other
    /// types with NODATA.
    Rewrite {
        /// Addresses for A queries.
        v4: Vec<Ipv4Addr>,
        /// Addresses for AAAA queries.
        v6: Vec<Ipv6Addr>,
        /// TTL of the records, in seconds.
        ttl: u32,
    },
}

/// The answer settings for blocked names, a user-space copy of those in the
/// kernel's [`DataplaneConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStyle {
    /// Null address, NXDOMAIN or REFUSED.
    pub mode: BlockMode,
    /// TTL of the answer and of its SOA, in seconds.
    pub ttl: u32,
    /// Address for A queries in [`BlockMode::NullAddress`] mode.
    pub sinkhole_v4: Ipv4Addr,
    /// Address for AAAA queries in [`BlockMode::NullAddress`] mode.
    pub sinkhole_v6: Ipv6Addr,
}

impl Default for BlockStyle {
    fn default() -> Self {
        Self::from(&DataplaneConfig::DEFAULT)
    }
}

impl From<&DataplaneConfig> for BlockStyle {
    fn from(config: &DataplaneConfig) -> Self {
        Self {
            mode: BlockMode::from_u32(config.block_mode),
            ttl: config.block_ttl,
            sinkhole_v4: Ipv4Addr::from(config.sinkhole_v4),
            sinkhole_v6: Ipv6Addr::from(config.sinkhole_v6),
        }
    }
}

impl BlockStyle {
    /// Returns the kernel's default configuration with these answer
    /// settings.
    pub fn dataplane_config(&self) -> DataplaneConfig {
        DataplaneConfig {
            block_mode: self.mode as u32,
            block_ttl: self.ttl,
            sinkhole_v4: self.sinkhole_v4.octets(),
            sinkhole_v6: self.sinkhole_v6.octets(),
            ..DataplaneConfig::DEFAULT
        }
    }
}

/// The user-space rule matcher, with the kernel's semantics.
pub trait QueryPolicy: Send + Sync {
    /// Judges `name` queried with type `qtype` by `client`.
    fn check(&self, name: &Name, qtype: u16, client: IpAddr) -> PolicyAction;
}

/// A policy that passes everything, for a resolver without rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicy;

impl QueryPolicy for NoPolicy {
    fn check(&self, _name: &Name, _qtype: u16, _client: IpAddr) -> PolicyAction {
        PolicyAction::Pass
    }
}

/// Builds the blocked answer to a query whose own name matched `rule`.
///
/// When the kernel's parser accepts the query, the bytes are those the XDP
/// program would have sent.
pub fn blocked_answer(
    raw_query: &[u8],
    query: &ClientQuery,
    rule: &Name,
    style: &BlockStyle,
) -> Vec<u8> {
    if let Ok(parsed) = parse_query(raw_query) {
        let question_labels = usize::from(query.name().num_labels());
        let rule_labels = usize::from(rule.num_labels());
        if rule_labels <= question_labels && rule.zone_of(query.name()) {
            let rule_label = question_labels - rule_labels;
            let config = style.dataplane_config();
            let mut out =
                vec![0u8; parsed.question_end() + dnsgate_common::response::MAX_TAIL_LEN + 36];
            if let Ok(len) = build_blocked(raw_query, &parsed, rule_label, &config, &mut out) {
                out.truncate(len);
                return out;
            }
        }
    }
    encode(&blocked_message(query, rule, style))
}

/// Builds a blocked answer through hickory-proto with the records the
/// kernel's builder writes: an address record owned by the question name in
/// null-address mode, otherwise an SOA owned by `rule`, and Extended DNS
/// Error 15 when the query had EDNS.
pub fn blocked_message(query: &ClientQuery, rule: &Name, style: &BlockStyle) -> Message {
    let qtype = query.qtype();
    let (rcode, address, soa) = match style.mode {
        BlockMode::NxDomain => (ResponseCode::NXDomain, None, true),
        BlockMode::Refused => (ResponseCode::Refused, None, false),
        BlockMode::NullAddress => match qtype {
            RecordType::A => (
                ResponseCode::NoError,
                Some(RData::A(A(style.sinkhole_v4))),
                false,
            ),
            RecordType::AAAA => (
                ResponseCode::NoError,
                Some(RData::AAAA(AAAA(style.sinkhole_v6))),
                false,
            ),
            _ => (ResponseCode::NoError, None, true),
        },
    };
    let mut response = response_to(query, rcode);
    if let Some(rdata) = address {
        response.add_answer(Record::from_rdata(query.name().clone(), style.ttl, rdata));
    }
    if soa {
        response.add_name_server(synthesized_soa(rule, style.ttl));
    }
    add_extended_error(&mut response, ExtendedError::Blocked, "");
    response
}

/// Builds the answer for a rewrite rule.
pub fn rewrite_message(query: &ClientQuery, v4: &[Ipv4Addr], v6: &[Ipv6Addr], ttl: u32) -> Message {
    let mut response = response_to(query, ResponseCode::NoError);
    let name = query.name().clone();
    match query.qtype() {
        RecordType::A => {
            for ip in v4 {
                response.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))));
            }
        }
        RecordType::AAAA => {
            for ip in v6 {
                response.add_answer(Record::from_rdata(
                    name.clone(),
                    ttl,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
        _ => {}
    }
    response
}

/// Follows the CNAME chain of an upstream answer and returns the first
/// target the policy blocks, with the blocking rule and style (CNAME
/// cloaking: a tracker hidden behind a first-party alias is still blocked).
pub fn cloaked_block(
    policy: &dyn QueryPolicy,
    answers: &[Record],
    qtype: u16,
    client: IpAddr,
) -> Option<(Name, BlockStyle)> {
    // Bounded by the records in the answer: each CNAME target is checked
    // once, in the order the upstream listed them.
    answers.iter().find_map(|record| match record.data() {
        RData::CNAME(target) => match policy.check(&target.0, qtype, client) {
            PolicyAction::Block { rule, style } => Some((rule, style)),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::message::{extended_errors, parse_client_query};
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::rdata::CNAME;

    fn raw_query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut message = Message::new();
        message.set_id(0x0102).set_recursion_desired(true);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut edns = Edns::new();
            edns.set_dnssec_ok(true);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn client_query(raw: &[u8]) -> ClientQuery {
        parse_client_query(raw).ok().unwrap()
    }

    fn style(mode: BlockMode) -> BlockStyle {
        BlockStyle {
            mode,
            ttl: 42,
            ..BlockStyle::default()
        }
    }

    #[test]
    fn blocked_answer_matches_kernel_builder() {
        let raw = raw_query("x.Ads.example.com.", RecordType::MX, true);
        let query = client_query(&raw);
        let rule = Name::from_ascii("ads.example.com.").unwrap();
        let bytes = blocked_answer(&raw, &query, &rule, &style(BlockMode::NullAddress));

        let parsed = parse_query(&raw).unwrap();
        let mut expected = [0u8; 600];
        let len = build_blocked(
            &raw,
            &parsed,
            1,
            &style(BlockMode::NullAddress).dataplane_config(),
            &mut expected,
        )
        .unwrap();
        assert_eq!(bytes, &expected[..len]);
    }

    #[test]
    fn hickory_blocked_answer_has_kernel_records() {
        for (mode, qtype) in [
            (BlockMode::NullAddress, RecordType::A),
            (BlockMode::NullAddress, RecordType::AAAA),
            (BlockMode::NullAddress, RecordType::TXT),
            (BlockMode::NxDomain, RecordType::A),
            (BlockMode::Refused, RecordType::A),
        ] {
            let raw = raw_query("ads.example.com.", qtype, true);
            let query = client_query(&raw);
            let rule = Name::from_ascii("ads.example.com.").unwrap();
            let kernel =
                Message::from_vec(&blocked_answer(&raw, &query, &rule, &style(mode))).unwrap();
            let hickory =
                Message::from_vec(&encode(&blocked_message(&query, &rule, &style(mode)))).unwrap();
            assert_eq!(hickory.header(), kernel.header(), "{mode:?} {qtype}");
            assert_eq!(hickory.answers(), kernel.answers(), "{mode:?} {qtype}");
            assert_eq!(
                hickory.name_servers(),
                kernel.name_servers(),
                "{mode:?} {qtype}"
            );
            assert_eq!(extended_errors(&hickory), vec![15], "{mode:?} {qtype}");
            assert_eq!(extended_errors(&kernel), vec![15], "{mode:?} {qtype}");
        }
    }

    #[test]
    fn query_beyond_kernel_limits_still_blocked() {
        let name = format!("{}ads.example.com.", "a.".repeat(40));
        let raw = raw_query(&name, RecordType::A, false);
        assert!(parse_query(&raw).is_err());
        let query = client_query(&raw);
        let rule = Name::from_ascii("ads.example.com.").unwrap();
        let answer = Message::from_vec(&blocked_answer(
            &raw,
            &query,
            &rule,
            &style(BlockMode::NullAddress),
        ))
        .unwrap();
        assert_eq!(
            answer.answers()[0].data(),
            &RData::A(A(Ipv4Addr::UNSPECIFIED))
        );
        assert!(answer.extensions().is_none());
    }

    #[test]
    fn rewrite_answers_by_type() {
        let v4 = [Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 0, 2, 8)];
        let v6 = [Ipv6Addr::LOCALHOST];
        for (qtype, expected) in [
            (RecordType::A, 2),
            (RecordType::AAAA, 1),
            (RecordType::MX, 0),
        ] {
            let query = client_query(&raw_query("nas.example.", qtype, false));
            let response = rewrite_message(&query, &v4, &v6, 99);
            assert_eq!(response.response_code(), ResponseCode::NoError);
            assert_eq!(response.answers().len(), expected, "{qtype}");
            assert!(response.answers().iter().all(|record| record.ttl() == 99));
        }
    }

    struct BlockTracker;

    impl QueryPolicy for BlockTracker {
        fn check(&self, name: &Name, _qtype: u16, _client: IpAddr) -> PolicyAction {
            let rule = Name::from_ascii("tracker.example.").unwrap();
            if rule.zone_of(name) {
                PolicyAction::Block {
                    rule,
                    style: BlockStyle::default(),
                }
            } else {
                PolicyAction::Pass
            }
        }
    }

    #[test]
    fn cname_chain_reaching_blocked_name_is_found() {
        let owner = Name::from_ascii("metrics.shop.example.").unwrap();
        let middle = Name::from_ascii("edge.cdn.example.").unwrap();
        let target = Name::from_ascii("eu.tracker.example.").unwrap();
        let mut answer = Message::new();
        answer.add_answer(Record::from_rdata(
            owner,
            60,
            RData::CNAME(CNAME(middle.clone())),
        ));
        answer.add_answer(Record::from_rdata(
            middle,
            60,
            RData::CNAME(CNAME(target.clone())),
        ));
        answer.add_answer(Record::from_rdata(
            target,
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 9))),
        ));
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (rule, _) =
            cloaked_block(&BlockTracker, answer.answers(), 1, client).expect("cloaked tracker");
        assert_eq!(rule.to_ascii(), "tracker.example.");

        answer.answers_mut().remove(1);
        assert_eq!(
            cloaked_block(&BlockTracker, answer.answers(), 1, client),
            None
        );
    }
}
