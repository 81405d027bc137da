//! The TC egress program that gives replies the source their client sent
//! the query to: port 53 for replies from the fallback resolver (see
//! `fallback.rs`), and the original address for replies to redirected
//! queries (see `intercept.rs`).
//!
//! It runs on the LAN ports. A UDP datagram from the fallback port of one
//! of the router's addresses gets source port 53 first. Then a UDP
//! datagram from port 53 of the router's
//! address to a client port found in `INTERCEPT_FLOWS` gets the
//! recorded address as its source; the flow entry is then removed, so a
//! later query from the same port straight to the router is answered from
//! the router's address. Everything else leaves unchanged.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use dnsgate_common::maps::{Counter, FlowKey, IpKey, INTERCEPT_DNS};

use crate::{
    maps::{count, FALLBACK, INTERCEPT_CONFIG, INTERCEPT_FLOWS, ROUTER_ADDRS},
    query::{ETH_P_8021Q, IPPROTO_UDP},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Flags of `bpf_l4_csum_replace` for one 4-byte word of the pseudo-header.
const L4_FLAGS: u64 = (BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) as u64 | 4;
const DNS_PORT: u16 = 53;

/// Flags of `bpf_l4_csum_replace` for a 2-byte port.
const PORT_FLAGS: u64 = BPF_F_MARK_MANGLED_0 as u64 | 2;

/// Restores the source port of one frame if it is a reply from the
/// fallback resolver, then its source address if it is a reply to a
/// redirected query. Never drops anything.
#[inline(always)]
pub fn restore(ctx: &TcContext) {
    if restore_port(ctx).is_some() {
        count(Counter::FallbackReplies);
    }
    if try_restore(ctx).is_some() {
        count(Counter::RepliesRestored);
    }
}

/// Returns the EtherType of the frame and the offset of its network
/// header, after an optional 802.1Q tag.
#[inline(always)]
fn network_header(ctx: &TcContext) -> Option<(u16, usize)> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ethertype == ETH_P_8021Q {
        return Some((u16::from_be(ctx.load::<u16>(16).ok()?), 18));
    }
    Some((ethertype, 14))
}

/// Gives a UDP datagram from the fallback port of a router address source
/// port 53. Replies leave from that port only to queries the XDP program
/// sent there: it drops queries that clients send to it directly.
#[inline(always)]
fn restore_port(ctx: &TcContext) -> Option<()> {
    let config = FALLBACK.get(0)?;
    if config.port == 0 {
        return None;
    }
    let (ethertype, l3) = network_header(ctx)?;
    let (l4, source) = match ethertype {
        ETH_P_IP => {
            if ctx.load::<u8>(l3).ok()? != 0x45 || ctx.load::<u8>(l3 + 9).ok()? != IPPROTO_UDP {
                return None;
            }
            // Only an unfragmented datagram or a first fragment carries
            // the ports; the checksum update below is right for either.
            if u16::from_be(ctx.load::<u16>(l3 + 6).ok()?) & 0x1fff != 0 {
                return None;
            }
            (l3 + 20, IpKey::from_v4(ctx.load::<[u8; 4]>(l3 + 12).ok()?))
        }
        ETH_P_IPV6 => {
            if ctx.load::<u8>(l3 + 6).ok()? != IPPROTO_UDP {
                return None;
            }
            (l3 + 40, IpKey(ctx.load::<[u8; 16]>(l3 + 8).ok()?))
        }
        _ => return None,
    };

    let port = ctx.load::<[u8; 2]>(l4).ok()?;
    if u16::from_be_bytes(port) != config.port {
        return None;
    }
    // Forwarded traffic from a remote port with the same number is not a
    // reply of the router's resolver.
    // SAFETY: the value is only tested for presence.
    unsafe { ROUTER_ADDRS.get(&source) }?;

    let dns_port = DNS_PORT.to_be_bytes();
    // As for the addresses below, both values are passed as they lie in
    // memory.
    let from = u16::from_ne_bytes(port) as u64;
    let to = u16::from_ne_bytes(dns_port) as u64;
    ctx.l4_csum_replace(l4 + 6, from, to, PORT_FLAGS).ok()?;
    ctx.store(l4, &dns_port, 0).ok()?;
    Some(())
}

