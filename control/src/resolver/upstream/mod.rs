//! Clients for the upstream resolvers: one per configured URL, each with its
//! transport, pooled connection, health and round-trip time, and the pool
//! that picks among them and fails over.

mod bootstrap;
mod clock;
mod https;
mod pool;
mod quic;
mod spec;
mod stream;
mod tls;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use clock::{ClockAwareVerifier, build_time};
pub use pool::{Outcome, UpstreamPool, UpstreamStats};
pub use spec::{DEFAULT_DOH_PATH, Host, Protocol, UpstreamSpec, UpstreamSpecError};

use bootstrap::Endpoint;
use https::HttpsUpstream;
use quic::QuicUpstream;
use stream::StreamUpstream;

use super::config::UpstreamConfig;

/// Largest DNS message (RFC 1035 §4.2.2: the TCP length prefix is 16 bits).
pub(crate) const MAX_MESSAGE_LEN: usize = 65_535;

/// Errors from building an upstream client out of its configuration.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    /// The CA file could not be read.
    #[error("failed to read CA file {path} for upstream {upstream}: {source}")]
    CaFile {
        /// The upstream's URL.
        upstream: String,
        /// The file.
        path: String,
        /// The I/O or PEM error.
        #[source]
        source: io::Error,
    },
    /// The CA file contains no certificate.
    #[error(
        "CA file {path} for upstream {upstream} contains no PEM certificate; give a file with one or more `BEGIN CERTIFICATE` blocks"
    )]
    NoCertificates {
        /// The upstream's URL.
        upstream: String,
        /// The file.
        path: String,
    },
    /// The TLS name is neither a DNS name nor an IP address.
    #[error(
        "TLS name `{name}` of upstream {upstream} is invalid; give a host name or an IP address"
    )]
    InvalidTlsName {
        /// The upstream's URL.
        upstream: String,
        /// The name given.
        name: String,
    },
    /// rustls rejected the client configuration.
    #[error("failed to set up TLS for upstream {upstream}: {source}")]
    Tls {
        /// The upstream's URL.
        upstream: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// rustls could not build the certificate verifier from the roots.
    #[error(
        "failed to set up certificate checks for upstream {upstream}: {source}; check its CA file"
    )]
    Verifier {
        /// The upstream's URL.
        upstream: String,
        /// The rustls error.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    /// The TLS configuration cannot be used for QUIC.
    #[error("failed to set up QUIC for upstream {upstream}: {reason}")]
    Quic {
        /// The upstream's URL.
        upstream: String,
        /// The error quinn reported.
        reason: String,
    },
    /// The URL names a host but no bootstrap server can resolve it.
    #[error(
        "upstream {upstream} names host `{host}` but no bootstrap server is set; add `bootstrap = [\"udp://IP\"]` or use an IP address in the URL"
    )]
    NoBootstrap {
        /// The upstream's URL.
        upstream: String,
        /// The host name.
        host: String,
    },
    /// A bootstrap server is not plain DNS at an IP address.
    #[error(
        "bootstrap server {bootstrap} of upstream {upstream} must be udp:// or tcp:// with an IP address"
    )]
    InvalidBootstrap {
        /// The upstream's URL.
        upstream: String,
        /// The bootstrap server given.
        bootstrap: String,
    },
}

/// Why one exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting, reading or writing failed.
    #[error("I/O with upstream {upstream} failed: {source}")]
    Io {
        /// The upstream's URL.
        upstream: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The QUIC connection or stream failed.
    #[error("QUIC exchange with upstream {upstream} failed: {source}")]
    Quic {
        /// The upstream's URL.
        upstream: String,
        /// The quinn error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP/2 exchange failed.
    #[error("HTTP/2 exchange with upstream {upstream} failed: {source}")]
    Http {
        /// The upstream's URL.
        upstream: String,
        /// The h2 error.
        #[source]
        source: h2::Error,
    },
    /// The DoH server answered with an HTTP error.
    #[error("upstream {upstream} answered HTTP status {status}")]
    HttpStatus {
        /// The upstream's URL.
        upstream: String,
        /// The status code.
        status: u16,
    },
    /// The connection closed before the answer arrived.
    #[error("upstream {upstream} closed the connection before answering")]
    Closed {
        /// The upstream's URL.
        upstream: String,
    },
    /// The upstream's host name could not be resolved.
    #[error("failed to resolve host `{host}` of upstream {upstream} through its bootstrap servers")]
    Bootstrap {
        /// The upstream's URL.
        upstream: String,
        /// The host name.
        host: String,
    },
    /// The answer is not a valid response to the query.
    #[error("upstream {upstream} sent an invalid answer: {reason}")]
    InvalidResponse {
        /// The upstream's URL.
        upstream: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The transport-specific client of one upstream.
pub(crate) enum Connector {
    Udp(udp::UdpUpstream),
    Stream(StreamUpstream),
    Quic(QuicUpstream),
    Https(HttpsUpstream),
}

impl Connector {
    /// Builds the client for `config`; `default_bootstrap` applies when the
    /// upstream has no bootstrap list of its own. `idle_timeout` closes
    /// pooled connections that carried no query for that long.
    pub(crate) fn new(
        config: &UpstreamConfig,
        default_bootstrap: &[UpstreamSpec],
        idle_timeout: Duration,
    ) -> Result<Self, UpstreamConfigError> {
        let endpoint = Arc::new(Endpoint::new(config, default_bootstrap)?);
        let spec = &config.url;
        Ok(match spec.protocol {
            Protocol::Udp => Self::Udp(udp::UdpUpstream::new(
                endpoint.clone(),
                StreamUpstream::new(endpoint, None, idle_timeout),
            )),
            Protocol::Tcp => Self::Stream(StreamUpstream::new(endpoint, None, idle_timeout)),
            Protocol::Tls => {
                let settings = tls::TlsSettings::new(config, tls::ALPN_DOT, false)?;
                Self::Stream(StreamUpstream::new(endpoint, Some(settings), idle_timeout))
            }
            Protocol::Quic => Self::Quic(QuicUpstream::new(endpoint, config, idle_timeout)?),
            Protocol::Https => {
                let settings = tls::TlsSettings::new(config, tls::ALPN_H2, false)?;
                Self::Https(HttpsUpstream::new(endpoint, settings, spec, idle_timeout))
            }
        })
    }

    /// Sends `query` (the transport sets its ID) and returns the raw answer.
    /// The caller bounds the time.
    pub(crate) async fn exchange(&self, query: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        match self {
            Self::Udp(udp) => udp.exchange(query).await,
            Self::Stream(stream) => stream.exchange(query).await,
            Self::Quic(quic) => quic.exchange(query).await,
            Self::Https(https) => https.exchange(query).await,
        }
    }

    /// Drops the pooled connection, so the next query opens a fresh one.
    /// Called after a timeout: a stalled connection is never reused.
    pub(crate) fn reset(&self) {
        match self {
            Self::Udp(udp) => udp.reset(),
            Self::Stream(stream) => stream.reset(),
            Self::Quic(quic) => quic.reset(),
            Self::Https(https) => https.reset(),
        }
    }
}

/// Connects a TCP socket to the first of `addrs` that accepts.
pub(crate) async fn connect_tcp(
    label: &str,
    addrs: &[SocketAddr],
) -> Result<tokio::net::TcpStream, UpstreamError> {
    let mut last_error =
        io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to");
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                // Queries are small and latency-bound.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => {
                tracing::debug!(upstream = label, %addr, %error, "TCP connect failed");
                last_error = error;
            }
        }
    }
    Err(UpstreamError::Io {
        upstream: label.to_owned(),
        source: last_error,
    })
}
