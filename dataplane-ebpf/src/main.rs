//! The XDP program that answers queries for blocked names on the router's
//! LAN interface without the packet reaching user space.
//!
//! Every frame that is not plainly a DNS query for the router, or that this
//! program does not fully understand, is passed to the kernel stack
//! untouched (`XDP_PASS`). A blocked query is rewritten in place into its
//! answer and sent back with `XDP_TX`.

#![no_std]
#![no_main]
// Only for `packet::opaque`: an empty `asm!` block on the BPF target.
#![feature(asm_experimental_arch)]

mod answer;
mod checksum;
mod events;
mod fallback;
mod intercept;
mod maps;
mod packet;
mod query;
mod ratelimit;
mod restore;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dnsgate_common::maps::Counter;

use crate::query::Outcome;

/// Judges one frame. Errors mean "not understood" and become `XDP_PASS`
/// with the matching counter.
#[xdp]
pub fn dns_filter(ctx: XdpContext) -> u32 {
    let outcome = query::handle(&ctx);
    let (counter, action) = match outcome {
        Outcome::NotDns => (Counter::Passed, xdp_action::XDP_PASS),
        Outcome::Malformed => (Counter::Malformed, xdp_action::XDP_PASS),
        Outcome::ToUserSpace => (Counter::Allowed, xdp_action::XDP_PASS),
        Outcome::Answered => (Counter::Blocked, xdp_action::XDP_TX),
        Outcome::TxFailed => (Counter::TxFailed, xdp_action::XDP_PASS),
        Outcome::Aborted => (Counter::TxFailed, xdp_action::XDP_DROP),
        Outcome::Redirected => (Counter::Redirected, xdp_action::XDP_PASS),
        Outcome::DotRefused => (Counter::DotRefused, xdp_action::XDP_TX),
        Outcome::DoqDropped => (Counter::DoqDropped, xdp_action::XDP_DROP),
        Outcome::RateLimited => (Counter::RateLimited, xdp_action::XDP_DROP),
        Outcome::Fallback => (Counter::Fallback, xdp_action::XDP_PASS),
        Outcome::FallbackPortDropped => (Counter::FallbackPortDropped, xdp_action::XDP_DROP),
    };
    if matches!(outcome, Outcome::ToUserSpace | Outcome::Answered | Outcome::TxFailed | Outcome::Aborted) {
        maps::count(Counter::Seen);
    }
    maps::count(counter);
    if matches!(outcome, Outcome::Answered) {
        events::report_answer(&ctx);
    }
    action
}

/// Gives replies from the fallback port source port 53, and replies to
/// redirected queries their original source address, on the way out of a
/// LAN port. Lets every frame pass.
#[classifier]
pub fn restore_source(ctx: TcContext) -> i32 {
    restore::restore(&ctx);
    TC_ACT_OK as i32
}

/// Passes every frame. Attached to the client end of a veth pair in the
/// namespace tests: a native-mode `XDP_TX` frame is only delivered to a peer
/// that runs an XDP program of its own.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
