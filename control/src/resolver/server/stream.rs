//! DNS messages over a byte stream with 2-byte length framing, as plain TCP
//! (RFC 7766) and DoT (RFC 7858 section 3.3) use it.
//!
//! One connection carries many queries. Queries are read while earlier ones
//! are still being resolved (pipelining, RFC 7766 section 6.2.1.1), up to a
//! per-connection cap. Each response is written as soon as it is ready, so
//! responses can leave in a different order than their queries arrived
//! (RFC 7766 section 7).
//! The connection closes after the idle timeout with nothing in flight
//! (RFC 7766 section 6.2.3), when the client closes its side and every
//! response is written, or at the first malformed frame.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::{Context, Peer, finish_response};
use super::stats::Counter;
use super::wire::{self, HEADER_LEN, MAX_MESSAGE_LEN};

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 4096;

/// A length prefix that the connection cannot continue after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The prefix announces fewer bytes than a DNS header.
    #[error("frame length {len} is shorter than a DNS header")]
    TooShort {
        /// The announced length.
        len: usize,
    },
    /// The prefix announces more bytes than `max_query_size`.
    #[error("frame length {len} exceeds the query size limit of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Removes one complete frame from the front of `buffer`, returning its
/// message, or `None` when the frame is not complete yet.
pub(crate) fn take_frame(buffer: &mut BytesMut, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let Some(prefix) = buffer.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    if len < HEADER_LEN {
        return Err(FrameError::TooShort { len });
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buffer.len() < 2 + len {
        return Ok(None);
    }
    buffer.advance(2);
    Ok(Some(buffer.split_to(len).to_vec()))
}

/// Serves one connection until it closes, goes idle, breaks the framing or
/// the listeners shut down.
pub(super) async fn serve<S>(io: S, peer: Peer, context: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &context.config.limits;
    let idle_timeout = limits.tcp_idle_timeout();
    let max_in_flight = limits.max_in_flight_per_connection.max(1);
    let max_query_size = limits.max_query_size;
    let counters = context.counters(peer.transport);
    let mut shutdown = context.shutdown.clone();

    let (mut reader, mut writer) = tokio::io::split(io);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut in_flight: JoinSet<Option<Vec<u8>>> = JoinSet::new();
    let mut idle_deadline = Instant::now() + idle_timeout;
    let mut client_done = false;

    'connection: loop {
        while in_flight.len() < max_in_flight {
            let query = match take_frame(&mut buffer, max_query_size) {
                Ok(Some(query)) => query,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "closing connection after malformed frame");
                    counters.add(Counter::Malformed);
                    break 'connection;
                }
            };
            if let Err(error) = wire::check_query_header(&query) {
                tracing::debug!(%error, "closing connection after malformed message");
                counters.add(Counter::Malformed);
                break 'connection;
            }
            let task_context = context.clone();
            in_flight.spawn(async move {
                let response = task_context.resolve(peer, query.clone()).await?;
                Some(finish_response(
                    &task_context.config,
                    peer.transport,
                    &query,
                    response,
                ))
            });
        }
        if client_done && in_flight.is_empty() {
            break;
        }

        tokio::select! {
            () = shutdown.requested() => break,
            Some(joined) = in_flight.join_next() => {
                let Ok(Some(response)) = joined else { continue };
                counters.add(Counter::Responses);
                if let Err(error) = write_frame(&mut writer, &response, idle_timeout).await {
                    tracing::debug!(%error, "closing connection after failed write");
                    break;
                }
                idle_deadline = Instant::now() + idle_timeout;
            }
            read = read_more(&mut reader, &mut buffer), if !client_done && in_flight.len() < max_in_flight => {
                match read {
                    Ok(0) => client_done = true,
                    Ok(_) => idle_deadline = Instant::now() + idle_timeout,
                    Err(error) => {
                        tracing::debug!(%error, "closing connection after failed read");
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(idle_deadline), if in_flight.is_empty() => {
                tracing::debug!(timeout = ?idle_timeout, "closing idle connection");
                break;
            }
        }
    }

    // Queries still being resolved are abandoned with the connection.
    in_flight.abort_all();
    let _ = tokio::time::timeout(idle_timeout, writer.shutdown()).await;
}

async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    buffer.reserve(READ_CHUNK);
    reader.read_buf(buffer).await
}

/// Writes one length-prefixed message as a single buffer, so TLS sends it in
/// one record. A client that does not read within `timeout` loses the
/// connection.
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(message.len()) else {
        // Only a resolver bug can produce this, and the query then gets no
        // response.
        tracing::warn!(
            len = message.len(),
            max = MAX_MESSAGE_LEN,
            "response too long for TCP framing; dropped"
        );
        return Ok(());
    };
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    let write = async {
        writer.write_all(&frame).await?;
        writer.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read the response",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> BytesMut {
        let mut buffer = BytesMut::new();
        for message in messages {
            buffer.extend_from_slice(&(message.len() as u16).to_be_bytes());
            buffer.extend_from_slice(message);
        }
        buffer
    }

    #[test]
    fn take_frame_rfc7766_splits_pipelined_queries() {
        let first = [1u8; 12];
        let second = [2u8; 20];
        let mut buffer = framed(&[&first, &second]);
        assert_eq!(take_frame(&mut buffer, 100), Ok(Some(first.to_vec())));
        assert_eq!(take_frame(&mut buffer, 100), Ok(Some(second.to_vec())));
        assert_eq!(take_frame(&mut buffer, 100), Ok(None));
        assert!(buffer.is_empty());
    }

    #[test]
    fn take_frame_waits_for_partial_frame() {
        let mut buffer = framed(&[&[7u8; 30]]);
        buffer.truncate(20);
        assert_eq!(take_frame(&mut buffer, 100), Ok(None));
        assert_eq!(buffer.len(), 20);
        let mut prefix_only = BytesMut::from(&[0u8][..]);
        assert_eq!(take_frame(&mut prefix_only, 100), Ok(None));
    }

    #[test]
    fn take_frame_rejects_bad_lengths() {
        let mut short = framed(&[&[0u8; 11]]);
        assert_eq!(
            take_frame(&mut short, 100),
            Err(FrameError::TooShort { len: 11 })
        );
        let mut long = BytesMut::from(&500u16.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut long, 100),
            Err(FrameError::TooLarge { len: 500, max: 100 })
        );
    }
}
