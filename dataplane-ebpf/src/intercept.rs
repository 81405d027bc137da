//! Interception of DNS that LAN clients send to resolvers other than the
//! router.
//!
//! A plain query (UDP/53) to another address is judged like one to the
//! router. A blocked one is answered in place, and since the answer swaps
//! the addresses it leaves from the address the client asked. Any other is
//! redirected: its destination becomes the router's address, and
//! `INTERCEPT_FLOWS` keeps the original one for the egress program
//! (`restore.rs`), which puts it back as the reply's source. A TCP SYN to
//! port 853 (DoT) is answered with a RST, and UDP to port 853 (DoQ) is
//! dropped, so that clients fall back to plain DNS.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_xdp_adjust_tail,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use dnsgate_common::maps::{
    ClientIntercepts, Counter, FlowKey, InterceptConfig, IpKey, INTERCEPT_DNS, INTERCEPT_DROP_DOQ,
    INTERCEPT_REFUSE_DOT,
};

use crate::{
    checksum::{fold, rewrite_udp6_checksum, sum_words},
    maps::{count, INTERCEPT_CLIENTS, INTERCEPT_CONFIG, INTERCEPT_EXEMPT, INTERCEPT_FLOWS},
    packet::{load_bytes, load_u16, load_u8, store_bytes, store_u16},
    query::Outcome,
};

pub const IPPROTO_TCP: u8 = 6;
const DNS_PORT: u16 = 53;
const ENCRYPTED_DNS_PORT: u16 = 853;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// Hop limit of the RSTs sent from the kernel.
const RST_TTL: u8 = 64;

/// Decides what becomes of a frame from `client` to an address that is not
/// the router's. `l3` is the offset of the IP header (IPv4 without options,
/// or IPv6 without extension headers) and `protocol` its upper-layer
/// protocol. Returns `Ok(())` for a plain DNS query to be judged as if sent
/// to the router, and otherwise the outcome.
#[inline(always)]
pub fn classify(
    ctx: &XdpContext,
    l3: usize,
    ipv6: bool,
    protocol: u8,
    client: IpKey,
) -> Result<(), Outcome> {
    let Some(config) = INTERCEPT_CONFIG.get(0) else {
        return Err(Outcome::NotDns);
    };
    let config: InterceptConfig = *config;
    let has_router = if ipv6 { config.router_v6 != [0; 16] } else { config.router_v4 != [0; 4] };
    if config.flags == 0 || !has_router {
        return Err(Outcome::NotDns);
    }
    let l4 = l3 + if ipv6 { 40 } else { 20 };
    let port = load_u16(ctx, l4 + 2).ok_or(Outcome::NotDns)?;
    let wanted = match (protocol, port) {
        (crate::query::IPPROTO_UDP, DNS_PORT) => INTERCEPT_DNS,
        (IPPROTO_TCP, ENCRYPTED_DNS_PORT) => INTERCEPT_REFUSE_DOT,
        (crate::query::IPPROTO_UDP, ENCRYPTED_DNS_PORT) => INTERCEPT_DROP_DOQ,
        _ => return Err(Outcome::NotDns),
    };
    if config.flags & wanted == 0 {
        return Err(Outcome::NotDns);
    }
    if INTERCEPT_EXEMPT.get(Key::new(128, client)).is_some() {
        return Err(Outcome::NotDns);
    }
    match wanted {
        INTERCEPT_DNS => {
            count_client(&client, false);
            count(Counter::Intercepted);
            Ok(())
        }
        INTERCEPT_REFUSE_DOT => {
            let flags = load_u8(ctx, l4 + 13).ok_or(Outcome::NotDns)?;
            // Only the opening SYN is answered: a RST to anything else
            // would need the sequence number of a connection we never saw.
            if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
                return Err(Outcome::NotDns);
            }
            count_client(&client, true);
            Err(refuse_syn(ctx, l3, ipv6))
        }
        _ => {
            count_client(&client, true);
            Err(Outcome::DoqDropped)
        }
    }
}

