//! DNS over TCP (RFC 7766) and DNS over TLS (RFC 7858): one connection per
//! upstream, reused for many queries, with queries pipelined and answers
//! matched by ID in whatever order they arrive (RFC 7766 §6.2.1.1).
//!
//! A writer task sends frames and closes the connection after it has been
//! idle; a reader task routes answers to the waiting queries. When either
//! side ends, every waiting query fails at once and the next query
//! reconnects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::bootstrap::Endpoint;
use super::tls::TlsSettings;
use super::{MAX_MESSAGE_LEN, UpstreamError, connect_tcp};

type Pending = Arc<Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>>;

/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 64;
/// Queries in flight on one connection at most; each needs a distinct ID.
const MAX_IN_FLIGHT: usize = 1024;

/// An upstream spoken to over TCP, with or without TLS.
pub(crate) struct StreamUpstream {
    endpoint: Arc<Endpoint>,
    tls: Option<TlsSettings>,
    idle_timeout: Duration,
    slot: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

struct Connection {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Removes a query's entry from the pending table when the query ends,
/// whether it was answered, failed or was cancelled by a timeout.
struct PendingGuard {
    pending: Pending,
    id: u16,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StreamUpstream {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        tls: Option<TlsSettings>,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            endpoint,
            tls,
            idle_timeout,
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn error_closed(&self) -> UpstreamError {
        UpstreamError::Closed {
            upstream: self.endpoint.label.clone(),
        }
    }

    /// Sends `query` and waits for its answer. A reused connection that
    /// turns out to be closed is replaced once by a fresh one.
    pub(crate) async fn exchange(&self, query: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        for _ in 0..2 {
            let (connection, fresh) = self.connection().await?;
            match self.exchange_on(&connection, query.clone()).await {
                Ok(response) => return Ok(response),
                Err(error) => {
                    self.discard(&connection);
                    if fresh {
                        return Err(error);
                    }
                    tracing::debug!(upstream = %self.endpoint.label, %error, "pooled connection failed, reconnecting");
                }
            }
        }
        Err(self.error_closed())
    }

    async fn exchange_on(
        &self,
        connection: &Connection,
        mut query: Vec<u8>,
    ) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < 12 || query.len() > MAX_MESSAGE_LEN {
            return Err(UpstreamError::InvalidResponse {
                upstream: self.endpoint.label.clone(),
                reason: "query size out of range",
            });
        }
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut pending = lock(&connection.pending);
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(self.error_closed());
            }
            let mut id: u16 = rand::random();
            while pending.contains_key(&id) {
                id = rand::random();
            }
            pending.insert(id, sender);
            id
        };
        let _guard = PendingGuard {
            pending: connection.pending.clone(),
            id,
        };
        query[0..2].copy_from_slice(&id.to_be_bytes());
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
        frame.extend_from_slice(&query);
        connection
            .frames
            .send(frame)
            .await
            .map_err(|_| self.error_closed())?;
        receiver.await.map_err(|_| self.error_closed())
    }

    /// Returns the pooled connection, or opens one; `true` when it is new.
    async fn connection(&self) -> Result<(Arc<Connection>, bool), UpstreamError> {
        if let Some(connection) = self.live() {
            return Ok((connection, false));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.live() {
            return Ok((connection, false));
        }
        let connection = Arc::new(self.connect().await?);
        *lock(&self.slot) = Some(connection.clone());
        Ok((connection, true))
    }

    fn live(&self) -> Option<Arc<Connection>> {
        lock(&self.slot)
            .as_ref()
            .filter(|connection| connection.alive.load(Ordering::Acquire))
            .cloned()
    }

    fn discard(&self, connection: &Arc<Connection>) {
        let mut slot = lock(&self.slot);
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, connection))
        {
            *slot = None;
        }
    }

    pub(crate) fn reset(&self) {
        lock(&self.slot).take();
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let addrs = self.endpoint.addrs().await?;
        let tcp = connect_tcp(&self.endpoint.label, &addrs).await?;
        let label = self.endpoint.label.clone();
        match &self.tls {
            None => Ok(spawn_connection(tcp, label, self.idle_timeout)),
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|source| UpstreamError::Io {
                        upstream: label.clone(),
                        source,
                    })?;
                Ok(spawn_connection(stream, label, self.idle_timeout))
            }
        }
    }
}

