//! Parsing of the DNS header, the single question and the optional EDNS OPT
//! record of a query (RFC 1035 §4.1, RFC 6891 §6.1).
//!
//! The XDP program walks packet memory with its own verifier-friendly loop
//! but follows exactly these rules; the differential tests feed both the
//! same bytes. A query the kernel may answer must satisfy all of:
//! QR = 0, OPCODE = 0, QDCOUNT = 1, ANCOUNT = 0, NSCOUNT = 0, ARCOUNT ≤ 1,
//! a question name without compression pointers, and, when ARCOUNT = 1, an
//! OPT record owned by the root that ends the message.

use crate::name::{label_hash_step, FNV_OFFSET, MAX_LABEL_LEN, MAX_NAME_WIRE_LEN};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Largest DNS message the XDP program answers. Queries are far smaller; a
/// bigger one goes to user space.
pub const MAX_QUERY_LEN: usize = 512;
/// Labels the kernel judges. A name with more labels goes to user space,
/// which applies the same rules without the limit.
pub const MAX_LABELS: usize = 32;
/// Fixed part of an OPT record after its root owner name: TYPE, CLASS, TTL,
/// RDLENGTH.
pub const OPT_FIXED_LEN: usize = 10;

/// Header flag: query (0) or response (1).
pub const FLAG_QR: u16 = 0x8000;
/// Header flag mask of the 4-bit OPCODE.
pub const FLAG_OPCODE_MASK: u16 = 0x7800;
/// Header flag: authoritative answer.
pub const FLAG_AA: u16 = 0x0400;
/// Header flag: truncated.
pub const FLAG_TC: u16 = 0x0200;
/// Header flag: recursion desired.
pub const FLAG_RD: u16 = 0x0100;
/// Header flag: recursion available.
pub const FLAG_RA: u16 = 0x0080;
/// Header flag: authentic data (RFC 4035).
pub const FLAG_AD: u16 = 0x0020;
/// Header flag: checking disabled (RFC 4035).
pub const FLAG_CD: u16 = 0x0010;

/// DNSSEC OK bit in the OPT TTL field's flags (RFC 3225).
pub const EDNS_FLAG_DO: u16 = 0x8000;

/// Record type of OPT.
pub const TYPE_OPT: u16 = 41;
/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type SOA.
pub const TYPE_SOA: u16 = 6;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Why a message is not a query the kernel may judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The header says this is not a plain query with one question (a
    /// response, another OPCODE, or record counts outside the rules above).
    NotPlainQuery,
    /// The message could not be parsed: it is truncated, a label length is
    /// invalid, the question uses compression, the name is too long, the
    /// OPT record is malformed or bytes follow the last record.
    Malformed,
    /// A valid query the kernel leaves to user space: class other than IN,
    /// more than [`MAX_LABELS`] labels, or an EDNS version other than 0.
    UserSpace,
}

/// EDNS information of a query's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub udp_size: u16,
    /// EDNS version (the kernel only answers version 0).
    pub version: u8,
    /// The 16 flag bits of the OPT TTL field (DO is the top bit).
    pub flags: u16,
}

/// A parsed query, with everything the rule lookup and the response builder
/// need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Message ID.
    pub id: u16,
    /// Header flags word.
    pub flags: u16,
    /// Length of the question name in wire form, root label included.
    pub name_len: usize,
    /// Number of labels, the root excluded.
    pub label_count: usize,
    /// Offset of each label's length byte from the start of the name.
    pub label_offsets: [u8; MAX_LABELS],
    /// FNV-1a hash of each label, lowercased (see [`crate::name`]).
    pub label_hashes: [u64; MAX_LABELS],
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The OPT record, when the query had one.
    pub edns: Option<Edns>,
}

impl Query {
    /// Length of the header plus the question section.
    pub const fn question_end(&self) -> usize {
        HEADER_LEN + self.name_len + 4
    }

