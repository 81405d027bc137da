//! Per-client rate limiting of plain DNS queries: a token bucket per source
//! address in `RATE_LIMIT`, configured by `RATE_LIMIT_CONFIG` (see
//! `dnsgate_common::maps::RateLimitConfig` for the fixed-point credit).
//!
//! The check runs as soon as a frame is known to be a UDP datagram for
//! port 53, before the DNS message is read, so a flood costs one map
//! lookup per frame.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use dnsgate_common::maps::{IpKey, RateLimitBucket};

use crate::maps::{RATE_LIMIT, RATE_LIMIT_CONFIG};

/// Takes one query's credit from the bucket of `client`. Returns whether
/// the client is over its limit and the query is to be dropped; always
/// false while the limit is off.
#[inline(always)]
pub fn over_limit(client: &IpKey) -> bool {
    let Some(config) = RATE_LIMIT_CONFIG.get(0) else {
        return false;
    };
    let cost = config.cost_ns;
    if cost == 0 {
        return false;
    }
    let capacity = config.capacity_ns;
    // SAFETY: the helper takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(bucket) = RATE_LIMIT.get_ptr_mut(client) else {
        // A client not seen (or evicted) starts with a full bucket, less
        // this query. A concurrent first insert from another CPU may win;
        // either value is a valid bucket.
        let bucket = RateLimitBucket { credit_ns: capacity.saturating_sub(cost), last_ns: now };
        let _ = RATE_LIMIT.insert(client, &bucket, BPF_ANY as u64);
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup and stays valid
    // while the program runs. Another CPU may update the same bucket at the
    // same time; the worst outcome is a query let through or dropped on a
    // stale credit, which the value's documentation allows.
    let (credit, last) = unsafe { ((*bucket).credit_ns, (*bucket).last_ns) };
    // The clock is monotonic, but another CPU may have stored a later
    // reading than the one taken here: count that as no time elapsed.
    let elapsed = if now > last { now - last } else { 0 };
    // Refill without overflow: the credit never exceeds the capacity.
    let room = capacity.saturating_sub(credit);
    let credit = credit + if elapsed < room { elapsed } else { room };
    let (credit, over) = if credit >= cost { (credit - cost, false) } else { (credit, true) };
    // SAFETY: as above.
    unsafe {
        (*bucket).credit_ns = credit;
        (*bucket).last_ns = now;
    }
    over
}
