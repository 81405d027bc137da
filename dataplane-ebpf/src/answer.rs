//! Rewriting a blocked query's frame into its answer, in place.
//!
//! The bytes written here must equal those of
//! `dnsgate_common::response::build_blocked` for the same query; the
//! differential test compares them.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use dnsgate_common::{
    maps::{BlockMode, DataplaneConfig},
    response::{
        AnswerShape, A_RECORD_LEN, AAAA_RECORD_LEN, EDE_BLOCKED, EDNS_UDP_SIZE, OPTION_EDE,
        OPT_RECORD_LEN, SOA_RECORD_LEN, SOA_SERIAL, SOA_TIMERS,
    },
    wire::{EDNS_FLAG_DO, HEADER_LEN, TYPE_A, TYPE_AAAA},
};

use crate::{
    checksum::{fold, sum_words},
    packet::{load_bytes, store_bytes, store_u16},
    query::{Frame, Outcome, Question},
};

/// Hop limit of answers sent from the kernel.
const ANSWER_HOP_LIMIT: u8 = 64;

/// Turns the query frame into the blocked answer. `owner` is the offset,
/// from the start of the name, of the blocking rule's name.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    frame: &Frame,
    question: &Question,
    config: &DataplaneConfig,
    owner: usize,
) -> Outcome {
    let mode = BlockMode::from_u32(config.block_mode);
    let shape = AnswerShape::for_query(mode, question.qtype, question.has_edns != 0);
    let dns_len = question.question_end + shape.tail_len();
    let frame_len = frame.dns + dns_len;
    let delta = frame_len as i32 - (ctx.data_end() - ctx.data()) as i32;
    if delta != 0 {
        // SAFETY: `ctx.ctx` is the live XDP context; the helper validates
        // `delta` against the frame's room and fails without changing it.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return Outcome::TxFailed;
        }
    }
    // The frame is now changed: a failure below cannot hand the query on, so
    // it drops the frame. The bounds checks cannot fail for the length set
    // above; they are there for the verifier.
    match write_answer(ctx, frame, question, config, &shape, dns_len, owner) {
        Some(()) => Outcome::Answered,
        None => Outcome::Aborted,
    }
}