/// Adds one to the client's interception count.
#[inline(always)]
fn count_client(client: &IpKey, encrypted: bool) {
    if let Some(entry) = INTERCEPT_CLIENTS.get_ptr_mut(client) {
        // SAFETY: the pointer comes from a successful lookup and stays valid
        // while the program runs. Another CPU may update the same entry at
        // the same time and one increment may be lost, which the value's
        // documentation allows.
        unsafe {
            if encrypted {
                (*entry).encrypted += 1;
            } else {
                (*entry).queries += 1;
            }
        }
        return;
    }
    let entry = ClientIntercepts { queries: !encrypted as u64, encrypted: encrypted as u64 };
    // A concurrent first insert from another CPU wins; losing one count is
    // fine (see above).
    let _ = INTERCEPT_CLIENTS.insert(client, entry, BPF_NOEXIST as u64);
}

/// Rewrites an intercepted query that was not answered in the kernel so
/// that the router's stack delivers it to dnsgate, and records where it was
/// going. The frame is passed unchanged if the flow cannot be recorded,
/// because its reply would then leave with the wrong source address.
#[inline(always)]
pub fn redirect(ctx: &XdpContext) -> Outcome {
    match try_redirect(ctx) {
        Some(()) => Outcome::Redirected,
        None => Outcome::NotDns,
    }
}

#[inline(always)]
fn try_redirect(ctx: &XdpContext) -> Option<()> {
    let config = INTERCEPT_CONFIG.get(0)?;
    // The layout is read again rather than carried over from the parse,
    // so that the name walk's states do not depend on it.
    let l3 = if load_u16(ctx, 12)? == crate::query::ETH_P_8021Q { 18 } else { 14 };
    if load_u8(ctx, l3)? >> 4 == 6 {
        return redirect_v6(ctx, l3, config.router_v6);
    }
    let l4 = l3 + 20;
    let source = load_bytes::<4>(ctx, l3 + 12)?;
    let original = load_bytes::<4>(ctx, l3 + 16)?;
    let port = load_bytes::<2>(ctx, l4)?;
    let key = FlowKey { client: IpKey::from_v4(source), port, padding: [0; 2] };
    INTERCEPT_FLOWS.insert(key, IpKey::from_v4(original), BPF_ANY as u64).ok()?;

    store_bytes(ctx, l3 + 16, config.router_v4)?;
    store_u16(ctx, l3 + 10, 0)?;
    let sum = sum_words(ctx, l3, 20)?;
    store_u16(ctx, l3 + 10, fold(sum))?;
    // Zero means "no checksum" in UDP over IPv4 (RFC 768), and the stack
    // then accepts the datagram whatever the driver reported about the old
    // checksum. Updating the old value instead would be wrong for frames
    // that carry only the pseudo-header sum of a checksum offload.
    store_u16(ctx, l4 + 6, 0)
}

/// The IPv6 half of [`try_redirect`]. UDP over IPv6 must carry a checksum
/// (RFC 8200 §8.1), so it is computed again over the whole datagram, which
/// is right whatever state the old one was in. Datagrams longer than
/// [`crate::checksum::MAX_UDP_LEN`] are not redirected.
#[inline(always)]
fn redirect_v6(ctx: &XdpContext, l3: usize, router: [u8; 16]) -> Option<()> {
    let l4 = l3 + 40;
    let source = load_bytes::<16>(ctx, l3 + 8)?;
    let original = load_bytes::<16>(ctx, l3 + 24)?;
    let port = load_bytes::<2>(ctx, l4)?;
    let udp_len = load_u16(ctx, l4 + 4)? as usize;
    if udp_len > crate::checksum::MAX_UDP_LEN {
        return None;
    }
    let key = FlowKey { client: IpKey(source), port, padding: [0; 2] };
    INTERCEPT_FLOWS.insert(key, IpKey(original), BPF_ANY as u64).ok()?;

    store_bytes(ctx, l3 + 24, router)?;
    rewrite_udp6_checksum(ctx, l3, l4, udp_len)
}

