//! DNS over QUIC (RFC 9250): one query and one response per client-initiated
//! bidirectional stream, each with a 2-byte length prefix, the message ID 0
//! on the wire, ALPN `doq`, and the DoQ error codes of section 4.3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, IdleTimeout, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::Limits;
use super::context::{Context, Peer, finish_response};
use super::limits::Limiter;
use super::stats::Counter;
use super::tcp::ConnectionSlot;
use super::wire::{self, MAX_MESSAGE_LEN};
use super::{ServerError, ServerTls, Transport};

/// DoQ error codes (RFC 9250 section 4.3).
pub mod error_code {
    use quinn::VarInt;

    /// No error; used when a connection or stream closes normally.
    pub const NO_ERROR: VarInt = VarInt::from_u32(0x0);
    /// The implementation failed and cannot continue the transaction.
    pub const INTERNAL_ERROR: VarInt = VarInt::from_u32(0x1);
    /// The peer broke the DoQ protocol.
    pub const PROTOCOL_ERROR: VarInt = VarInt::from_u32(0x2);
    /// A transaction was cancelled.
    pub const REQUEST_CANCELLED: VarInt = VarInt::from_u32(0x3);
    /// The server is closing the connection because of load.
    pub const EXCESSIVE_LOAD: VarInt = VarInt::from_u32(0x4);
}

/// How long shutdown waits for connections to acknowledge the close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Binds a QUIC endpoint with the DoQ TLS configuration and the stream and
/// idle limits.
pub(super) fn bind(
    addr: SocketAddr,
    tls: &ServerTls,
    limits: &Limits,
) -> Result<Endpoint, ServerError> {
    let crypto =
        QuicServerConfig::try_from(tls.doq_config()).map_err(|error| ServerError::Quic {
            addr,
            reason: error.to_string(),
        })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));

    let mut transport = TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection));
    // RFC 9250 section 4.2: DoQ uses bidirectional streams only.
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.datagram_receive_buffer_size(None);
    let idle = IdleTimeout::try_from(limits.encrypted_idle_timeout()).map_err(|error| {
        ServerError::Quic {
            addr,
            reason: format!("idle timeout: {error}"),
        }
    })?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));

    Endpoint::server(config, addr).map_err(|source| ServerError::Bind {
        transport: Transport::Quic,
        addr,
        source,
    })
}

/// Accepts connections on `endpoint` until shutdown, then closes them all
/// with DOQ_NO_ERROR.
pub(super) async fn serve(endpoint: Endpoint, local: SocketAddr, context: Context) {
    let limits = &context.config.limits;
    let limiter = Limiter::new(limits.max_connections, limits.max_connections_per_client);
    let mut shutdown = context.shutdown.clone();
    let counters = context.counters(Transport::Quic);
    tracing::info!(%local, "DoQ listener started");

    loop {
        let incoming = tokio::select! {
            () = shutdown.requested() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let client = incoming.remote_address();
        let permit = match limiter.try_acquire(client.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                tracing::debug!(%client, ?limit, "DoQ connection rejected by limit");
                counters.add(Counter::Rejected);
                incoming.refuse();
                continue;
            }
        };

        let task_context = context.clone();
        let span = tracing::debug_span!("connection", transport = ?Transport::Quic, %client);
        tokio::spawn(
            async move {
                let handshake_timeout = task_context.config.limits.handshake_timeout();
                let counters = task_context.counters(Transport::Quic);
                let connecting = match incoming.accept() {
                    Ok(connecting) => connecting,
                    Err(error) => {
                        tracing::debug!(%error, "QUIC connection not accepted");
                        counters.add(Counter::HandshakeFailures);
                        return;
                    }
                };
                let connection = match tokio::time::timeout(handshake_timeout, connecting).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "QUIC handshake failed");
                        counters.add(Counter::HandshakeFailures);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(timeout = ?handshake_timeout, "QUIC handshake timed out");
                        counters.add(Counter::HandshakeFailures);
                        return;
                    }
                };
                let _slot = ConnectionSlot::open(
                    permit,
                    Arc::clone(&task_context.counters),
                    Transport::Quic,
                );
                let peer = Peer {
                    client,
                    local,
                    transport: Transport::Quic,
                };
                serve_connection(connection, peer, task_context).await;
            }
            .instrument(span),
        );
    }

    endpoint.close(error_code::NO_ERROR, b"server shutting down");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    tracing::info!(%local, "DoQ listener stopped");
}

