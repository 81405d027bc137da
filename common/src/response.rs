//! The blocked answer, built from the query's bytes.
//!
//! The XDP program writes the same bytes into the frame in place; the
//! differential tests compare the two. Layout of a blocked answer:
//!
//! * header: the query's ID; QR and RA set; RD and CD copied; AA, TC, AD
//!   clear; RCODE by mode;
//! * the question, byte for byte as the client sent it (letter case kept);
//! * for A or AAAA in [`BlockMode::NullAddress`] mode, one answer record
//!   owned by the question name (a compression pointer to offset 12) with
//!   the sinkhole address;
//! * for NODATA and NXDOMAIN, an SOA in the authority section, owned by the
//!   blocking rule's name, whose TTL and MINIMUM are the blocked TTL, so
//!   that stubs cache the negative answer (RFC 2308 §3, §5);
//! * when the query had an OPT record, an OPT record version 0 with UDP
//!   size 1232, the DO bit copied, and Extended DNS Error 15 "Blocked"
//!   (RFC 8914 §4.16); other options of the query are not echoed.

use crate::maps::{BlockMode, DataplaneConfig};
use crate::wire::{
    Query, CLASS_IN, EDNS_FLAG_DO, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, HEADER_LEN, TYPE_A,
    TYPE_AAAA, TYPE_OPT, TYPE_SOA,
};

/// RCODE NOERROR.
pub const RCODE_NOERROR: u16 = 0;
/// RCODE NXDOMAIN.
pub const RCODE_NXDOMAIN: u16 = 3;
/// RCODE REFUSED.
pub const RCODE_REFUSED: u16 = 5;

/// UDP payload size advertised in the answer's OPT record (the DNS Flag Day
/// 2020 recommendation).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// EDNS option code of Extended DNS Errors (RFC 8914).
pub const OPTION_EDE: u16 = 15;
/// Extended DNS Error "Blocked".
pub const EDE_BLOCKED: u16 = 15;

/// SOA SERIAL of the synthesised SOA.
pub const SOA_SERIAL: u32 = 1;
/// SOA REFRESH, RETRY and EXPIRE of the synthesised SOA, in seconds.
pub const SOA_TIMERS: [u32; 3] = [1800, 900, 604_800];

/// Length of an A answer record with a compressed owner.
pub const A_RECORD_LEN: usize = 2 + 10 + 4;
/// Length of an AAAA answer record with a compressed owner.
pub const AAAA_RECORD_LEN: usize = 2 + 10 + 16;
/// Length of the SOA record: compressed owner, fixed part, MNAME and RNAME
/// as compression pointers, five 32-bit fields.
pub const SOA_RECORD_LEN: usize = 2 + 10 + 2 + 2 + 20;
/// Length of the OPT record carrying one Extended DNS Error option.
pub const OPT_RECORD_LEN: usize = 1 + 10 + 6;
/// Largest number of bytes a blocked answer adds after the question: the
/// SOA, the largest of the three single records, plus the OPT record.
pub const MAX_TAIL_LEN: usize = SOA_RECORD_LEN + OPT_RECORD_LEN;

/// Which records a blocked answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerShape {
    /// RCODE of the answer.
    pub rcode: u16,
    /// Answer record type (A or AAAA), or 0 for none.
    pub answer_type: u16,
    /// An SOA goes in the authority section.
    pub soa: bool,
    /// An OPT record goes in the additional section.
    pub opt: bool,
}

impl AnswerShape {
    /// Picks the records for a blocked query of type `qtype`.
    #[inline(always)]
    pub const fn for_query(mode: BlockMode, qtype: u16, has_opt: bool) -> Self {
        let (rcode, answer_type, soa) = match mode {
            BlockMode::NxDomain => (RCODE_NXDOMAIN, 0, true),
            BlockMode::Refused => (RCODE_REFUSED, 0, false),
            BlockMode::NullAddress => match qtype {
                TYPE_A => (RCODE_NOERROR, TYPE_A, false),
                TYPE_AAAA => (RCODE_NOERROR, TYPE_AAAA, false),
                _ => (RCODE_NOERROR, 0, true),
            },
        };
        Self { rcode, answer_type, soa, opt: has_opt }
    }

    /// Bytes the records take after the question.
    #[inline(always)]
    pub const fn tail_len(&self) -> usize {
        let mut len = 0;
        if self.answer_type == TYPE_A {
            len += A_RECORD_LEN;
        } else if self.answer_type == TYPE_AAAA {
            len += AAAA_RECORD_LEN;
        }
        if self.soa {
            len += SOA_RECORD_LEN;
        }
        if self.opt {
            len += OPT_RECORD_LEN;
        }
        len
    }

    /// The header flags word of the answer to a query with `query_flags`.
    #[inline(always)]
    pub const fn flags(&self, query_flags: u16) -> u16 {
        FLAG_QR | FLAG_RA | (query_flags & (FLAG_RD | FLAG_CD)) | self.rcode
    }
}

/// Error returned when the output buffer is too small for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }
}

