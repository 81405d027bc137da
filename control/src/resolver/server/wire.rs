//! Byte-level reads and edits of DNS messages that belong to the transport
//! rather than to the resolver. They cover the EDNS payload size and options
//! of a query, truncation of UDP responses, EDNS padding and keepalive
//! options on responses, and the smallest TTL of a response for HTTP
//! caching.
//!
//! These functions walk the wire format directly (RFC 1035 section 4.1)
//! instead of decoding whole messages, so the resolver's response reaches the
//! client byte for byte except for the edits made here. Nothing in this
//! module panics on malformed input; every problem is a [`WireError`].

use thiserror::Error;

/// Length of the fixed DNS header (RFC 1035 section 4.1.1).
pub(crate) const HEADER_LEN: usize = 12;
/// Largest DNS message that fits the 2-byte length prefix of TCP, DoT and
/// DoQ (RFC 1035 section 4.2.2).
pub(crate) const MAX_MESSAGE_LEN: usize = u16::MAX as usize;
/// UDP payload size every resolver must accept (RFC 1035 section 4.2.1), and
/// the floor for smaller EDNS values (RFC 6891 section 6.2.5).
pub(crate) const MIN_UDP_PAYLOAD: usize = 512;
/// Block size for padded responses (RFC 8467 section 4.1).
pub(crate) const RESPONSE_PADDING_BLOCK: usize = 468;
/// UDP payload size advertised in an OPT record that this module adds.
const ADDED_OPT_UDP_PAYLOAD: u16 = 1232;

const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;
/// edns-tcp-keepalive option code (RFC 7828 section 3.1).
pub(crate) const OPTION_KEEPALIVE: u16 = 11;
/// Padding option code (RFC 7830 section 3).
pub(crate) const OPTION_PADDING: u16 = 12;

/// QR bit in the third header byte.
const FLAG_QR: u8 = 0x80;
/// TC bit in the third header byte.
const FLAG_TC: u8 = 0x02;

/// Offsets of the section counts in the header.
const QDCOUNT: usize = 4;
const ANCOUNT: usize = 6;
const NSCOUNT: usize = 8;
const ARCOUNT: usize = 10;

/// Length of an OPT record before its RDATA: root name, TYPE, CLASS, TTL
/// and RDLENGTH (RFC 6891 section 6.1.2).
const OPT_FIXED_LEN: usize = 1 + 2 + 2 + 4 + 2;
/// Upper bound on labels walked in one name: a 255-byte name has at most
/// 127 labels plus the root.
const MAX_LABELS: usize = 128;

/// A DNS message that could not be read or edited.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The message is shorter than the fixed header.
    #[error("DNS message of {len} bytes is shorter than the 12-byte header")]
    TooShort {
        /// Length of the message in bytes.
        len: usize,
    },
    /// A query carried the QR bit of a response.
    #[error("DNS message has the QR bit set, so it is a response and not a query")]
    NotAQuery,
    /// The message ends inside a name, question or record.
    #[error("DNS message ends inside {part} at offset {offset}")]
    Truncated {
        /// The element being read.
        part: &'static str,
        /// Offset at which it starts.
        offset: usize,
    },
    /// A name uses a reserved label type or has too many labels.
    #[error("DNS message has an invalid name at offset {offset}")]
    InvalidName {
        /// Offset of the offending label.
        offset: usize,
    },
    /// More than one OPT record (RFC 6891 section 6.1.1 allows one).
    #[error("DNS message has more than one OPT record")]
    DuplicateOpt,
    /// Bytes follow the last record that the header counts.
    #[error("DNS message has {extra} bytes after its last record")]
    TrailingBytes {
        /// Number of bytes after the last record.
        extra: usize,
    },
    /// An edit would make the message larger than 65535 bytes.
    #[error("edited DNS message would be {len} bytes, more than 65535")]
    TooLong {
        /// Length the edit would produce.
        len: usize,
    },
}