#[inline(always)]
fn try_restore(ctx: &TcContext) -> Option<()> {
    let config = INTERCEPT_CONFIG.get(0)?;
    if config.flags & INTERCEPT_DNS == 0 {
        return None;
    }

    let (ethertype, l3) = network_header(ctx)?;
    match ethertype {
        ETH_P_IP => restore_v4(ctx, l3, config.router_v4),
        ETH_P_IPV6 => restore_v6(ctx, l3, config.router_v6),
        _ => None,
    }
}

#[inline(always)]
fn restore_v4(ctx: &TcContext, l3: usize, router: [u8; 4]) -> Option<()> {
    if ctx.load::<u8>(l3).ok()? != 0x45 || ctx.load::<u8>(l3 + 9).ok()? != IPPROTO_UDP {
        return None;
    }
    // A fragment other than the first carries no ports, and rewriting the
    // first alone would break reassembly; replies that large are left alone.
    if u16::from_be(ctx.load::<u16>(l3 + 6).ok()?) & 0x3fff != 0 {
        return None;
    }
    let source = ctx.load::<[u8; 4]>(l3 + 12).ok()?;
    if source != router {
        return None;
    }
    let l4 = l3 + 20;
    if u16::from_be(ctx.load::<u16>(l4).ok()?) != DNS_PORT {
        return None;
    }
    let client = ctx.load::<[u8; 4]>(l3 + 16).ok()?;
    let port = ctx.load::<[u8; 2]>(l4 + 2).ok()?;
    let key = FlowKey { client: IpKey::from_v4(client), port, padding: [0; 2] };
    // SAFETY: the value is copied out at once.
    let original = unsafe { INTERCEPT_FLOWS.get(key) }.copied()?;
    let original: [u8; 4] = [original.0[12], original.0[13], original.0[14], original.0[15]];

    let from = u32::from_ne_bytes(source) as u64;
    let to = u32::from_ne_bytes(original) as u64;
    // The helpers update the checksums by the difference of the two words,
    // so both are passed as they lie in memory. The UDP checksum covers the
    // source address through the pseudo-header; a zero checksum (none) is
    // left zero.
    ctx.l4_csum_replace(l4 + 6, from, to, L4_FLAGS).ok()?;
    ctx.l3_csum_replace(l3 + 10, from, to, 4).ok()?;
    ctx.store(l3 + 12, &original, 0).ok()?;
    let _ = INTERCEPT_FLOWS.remove(key);
    Some(())
}

/// The IPv6 half of [`try_restore`]. IPv6 has no header checksum; the UDP
/// checksum is updated one 32-bit word of the address at a time.
#[inline(always)]
fn restore_v6(ctx: &TcContext, l3: usize, router: [u8; 16]) -> Option<()> {
    if ctx.load::<u8>(l3 + 6).ok()? != IPPROTO_UDP {
        return None;
    }
    let source = ctx.load::<[u8; 16]>(l3 + 8).ok()?;
    if source != router {
        return None;
    }
    let l4 = l3 + 40;
    if u16::from_be(ctx.load::<u16>(l4).ok()?) != DNS_PORT {
        return None;
    }
    let client = ctx.load::<[u8; 16]>(l3 + 24).ok()?;
    let port = ctx.load::<[u8; 2]>(l4 + 2).ok()?;
    let key = FlowKey { client: IpKey(client), port, padding: [0; 2] };
    // SAFETY: the value is copied out at once.
    let original = unsafe { INTERCEPT_FLOWS.get(key) }.copied()?.0;

    for word in 0..4 {
        let at = word * 4;
        let from = u32::from_ne_bytes([source[at], source[at + 1], source[at + 2], source[at + 3]]) as u64;
        let to = u32::from_ne_bytes([original[at], original[at + 1], original[at + 2], original[at + 3]]) as u64;
        ctx.l4_csum_replace(l4 + 6, from, to, L4_FLAGS).ok()?;
    }
    ctx.store(l3 + 8, &original, 0).ok()?;
    let _ = INTERCEPT_FLOWS.remove(key);
    Some(())
}