async fn serve_connection(connection: Connection, peer: Peer, context: Context) {
    let mut shutdown = context.shutdown.clone();
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.requested() => {
                connection.close(error_code::NO_ERROR, b"server shutting down");
                break;
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(connection.clone(), send, recv, peer, context.clone()));
                }
                Err(error) => {
                    tracing::debug!(%error, "DoQ connection closed");
                    break;
                }
            },
            accepted = connection.accept_uni() => {
                if accepted.is_ok() {
                    protocol_error(&connection, &context, "unidirectional stream opened");
                }
                break;
            }
            Some(_) = streams.join_next() => {}
        }
    }
    streams.abort_all();
}

/// Closes the connection with DOQ_PROTOCOL_ERROR (RFC 9250 section 4.3.3).
fn protocol_error(connection: &Connection, context: &Context, reason: &'static str) {
    tracing::debug!(reason, "closing DoQ connection after protocol error");
    context.counters(Transport::Quic).add(Counter::Malformed);
    connection.close(error_code::PROTOCOL_ERROR, reason.as_bytes());
}

async fn serve_stream(
    connection: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    peer: Peer,
    context: Context,
) {
    let limits = &context.config.limits;
    let counters = context.counters(Transport::Quic);

    // RFC 9250 section 4.2: the client sends one message and then FIN.
    let read = tokio::time::timeout(
        limits.query_timeout(),
        recv.read_to_end(limits.max_query_size + 2),
    )
    .await;
    let data = match read {
        Ok(Ok(data)) => data,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            counters.add(Counter::Rejected);
            let _ = recv.stop(error_code::REQUEST_CANCELLED);
            let _ = send.reset(error_code::REQUEST_CANCELLED);
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "DoQ stream read failed");
            return;
        }
        Err(_) => {
            let _ = recv.stop(error_code::REQUEST_CANCELLED);
            let _ = send.reset(error_code::REQUEST_CANCELLED);
            return;
        }
    };

    let Some(query) = unframe(&data) else {
        protocol_error(
            &connection,
            &context,
            "stream length prefix does not match its data",
        );
        return;
    };
    if wire::check_query_header(query).is_err() {
        protocol_error(&connection, &context, "stream carries no DNS query");
        return;
    }
    // RFC 9250 section 4.2.1: a non-zero message ID is a protocol error.
    if wire::message_id(query) != Some(0) {
        protocol_error(&connection, &context, "query message ID is not 0");
        return;
    }

    let query = query.to_vec();
    let Some(mut response) = context.resolve(peer, query.clone()).await else {
        let _ = send.reset(error_code::REQUEST_CANCELLED);
        return;
    };
    wire::set_message_id(&mut response, 0);
    let response = finish_response(&context.config, Transport::Quic, &query, response);
    let Ok(len) = u16::try_from(response.len()) else {
        tracing::warn!(
            len = response.len(),
            max = MAX_MESSAGE_LEN,
            "response too long for DoQ framing; dropped"
        );
        let _ = send.reset(error_code::INTERNAL_ERROR);
        return;
    };

    let mut frame = Vec::with_capacity(2 + response.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&response);
    counters.add(Counter::Responses);
    match send.write_all(&frame).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(error) => tracing::debug!(%error, "DoQ stream write failed"),
    }
}

/// Returns the message of a stream's data when its length prefix matches
/// the data exactly.
fn unframe(data: &[u8]) -> Option<&[u8]> {
    let (prefix, message) = data.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    (len == message.len()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframe_rfc9250_section_4_2_requires_exact_length() {
        let mut data = vec![0, 12];
        data.extend_from_slice(&[0; 12]);
        assert_eq!(unframe(&data), Some(&[0u8; 12][..]));
        data.push(0);
        assert_eq!(unframe(&data), None);
        assert_eq!(unframe(&[0]), None);
        assert_eq!(unframe(&[0, 5, 1, 2]), None);
    }
}