/// The facts the listeners need from a query's EDNS OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EdnsInfo {
    /// Requestor's UDP payload size, from the OPT CLASS field.
    pub udp_payload_size: u16,
    /// Whether the query carried the edns-tcp-keepalive option.
    pub keepalive: bool,
    /// Whether the query carried the padding option.
    pub padding: bool,
}

/// One resource record located in a message.
#[derive(Debug, Clone, Copy)]
struct Record {
    start: usize,
    rtype: u16,
    ttl: u32,
    rdata_start: usize,
    end: usize,
}

/// Section boundaries and the facts collected while walking a message.
#[derive(Debug, Clone, Copy)]
struct Layout {
    question_end: usize,
    records_end: usize,
    opt: Option<Record>,
    min_ttl: Option<u32>,
}

/// Returns the message ID.
pub(crate) fn message_id(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

/// Overwrites the message ID; messages shorter than two bytes are left as
/// they are.
pub(crate) fn set_message_id(message: &mut [u8], id: u16) {
    if let Some(bytes) = message.get_mut(..2) {
        bytes.copy_from_slice(&id.to_be_bytes());
    }
}

/// Checks that a message has a full header and is a query, the minimum the
/// listeners require before passing it to the resolver. The resolver judges
/// everything else itself and responds with FORMERR where needed.
pub(crate) fn check_query_header(message: &[u8]) -> Result<(), WireError> {
    if message.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: message.len() });
    }
    if message[2] & FLAG_QR != 0 {
        return Err(WireError::NotAQuery);
    }
    Ok(())
}

/// Reads the EDNS OPT record of a query (RFC 6891 section 6.1), or returns
/// `None` when the query has none.
pub(crate) fn query_edns(query: &[u8]) -> Result<Option<EdnsInfo>, WireError> {
    let layout = walk(query)?;
    let Some(opt) = layout.opt else {
        return Ok(None);
    };
    let class_offset = opt.start + 3;
    let udp_payload_size = read_u16(query, class_offset, "OPT record")?;
    let mut info = EdnsInfo {
        udp_payload_size,
        keepalive: false,
        padding: false,
    };
    for (code, _) in options(&query[opt.rdata_start..opt.end], opt.rdata_start)? {
        match code {
            OPTION_KEEPALIVE => info.keepalive = true,
            OPTION_PADDING => info.padding = true,
            _ => {}
        }
    }
    Ok(Some(info))
}

/// Returns the largest UDP response the client accepts: 512 bytes without
/// EDNS, otherwise its advertised size clamped to `[512, max_response]`
/// (RFC 6891 section 6.2.5).
pub(crate) fn udp_response_limit(edns: Option<&EdnsInfo>, max_response: u16) -> usize {
    let ceiling = usize::from(max_response).max(MIN_UDP_PAYLOAD);
    match edns {
        None => MIN_UDP_PAYLOAD,
        Some(info) => usize::from(info.udp_payload_size).clamp(MIN_UDP_PAYLOAD, ceiling),
    }
}

/// Returns the response unchanged when it fits `limit`, or else a truncated
/// copy with TC set (RFC 1035 section 4.1.1, RFC 2181 section 9). The copy
/// keeps the header and question section, and the OPT record without
/// options, so the client still gets the extended RCODE and EDNS version
/// (RFC 6891 section 7).
///
/// A response too damaged to walk, or whose question section alone exceeds
/// `limit`, is cut down to its header.
pub(crate) fn truncate_for_udp(response: Vec<u8>, limit: usize) -> Vec<u8> {
    if response.len() <= limit || response.len() < HEADER_LEN {
        return response;
    }

    let (mut truncated, opt) = match walk(&response) {
        Ok(layout) if layout.question_end <= limit => {
            (response[..layout.question_end].to_vec(), layout.opt)
        }
        _ => {
            let mut header = response[..HEADER_LEN].to_vec();
            header[QDCOUNT..HEADER_LEN].fill(0);
            (header, None)
        }
    };
    truncated[2] |= FLAG_TC;
    write_u16(&mut truncated, ANCOUNT, 0);
    write_u16(&mut truncated, NSCOUNT, 0);
    write_u16(&mut truncated, ARCOUNT, 0);

    if let Some(opt) = opt
        && truncated.len() + OPT_FIXED_LEN <= limit
    {
        truncated.extend_from_slice(&response[opt.start..opt.rdata_start - 2]);
        truncated.extend_from_slice(&[0, 0]);
        write_u16(&mut truncated, ARCOUNT, 1);
    }
    truncated
}