/// Turns a TCP SYN into a RST+ACK back to its sender (RFC 9293 §3.10.7.1:
/// the reply to a SYN for a closed port).
#[inline(always)]
fn refuse_syn(ctx: &XdpContext, l3: usize, ipv6: bool) -> Outcome {
    let l4 = l3 + if ipv6 { 40 } else { 20 };
    let Some(sequence) = load_bytes::<4>(ctx, l4 + 4) else {
        return Outcome::NotDns;
    };
    let frame_len = l4 + 20;
    let delta = frame_len as i32 - (ctx.data_end() - ctx.data()) as i32;
    if delta != 0 {
        // SAFETY: `ctx.ctx` is the live XDP context; the helper validates
        // `delta` and fails without changing the frame.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return Outcome::NotDns;
        }
    }
    let acknowledgment = u32::from_be_bytes(sequence).wrapping_add(1);
    let written = if ipv6 { write_rst_v6(ctx, l3, acknowledgment) } else { write_rst_v4(ctx, l3, acknowledgment) };
    match written {
        Some(()) => Outcome::DotRefused,
        None => Outcome::Aborted,
    }
}

#[inline(always)]
fn write_rst_v4(ctx: &XdpContext, l3: usize, acknowledgment: u32) -> Option<()> {
    let l4 = l3 + 20;
    swap_macs(ctx)?;
    let source = load_bytes::<4>(ctx, l3 + 12)?;
    let destination = load_bytes::<4>(ctx, l3 + 16)?;
    store_bytes(ctx, l3 + 12, destination)?;
    store_bytes(ctx, l3 + 16, source)?;
    store_u16(ctx, l3 + 2, 40)?;
    store_bytes(ctx, l3 + 8, [RST_TTL])?;
    store_u16(ctx, l3 + 10, 0)?;
    let sum = sum_words(ctx, l3, 20)?;
    store_u16(ctx, l3 + 10, fold(sum))?;

    write_rst_header(ctx, l4, acknowledgment)?;
    // Pseudo-header (RFC 9293 §3.1): addresses, protocol, TCP length.
    let sum = sum_words(ctx, l3 + 12, 8)? + IPPROTO_TCP as u32 + 20 + sum_words(ctx, l4, 20)?;
    store_u16(ctx, l4 + 16, fold(sum))
}

#[inline(always)]
fn write_rst_v6(ctx: &XdpContext, l3: usize, acknowledgment: u32) -> Option<()> {
    let l4 = l3 + 40;
    swap_macs(ctx)?;
    let source = load_bytes::<16>(ctx, l3 + 8)?;
    let destination = load_bytes::<16>(ctx, l3 + 24)?;
    store_bytes(ctx, l3 + 8, destination)?;
    store_bytes(ctx, l3 + 24, source)?;
    store_u16(ctx, l3 + 4, 20)?;
    store_bytes(ctx, l3 + 7, [RST_TTL])?;

    write_rst_header(ctx, l4, acknowledgment)?;
    // Pseudo-header (RFC 8200 §8.1): addresses, length, next header.
    let sum = sum_words(ctx, l3 + 8, 32)? + IPPROTO_TCP as u32 + 20 + sum_words(ctx, l4, 20)?;
    store_u16(ctx, l4 + 16, fold(sum))
}

#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let destination_mac = load_bytes::<6>(ctx, 0)?;
    let source_mac = load_bytes::<6>(ctx, 6)?;
    store_bytes(ctx, 0, source_mac)?;
    store_bytes(ctx, 6, destination_mac)
}

/// Writes the 20-byte TCP header of the RST, checksum zero.
#[inline(always)]
fn write_rst_header(ctx: &XdpContext, l4: usize, acknowledgment: u32) -> Option<()> {
    let ports = load_bytes::<4>(ctx, l4)?;
    let ack = acknowledgment.to_be_bytes();
    let header: [u8; 20] = [
        ports[2], ports[3], ports[0], ports[1],
        0, 0, 0, 0,
        ack[0], ack[1], ack[2], ack[3],
        5 << 4, TCP_RST | TCP_ACK, 0, 0,
        0, 0, 0, 0,
    ];
    store_bytes(ctx, l4, header)
}