/// Writes the blocked answer to `query` (parsed from `msg`) into `out` and
/// returns its length. `rule_label` is the index of the first label of the
/// blocking rule's name in the question.
pub fn build_blocked(
    msg: &[u8],
    query: &Query,
    rule_label: usize,
    config: &DataplaneConfig,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mode = BlockMode::from_u32(config.block_mode);
    let shape = AnswerShape::for_query(mode, query.qtype, query.edns.is_some());
    let question_end = query.question_end();
    let len = question_end + shape.tail_len();
    if out.len() < len || msg.len() < question_end {
        return Err(BufferTooSmall);
    }
    let ttl = config.block_ttl;
    let mut w = Writer { out, pos: 0 };

    w.u16(query.id);
    w.u16(shape.flags(query.flags));
    w.u16(1);
    w.u16((shape.answer_type != 0) as u16);
    w.u16(shape.soa as u16);
    w.u16(shape.opt as u16);
    w.bytes(&msg[HEADER_LEN..question_end]);

    if shape.answer_type != 0 {
        w.u16(0xc000 | HEADER_LEN as u16);
        w.u16(shape.answer_type);
        w.u16(CLASS_IN);
        w.u32(ttl);
        if shape.answer_type == TYPE_A {
            w.u16(4);
            w.bytes(&config.sinkhole_v4);
        } else {
            w.u16(16);
            w.bytes(&config.sinkhole_v6);
        }
    }
    if shape.soa {
        let owner = 0xc000 | (HEADER_LEN as u16 + query.label_offsets[rule_label] as u16);
        w.u16(owner);
        w.u16(TYPE_SOA);
        w.u16(CLASS_IN);
        w.u32(ttl);
        w.u16(24);
        w.u16(owner);
        w.u16(owner);
        w.u32(SOA_SERIAL);
        for timer in SOA_TIMERS {
            w.u32(timer);
        }
        w.u32(ttl);
    }
    if shape.opt {
        let do_bit = query.edns.map_or(0, |edns| edns.flags & EDNS_FLAG_DO);
        w.bytes(&[0]);
        w.u16(TYPE_OPT);
        w.u16(EDNS_UDP_SIZE);
        w.u16(0);
        w.u16(do_bit);
        w.u16(6);
        w.u16(OPTION_EDE);
        w.u16(2);
        w.u16(EDE_BLOCKED);
    }
    debug_assert_eq!(w.pos, len);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_query;
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};

    fn query_bytes(name: &str, qtype: u16, opt: bool) -> std::vec::Vec<u8> {
        let mut msg = std::vec![0xbe, 0xef, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, opt as u8];
        for label in name.split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
        if opt {
            // OPT with DO and a client cookie option (code 10, 8 bytes).
            msg.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 12, 0, 10, 0, 8]);
            msg.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        }
        msg
    }

    fn build(name: &str, qtype: u16, opt: bool, mode: BlockMode, rule_label: usize) -> Message {
        let msg = query_bytes(name, qtype, opt);
        let query = parse_query(&msg).unwrap();
        let config = DataplaneConfig { block_mode: mode as u32, block_ttl: 42, ..DataplaneConfig::DEFAULT };
        let mut out = [0u8; 600];
        let len = build_blocked(&msg, &query, rule_label, &config, &mut out).unwrap();
        assert_eq!(&out[12..query.question_end()], &msg[12..query.question_end()]);
        Message::from_vec(&out[..len]).unwrap()
    }

    #[test]
    fn null_address_for_a() {
        let answer = build("Ads.Example.com", TYPE_A, false, BlockMode::NullAddress, 0);
        assert_eq!(answer.message_type(), MessageType::Response);
        assert_eq!(answer.id(), 0xbeef);
        assert!(answer.recursion_desired());
        assert!(answer.recursion_available());
        assert!(answer.checking_disabled());
        assert!(!answer.authoritative());
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert_eq!(answer.answers().len(), 1);
        assert_eq!(answer.answers()[0].ttl(), 42);
        assert_eq!(answer.answers()[0].data(), &RData::A("0.0.0.0".parse().unwrap()));
        assert!(answer.extensions().is_none());
    }

    #[test]
    fn unspecified_address_for_aaaa() {
        let answer = build("ads.example.com", TYPE_AAAA, true, BlockMode::NullAddress, 0);
        assert_eq!(answer.answers()[0].data(), &RData::AAAA("::".parse().unwrap()));
    }

    #[test]
    fn nodata_carries_soa_of_rule_name() {
        let answer = build("x.ads.example.com", 16, false, BlockMode::NullAddress, 1);
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.answers().is_empty());
        let soa = &answer.name_servers()[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name().to_ascii(), "ads.example.com.");
        assert_eq!(soa.ttl(), 42);
        let RData::SOA(soa) = soa.data() else { panic!("not an SOA") };
        assert_eq!(soa.minimum(), 42);
    }

    #[test]
    fn nxdomain_mode() {
        let answer = build("ads.example.com", TYPE_A, false, BlockMode::NxDomain, 0);
        assert_eq!(answer.response_code(), ResponseCode::NXDomain);
        assert_eq!(answer.name_servers().len(), 1);
    }

    #[test]
    fn refused_mode_has_no_records() {
        let answer = build("ads.example.com", TYPE_A, false, BlockMode::Refused, 0);
        assert_eq!(answer.response_code(), ResponseCode::Refused);
        assert!(answer.answers().is_empty());
        assert!(answer.name_servers().is_empty());
    }

    #[test]
    fn edns_answer_has_blocked_ede_and_do() {
        let answer = build("ads.example.com", TYPE_A, true, BlockMode::NullAddress, 0);
        let edns = answer.extensions().as_ref().expect("OPT record");
        assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
        assert_eq!(edns.version(), 0);
        assert!(edns.flags().dnssec_ok);
        let options = edns.options().as_ref();
        assert_eq!(options.len(), 1, "only the EDE option is sent: {options:?}");
    }
}
