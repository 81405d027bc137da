//! Plain DNS over UDP (RFC 1035 §4.2.1). Each query gets a fresh socket, so
//! it has an OS-chosen random source port besides its random ID (RFC 5452).
//! A truncated answer is retried over TCP (RFC 7766 §5).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::bootstrap::Endpoint;
use super::stream::StreamUpstream;
use super::{MAX_MESSAGE_LEN, UpstreamError};

/// An upstream spoken to over UDP.
pub(crate) struct UdpUpstream {
    endpoint: Arc<Endpoint>,
    tcp: StreamUpstream,
}

impl UdpUpstream {
    pub(crate) fn new(endpoint: Arc<Endpoint>, tcp: StreamUpstream) -> Self {
        Self { endpoint, tcp }
    }

    pub(crate) async fn exchange(&self, query: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        let addrs = self.endpoint.addrs().await?;
        // NOTE: only the first address is used, so a host name whose first
        // address is unreachable fails even when another would answer.
        let addr = addrs[0];
        let response =
            exchange_once(addr, query.clone())
                .await
                .map_err(|source| UpstreamError::Io {
                    upstream: self.endpoint.label.clone(),
                    source,
                })?;
        if response[2] & 0x02 != 0 {
            tracing::debug!(upstream = %self.endpoint.label, "truncated answer, retrying over TCP");
            return self.tcp.exchange(query).await;
        }
        Ok(response)
    }

    pub(crate) fn reset(&self) {
        self.tcp.reset();
    }
}

/// Sends `query` from a new socket with a random ID and waits for the
/// answer with the same ID and question. Datagrams that do not match are
/// ignored, which defeats blind spoofing; the caller bounds the wait.
pub(crate) async fn exchange_once(addr: SocketAddr, mut query: Vec<u8>) -> io::Result<Vec<u8>> {
    let question_end = question_end(&query).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "query has no valid question")
    })?;
    let id: u16 = rand::random();
    query[0..2].copy_from_slice(&id.to_be_bytes());

    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    socket.send(&query).await?;

    // Filled by the kernel without zeroing first: zeroing 64 KiB for every
    // upstream query showed up in profiles as page faults and memset.
    let mut buffer = Vec::with_capacity(MAX_MESSAGE_LEN);
    loop {
        buffer.clear();
        let len = socket.recv_buf(&mut buffer).await?;
        let response = &buffer[..len];
        let matches = len >= question_end
            && response[0..2] == query[0..2]
            && response[2] & 0x80 != 0
            && response[12..question_end].eq_ignore_ascii_case(&query[12..question_end]);
        if matches {
            return Ok(response.to_vec());
        }
        tracing::debug!(%addr, len, "ignoring a datagram that does not answer the query");
    }
}

/// Returns the offset just past the first question of a message whose
/// question name is not compressed, as in every query this resolver builds.
pub(crate) fn question_end(message: &[u8]) -> Option<usize> {
    let mut pos = 12;
    loop {
        let len = usize::from(*message.get(pos)?);
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        pos += 1 + len;
    }
    let end = pos + 1 + 4;
    (end <= message.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ignores_wrong_id_and_question_then_accepts_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let query = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        let client = tokio::spawn(exchange_once(addr, query));

        let mut buffer = [0u8; 512];
        let (len, peer) = server.recv_from(&mut buffer).await.unwrap();
        let received = buffer[..len].to_vec();
        let mut wrong_id = received.clone();
        wrong_id[2] |= 0x80;
        wrong_id[0] ^= 0xff;
        server.send_to(&wrong_id, peer).await.unwrap();
        let mut wrong_question = received.clone();
        wrong_question[2] |= 0x80;
        wrong_question[13] = b'b';
        server.send_to(&wrong_question, peer).await.unwrap();
        let mut answer = received.clone();
        answer[2] |= 0x80;
        answer[13] = b'A';
        server.send_to(&answer, peer).await.unwrap();

        let response = client.await.unwrap().unwrap();
        assert_eq!(response, answer);
        assert_ne!(peer.port(), 0);
    }

    #[tokio::test]
    async fn rfc7766_5_truncated_answer_retried_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::resolver::config::UpstreamConfig;

        // TCP and UDP listen on the same port, as a DNS server does.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (len, peer) = udp.recv_from(&mut buffer).await.unwrap();
            let mut truncated = buffer[..len].to_vec();
            truncated[2] |= 0x80 | 0x02;
            udp.send_to(&truncated, peer).await.unwrap();
        });
        tokio::spawn(async move {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let len = stream.read_u16().await.unwrap();
            let mut query = vec![0u8; usize::from(len)];
            stream.read_exact(&mut query).await.unwrap();
            query[2] |= 0x80;
            query.extend_from_slice(b"full");
            let mut frame = (query.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&query);
            stream.write_all(&frame).await.unwrap();
        });

        let spec: crate::resolver::upstream::UpstreamSpec =
            format!("udp://{addr}").parse().unwrap();
        let endpoint = Arc::new(Endpoint::new(&UpstreamConfig::new(spec), &[]).unwrap());
        let tcp_fallback =
            StreamUpstream::new(endpoint.clone(), None, std::time::Duration::from_secs(5));
        let upstream = UdpUpstream::new(endpoint, tcp_fallback);
        let query = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        let answer = upstream.exchange(query).await.unwrap();
        assert_eq!(answer[2] & 0x02, 0, "the TCP answer is not truncated");
        assert!(answer.ends_with(b"full"));
    }

    #[test]
    fn question_end_rejects_compression_and_truncation() {
        assert_eq!(
            question_end(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]),
            Some(19)
        );
        assert_eq!(
            question_end(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0]),
            None
        );
        assert_eq!(
            question_end(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]),
            None
        );
    }
}
