//! Plain DNS over UDP (RFC 1035 section 4.2.1): one datagram per query,
//! responses truncated with TC set when they exceed the client's payload
//! size (RFC 6891 section 7).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::Instrument;

use super::Transport;
use super::context::{Context, Peer};
use super::limits::Limiter;
use super::stats::Counter;
use super::wire;

/// Receive buffer size: the largest UDP payload, so no datagram is cut.
const RECEIVE_BUFFER: usize = 65_535;
/// Pause after a failed receive, so a persistent socket error does not spin
/// the loop.
const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Serves one bound socket until shutdown.
///
/// The socket must be bound to a specific address: the local address passed
/// to the resolver is the socket's, which is wrong for a wildcard bind.
pub(super) async fn serve(socket: UdpSocket, local: SocketAddr, context: Context) {
    let socket = Arc::new(socket);
    let limits = &context.config.limits;
    let limiter = Limiter::new(
        limits.max_udp_in_flight,
        limits.max_udp_in_flight_per_client,
    );
    let mut shutdown = context.shutdown.clone();
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    tracing::info!(%local, "UDP listener started");

    loop {
        let received = tokio::select! {
            () = shutdown.requested() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(%local, %error, "UDP receive failed");
                tokio::time::sleep(RECEIVE_ERROR_BACKOFF).await;
                continue;
            }
        };
        let counters = context.counters(Transport::Udp);
        let message = &buffer[..len];
        if let Err(error) = wire::check_query_header(message) {
            tracing::trace!(%client, %error, "UDP datagram ignored");
            counters.add(Counter::Malformed);
            continue;
        }
        if len > context.config.limits.max_query_size {
            tracing::trace!(%client, len, "UDP query larger than max_query_size ignored");
            counters.add(Counter::Rejected);
            continue;
        }
        let Ok(permit) = limiter.try_acquire(client.ip()) else {
            counters.add(Counter::Rejected);
            continue;
        };

        let peer = Peer {
            client,
            local,
            transport: Transport::Udp,
        };
        let query = message.to_vec();
        let task_context = context.clone();
        let task_socket = Arc::clone(&socket);
        tokio::spawn(
            async move {
                let _permit = permit;
                answer(&task_context, &task_socket, peer, query).await;
            }
            .instrument(tracing::trace_span!("udp", %client)),
        );
    }
    tracing::info!(%local, "UDP listener stopped");
}

async fn answer(context: &Context, socket: &UdpSocket, peer: Peer, query: Vec<u8>) {
    let limit = {
        let edns = wire::query_edns(&query).ok().flatten();
        wire::udp_response_limit(edns.as_ref(), context.config.limits.max_udp_response_size)
    };
    let Some(response) = context.resolve(peer, query).await else {
        return;
    };

    let counters = context.counters(Transport::Udp);
    let original_len = response.len();
    let response = wire::truncate_for_udp(response, limit);
    if response.len() < original_len {
        counters.add(Counter::Truncated);
    }
    counters.add(Counter::Responses);
    if let Err(error) = socket.send_to(&response, peer.client).await {
        tracing::debug!(client = %peer.client, %error, "UDP send failed");
    }
}