#[inline(always)]
fn write_answer(
    ctx: &XdpContext,
    frame: &Frame,
    question: &Question,
    config: &DataplaneConfig,
    shape: &AnswerShape,
    dns_len: usize,
    owner: usize,
) -> Option<()> {
    let udp_len = 8 + dns_len;

    let destination_mac = load_bytes::<6>(ctx, 0)?;
    let source_mac = load_bytes::<6>(ctx, 6)?;
    store_bytes(ctx, 0, source_mac)?;
    store_bytes(ctx, 6, destination_mac)?;

    let l3 = frame.l3;
    if frame.ipv6 {
        let source = load_bytes::<16>(ctx, l3 + 8)?;
        let destination = load_bytes::<16>(ctx, l3 + 24)?;
        store_bytes(ctx, l3 + 8, destination)?;
        store_bytes(ctx, l3 + 24, source)?;
        store_u16(ctx, l3 + 4, udp_len as u16)?;
        store_bytes(ctx, l3 + 7, [ANSWER_HOP_LIMIT])?;
    } else {
        let source = load_bytes::<4>(ctx, l3 + 12)?;
        let destination = load_bytes::<4>(ctx, l3 + 16)?;
        store_bytes(ctx, l3 + 12, destination)?;
        store_bytes(ctx, l3 + 16, source)?;
        store_u16(ctx, l3 + 2, (20 + udp_len) as u16)?;
        store_bytes(ctx, l3 + 8, [ANSWER_HOP_LIMIT])?;
        store_u16(ctx, l3 + 10, 0)?;
        let sum = sum_words(ctx, l3, 20)?;
        store_u16(ctx, l3 + 10, fold(sum))?;
    }

    let l4 = frame.l4;
    let ports = load_bytes::<4>(ctx, l4)?;
    store_bytes(ctx, l4, [ports[2], ports[3], ports[0], ports[1]])?;
    store_u16(ctx, l4 + 4, udp_len as u16)?;
    store_u16(ctx, l4 + 6, 0)?;

    let dns = frame.dns;
    store_u16(ctx, dns + 2, shape.flags(question.flags))?;
    store_u16(ctx, dns + 6, (shape.answer_type != 0) as u16)?;
    store_u16(ctx, dns + 8, shape.soa as u16)?;
    store_u16(ctx, dns + 10, shape.opt as u16)?;

    let ttl = config.block_ttl.to_be_bytes();
    let mut at = dns + question.question_end;
    if shape.answer_type == TYPE_A {
        let [a, b, c, d] = config.sinkhole_v4;
        let record: [u8; A_RECORD_LEN] = [
            0xc0, HEADER_LEN as u8, 0, TYPE_A as u8, 0, 1, ttl[0], ttl[1], ttl[2], ttl[3], 0, 4,
            a, b, c, d,
        ];
        store_bytes(ctx, at, record)?;
        at += A_RECORD_LEN;
    } else if shape.answer_type == TYPE_AAAA {
        let mut record = [0u8; AAAA_RECORD_LEN];
        let head = [0xc0, HEADER_LEN as u8, 0, TYPE_AAAA as u8, 0, 1, ttl[0], ttl[1], ttl[2], ttl[3], 0, 16];
        let mut i = 0;
        while i < 12 {
            record[i] = head[i];
            i += 1;
        }
        let mut i = 0;
        while i < 16 {
            record[12 + i] = config.sinkhole_v6[i];
            i += 1;
        }
        store_bytes(ctx, at, record)?;
        at += AAAA_RECORD_LEN;
    }
    if shape.soa {
        store_bytes(ctx, at, soa_record(owner, config.block_ttl))?;
        at += SOA_RECORD_LEN;
    }
    if shape.opt {
        let do_bit = question.edns_flags & EDNS_FLAG_DO;
        let size = EDNS_UDP_SIZE.to_be_bytes();
        let flags = do_bit.to_be_bytes();
        let record: [u8; OPT_RECORD_LEN] = [
            0, 0, 41, size[0], size[1], 0, 0, flags[0], flags[1], 0, 6,
            (OPTION_EDE >> 8) as u8, OPTION_EDE as u8, 0, 2, (EDE_BLOCKED >> 8) as u8, EDE_BLOCKED as u8,
        ];
        store_bytes(ctx, at, record)?;
    }

    // UDP checksum over the pseudo-header (RFC 768, RFC 8200 §8.1) and the
    // datagram. A result of zero is sent as 0xffff, since zero means "no
    // checksum" for IPv4 and is invalid for IPv6.
    let addresses = if frame.ipv6 { sum_words(ctx, l3 + 8, 32)? } else { sum_words(ctx, l3 + 12, 8)? };
    let sum = addresses + 17 + udp_len as u32 + sum_words(ctx, l4, udp_len)?;
    let mut checksum = fold(sum);
    if checksum == 0 {
        checksum = 0xffff;
    }
    store_u16(ctx, l4 + 6, checksum)
}

/// The SOA record of a negative answer: owner, MNAME and RNAME all point at
/// the blocking rule's name in the question.
#[inline(always)]
fn soa_record(owner: usize, ttl: u32) -> [u8; SOA_RECORD_LEN] {
    let pointer = (0xc000 | (HEADER_LEN + owner) as u16).to_be_bytes();
    let ttl = ttl.to_be_bytes();
    let serial = SOA_SERIAL.to_be_bytes();
    let refresh = SOA_TIMERS[0].to_be_bytes();
    let retry = SOA_TIMERS[1].to_be_bytes();
    let expire = SOA_TIMERS[2].to_be_bytes();
    [
        pointer[0], pointer[1], 0, 6, 0, 1, ttl[0], ttl[1], ttl[2], ttl[3], 0, 24,
        pointer[0], pointer[1], pointer[0], pointer[1],
        serial[0], serial[1], serial[2], serial[3],
        refresh[0], refresh[1], refresh[2], refresh[3],
        retry[0], retry[1], retry[2], retry[3],
        expire[0], expire[1], expire[2], expire[3],
        ttl[0], ttl[1], ttl[2], ttl[3],
    ]
}
