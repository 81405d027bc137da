//! Recognising a DNS query for the router and judging its name.
//!
//! The rules are those of `dnsgate_common::wire::parse_query`; the
//! differential tests hold both to the same outcomes.

use aya_ebpf::programs::XdpContext;
use dnsgate_common::{
    maps::{IpKey, CONFIG_BLOCKING, CONFIG_HAS_CLIENTS, CONFIG_HAS_OVERLAY},
    name::{label_hash_step, suffix_key, FNV_OFFSET, MAX_LABEL_LEN, MAX_NAME_WIRE_LEN, ROOT_KEY},
    rules::{Judge, Verdict, ACTION_NONE, DEFAULT_CLIENT_GROUPS},
    wire::{
        CLASS_IN, FLAG_OPCODE_MASK, FLAG_QR, HEADER_LEN, MAX_LABELS, MAX_QUERY_LEN, TYPE_OPT,
    },
};

use crate::{
    answer, fallback, intercept, ratelimit,
    maps::{load, lookup_rule, store, ACTIVE_SET, CLIENTS, CONFIG, LABELS, ROUTER_ADDRS},
    packet::{load_bytes, load_u16, load_u8},
};

/// What became of a frame.
pub enum Outcome {
    /// Not a DNS query for the router.
    NotDns,
    /// A port-53 frame for the router that could not be parsed.
    Malformed,
    /// A query passed on to user space.
    ToUserSpace,
    /// A blocked query, rewritten into its answer.
    Answered,
    /// A blocked query passed on unchanged because the frame could not be
    /// grown for its answer.
    TxFailed,
    /// A blocked query whose frame was changed but whose answer could not be
    /// completed; it is dropped.
    Aborted,
    /// A query to another resolver, rewritten to go to the router.
    Redirected,
    /// A TCP SYN to port 853 of another resolver, answered with a RST.
    DotRefused,
    /// A UDP datagram to port 853 of another resolver, dropped.
    DoqDropped,
    /// A UDP datagram to port 53 from a client over its rate limit,
    /// dropped.
    RateLimited,
    /// A query not answered in the kernel, sent to the fallback port
    /// because the controller's heartbeat is stale.
    Fallback,
    /// A UDP datagram from a client straight to the fallback port, dropped.
    FallbackPortDropped,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;

/// Where the headers of a query frame start.
#[derive(Clone, Copy)]
pub struct Frame {
    /// Offset of the IP header.
    pub l3: usize,
    /// IPv6 (true) or IPv4.
    pub ipv6: bool,
    /// Offset of the UDP header.
    pub l4: usize,
    /// Offset of the DNS message.
    pub dns: usize,
    /// Length of the DNS message, from the UDP header.
    pub dns_len: usize,
    /// Source address, as a map key.
    pub source: IpKey,
}

/// The parts of the question the answer needs.
#[derive(Clone, Copy)]
pub struct Question {
    /// Header flags word of the query.
    pub flags: u16,
    /// QTYPE.
    pub qtype: u16,
    /// Offset of the first byte after the question, from the DNS header.
    pub question_end: usize,
    /// EDNS flags of the OPT record; 0 without one.
    pub edns_flags: u16,
    /// Whether the query had an OPT record (0 or 1). Kept apart from the
    /// flags rather than as an `Option`: the undefined payload of `None`
    /// let LLVM store a packet pointer into a 2-byte stack slot, which the
    /// verifier rejects ("invalid size of register spill", 6.18).
    pub has_edns: u16,
}

pub fn handle(ctx: &XdpContext) -> Outcome {
    #[cfg(feature = "broken-verifier-test")]
    {
        // Reads at an offset taken from the frame without comparing it to
        // `data_end`. The verifier must reject the whole program.
        let offset = load_u8(ctx, 0).unwrap_or(0) as usize;
        // SAFETY: none; this build exists only to be rejected.
        if unsafe { core::ptr::read_volatile((ctx.data() + offset) as *const u8) } == 0xab {
            return Outcome::NotDns;
        }
    }
    let Some(labels) = LABELS.get_ptr_mut(0) else {
        return Outcome::NotDns;
    };
    // SAFETY: this CPU's scratch value, touched by nothing else while the
    // program runs.
    store(unsafe { &mut (*labels).intercepted }, 0);
    let outcome = parse_and_judge(ctx);
    // SAFETY: as above.
    let outcome = if load(unsafe { &(*labels).intercepted }) == 0 {
        outcome
    } else {
        // Whatever the kernel did not answer goes to dnsgate, which answers
        // malformed queries too, rather than to the resolver the client
        // chose.
        match outcome {
            Outcome::NotDns | Outcome::Malformed | Outcome::ToUserSpace | Outcome::TxFailed => {
                intercept::redirect(ctx)
            }
            Outcome::Answered
            | Outcome::Aborted
            | Outcome::Redirected
            | Outcome::DotRefused
            | Outcome::DoqDropped
            | Outcome::RateLimited
            | Outcome::Fallback
            | Outcome::FallbackPortDropped => outcome,
        }
    };
    fallback::divert(ctx, outcome)
}

/// Parses the frame and judges the query. A query to another resolver that
/// is intercepted sets `Labels::intercepted`; the flag is kept in the
/// scratch value rather than in a register, so that the name walk is not
/// verified once per value of it.
#[inline(always)]
fn parse_and_judge(ctx: &XdpContext) -> Outcome {
    let frame = match parse_frame(ctx) {
        Ok(frame) => frame,
        Err(outcome) => return outcome,
    };
    let question = match parse_message(ctx, &frame) {
        Ok(question) => question,
        Err(outcome) => return outcome,
    };
    judge(ctx, &frame, &question)
}

/// Walks Ethernet, an optional 802.1Q tag, IPv4 or IPv6 and UDP, and
/// cross-checks the IP and UDP lengths before trusting either.
#[inline(always)]
fn parse_frame(ctx: &XdpContext) -> Result<Frame, Outcome> {
    let mut ethertype = load_u16(ctx, 12).ok_or(Outcome::NotDns)?;
    let mut l3 = 14;
    if ethertype == ETH_P_8021Q {
        ethertype = load_u16(ctx, 16).ok_or(Outcome::NotDns)?;
        l3 = 18;
    }

    let (l4, ip_payload_len, source, ipv6) = match ethertype {
        ETH_P_IP => {
            // Version 4 and a 20-byte header: options are not handled.
            if load_u8(ctx, l3).ok_or(Outcome::NotDns)? != 0x45 {
                return Err(Outcome::NotDns);
            }
            let protocol = load_u8(ctx, l3 + 9).ok_or(Outcome::NotDns)?;
            if protocol != IPPROTO_UDP && protocol != intercept::IPPROTO_TCP {
                return Err(Outcome::NotDns);
            }
            // More-fragments flag or a fragment offset: a fragment.
            if load_u16(ctx, l3 + 6).ok_or(Outcome::NotDns)? & 0x3fff != 0 {
                return Err(Outcome::NotDns);
            }
            let destination = load_bytes::<4>(ctx, l3 + 16).ok_or(Outcome::NotDns)?;
            let source = load_bytes::<4>(ctx, l3 + 12).ok_or(Outcome::NotDns)?;
            // SAFETY: the value is only tested for presence.
            if unsafe { ROUTER_ADDRS.get(&IpKey::from_v4(destination)) }.is_some() {
                if protocol != IPPROTO_UDP {
                    return Err(Outcome::NotDns);
                }
                fallback::reject_direct(ctx, l3 + 20)?;
            } else {
                intercept::classify(ctx, l3, false, protocol, IpKey::from_v4(source))?;
                let labels = LABELS.get_ptr_mut(0).ok_or(Outcome::NotDns)?;
                // SAFETY: this CPU's scratch value, touched by nothing else
                // while the program runs.
                store(unsafe { &mut (*labels).intercepted }, 1);
            }
            let total_len = load_u16(ctx, l3 + 2).ok_or(Outcome::NotDns)? as usize;
            let payload = total_len.checked_sub(20).ok_or(Outcome::Malformed);
            (l3 + 20, payload, IpKey::from_v4(source), false)
        }
        ETH_P_IPV6 => {
            // Next header must be UDP (or TCP, for DoT to other
            // resolvers): extension headers are not handled.
            let protocol = load_u8(ctx, l3 + 6).ok_or(Outcome::NotDns)?;
            if protocol != IPPROTO_UDP && protocol != intercept::IPPROTO_TCP {
                return Err(Outcome::NotDns);
            }
            let destination = load_bytes::<16>(ctx, l3 + 24).ok_or(Outcome::NotDns)?;
            let source = load_bytes::<16>(ctx, l3 + 8).ok_or(Outcome::NotDns)?;
            // SAFETY: the value is only tested for presence.
            if unsafe { ROUTER_ADDRS.get(&IpKey(destination)) }.is_some() {
                if protocol != IPPROTO_UDP {
                    return Err(Outcome::NotDns);
                }
                fallback::reject_direct(ctx, l3 + 40)?;
            } else {
                intercept::classify(ctx, l3, true, protocol, IpKey(source))?;
                let labels = LABELS.get_ptr_mut(0).ok_or(Outcome::NotDns)?;
                // SAFETY: this CPU's scratch value, touched by nothing else
                // while the program runs.
                store(unsafe { &mut (*labels).intercepted }, 1);
            }
            let payload = load_u16(ctx, l3 + 4).ok_or(Outcome::NotDns)? as usize;
            (l3 + 40, Ok(payload), IpKey(source), true)
        }
        _ => return Err(Outcome::NotDns),
    };

    if load_u16(ctx, l4 + 2).ok_or(Outcome::NotDns)? != DNS_PORT {
        return Err(Outcome::NotDns);
    }
    // From here on the frame is a UDP datagram for the router's DNS port
    // (or an intercepted one). A client over its rate limit costs nothing
    // more than this check.
    if ratelimit::over_limit(&source) {
        return Err(Outcome::RateLimited);
    }
    let ip_payload_len = ip_payload_len?;
    let udp_len = load_u16(ctx, l4 + 4).ok_or(Outcome::Malformed)? as usize;
    if udp_len != ip_payload_len || udp_len < 8 {
        return Err(Outcome::Malformed);
    }
    let dns = l4 + 8;
    let dns_len = udp_len - 8;
    // Frames may carry Ethernet padding after the datagram, never less.
    if ctx.data() + dns + dns_len > ctx.data_end() {
        return Err(Outcome::Malformed);
    }
    Ok(Frame { l3, ipv6, l4, dns, dns_len, source })
}

/// Parses the DNS header, the question name, QTYPE, QCLASS and the
/// optional OPT record.
#[inline(always)]
fn parse_message(ctx: &XdpContext, frame: &Frame) -> Result<Question, Outcome> {
    let dns = frame.dns;
    if frame.dns_len < HEADER_LEN {
        return Err(Outcome::Malformed);
    }
    if frame.dns_len > MAX_QUERY_LEN {
        return Err(Outcome::ToUserSpace);
    }
    let flags = load_u16(ctx, dns + 2).ok_or(Outcome::Malformed)?;
    let qdcount = load_u16(ctx, dns + 4).ok_or(Outcome::Malformed)?;
    let ancount = load_u16(ctx, dns + 6).ok_or(Outcome::Malformed)?;
    let nscount = load_u16(ctx, dns + 8).ok_or(Outcome::Malformed)?;
    let arcount = load_u16(ctx, dns + 10).ok_or(Outcome::Malformed)?;
    if flags & (FLAG_QR | FLAG_OPCODE_MASK) != 0
        || qdcount != 1
        || ancount != 0
        || nscount != 0
        || arcount > 1
    {
        return Err(Outcome::NotDns);
    }

    let labels = LABELS.get_ptr_mut(0).ok_or(Outcome::Malformed)?;
    // SAFETY: `labels` points at this CPU's scratch value, which nothing
    // else touches while the program runs.
    let labels = unsafe { &mut *labels };
    store(&mut labels.count, 0);
    store(&mut labels.remaining, 0);
    store(&mut labels.name_len, 0);

    walk_name(ctx, dns, labels)?;

    let name_len = load(&labels.name_len) as usize;
    if name_len == 0 || name_len > MAX_NAME_WIRE_LEN {
        return Err(Outcome::Malformed);
    }
    let mut pos = HEADER_LEN + name_len;
    let qtype = load_u16(ctx, dns + pos).ok_or(Outcome::Malformed)?;
    let qclass = load_u16(ctx, dns + pos + 2).ok_or(Outcome::Malformed)?;
    pos += 4;
    let question_end = pos;

    let mut edns_flags = 0;
    let mut has_edns = 0;
    let mut edns_version = 0;
    if arcount == 1 {
        if load_u8(ctx, dns + pos).ok_or(Outcome::Malformed)? != 0 {
            return Err(Outcome::Malformed);
        }
        if load_u16(ctx, dns + pos + 1).ok_or(Outcome::Malformed)? != TYPE_OPT {
            return Err(Outcome::Malformed);
        }
        edns_version = load_u8(ctx, dns + pos + 6).ok_or(Outcome::Malformed)?;
        edns_flags = load_u16(ctx, dns + pos + 7).ok_or(Outcome::Malformed)?;
        has_edns = 1;
        let rdlen = load_u16(ctx, dns + pos + 9).ok_or(Outcome::Malformed)? as usize;
        pos += 11 + rdlen;
    }
    if pos != frame.dns_len {
        return Err(Outcome::Malformed);
    }
    let count = load(&labels.count) as usize;
    if qclass != CLASS_IN || count > MAX_LABELS || count == 0 || edns_version != 0 {
        return Err(Outcome::ToUserSpace);
    }
    Ok(Question { flags, qtype, question_end, edns_flags, has_edns })
}

/// Reads the question name byte by byte, hashing each label and noting
/// where it starts. Leaves the name's wire length in `labels.name_len`.
#[inline(always)]
fn walk_name(ctx: &XdpContext, dns: usize, labels: &mut crate::maps::Labels) -> Result<(), Outcome> {
    for i in 0..MAX_NAME_WIRE_LEN {
        let byte = load_u8(ctx, dns + HEADER_LEN + i).ok_or(Outcome::Malformed)?;
        let remaining = load(&labels.remaining);
        if remaining == 0 {
            if byte == 0 {
                store(&mut labels.name_len, i as u32 + 1);
                return Ok(());
            }
            // Covers compression pointers (0xc0) and the reserved label
            // types (0x40, 0x80) as well as over-long labels.
            if byte as usize > MAX_LABEL_LEN || i + 1 + byte as usize > MAX_NAME_WIRE_LEN {
                return Err(Outcome::Malformed);
            }
            let index = load(&labels.count) as usize;
            if index < MAX_LABELS {
                labels.offsets[index & (MAX_LABELS - 1)] = i as u8;
            }
            store(&mut labels.remaining, byte as u32);
            store(&mut labels.hash, FNV_OFFSET);
        } else {
            let hash = label_hash_step(load(&labels.hash), byte);
            store(&mut labels.hash, hash);
            store(&mut labels.remaining, remaining - 1);
            if remaining == 1 {
                let index = load(&labels.count) as usize;
                if index < MAX_LABELS {
                    labels.hashes[index & (MAX_LABELS - 1)] = hash;
                }
                store(&mut labels.count, index as u32 + 1);
            }
        }
    }
    // 255 bytes read without reaching the root label.
    Err(Outcome::Malformed)
}

/// Looks the name and each parent suffix up and answers blocked queries.
#[inline(always)]
fn judge(ctx: &XdpContext, frame: &Frame, question: &Question) -> Outcome {
    let Some(config) = CONFIG.get(0) else {
        return Outcome::ToUserSpace;
    };
    if config.flags & CONFIG_BLOCKING == 0 {
        return Outcome::ToUserSpace;
    }
    let Some(labels) = LABELS.get_ptr_mut(0) else {
        return Outcome::ToUserSpace;
    };
    // SAFETY: this CPU's scratch value, touched by nothing else while the
    // program runs.
    let labels = unsafe { &mut *labels };

    let mut groups = DEFAULT_CLIENT_GROUPS;
    if config.flags & CONFIG_HAS_CLIENTS != 0 {
        // SAFETY: the value is copied out at once.
        if let Some(&mask) = unsafe { CLIENTS.get(&frame.source) } {
            groups = mask as u8;
        }
    }
    let active = ACTIVE_SET.get(0).map_or(0, |set| *set & 1);

    // Everything the loop needs, and everything the answer needs after it,
    // is parked in the scratch value and read back from there. The verifier
    // does not track map contents, so the loop is verified once rather than
    // once per combination of frame layout, active set, overlay and client
    // group; held in registers, those combinations multiplied the states
    // past the 1M-instruction limit on 6.18.
    store(&mut labels.groups, groups as u32);
    store(&mut labels.set_base, active * config.set_buckets);
    store(&mut labels.set_buckets, config.buckets[active as usize & 1]);
    store(&mut labels.overlay, (config.flags & CONFIG_HAS_OVERLAY != 0) as u32);
    store(&mut labels.frame, *frame);
    store(&mut labels.question, *question);
    store(&mut labels.action, ACTION_NONE as u32);
    store(&mut labels.block_label, 0);

    let count = load(&labels.count) as usize;
    let mut key = ROOT_KEY;
    for i in 0..MAX_LABELS {
        if i >= count {
            break;
        }
        let label = (count - 1 - i) & (MAX_LABELS - 1);
        key = suffix_key(key, labels.hashes[label]);
        let found = lookup_rule(load(&labels.set_base), load(&labels.set_buckets), key, load(&labels.overlay) != 0);
        if let Some(value) = found {
            let mut judge = Judge {
                action: load(&labels.action) as u8,
                block_label: load(&labels.block_label) as usize,
                client_groups: load(&labels.groups) as u8,
            };
            judge.visit(label, value);
            store(&mut labels.action, judge.action as u32);
            store(&mut labels.block_label, judge.block_label as u32);
        }
    }
    let judge = Judge {
        action: load(&labels.action) as u8,
        block_label: load(&labels.block_label) as usize,
        client_groups: 0,
    };
    match judge.verdict() {
        Verdict::Block { rule_label } => {
            let owner = labels.offsets[rule_label & (MAX_LABELS - 1)] as usize;
            let mut frame = load(&labels.frame);
            let mut question = load(&labels.question);
            // Read back from memory, the offsets are unknown to the
            // verifier; masks that keep every valid value give it bounds
            // again (IP header at 14 or 18, DNS message at most at 66).
            frame.l3 &= 0x1f;
            frame.l4 &= 0x3f;
            frame.dns &= 0x7f;
            question.question_end &= 0x1ff;
            answer::rewrite(ctx, &frame, &question, config, owner & 0xff)
        }
        Verdict::NoMatch | Verdict::Allow | Verdict::UserSpace => Outcome::ToUserSpace,
    }
}