/// EDNS options that a listener adds to a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResponseOptions {
    /// Idle timeout to announce in an edns-tcp-keepalive option, in units of
    /// 100 ms (RFC 7828 section 3.1).
    pub keepalive: Option<u16>,
    /// Pad the response to a multiple of this many bytes (RFC 7830,
    /// RFC 8467 section 4.1).
    pub padding_block: Option<usize>,
}

/// Adds the keepalive and padding options to a response's OPT record,
/// adding an OPT record when the response has none. Keepalive and padding
/// options already in the response are replaced, so the message carries at
/// most one of each (RFC 7830 section 3). Padding is computed last, over
/// the whole message, so the result length is an exact multiple of the
/// block unless it would exceed 65535 bytes, in which case it is left
/// unpadded.
pub(crate) fn add_response_options(
    response: &[u8],
    edits: ResponseOptions,
) -> Result<Vec<u8>, WireError> {
    if edits == ResponseOptions::default() {
        return Ok(response.to_vec());
    }
    let layout = walk(response)?;
    if layout.records_end != response.len() {
        return Err(WireError::TrailingBytes {
            extra: response.len() - layout.records_end,
        });
    }

    let mut kept_options = Vec::new();
    let (prefix, fixed, suffix, added_opt): (&[u8], Vec<u8>, &[u8], bool) = match layout.opt {
        Some(opt) => {
            for (code, option) in options(&response[opt.rdata_start..opt.end], opt.rdata_start)? {
                if code != OPTION_KEEPALIVE && code != OPTION_PADDING {
                    kept_options.extend_from_slice(option);
                }
            }
            let fixed = response[opt.start..opt.rdata_start - 2].to_vec();
            (&response[..opt.start], fixed, &response[opt.end..], false)
        }
        None => {
            let mut fixed = vec![0];
            fixed.extend_from_slice(&TYPE_OPT.to_be_bytes());
            fixed.extend_from_slice(&ADDED_OPT_UDP_PAYLOAD.to_be_bytes());
            fixed.extend_from_slice(&[0, 0, 0, 0]);
            (response, fixed, &[][..], true)
        }
    };

    if let Some(timeout) = edits.keepalive {
        push_option(&mut kept_options, OPTION_KEEPALIVE, &timeout.to_be_bytes());
    }
    if let Some(block) = edits.padding_block.filter(|block| *block > 0) {
        let unpadded = prefix.len() + fixed.len() + 2 + kept_options.len() + 4 + suffix.len();
        let padding = (block - unpadded % block) % block;
        if unpadded + padding <= MAX_MESSAGE_LEN {
            push_option(&mut kept_options, OPTION_PADDING, &vec![0; padding]);
        }
    }

    let len = prefix.len() + fixed.len() + 2 + kept_options.len() + suffix.len();
    let rdlength = u16::try_from(kept_options.len()).map_err(|_| WireError::TooLong { len })?;
    if len > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong { len });
    }

    let mut edited = Vec::with_capacity(len);
    edited.extend_from_slice(prefix);
    edited.extend_from_slice(&fixed);
    edited.extend_from_slice(&rdlength.to_be_bytes());
    edited.extend_from_slice(&kept_options);
    edited.extend_from_slice(suffix);
    if added_opt {
        let additional = read_u16(&edited, ARCOUNT, "header")?;
        write_u16(&mut edited, ARCOUNT, additional.saturating_add(1));
    }
    Ok(edited)
}

