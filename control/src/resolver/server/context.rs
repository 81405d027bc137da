//! State shared by every listener task: settings, the resolver, counters and
//! the shutdown signal, and the steps every transport takes with a query.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::config::ServerConfig;
use super::stats::{Counter, ServerCounters, TransportCounters};
use super::wire::{self, RESPONSE_PADDING_BLOCK, ResponseOptions};
use super::{DnsHandler, Request, Transport};

/// Everything a listener task needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) handler: Arc<dyn DnsHandler>,
    pub(crate) counters: Arc<ServerCounters>,
    pub(crate) shutdown: Shutdown,
}

/// The shutdown signal as seen by one task. While any clone exists,
/// [`Listeners::shutdown`](super::Listeners::shutdown) keeps waiting (up to
/// its grace period), so every task keeps a clone for as long as it runs.
#[derive(Clone)]
pub(crate) struct Shutdown {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Shutdown {
    pub(crate) fn new(signal: watch::Receiver<bool>, alive: mpsc::Sender<()>) -> Self {
        Self {
            signal,
            _alive: alive,
        }
    }

    /// Completes once shutdown is requested or the [`Listeners`](super::Listeners)
    /// handle is dropped.
    pub(crate) async fn requested(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}

/// The two ends of one client connection or datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) client: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) transport: Transport,
}

impl Context {
    pub(crate) fn counters(&self, transport: Transport) -> &TransportCounters {
        self.counters.get(transport)
    }

    /// Passes one query to the resolver, bounded by the query timeout.
    /// Returns `None` when the resolver dropped the query or ran out of
    /// time; both count as dropped.
    pub(crate) async fn resolve(&self, peer: Peer, message: Vec<u8>) -> Option<Vec<u8>> {
        let counters = self.counters(peer.transport);
        counters.add(Counter::Queries);
        let request = Request {
            message,
            client: peer.client,
            local: peer.local,
            transport: peer.transport,
        };
        let timeout = self.config.limits.query_timeout();
        match tokio::time::timeout(timeout, self.handler.handle(request)).await {
            Ok(Some(response)) => Some(response),
            Ok(None) => {
                counters.add(Counter::Dropped);
                None
            }
            Err(_) => {
                tracing::debug!(client = %peer.client, transport = ?peer.transport, ?timeout, "resolver timed out; query dropped");
                counters.add(Counter::Dropped);
                None
            }
        }
    }
}

/// Adds the EDNS options a stream or encrypted transport owes the client.
///
/// * Padding to a multiple of 468 bytes on DoT, DoQ and DoH when the query
///   carried EDNS. RFC 7830 requires padding when the query was
///   padded and allows it for any EDNS query. RFC 8467 section 4.1
///   recommends the block size.
/// * edns-tcp-keepalive with the idle timeout on TCP and DoT when the query
///   carried that option (RFC 7828 section 3.3.2). The option is specific
///   to TCP, so DoQ and DoH never get it.
///
/// A response that cannot be walked is returned unchanged.
pub(crate) fn finish_response(
    config: &ServerConfig,
    transport: Transport,
    query: &[u8],
    response: Vec<u8>,
) -> Vec<u8> {
    let Ok(Some(edns)) = wire::query_edns(query) else {
        return response;
    };
    let stream = matches!(transport, Transport::Tcp | Transport::Tls);
    let encrypted = matches!(
        transport,
        Transport::Tls | Transport::Quic | Transport::Https
    );
    let edits = ResponseOptions {
        keepalive: (stream && edns.keepalive).then(|| config.limits.keepalive_units()),
        padding_block: encrypted.then_some(RESPONSE_PADDING_BLOCK),
    };
    match wire::add_response_options(&response, edits) {
        Ok(edited) => edited,
        Err(error) => {
            tracing::debug!(%error, ?transport, "response left without EDNS options");
            response
        }
    }
}
