//! The fallback for allowed plain queries while the controller is down
//! (see `dnsgate_common::maps::FallbackConfig`).
//!
//! While the controller's heartbeat is fresh nothing changes, except that
//! UDP from a LAN client straight to the fallback port is dropped: the
//! resolver there filters nothing. Once the heartbeat is stale, a query for
//! the router that the kernel does not answer gets the fallback port as its
//! destination port and goes up the stack to the router's stock resolver.
//! The egress program (`restore.rs`) gives the reply port 53 again.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use dnsgate_common::maps::Counter;

use crate::{
    checksum::rewrite_udp6_checksum,
    maps::{count, FALLBACK},
    packet::{load_u16, load_u8, store_u16},
    query::{Outcome, ETH_P_8021Q, IPPROTO_UDP},
};

const DNS_PORT: u16 = 53;

/// Fails with [`Outcome::FallbackPortDropped`] if the UDP datagram whose
/// header starts at `l4` is addressed to the fallback port.
///
/// NOTE: only datagrams to the addresses in `ROUTER_ADDRS` come here. UDP to
/// the fallback port of another router address (WAN, guest, VPN) passes.
#[inline(always)]
pub fn reject_direct(ctx: &XdpContext, l4: usize) -> Result<(), Outcome> {
    let Some(config) = FALLBACK.get(0) else {
        return Ok(());
    };
    if config.port != 0 && load_u16(ctx, l4 + 2) == Some(config.port) {
        return Err(Outcome::FallbackPortDropped);
    }
    Ok(())
}

/// Sends a query that is on its way to user space to the fallback port
/// when the heartbeat is stale. Any other outcome is returned unchanged.
#[inline(always)]
pub fn divert(ctx: &XdpContext, outcome: Outcome) -> Outcome {
    if !matches!(
        outcome,
        Outcome::ToUserSpace | Outcome::Malformed | Outcome::TxFailed | Outcome::Redirected
    ) {
        return outcome;
    }
    let Some(config) = FALLBACK.get(0) else {
        return outcome;
    };
    // SAFETY: the helper takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    if !config.diverts(now) {
        return outcome;
    }
    if rewrite_port(ctx, config.port).is_none() {
        return outcome;
    }
    if matches!(outcome, Outcome::Redirected) {
        count(Counter::Redirected);
    }
    Outcome::Fallback
}

/// Sets the destination port of a UDP datagram to port 53 to `port` and
/// makes its checksum right again. The layout is read again rather than
/// carried over from the parse, so that the parse's states do not depend
/// on it.
#[inline(always)]
fn rewrite_port(ctx: &XdpContext, port: u16) -> Option<()> {
    let l3 = if load_u16(ctx, 12)? == ETH_P_8021Q { 18 } else { 14 };
    let version = load_u8(ctx, l3)? >> 4;
    if version == 6 {
        let l4 = l3 + 40;
        if load_u8(ctx, l3 + 6)? != IPPROTO_UDP || load_u16(ctx, l4 + 2)? != DNS_PORT {
            return None;
        }
        let udp_len = load_u16(ctx, l4 + 4)? as usize;
        if udp_len > crate::checksum::MAX_UDP_LEN {
            return None;
        }
        store_u16(ctx, l4 + 2, port)?;
        return rewrite_udp6_checksum(ctx, l3, l4, udp_len);
    }
    let l4 = l3 + 20;
    if load_u8(ctx, l3)? != 0x45 || load_u8(ctx, l3 + 9)? != IPPROTO_UDP || load_u16(ctx, l4 + 2)? != DNS_PORT {
        return None;
    }
    store_u16(ctx, l4 + 2, port)?;
    // Zero means "no checksum" over IPv4 (RFC 768), as for redirected
    // queries.
    store_u16(ctx, l4 + 6, 0)
}