/// Returns the smallest TTL of the answer and authority sections, with an
/// SOA record counting as the smaller of its TTL and MINIMUM field (the
/// negative-caching TTL of RFC 2308 section 5). `None` when those sections
/// are empty.
pub(crate) fn min_ttl(response: &[u8]) -> Result<Option<u32>, WireError> {
    Ok(walk(response)?.min_ttl)
}

/// Walks the header, question section and all records, recording section
/// ends, the OPT record of the additional section and the smallest TTL.
fn walk(message: &[u8]) -> Result<Layout, WireError> {
    if message.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: message.len() });
    }
    let questions = read_u16(message, QDCOUNT, "header")?;
    let answers = read_u16(message, ANCOUNT, "header")?;
    let authorities = read_u16(message, NSCOUNT, "header")?;
    let additionals = read_u16(message, ARCOUNT, "header")?;

    let mut offset = HEADER_LEN;
    for _ in 0..questions {
        let name_end = skip_name(message, offset)?;
        offset = name_end + 4;
        if offset > message.len() {
            return Err(WireError::Truncated {
                part: "question",
                offset: name_end,
            });
        }
    }
    let question_end = offset;

    let mut min_ttl: Option<u32> = None;
    for _ in 0..u32::from(answers) + u32::from(authorities) {
        let record = read_record(message, offset)?;
        let mut ttl = record.ttl;
        if record.rtype == TYPE_SOA && record.end >= record.rdata_start + 4 {
            let minimum = read_u32(message, record.end - 4, "SOA record")?;
            ttl = ttl.min(minimum);
        }
        min_ttl = Some(min_ttl.map_or(ttl, |current| current.min(ttl)));
        offset = record.end;
    }

    let mut opt = None;
    for _ in 0..additionals {
        let record = read_record(message, offset)?;
        if record.rtype == TYPE_OPT {
            if opt.is_some() {
                return Err(WireError::DuplicateOpt);
            }
            if message[record.start] != 0 {
                return Err(WireError::InvalidName {
                    offset: record.start,
                });
            }
            opt = Some(record);
        }
        offset = record.end;
    }

    Ok(Layout {
        question_end,
        records_end: offset,
        opt,
        min_ttl,
    })
}

/// Returns the offset just past the name that starts at `offset`. A
/// compression pointer ends the name (RFC 1035 section 4.1.4), and is not
/// followed because only the name's extent matters here.
fn skip_name(message: &[u8], mut offset: usize) -> Result<usize, WireError> {
    for _ in 0..MAX_LABELS {
        let Some(&length) = message.get(offset) else {
            return Err(WireError::Truncated {
                part: "name",
                offset,
            });
        };
        match length & 0xC0 {
            0x00 if length == 0 => return Ok(offset + 1),
            0x00 => offset += 1 + usize::from(length),
            0xC0 if offset + 1 < message.len() => return Ok(offset + 2),
            0xC0 => {
                return Err(WireError::Truncated {
                    part: "name",
                    offset,
                });
            }
            _ => return Err(WireError::InvalidName { offset }),
        }
    }
    Err(WireError::InvalidName { offset })
}

fn read_record(message: &[u8], start: usize) -> Result<Record, WireError> {
    let name_end = skip_name(message, start)?;
    let rtype = read_u16(message, name_end, "record")?;
    let ttl = read_u32(message, name_end + 4, "record")?;
    let rdlength = read_u16(message, name_end + 8, "record")?;
    let rdata_start = name_end + 10;
    let end = rdata_start + usize::from(rdlength);
    if end > message.len() {
        return Err(WireError::Truncated {
            part: "record data",
            offset: rdata_start,
        });
    }
    Ok(Record {
        start,
        rtype,
        ttl,
        rdata_start,
        end,
    })
}

