//! Reading the per-CPU counters, from the loaded program or from the pin
//! left by a running daemon.

use std::path::Path;

use aya::maps::{Map, PerCpuArray};
use dnsgate_common::maps::{Counter, COUNTER_NAMES, MAP_COUNTERS};

use serde::Serialize;

use super::{loader::open_pinned, Dataplane, DataplaneError};

/// The kernel counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterValues {
    /// DNS queries to the router that were parsed.
    pub seen: u64,
    /// Queries answered in the kernel.
    pub blocked: u64,
    /// Parsed queries passed on to user space.
    pub allowed: u64,
    /// Frames that are not DNS queries for the router.
    pub passed: u64,
    /// Port-53 frames that could not be parsed.
    pub malformed: u64,
    /// Blocked queries that could not be answered in place.
    pub tx_failed: u64,
    /// Plain DNS queries to other resolvers handled as if sent to the
    /// router.
    pub intercepted: u64,
    /// Intercepted queries rewritten to go to the router.
    pub redirected: u64,
    /// Replies given back their original source address.
    pub replies_restored: u64,
    /// DoT connections to other resolvers refused.
    pub dot_refused: u64,
    /// DoQ datagrams to other resolvers dropped.
    pub doq_dropped: u64,
    /// Answers sent from the kernel that are missing from the query log
    /// because their event was dropped (the CPU's ring was full).
    pub events_lost: u64,
    /// Plain DNS queries dropped because their client was over its rate
    /// limit.
    pub rate_limited: u64,
    /// Queries sent to the fallback resolver because the controller's
    /// heartbeat was stale.
    pub fallback: u64,
    /// Datagrams from clients straight to the fallback port, dropped.
    pub fallback_port_dropped: u64,
    /// Replies from the fallback resolver given source port 53.
    pub fallback_replies: u64,
    /// Answers sent from the kernel left out of the query log because more
    /// than `querylog.kernel_answers_per_second` came on one CPU.
    pub events_skipped: u64,
}

impl CounterValues {
    fn read<T: std::borrow::Borrow<aya::maps::MapData>>(map: &PerCpuArray<T, u64>) -> Result<Self, DataplaneError> {
        let sum = |counter: Counter| -> Result<u64, DataplaneError> {
            let values = map.get(&(counter as u32), 0).map_err(|source| DataplaneError::Map {
                name: MAP_COUNTERS,
                operation: "reading",
                source,
            })?;
            Ok(values.iter().sum())
        };
        debug_assert_eq!(COUNTER_NAMES.len(), 17);
        Ok(Self {
            seen: sum(Counter::Seen)?,
            blocked: sum(Counter::Blocked)?,
            allowed: sum(Counter::Allowed)?,
            passed: sum(Counter::Passed)?,
            malformed: sum(Counter::Malformed)?,
            tx_failed: sum(Counter::TxFailed)?,
            intercepted: sum(Counter::Intercepted)?,
            redirected: sum(Counter::Redirected)?,
            replies_restored: sum(Counter::RepliesRestored)?,
            dot_refused: sum(Counter::DotRefused)?,
            doq_dropped: sum(Counter::DoqDropped)?,
            events_lost: sum(Counter::EventsLost)?,
            rate_limited: sum(Counter::RateLimited)?,
            fallback: sum(Counter::Fallback)?,
            fallback_port_dropped: sum(Counter::FallbackPortDropped)?,
            fallback_replies: sum(Counter::FallbackReplies)?,
            events_skipped: sum(Counter::EventsSkipped)?,
        })
    }
}

impl Dataplane {
    /// Reads the counters of the loaded program.
    pub fn counters(&self) -> Result<CounterValues, DataplaneError> {
        let array: PerCpuArray<_, u64> = self.map(MAP_COUNTERS)?;
        CounterValues::read(&array)
    }
}

/// Reads the counters a running daemon pinned under `pin_dir`.
pub fn read_pinned_counters(pin_dir: &Path) -> Result<CounterValues, DataplaneError> {
    let data = open_pinned(&super::layout_dir(pin_dir).join(MAP_COUNTERS))?;
    let array = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(data)).map_err(|source| DataplaneError::Map {
        name: MAP_COUNTERS,
        operation: "opening",
        source,
    })?;
    CounterValues::read(&array)
}
