//! rustls client settings for encrypted upstreams. They use the `ring`
//! provider and TLS 1.3, or 1.2 as well except for QUIC, which requires 1.3
//! (RFC 9001 §4.2). They offer the protocol's ALPN token and trust either
//! the built-in Mozilla roots or the upstream's own CA file. Certificate
//! validity periods are not enforced while the clock is not yet set; see
//! [`super::clock`].

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::UpstreamConfigError;
use super::clock::ClockAwareVerifier;
use crate::resolver::config::UpstreamConfig;

/// ALPN token of DNS over TLS, as registered with IANA.
pub(crate) const ALPN_DOT: &[u8] = b"dot";
/// ALPN token of DNS over QUIC (RFC 9250 §4.1).
pub(crate) const ALPN_DOQ: &[u8] = b"doq";
/// ALPN of HTTP/2, which DoH runs over here (RFC 8484 §5.2).
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The `ring` crypto provider.
#[expect(
    deprecated,
    reason = "ring builds without a C toolchain for every router CPU; rustls 0.23.48 deprecated it only for lacking post-quantum key exchange"
)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client configuration and the name the server must prove.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl TlsSettings {
    pub(crate) fn new(
        upstream: &UpstreamConfig,
        alpn: &[u8],
        tls13_only: bool,
    ) -> Result<Self, UpstreamConfigError> {
        let label = upstream.url.to_string();
        let roots = match &upstream.ca_file {
            Some(path) => {
                let display = path.display().to_string();
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path).map_err(|error| {
                    UpstreamConfigError::CaFile {
                        upstream: label.clone(),
                        path: display.clone(),
                        source: std::io::Error::other(error),
                    }
                })?;
                for cert in certs {
                    let cert = cert.map_err(|error| UpstreamConfigError::CaFile {
                        upstream: label.clone(),
                        path: display.clone(),
                        source: std::io::Error::other(error),
                    })?;
                    roots.add(cert).map_err(|source| UpstreamConfigError::Tls {
                        upstream: label.clone(),
                        source,
                    })?;
                }
                if roots.is_empty() {
                    return Err(UpstreamConfigError::NoCertificates {
                        upstream: label,
                        path: display,
                    });
                }
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };

        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone());
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(|source| UpstreamConfigError::Tls {
            upstream: label.clone(),
            source,
        })?;
        // Names and chains are always checked; validity periods only once
        // the clock is set (see `clock`).
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| UpstreamConfigError::Verifier {
                upstream: label.clone(),
                source,
            })?;
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClockAwareVerifier::new(webpki)))
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];

        let name = match &upstream.tls_name {
            Some(name) => name.trim().trim_end_matches('.').to_owned(),
            None => match &upstream.url.host {
                super::Host::Ip(ip) => ip.to_string(),
                super::Host::Name(name) => name.clone(),
            },
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            UpstreamConfigError::InvalidTlsName {
                upstream: label,
                name,
            }
        })?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}