/// Splits OPT RDATA into `(code, whole option bytes)` pairs (RFC 6891
/// section 6.1.2). `base` is the RDATA offset in the message, for errors.
fn options(rdata: &[u8], base: usize) -> Result<Vec<(u16, &[u8])>, WireError> {
    let mut found = Vec::new();
    let mut offset = 0;
    while offset < rdata.len() {
        let code = read_u16(rdata, offset, "EDNS option").map_err(|_| WireError::Truncated {
            part: "EDNS option",
            offset: base + offset,
        })?;
        let length =
            read_u16(rdata, offset + 2, "EDNS option").map_err(|_| WireError::Truncated {
                part: "EDNS option",
                offset: base + offset,
            })?;
        let end = offset + 4 + usize::from(length);
        if end > rdata.len() {
            return Err(WireError::Truncated {
                part: "EDNS option",
                offset: base + offset,
            });
        }
        found.push((code, &rdata[offset..end]));
        offset = end;
    }
    Ok(found)
}

fn push_option(buffer: &mut Vec<u8>, code: u16, data: &[u8]) {
    buffer.extend_from_slice(&code.to_be_bytes());
    // Option data here is at most 2 bytes (keepalive) or below one padding
    // block, so the length always fits.
    buffer.extend_from_slice(&(data.len() as u16).to_be_bytes());
    buffer.extend_from_slice(data);
}

fn read_u16(bytes: &[u8], offset: usize, part: &'static str) -> Result<u16, WireError> {
    match bytes.get(offset..offset + 2) {
        Some(field) => Ok(u16::from_be_bytes([field[0], field[1]])),
        None => Err(WireError::Truncated { part, offset }),
    }
}

fn read_u32(bytes: &[u8], offset: usize, part: &'static str) -> Result<u32, WireError> {
    match bytes.get(offset..offset + 4) {
        Some(field) => Ok(u32::from_be_bytes([field[0], field[1], field[2], field[3]])),
        None => Err(WireError::Truncated { part, offset }),
    }
}

