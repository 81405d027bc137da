//! Accept loop for the TCP-based transports: plain DNS over TCP, DoT and
//! DoH. It applies the connection limits, runs the TLS handshake with a
//! timeout, and hands each connection to the DNS framing loop
//! ([`super::stream`]) or the HTTP/2 server ([`super::https`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::context::{Context, Peer};
use super::limits::{Limiter, Permit};
use super::stats::{Counter, ServerCounters};
use super::{Transport, https, stream};

/// Pause after a failed accept, so a persistent error such as EMFILE does
/// not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves one bound listener until shutdown. `tls` is `None` for plain TCP
/// and the DoT or DoH configuration otherwise.
pub(super) async fn serve(
    listener: TcpListener,
    local: SocketAddr,
    transport: Transport,
    tls: Option<Arc<rustls::ServerConfig>>,
    context: Context,
) {
    let limits = &context.config.limits;
    let limiter = Limiter::new(limits.max_connections, limits.max_connections_per_client);
    let acceptor = tls.map(TlsAcceptor::from);
    let mut shutdown = context.shutdown.clone();
    tracing::info!(%local, ?transport, "listener started");

    loop {
        let accepted = tokio::select! {
            () = shutdown.requested() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%local, ?transport, %error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let counters = context.counters(transport);
        let permit = match limiter.try_acquire(client.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                tracing::debug!(%client, ?transport, ?limit, "connection rejected by limit");
                counters.add(Counter::Rejected);
                continue;
            }
        };
        let slot = ConnectionSlot::open(permit, Arc::clone(&context.counters), transport);
        let peer = Peer {
            client,
            local,
            transport,
        };
        let span = tracing::debug_span!("connection", ?transport, %client);
        tokio::spawn(
            serve_connection(socket, peer, acceptor.clone(), context.clone(), slot)
                .instrument(span),
        );
    }
    tracing::info!(%local, ?transport, "listener stopped");
}

async fn serve_connection(
    socket: TcpStream,
    peer: Peer,
    acceptor: Option<TlsAcceptor>,
    context: Context,
    _slot: ConnectionSlot,
) {
    // Responses are written whole, so Nagle's algorithm would only delay them.
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let Some(acceptor) = acceptor else {
        stream::serve(socket, peer, context).await;
        return;
    };

    let handshake_timeout = context.config.limits.handshake_timeout();
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            context
                .counters(peer.transport)
                .add(Counter::HandshakeFailures);
            return;
        }
        Err(_) => {
            tracing::debug!(timeout = ?handshake_timeout, "TLS handshake timed out");
            context
                .counters(peer.transport)
                .add(Counter::HandshakeFailures);
            return;
        }
    };
    match peer.transport {
        Transport::Https => https::serve(tls, peer, context).await,
        _ => stream::serve(tls, peer, context).await,
    }
}

/// A connection's place under the limits and in the open-connections
/// gauge, both released when the connection task ends.
pub(super) struct ConnectionSlot {
    _permit: Permit,
    counters: Arc<ServerCounters>,
    transport: Transport,
}

impl ConnectionSlot {
    pub(super) fn open(
        permit: Permit,
        counters: Arc<ServerCounters>,
        transport: Transport,
    ) -> Self {
        counters.get(transport).connection_opened();
        Self {
            _permit: permit,
            counters,
            transport,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counters.get(self.transport).connection_closed();
    }
}