    /// Key of the suffix that starts at label `index` (0 is the whole name).
    pub fn suffix_key(&self, index: usize) -> u64 {
        let mut key = crate::name::ROOT_KEY;
        let mut label = self.label_count;
        while label > index {
            label -= 1;
            key = crate::name::suffix_key(key, self.label_hashes[label]);
        }
        key
    }
}

#[inline(always)]
fn read_u16(msg: &[u8], offset: usize) -> Result<u16, Skip> {
    match msg.get(offset..offset + 2) {
        Some(bytes) => Ok(u16::from_be_bytes([bytes[0], bytes[1]])),
        None => Err(Skip::Malformed),
    }
}

/// Parses a DNS message as a query the kernel may judge.
pub fn parse_query(msg: &[u8]) -> Result<Query, Skip> {
    if msg.len() < HEADER_LEN {
        return Err(Skip::Malformed);
    }
    if msg.len() > MAX_QUERY_LEN {
        return Err(Skip::UserSpace);
    }
    let id = read_u16(msg, 0)?;
    let flags = read_u16(msg, 2)?;
    let qdcount = read_u16(msg, 4)?;
    let ancount = read_u16(msg, 6)?;
    let nscount = read_u16(msg, 8)?;
    let arcount = read_u16(msg, 10)?;
    if flags & (FLAG_QR | FLAG_OPCODE_MASK) != 0
        || qdcount != 1
        || ancount != 0
        || nscount != 0
        || arcount > 1
    {
        return Err(Skip::NotPlainQuery);
    }

    let mut label_offsets = [0u8; MAX_LABELS];
    let mut label_hashes = [0u64; MAX_LABELS];
    let mut label_count = 0usize;
    let mut too_many_labels = false;
    let mut pos = HEADER_LEN;
    loop {
        let len = *msg.get(pos).ok_or(Skip::Malformed)? as usize;
        let name_len = pos - HEADER_LEN + 1 + len;
        if len & 0xc0 != 0 || len > MAX_LABEL_LEN {
            // Compression pointers (0xc0) and the reserved label types
            // (0x40, 0x80) have no place in a question the kernel judges.
            return Err(Skip::Malformed);
        }
        if name_len > MAX_NAME_WIRE_LEN {
            return Err(Skip::Malformed);
        }
        if len == 0 {
            break;
        }
        let label = msg.get(pos + 1..pos + 1 + len).ok_or(Skip::Malformed)?;
        if label_count < MAX_LABELS {
            label_offsets[label_count] = (pos - HEADER_LEN) as u8;
            let mut hash = FNV_OFFSET;
            for &byte in label {
                hash = label_hash_step(hash, byte);
            }
            label_hashes[label_count] = hash;
            label_count += 1;
        } else {
            too_many_labels = true;
        }
        pos += 1 + len;
    }
    let name_len = pos + 1 - HEADER_LEN;
    pos += 1;
    let qtype = read_u16(msg, pos)?;
    let qclass = read_u16(msg, pos + 2)?;
    pos += 4;

    let edns = if arcount == 1 {
        // The OPT owner must be the root name (RFC 6891 §6.1.2).
        if msg.get(pos) != Some(&0) {
            return Err(Skip::Malformed);
        }
        let rtype = read_u16(msg, pos + 1)?;
        if rtype != TYPE_OPT {
            return Err(Skip::Malformed);
        }
        let udp_size = read_u16(msg, pos + 3)?;
        let version = *msg.get(pos + 6).ok_or(Skip::Malformed)?;
        let edns_flags = read_u16(msg, pos + 7)?;
        let rdlen = read_u16(msg, pos + 9)? as usize;
        pos += 1 + OPT_FIXED_LEN + rdlen;
        if pos > msg.len() {
            return Err(Skip::Malformed);
        }
        Some(Edns { udp_size, version, flags: edns_flags })
    } else {
        None
    };
    if pos != msg.len() {
        return Err(Skip::Malformed);
    }
    if qclass != CLASS_IN || too_many_labels || label_count == 0 {
        return Err(Skip::UserSpace);
    }
    if let Some(edns) = edns {
        if edns.version != 0 {
            return Err(Skip::UserSpace);
        }
    }
    Ok(Query {
        id,
        flags,
        name_len,
        label_count,
        label_offsets,
        label_hashes,
        qtype,
        qclass,
        edns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::name_key;

    fn query(name: &str, qtype: u16, opt: Option<&[u8]>) -> std::vec::Vec<u8> {
        let mut msg = std::vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(opt) = opt {
            msg.extend_from_slice(opt);
        }
        msg
    }

    const OPT_DO: &[u8] = &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn parses_plain_query() {
        let msg = query("Ads.Example.com", TYPE_A, None);
        let q = parse_query(&msg).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.label_count, 3);
        assert_eq!(q.name_len, 17);
        assert_eq!(&q.label_offsets[..3], &[0, 4, 12]);
        assert_eq!(q.qtype, TYPE_A);
        assert_eq!(q.edns, None);
        assert_eq!(q.suffix_key(0), name_key("ads.example.com").unwrap());
        assert_eq!(q.suffix_key(1), name_key("example.com").unwrap());
        assert_eq!(q.suffix_key(2), name_key("com").unwrap());
    }

    #[test]
    fn parses_edns_version_and_do_bit() {
        let msg = query("example.com", TYPE_AAAA, Some(OPT_DO));
        let edns = parse_query(&msg).unwrap().edns.unwrap();
        assert_eq!(edns.udp_size, 1232);
        assert_eq!(edns.version, 0);
        assert_eq!(edns.flags, EDNS_FLAG_DO);
    }

    #[test]
    fn edns_version_1_goes_to_user_space() {
        let msg = query("example.com", TYPE_A, Some(&[0, 0, 41, 4, 0xd0, 0, 1, 0, 0, 0, 0]));
        assert_eq!(parse_query(&msg), Err(Skip::UserSpace));
    }

    #[test]
    fn header_filters_are_not_plain_query() {
        let base = query("example.com", TYPE_A, None);
        for (offset, value) in [(2, 0x81), (2, 0x28), (5, 2), (7, 1), (9, 1), (11, 2)] {
            let mut msg = base.clone();
            msg[offset] = value;
            assert_eq!(parse_query(&msg), Err(Skip::NotPlainQuery), "byte {offset} = {value:#x}");
        }
    }

    #[test]
    fn compression_pointer_in_question_is_malformed() {
        let mut msg = std::vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c];
        msg.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(parse_query(&msg), Err(Skip::Malformed));
    }

    #[test]
    fn every_truncation_is_malformed() {
        let msg = query("ads.example.com", TYPE_A, Some(OPT_DO));
        for len in 0..msg.len() {
            assert_eq!(parse_query(&msg[..len]), Err(Skip::Malformed), "length {len}");
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut msg = query("example.com", TYPE_A, None);
        msg.push(0);
        assert_eq!(parse_query(&msg), Err(Skip::Malformed));
    }

    #[test]
    fn name_of_255_bytes_is_accepted_and_256_is_not() {
        let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        let q = parse_query(&query(&name, TYPE_A, None)).unwrap();
        assert_eq!(q.name_len, 255);
        let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
        assert_eq!(parse_query(&query(&name, TYPE_A, None)), Err(Skip::Malformed));
    }

    #[test]
    fn too_many_labels_go_to_user_space() {
        let name = ["a"; MAX_LABELS + 1].join(".");
        assert_eq!(parse_query(&query(&name, TYPE_A, None)), Err(Skip::UserSpace));
        let name = ["a"; MAX_LABELS].join(".");
        assert_eq!(parse_query(&query(&name, TYPE_A, None)).unwrap().label_count, MAX_LABELS);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_query(&bytes);
        }

        #[test]
        fn mutated_queries_never_panic(index in 0usize..40, value in proptest::num::u8::ANY) {
            let mut msg = query("ads.example.com", TYPE_A, Some(OPT_DO));
            let index = index % msg.len();
            msg[index] = value;
            let _ = parse_query(&msg);
        }
    }
}
