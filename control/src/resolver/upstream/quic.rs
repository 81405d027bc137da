//! DNS over QUIC (RFC 9250): one QUIC connection per upstream, reused, and
//! one bidirectional stream per query carrying a 2-byte length prefix and a
//! message whose ID is 0 (RFC 9250 §4.2, §4.2.1).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ClientConfig, Connection, TransportConfig, VarInt};

use super::bootstrap::Endpoint;
use super::tls::{ALPN_DOQ, TlsSettings};
use super::{MAX_MESSAGE_LEN, UpstreamConfigError, UpstreamError};
use crate::resolver::config::UpstreamConfig;

/// DOQ_NO_ERROR (RFC 9250 §4.3): the connection is closed on purpose.
const DOQ_NO_ERROR: VarInt = VarInt::from_u32(0);

/// An upstream spoken to over QUIC.
pub(crate) struct QuicUpstream {
    endpoint: Arc<Endpoint>,
    client_config: ClientConfig,
    server_name: String,
    sockets: Mutex<[Option<quinn::Endpoint>; 2]>,
    slot: Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl QuicUpstream {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        config: &UpstreamConfig,
        idle_timeout: Duration,
    ) -> Result<Self, UpstreamConfigError> {
        let label = endpoint.label.clone();
        let tls = TlsSettings::new(config, ALPN_DOQ, true)?;
        let crypto = QuicClientConfig::try_from(tls.config.clone()).map_err(|error| {
            UpstreamConfigError::Quic {
                upstream: label.clone(),
                reason: error.to_string(),
            }
        })?;
        let mut client_config = ClientConfig::new(Arc::new(crypto));
        let mut transport = TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(idle_timeout).map_err(|error| {
            UpstreamConfigError::Quic {
                upstream: label,
                reason: error.to_string(),
            }
        })?;
        transport.max_idle_timeout(Some(idle));
        client_config.transport_config(Arc::new(transport));
        let server_name = match &config.tls_name {
            Some(name) => name.trim().trim_end_matches('.').to_owned(),
            None => endpoint.default_tls_name(),
        };
        Ok(Self {
            endpoint,
            client_config,
            server_name,
            sockets: Mutex::new([None, None]),
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn quic_error(&self, source: impl std::error::Error + Send + Sync + 'static) -> UpstreamError {
        UpstreamError::Quic {
            upstream: self.endpoint.label.clone(),
            source: Box::new(source),
        }
    }

    /// Sends `query` on a new stream; a reused connection that fails is
    /// replaced once by a fresh one.
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
                    tracing::debug!(upstream = %self.endpoint.label, %error, "pooled QUIC connection failed, reconnecting");
                }
            }
        }
        Err(UpstreamError::Closed {
            upstream: self.endpoint.label.clone(),
        })
    }

    async fn exchange_on(
        &self,
        connection: &Connection,
        mut query: Vec<u8>,
    ) -> Result<Vec<u8>, UpstreamError> {
        query[0..2].copy_from_slice(&[0, 0]);
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
        frame.extend_from_slice(&query);

        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|error| self.quic_error(error))?;
        send.write_all(&frame)
            .await
            .map_err(|error| self.quic_error(error))?;
        // RFC 9250 §4.2: the client closes its side after the query.
        send.finish().map_err(|error| self.quic_error(error))?;
        let data = recv
            .read_to_end(MAX_MESSAGE_LEN + 2)
            .await
            .map_err(|error| self.quic_error(error))?;

        let invalid = |reason| UpstreamError::InvalidResponse {
            upstream: self.endpoint.label.clone(),
            reason,
        };
        if data.len() < 2 {
            return Err(invalid("DoQ stream ended before the length prefix"));
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        if data.len() != len + 2 || len < 12 {
            return Err(invalid("DoQ length prefix does not match the stream"));
        }
        Ok(data[2..].to_vec())
    }

    async fn connection(&self) -> Result<(Connection, bool), UpstreamError> {
        if let Some(connection) = self.live() {
            return Ok((connection, false));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.live() {
            return Ok((connection, false));
        }
        let addrs = self.endpoint.addrs().await?;
        // NOTE: only the first address is tried, unlike TCP, which tries each.
        let addr = addrs[0];
        let socket = self.socket(addr)?;
        let connecting = socket
            .connect_with(self.client_config.clone(), addr, &self.server_name)
            .map_err(|error| self.quic_error(error))?;
        let connection = connecting.await.map_err(|error| self.quic_error(error))?;
        tracing::debug!(upstream = %self.endpoint.label, %addr, "QUIC connection established");
        *lock(&self.slot) = Some(connection.clone());
        Ok((connection, true))
    }

    fn live(&self) -> Option<Connection> {
        lock(&self.slot)
            .as_ref()
            .filter(|connection| connection.close_reason().is_none())
            .cloned()
    }

    /// Returns the client socket for the address family of `addr`, bound
    /// to an OS-chosen port on first use.
    fn socket(&self, addr: SocketAddr) -> Result<quinn::Endpoint, UpstreamError> {
        let (index, bind): (usize, SocketAddr) = match addr {
            SocketAddr::V4(_) => (0, (Ipv4Addr::UNSPECIFIED, 0).into()),
            SocketAddr::V6(_) => (1, (Ipv6Addr::UNSPECIFIED, 0).into()),
        };
        let mut sockets = lock(&self.sockets);
        if let Some(socket) = &sockets[index] {
            return Ok(socket.clone());
        }
        let socket = quinn::Endpoint::client(bind).map_err(|source| UpstreamError::Io {
            upstream: self.endpoint.label.clone(),
            source,
        })?;
        sockets[index] = Some(socket.clone());
        Ok(socket)
    }

    fn discard(&self, connection: &Connection) {
        let mut slot = lock(&self.slot);
        if slot
            .as_ref()
            .is_some_and(|current| current.stable_id() == connection.stable_id())
        {
            *slot = None;
        }
        connection.close(DOQ_NO_ERROR, b"");
    }

    pub(crate) fn reset(&self) {
        if let Some(connection) = lock(&self.slot).take() {
            connection.close(DOQ_NO_ERROR, b"");
        }
    }
}
