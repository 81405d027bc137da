//! Counters of the resolver, read by `dnsgate stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::cache::CacheStats;
use super::server::Transport;
use super::upstream::UpstreamStats;

/// Whether the resolver has upstreams and whether they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamStatus {
    /// No upstream is configured: names that are not answered locally get
    /// SERVFAIL with Extended DNS Error 22.
    NotConfigured,
    /// No query has been forwarded yet, so no upstream has shown whether it
    /// answers.
    Untested,
    /// Every upstream is healthy.
    Healthy,
    /// Some upstreams are resting after failures.
    Degraded,
    /// Every upstream is resting after failures.
    Down,
}

/// Queries received, by transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransportCounts {
    /// Plain DNS over UDP.
    pub udp: u64,
    /// Plain DNS over TCP.
    pub tcp: u64,
    /// DNS over TLS.
    pub tls: u64,
    /// DNS over QUIC.
    pub quic: u64,
    /// DNS over HTTPS.
    pub https: u64,
}

/// A snapshot of the resolver's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverStats {
    /// Whether upstreams are configured and answer.
    pub upstream_status: UpstreamStatus,
    /// Queries received, by transport.
    pub queries: TransportCounts,
    /// Queries dropped without an answer (too short, or responses).
    pub dropped: u64,
    /// Malformed queries answered with FORMERR.
    pub formerr: u64,
    /// Queries refused or answered NOTIMP or BADVERS.
    pub rejected: u64,
    /// Queries answered from the local zones or the LAN name server.
    pub local: u64,
    /// Queries blocked by the user-space policy, by name.
    pub blocked: u64,
    /// Queries for the names of DoH resolvers on `[intercept]
    /// doh_resolver_lists` answered NXDOMAIN. Not counted in `local`.
    pub doh_bypass_nxdomain: u64,
    /// Answers blocked because their CNAME chain reached a blocked name.
    pub blocked_cname: u64,
    /// Queries answered by a rewrite rule.
    pub rewritten: u64,
    /// Queries answered SERVFAIL.
    pub servfail: u64,
    /// Queries for which no upstream answered.
    pub upstream_errors: u64,
    /// The answer cache.
    pub cache: CacheStats,
    /// Every upstream's health and counters.
    pub upstreams: Vec<UpstreamStats>,
}

/// Live counters, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queries: [AtomicU64; 5],
    pub(crate) dropped: AtomicU64,
    pub(crate) formerr: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) local: AtomicU64,
    pub(crate) blocked: AtomicU64,
    pub(crate) doh_bypass_nxdomain: AtomicU64,
    pub(crate) blocked_cname: AtomicU64,
    pub(crate) rewritten: AtomicU64,
    pub(crate) servfail: AtomicU64,
    pub(crate) upstream_errors: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn count_query(&self, transport: &Transport) {
        let index = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Quic => 3,
            Transport::Https => 4,
        };
        bump(&self.queries[index]);
    }

    pub(crate) fn snapshot(
        &self,
        upstream_status: UpstreamStatus,
        cache: CacheStats,
        upstreams: Vec<UpstreamStats>,
    ) -> ResolverStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ResolverStats {
            upstream_status,
            queries: TransportCounts {
                udp: load(&self.queries[0]),
                tcp: load(&self.queries[1]),
                tls: load(&self.queries[2]),
                quic: load(&self.queries[3]),
                https: load(&self.queries[4]),
            },
            dropped: load(&self.dropped),
            formerr: load(&self.formerr),
            rejected: load(&self.rejected),
            local: load(&self.local),
            blocked: load(&self.blocked),
            doh_bypass_nxdomain: load(&self.doh_bypass_nxdomain),
            blocked_cname: load(&self.blocked_cname),
            rewritten: load(&self.rewritten),
            servfail: load(&self.servfail),
            upstream_errors: load(&self.upstream_errors),
            cache,
            upstreams,
        }
    }
}