fn write_u16(bytes: &mut [u8], offset: usize, value: u16) {
    if let Some(field) = bytes.get_mut(offset..offset + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::op::{Edns, Message, MessageType, Query};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record as HickoryRecord, RecordType};
    use proptest::prelude::*;

    use super::*;

    fn query(edns: Option<Edns>) -> Message {
        let mut message = Message::new();
        message.set_id(0x1234);
        message.add_query(Query::query(
            Name::from_str("example.test.").unwrap(),
            RecordType::A,
        ));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        message
    }

    fn edns_with(options: &[EdnsOption]) -> Edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1400);
        for option in options {
            edns.options_mut().insert(option.clone());
        }
        edns
    }

    fn response(records: usize, edns: Option<Edns>) -> Message {
        let mut message = query(edns);
        message.set_message_type(MessageType::Response);
        let name = Name::from_str("example.test.").unwrap();
        for index in 0..records {
            let address = Ipv4Addr::new(192, 0, 2, (index % 250) as u8);
            message.add_answer(HickoryRecord::from_rdata(
                name.clone(),
                300 - index as u32,
                RData::A(A(address)),
            ));
        }
        message
    }

    fn option_codes(message: &[u8]) -> Vec<u16> {
        let parsed = Message::from_vec(message).unwrap();
        let edns = parsed
            .extensions()
            .as_ref()
            .expect("response has no OPT record");
        edns.options()
            .as_ref()
            .iter()
            .map(|(code, _)| u16::from(*code))
            .collect()
    }

    #[test]
    fn header_check_rejects_short_and_responses() {
        assert_eq!(
            check_query_header(&[0; 11]),
            Err(WireError::TooShort { len: 11 })
        );
        let mut header = [0u8; 12];
        assert_eq!(check_query_header(&header), Ok(()));
        header[2] = FLAG_QR;
        assert_eq!(check_query_header(&header), Err(WireError::NotAQuery));
    }

    #[test]
    fn query_edns_rfc6891_reads_size_and_options() {
        let plain = query(None).to_vec().unwrap();
        assert_eq!(query_edns(&plain), Ok(None));

        let keepalive = EdnsOption::Unknown(OPTION_KEEPALIVE, Vec::new());
        let padding = EdnsOption::Unknown(OPTION_PADDING, vec![0; 10]);
        let with_options = query(Some(edns_with(&[keepalive, padding])))
            .to_vec()
            .unwrap();
        let info = query_edns(&with_options).unwrap().unwrap();
        assert_eq!(info.udp_payload_size, 1400);
        assert!(info.keepalive);
        assert!(info.padding);

        let bare = query(Some(edns_with(&[]))).to_vec().unwrap();
        let info = query_edns(&bare).unwrap().unwrap();
        assert!(!info.keepalive);
        assert!(!info.padding);
    }

    #[test]
    fn udp_limit_rfc6891_section_6_2_5() {
        let info = |size| EdnsInfo {
            udp_payload_size: size,
            keepalive: false,
            padding: false,
        };
        assert_eq!(udp_response_limit(None, 1232), 512);
        assert_eq!(udp_response_limit(Some(&info(100)), 1232), 512);
        assert_eq!(udp_response_limit(Some(&info(1000)), 1232), 1000);
        assert_eq!(udp_response_limit(Some(&info(4096)), 1232), 1232);
        assert_eq!(udp_response_limit(Some(&info(4096)), 100), 512);
    }

    #[test]
    fn truncation_keeps_question_and_opt_and_sets_tc() {
        let big = response(60, Some(edns_with(&[]))).to_vec().unwrap();
        assert!(big.len() > 512);

        let truncated = truncate_for_udp(big.clone(), 512);
        assert!(truncated.len() <= 512);
        let parsed = Message::from_vec(&truncated).unwrap();
        assert!(parsed.truncated());
        assert_eq!(parsed.id(), 0x1234);
        assert_eq!(parsed.queries().len(), 1);
        assert!(parsed.answers().is_empty());
        assert!(parsed.extensions().is_some());

        let fits = truncate_for_udp(big.clone(), big.len());
        assert_eq!(fits, big);
    }

    #[test]
    fn truncation_of_garbage_keeps_header_only() {
        let mut garbage = vec![0xAB; 600];
        garbage[4..6].copy_from_slice(&1u16.to_be_bytes());
        garbage[12] = 0x80;
        let truncated = truncate_for_udp(garbage, 512);
        assert_eq!(truncated.len(), HEADER_LEN);
        assert_ne!(truncated[2] & FLAG_TC, 0);
        assert_eq!(&truncated[QDCOUNT..HEADER_LEN], &[0; 8]);
    }

    #[test]
    fn padding_rfc8467_pads_to_block_multiple() {
        for records in [0, 1, 5, 27, 28, 29, 60] {
            let plain = response(records, Some(edns_with(&[]))).to_vec().unwrap();
            let edits = ResponseOptions {
                keepalive: None,
                padding_block: Some(468),
            };
            let padded = add_response_options(&plain, edits).unwrap();
            assert_eq!(
                padded.len() % 468,
                0,
                "{records} records gave {} bytes",
                padded.len()
            );
            assert_eq!(option_codes(&padded), vec![OPTION_PADDING]);
            let parsed = Message::from_vec(&padded).unwrap();
            assert_eq!(parsed.answers().len(), records);
        }
    }

    #[test]
    fn padding_adds_opt_when_response_has_none() {
        let plain = response(2, None).to_vec().unwrap();
        let edits = ResponseOptions {
            keepalive: Some(100),
            padding_block: Some(468),
        };
        let padded = add_response_options(&plain, edits).unwrap();
        assert_eq!(padded.len() % 468, 0);
        let parsed = Message::from_vec(&padded).unwrap();
        assert_eq!(parsed.additional_count(), 1);
        let mut codes = option_codes(&padded);
        codes.sort_unstable();
        assert_eq!(codes, vec![OPTION_KEEPALIVE, OPTION_PADDING]);
    }

    #[test]
    fn keepalive_rfc7828_replaces_existing_option() {
        let stale = EdnsOption::Unknown(OPTION_KEEPALIVE, vec![0, 1]);
        let subnet = EdnsOption::Unknown(8, vec![0, 1, 0, 0]);
        let plain = response(1, Some(edns_with(&[stale, subnet])))
            .to_vec()
            .unwrap();
        let edits = ResponseOptions {
            keepalive: Some(250),
            padding_block: None,
        };
        let edited = add_response_options(&plain, edits).unwrap();
        let parsed = Message::from_vec(&edited).unwrap();
        let options = parsed.extensions().as_ref().unwrap().options();
        match options.get(EdnsCode::from(OPTION_KEEPALIVE)) {
            Some(EdnsOption::Unknown(_, data)) => assert_eq!(data, &250u16.to_be_bytes()),
            other => panic!("keepalive option missing or mistyped: {other:?}"),
        }
        assert!(
            options.get(EdnsCode::from(8)).is_some(),
            "unrelated option was dropped"
        );
    }

    #[test]
    fn options_rejects_trailing_bytes() {
        let mut plain = response(1, None).to_vec().unwrap();
        plain.extend_from_slice(&[1, 2, 3]);
        let edits = ResponseOptions {
            keepalive: Some(1),
            padding_block: None,
        };
        assert_eq!(
            add_response_options(&plain, edits),
            Err(WireError::TrailingBytes { extra: 3 })
        );
    }

    #[test]
    fn min_ttl_rfc2308_uses_soa_minimum() {
        let positive = response(3, None).to_vec().unwrap();
        assert_eq!(min_ttl(&positive), Ok(Some(298)));

        let mut negative = response(0, None);
        let zone = Name::from_str("test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 60);
        negative.add_name_server(HickoryRecord::from_rdata(zone, 900, RData::SOA(soa)));
        assert_eq!(min_ttl(&negative.to_vec().unwrap()), Ok(Some(60)));

        let empty = response(0, None).to_vec().unwrap();
        assert_eq!(min_ttl(&empty), Ok(None));
    }

    #[test]
    fn walk_rejects_reserved_label_and_truncation() {
        let mut message = query(None).to_vec().unwrap();
        message[HEADER_LEN] = 0x40;
        assert_eq!(
            query_edns(&message),
            Err(WireError::InvalidName { offset: HEADER_LEN })
        );

        let message = query(Some(edns_with(&[]))).to_vec().unwrap();
        let cut = &message[..message.len() - 3];
        assert!(matches!(query_edns(cut), Err(WireError::Truncated { .. })));
    }

    #[test]
    fn message_id_round_trip() {
        let mut message = query(None).to_vec().unwrap();
        assert_eq!(message_id(&message), Some(0x1234));
        set_message_id(&mut message, 0);
        assert_eq!(message_id(&message), Some(0));
        assert_eq!(message_id(&[1]), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = check_query_header(&bytes);
            let _ = query_edns(&bytes);
            let _ = min_ttl(&bytes);
            let edits = ResponseOptions { keepalive: Some(5), padding_block: Some(468) };
            if let Ok(edited) = add_response_options(&bytes, edits) {
                prop_assert_eq!(edited.len() % 468, 0);
            }
            let truncated = truncate_for_udp(bytes.clone(), 512);
            if bytes.len() <= 512 {
                prop_assert_eq!(truncated, bytes);
            } else {
                prop_assert!(truncated.len() <= 512);
            }
        }
    }
}
