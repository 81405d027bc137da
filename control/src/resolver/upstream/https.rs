//! DNS over HTTPS (RFC 8484) over HTTP/2: one connection per upstream,
//! reused, with each query a POST of `application/dns-message` on its own
//! stream and the message ID set to 0 (RFC 8484 §4.1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode, header};
use tokio::task::JoinHandle;

use super::bootstrap::Endpoint;
use super::spec::UpstreamSpec;
use super::tls::TlsSettings;
use super::{MAX_MESSAGE_LEN, UpstreamError, connect_tcp};

/// Media type of DNS messages over HTTP (RFC 8484 §6).
const DNS_MESSAGE: &str = "application/dns-message";

struct Session {
    sender: SendRequest<Bytes>,
    driver: JoinHandle<()>,
    id: u64,
    last_used: Arc<Mutex<Instant>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An upstream spoken to over DoH.
pub(crate) struct HttpsUpstream {
    endpoint: Arc<Endpoint>,
    tls: TlsSettings,
    uri: String,
    idle_timeout: Duration,
    slot: Mutex<Option<Arc<Session>>>,
    connecting: tokio::sync::Mutex<()>,
    next_id: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HttpsUpstream {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        tls: TlsSettings,
        spec: &UpstreamSpec,
        idle_timeout: Duration,
    ) -> Self {
        let authority = match spec.port {
            443 => spec.host.to_string(),
            port => format!("{}:{port}", spec.host),
        };
        let uri = format!("https://{authority}{}", spec.path);
        Self {
            endpoint,
            tls,
            uri,
            idle_timeout,
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn http_error(&self, source: h2::Error) -> UpstreamError {
        UpstreamError::Http {
            upstream: self.endpoint.label.clone(),
            source,
        }
    }

    /// POSTs `query`; a reused connection that fails is replaced once.
    pub(crate) async fn exchange(&self, query: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        for _ in 0..2 {
            let (session, fresh) = self.session().await?;
            match self.exchange_on(&session, query.clone()).await {
                Ok(response) => return Ok(response),
                Err(error @ UpstreamError::HttpStatus { .. }) => return Err(error),
                Err(error) => {
                    self.discard(&session);
                    if fresh {
                        return Err(error);
                    }
                    tracing::debug!(upstream = %self.endpoint.label, %error, "pooled HTTP/2 connection failed, reconnecting");
                }
            }
        }
        Err(UpstreamError::Closed {
            upstream: self.endpoint.label.clone(),
        })
    }

    async fn exchange_on(
        &self,
        session: &Session,
        mut query: Vec<u8>,
    ) -> Result<Vec<u8>, UpstreamError> {
        *lock(&session.last_used) = Instant::now();
        query[0..2].copy_from_slice(&[0, 0]);
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.uri)
            .header(header::CONTENT_TYPE, DNS_MESSAGE)
            .header(header::ACCEPT, DNS_MESSAGE)
            .header(header::CONTENT_LENGTH, query.len())
            .body(())
            .map_err(|_| UpstreamError::InvalidResponse {
                upstream: self.endpoint.label.clone(),
                reason: "invalid request URI",
            })?;

        let mut sender = session
            .sender
            .clone()
            .ready()
            .await
            .map_err(|error| self.http_error(error))?;
        let (response, mut body) = sender
            .send_request(request, false)
            .map_err(|error| self.http_error(error))?;
        body.send_data(Bytes::from(query), true)
            .map_err(|error| self.http_error(error))?;
        let response = response.await.map_err(|error| self.http_error(error))?;

        let status = response.status();
        if status != StatusCode::OK {
            return Err(UpstreamError::HttpStatus {
                upstream: self.endpoint.label.clone(),
                status: status.as_u16(),
            });
        }
        let mut body = response.into_body();
        let mut message = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|error| self.http_error(error))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > MAX_MESSAGE_LEN {
                return Err(UpstreamError::InvalidResponse {
                    upstream: self.endpoint.label.clone(),
                    reason: "DoH body exceeds 65535 bytes",
                });
            }
            message.extend_from_slice(&chunk);
        }
        Ok(message)
    }

    async fn session(&self) -> Result<(Arc<Session>, bool), UpstreamError> {
        if let Some(session) = self.live() {
            return Ok((session, false));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.live() {
            return Ok((session, false));
        }
        let addrs = self.endpoint.addrs().await?;
        let tcp = connect_tcp(&self.endpoint.label, &addrs).await?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
        let stream = connector
            .connect(self.tls.server_name.clone(), tcp)
            .await
            .map_err(|source| UpstreamError::Io {
                upstream: self.endpoint.label.clone(),
                source,
            })?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(MAX_MESSAGE_LEN as u32 + 1)
            .handshake(stream)
            .await
            .map_err(|error| self.http_error(error))?;

        let label = self.endpoint.label.clone();
        let idle_timeout = self.idle_timeout;
        let last_used = Arc::new(Mutex::new(Instant::now()));
        let driver_last_used = last_used.clone();
        let driver = tokio::spawn(async move {
            tokio::pin!(connection);
            loop {
                tokio::select! {
                    result = &mut connection => {
                        match result {
                            Ok(()) => tracing::debug!(upstream = %label, "HTTP/2 connection closed"),
                            Err(error) => tracing::debug!(upstream = %label, %error, "HTTP/2 connection failed"),
                        }
                        break;
                    }
                    () = tokio::time::sleep(idle_timeout / 4) => {
                        if lock(&driver_last_used).elapsed() >= idle_timeout {
                            tracing::debug!(upstream = %label, "closing idle HTTP/2 connection");
                            break;
                        }
                    }
                }
            }
        });
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Arc::new(Session {
            sender,
            driver,
            id,
            last_used,
        });
        *lock(&self.slot) = Some(session.clone());
        Ok((session, true))
    }

    fn live(&self) -> Option<Arc<Session>> {
        lock(&self.slot)
            .as_ref()
            .filter(|session| !session.driver.is_finished())
            .cloned()
    }

    fn discard(&self, session: &Arc<Session>) {
        let mut slot = lock(&self.slot);
        if slot
            .as_ref()
            .is_some_and(|current| current.id == session.id)
        {
            *slot = None;
        }
    }

    pub(crate) fn reset(&self) {
        lock(&self.slot).take();
    }
}
