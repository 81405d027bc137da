//! LAN listeners for plain DNS (UDP/TCP 53), DNS over TLS, DNS over QUIC and
//! DNS over HTTPS, and the interface through which they hand queries to the
//! resolver core.
//!
//! The listeners own everything about the transport: framing, connection
//! and stream limits, timeouts, UDP truncation, EDNS padding and keepalive.
//! The resolver behind [`DnsHandler`] receives one wire-format query at a
//! time and returns a full response.

mod config;
mod context;
mod https;
mod limits;
mod quic;
mod stats;
mod stream;
mod tcp;
mod tls;
mod udp;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

pub use config::{Limits, ListenAddrs, ServerConfig};
pub use https::DNS_MESSAGE;
pub use quic::error_code as doq_error_code;
pub use stats::{ServerStats, TransportStats};
pub use tls::{
    ALPN_DOQ, ALPN_DOT, ALPN_H2, CertStore, ServerTls, TlsError, TlsMaterial, generate_self_signed,
};

use context::{Context, Shutdown};
use stats::ServerCounters;

/// The transport a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain DNS over UDP (RFC 1035 section 4.2.1).
    Udp,
    /// Plain DNS over TCP (RFC 7766).
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over QUIC (RFC 9250).
    Quic,
    /// DNS over HTTPS (RFC 8484).
    Https,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "DNS-over-TLS",
            Self::Quic => "DNS-over-QUIC",
            Self::Https => "DNS-over-HTTPS",
        })
    }
}

/// One DNS query as received from a LAN client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The query in DNS wire format, at least a full header with QR clear.
    /// For DoQ the message ID is 0 (RFC 9250 section 4.2.1); the listener
    /// sets the response ID to 0 whatever the handler returns.
    pub message: Vec<u8>,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The local address and port the query arrived on.
    pub local: SocketAddr,
    /// The transport the query arrived on.
    pub transport: Transport,
}

/// The resolver core as seen by the listeners.
pub trait DnsHandler: Send + Sync + 'static {
    /// Returns the wire-format response, or None to drop the query silently.
    fn handle(
        &self,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>>;
}

/// A failure to start the listeners.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A socket could not be bound.
    #[error(
        "failed to bind the {transport} listener on {addr}: {source}; check that the address is assigned to a local interface and that no other DNS server holds the port"
    )]
    Bind {
        /// The transport of the listener.
        transport: Transport,
        /// The address it was to bind.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An encrypted listener was requested without TLS material.
    #[error("the {transport} listener on {addr} needs a TLS certificate, but none was given")]
    TlsMissing {
        /// The transport of the listener.
        transport: Transport,
        /// The address it was to bind.
        addr: SocketAddr,
    },
    /// The QUIC endpoint could not be configured.
    #[error("failed to configure the DoQ listener on {addr}: {reason}")]
    Quic {
        /// The address it was to bind.
        addr: SocketAddr,
        /// The configuration error reported by quinn.
        reason: String,
    },
}

/// How long [`Listeners::shutdown`] waits for connection tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Running listeners. Dropping the handle stops them too, but without
/// waiting, whereas [`Listeners::shutdown`] waits for connections to close.
pub struct Listeners {
    local: ListenAddrs,
    counters: Arc<ServerCounters>,
    stop: watch::Sender<bool>,
    alive: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Listeners")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// Returns the bound addresses, one list per transport in the order they
    /// were given, with the real ports where port 0 was requested.
    pub fn local_addrs(&self) -> &ListenAddrs {
        &self.local
    }

    /// Returns the counters of every transport.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every connection (DoQ with DOQ_NO_ERROR, DoH
    /// with GOAWAY) and waits up to three seconds for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, self.alive.recv())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "listener tasks still running after shutdown grace period");
        }
        tracing::info!("listeners stopped");
    }
}

/// Binds every address in `addrs` and starts serving with `handler`.
///
/// All sockets are bound before any is served, so a bind failure returns an
/// error and leaves nothing running. `tls` is required when `addrs` has any
/// DoT, DoQ or DoH address.
pub async fn spawn_listeners(
    config: ServerConfig,
    addrs: ListenAddrs,
    tls: Option<ServerTls>,
    handler: Arc<dyn DnsHandler>,
) -> Result<Listeners, ServerError> {
    let need_tls = |transport, list: &[SocketAddr]| match (&tls, list.first()) {
        (None, Some(addr)) => Err(ServerError::TlsMissing {
            transport,
            addr: *addr,
        }),
        _ => Ok(()),
    };
    need_tls(Transport::Tls, &addrs.tls)?;
    need_tls(Transport::Quic, &addrs.quic)?;
    need_tls(Transport::Https, &addrs.https)?;

    let mut udp_sockets = Vec::new();
    for addr in &addrs.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(bind_error(Transport::Udp, *addr))?;
        let local = socket
            .local_addr()
            .map_err(bind_error(Transport::Udp, *addr))?;
        udp_sockets.push((socket, local));
    }
    let mut tcp_listeners = Vec::new();
    for (transport, list) in [
        (Transport::Tcp, &addrs.tcp),
        (Transport::Tls, &addrs.tls),
        (Transport::Https, &addrs.https),
    ] {
        for addr in list {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(bind_error(transport, *addr))?;
            let local = listener
                .local_addr()
                .map_err(bind_error(transport, *addr))?;
            tcp_listeners.push((listener, local, transport));
        }
    }
    let mut quic_endpoints = Vec::new();
    if let Some(tls) = &tls {
        for addr in &addrs.quic {
            let endpoint = quic::bind(*addr, tls, &config.limits)?;
            let local = endpoint
                .local_addr()
                .map_err(bind_error(Transport::Quic, *addr))?;
            quic_endpoints.push((endpoint, local));
        }
    }

    let (stop, signal) = watch::channel(false);
    let (alive_sender, alive) = mpsc::channel(1);
    let counters = Arc::new(ServerCounters::default());
    let context = Context {
        config: Arc::new(config),
        handler,
        counters: Arc::clone(&counters),
        shutdown: Shutdown::new(signal, alive_sender),
    };

    let mut local = ListenAddrs::default();
    for (socket, addr) in udp_sockets {
        local.udp.push(addr);
        tokio::spawn(udp::serve(socket, addr, context.clone()));
    }
    for (listener, addr, transport) in tcp_listeners {
        let config = match transport {
            Transport::Tls => tls.as_ref().map(ServerTls::dot_config),
            Transport::Https => tls.as_ref().map(ServerTls::doh_config),
            _ => None,
        };
        match transport {
            Transport::Tls => local.tls.push(addr),
            Transport::Https => local.https.push(addr),
            _ => local.tcp.push(addr),
        }
        tokio::spawn(tcp::serve(
            listener,
            addr,
            transport,
            config,
            context.clone(),
        ));
    }
    for (endpoint, addr) in quic_endpoints {
        local.quic.push(addr);
        tokio::spawn(quic::serve(endpoint, addr, context.clone()));
    }

    Ok(Listeners {
        local,
        counters,
        stop,
        alive,
    })
}

fn bind_error(transport: Transport, addr: SocketAddr) -> impl Fn(std::io::Error) -> ServerError {
    move |source| ServerError::Bind {
        transport,
        addr,
        source,
    }
}