fn spawn_connection<S>(stream: S, label: String, idle_timeout: Duration) -> Connection
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (frames, mut queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let alive = Arc::new(AtomicBool::new(true));

    let write_task = {
        let pending = pending.clone();
        let alive = alive.clone();
        let label = label.clone();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(idle_timeout, queue.recv()).await {
                    Ok(Some(frame)) => {
                        if let Err(error) = async {
                            writer.write_all(&frame).await?;
                            writer.flush().await
                        }
                        .await
                        {
                            tracing::debug!(upstream = %label, %error, "write to upstream failed");
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(_) if lock(&pending).is_empty() => {
                        tracing::debug!(upstream = %label, "closing idle upstream connection");
                        break;
                    }
                    Err(_) => {}
                }
            }
            alive.store(false, Ordering::Release);
            lock(&pending).clear();
            let _ = writer.shutdown().await;
        })
    };

    let read_task = {
        let pending = pending.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let result: std::io::Result<()> = async {
                loop {
                    let len = usize::from(reader.read_u16().await?);
                    let mut message = vec![0u8; len];
                    reader.read_exact(&mut message).await?;
                    if len < 12 {
                        tracing::debug!(upstream = %label, len, "ignoring a too-short message");
                        continue;
                    }
                    let id = u16::from_be_bytes([message[0], message[1]]);
                    match lock(&pending).remove(&id) {
                        Some(waiter) => {
                            let _ = waiter.send(message);
                        }
                        None => tracing::debug!(upstream = %label, id, "ignoring an answer nobody waits for"),
                    }
                }
            }
            .await;
            if let Err(error) = result {
                tracing::debug!(upstream = %label, %error, "upstream connection ended");
            }
            alive.store(false, Ordering::Release);
            lock(&pending).clear();
        })
    };

    Connection {
        frames,
        pending,
        alive,
        tasks: [write_task, read_task],
    }
}

/// Sends one query over a new TCP connection and reads one answer; used for
/// bootstrap lookups. The caller bounds the time.
pub(crate) async fn exchange_once(
    addr: SocketAddr,
    mut query: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let id: u16 = rand::random();
    query[0..2].copy_from_slice(&id.to_be_bytes());
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&query);
    stream.write_all(&frame).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut response = vec![0u8; len];
    stream.read_exact(&mut response).await?;
    if len < 12 || response[0..2] != query[0..2] {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer does not match the query ID",
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::net::TcpListener;

    use super::*;
    use crate::resolver::config::UpstreamConfig;
    use crate::resolver::upstream::UpstreamSpec;

    /// Starts a TCP DNS server on 127.0.0.1 that reads `batch` queries,
    /// then echoes them in reverse order with QR set, and closes each
    /// connection after `per_connection` answers. Returns its address and
    /// the count of accepted connections.
    async fn server(batch: usize, per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut answered = 0;
                    while answered < per_connection {
                        let mut queries = Vec::new();
                        for _ in 0..batch {
                            let Ok(len) = stream.read_u16().await else {
                                return;
                            };
                            let mut query = vec![0u8; usize::from(len)];
                            if stream.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            queries.push(query);
                        }
                        for mut answer in queries.into_iter().rev() {
                            answer[2] |= 0x80;
                            let mut frame = (answer.len() as u16).to_be_bytes().to_vec();
                            frame.extend_from_slice(&answer);
                            if stream.write_all(&frame).await.is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn upstream(addr: SocketAddr) -> StreamUpstream {
        let spec: UpstreamSpec = format!("tcp://{addr}").parse().unwrap();
        let endpoint = Arc::new(Endpoint::new(&UpstreamConfig::new(spec), &[]).unwrap());
        StreamUpstream::new(endpoint, None, Duration::from_secs(30))
    }

    fn query(tag: u8) -> Vec<u8> {
        vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, tag, 0, 0, 1, 0, 1]
    }

    #[tokio::test]
    async fn rfc7766_connection_reused() {
        let (addr, accepted) = server(1, usize::MAX).await;
        let upstream = upstream(addr);
        for tag in b'a'..=b'e' {
            let answer = upstream.exchange(query(tag)).await.unwrap();
            assert_eq!(answer[13], tag);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn rfc7766_pipelined_out_of_order() {
        let (addr, accepted) = server(3, usize::MAX).await;
        let upstream = upstream(addr);
        let (first, second, third) = tokio::join!(
            upstream.exchange(query(b'x')),
            upstream.exchange(query(b'y')),
            upstream.exchange(query(b'z'))
        );
        assert_eq!(first.unwrap()[13], b'x');
        assert_eq!(second.unwrap()[13], b'y');
        assert_eq!(third.unwrap()[13], b'z');
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection carried all three"
        );
    }

    #[tokio::test]
    async fn reconnects_after_server_closes() {
        let (addr, accepted) = server(1, 1).await;
        let upstream = upstream(addr);
        for tag in [b'p', b'q', b'r'] {
            let answer = upstream.exchange(query(tag)).await.unwrap();
            assert_eq!(answer[13], tag);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn cancelled_query_leaves_no_pending_entry() {
        let (addr, _) = server(2, usize::MAX).await;
        let upstream = upstream(addr);
        // The server waits for a second query that never comes.
        let result =
            tokio::time::timeout(Duration::from_millis(100), upstream.exchange(query(b'c'))).await;
        assert!(result.is_err());
        let connection = upstream.live().expect("the connection stays open");
        assert!(lock(&connection.pending).is_empty());
    }
}
