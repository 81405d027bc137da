//! Per-transport counters of the listeners, kept as atomics on the hot path
//! and read as a serialisable snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Transport;

/// Live counters of one transport.
///
/// Relaxed ordering is enough: each counter is read on its own for
/// reporting, and no decision depends on two counters agreeing.
#[derive(Debug, Default)]
pub(crate) struct TransportCounters {
    queries: AtomicU64,
    responses: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
    truncated: AtomicU64,
    rejected: AtomicU64,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    handshake_failures: AtomicU64,
}

/// Names one counter for [`TransportCounters::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Queries,
    Responses,
    Dropped,
    Malformed,
    Truncated,
    Rejected,
    HandshakeFailures,
}

impl TransportCounters {
    pub(crate) fn add(&self, counter: Counter) {
        let cell = match counter {
            Counter::Queries => &self.queries,
            Counter::Responses => &self.responses,
            Counter::Dropped => &self.dropped,
            Counter::Malformed => &self.malformed,
            Counter::Truncated => &self.truncated,
            Counter::Rejected => &self.rejected,
            Counter::HandshakeFailures => &self.handshake_failures,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TransportStats {
        TransportStats {
            queries: self.queries.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one transport at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Queries passed to the resolver.
    pub queries: u64,
    /// Responses handed to the transport for sending. A send that fails
    /// afterwards is logged at debug level but still counted here.
    pub responses: u64,
    /// Queries that got no response: the resolver dropped them or took
    /// longer than the query timeout.
    pub dropped: u64,
    /// Messages or frames that broke the protocol: too short, a response
    /// where a query belongs, a bad length prefix, a bad DoH request.
    pub malformed: u64,
    /// UDP responses sent truncated with TC set.
    pub truncated: u64,
    /// Connections, streams or UDP queries turned away by a limit.
    pub rejected: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// TLS or QUIC handshakes that failed or timed out.
    pub handshake_failures: u64,
}

/// Counters of all transports.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    pub(crate) udp: TransportCounters,
    pub(crate) tcp: TransportCounters,
    pub(crate) tls: TransportCounters,
    pub(crate) quic: TransportCounters,
    pub(crate) https: TransportCounters,
}

impl ServerCounters {
    pub(crate) fn get(&self, transport: Transport) -> &TransportCounters {
        match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
            Transport::Quic => &self.quic,
            Transport::Https => &self.https,
        }
    }

    pub(crate) fn snapshot(&self) -> ServerStats {
        ServerStats {
            udp: self.udp.snapshot(),
            tcp: self.tcp.snapshot(),
            tls: self.tls.snapshot(),
            quic: self.quic.snapshot(),
            https: self.https.snapshot(),
        }
    }
}

/// Counters of every transport at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    /// Plain DNS over UDP.
    pub udp: TransportStats,
    /// Plain DNS over TCP.
    pub tcp: TransportStats,
    /// DNS over TLS.
    pub tls: TransportStats,
    /// DNS over QUIC.
    pub quic: TransportStats,
    /// DNS over HTTPS.
    pub https: TransportStats,
}

impl ServerStats {
    /// Returns the counters of one transport.
    pub fn transport(&self, transport: Transport) -> &TransportStats {
        match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
            Transport::Quic => &self.quic,
            Transport::Https => &self.https,
        }
    }
}
