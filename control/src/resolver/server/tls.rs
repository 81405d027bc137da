//! TLS material for DoT, DoQ and DoH: loading a PEM certificate chain and
//! key, generating a self-signed ECDSA P-256 certificate for opportunistic
//! discovery (RFC 9462 section 4.2), and the rustls server configurations
//! with ALPN `dot`, `doq` and `h2`.
//!
//! All three configurations share one [`CertStore`], from which rustls takes
//! the certificate at every handshake. Replacing the certificate there
//! affects only handshakes that start afterwards; connections already open
//! keep the keys they negotiated.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

/// ALPN protocol ID of DNS over TLS, as SVCB records for DNS advertise it
/// (RFC 9461).
pub const ALPN_DOT: &[u8] = b"dot";
/// ALPN protocol ID of DNS over QUIC (RFC 9250 section 4.1).
pub const ALPN_DOQ: &[u8] = b"doq";
/// ALPN protocol ID of HTTP/2, the only HTTP version DoH is served over here.
pub const ALPN_H2: &[u8] = b"h2";

/// Common name of generated certificates when no DNS name is given.
const FALLBACK_COMMON_NAME: &str = "dnsgate";

/// A failure to load, generate or install TLS material.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("failed to read {kind} file {path}: {source}; check the path and its permissions")]
    ReadFile {
        /// `certificate` or `private key`.
        kind: &'static str,
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text held no usable section of the expected kind.
    #[error("invalid PEM {kind} in {origin}: {source}")]
    Pem {
        /// `certificate` or `private key`.
        kind: &'static str,
        /// The file path, or `PEM text` for in-memory input.
        origin: String,
        /// The parse error.
        #[source]
        source: pem::Error,
    },
    /// The private key is of a type the ring provider cannot sign with.
    #[error(
        "unsupported private key in {origin}: {source}; use an ECDSA P-256/P-384, Ed25519 or RSA key"
    )]
    UnsupportedKey {
        /// The file path, or `PEM text`.
        origin: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the first certificate.
    #[error("private key in {origin} does not match the first certificate: {source}")]
    KeyMismatch {
        /// The key's file path, or `PEM text`.
        origin: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// rcgen failed to generate a key or certificate.
    #[error("failed to generate a self-signed certificate for {names:?} and {ips:?}: {source}")]
    Generate {
        /// The DNS names requested.
        names: Vec<String>,
        /// The IP addresses requested.
        ips: Vec<IpAddr>,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the protocol versions or session ticket setup.
    #[error("failed to build the TLS server configuration: {source}")]
    Config {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// A certificate chain and its private key, ready for rustls.
#[derive(Clone)]
pub struct TlsMaterial {
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is left out on purpose.
        formatter
            .debug_struct("TlsMaterial")
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Loads a PEM certificate chain (end-entity certificate first) and a
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) from files.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let read = |kind, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::ReadFile {
                kind,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("certificate", cert_path)?;
        let key_pem = read("private key", key_path)?;
        Self::parse(
            &cert_pem,
            &cert_path.display().to_string(),
            &key_pem,
            &key_path.display().to_string(),
        )
    }

    /// Parses a PEM certificate chain and private key held in memory.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::parse(
            cert_pem.as_bytes(),
            "PEM text",
            key_pem.as_bytes(),
            "PEM text",
        )
    }

    fn parse(
        cert_pem: &[u8],
        cert_origin: &str,
        key_pem: &[u8],
        key_origin: &str,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|chain| {
                if chain.is_empty() {
                    Err(pem::Error::NoItemsFound)
                } else {
                    Ok(chain)
                }
            })
            .map_err(|source| TlsError::Pem {
                kind: "certificate",
                origin: cert_origin.to_owned(),
                source,
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
            kind: "private key",
            origin: key_origin.to_owned(),
            source,
        })?;
        Self::from_der(chain, key, key_origin)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        key_origin: &str,
    ) -> Result<Self, TlsError> {
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::UnsupportedKey {
                origin: key_origin.to_owned(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|source| TlsError::KeyMismatch {
                origin: key_origin.to_owned(),
                source,
            })?;
        Ok(Self {
            key: Arc::new(certified),
        })
    }

    /// Returns the certificate chain, end-entity certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }
}

/// Generates an ECDSA P-256 key and a self-signed certificate whose subject
/// alternative names are `names` (DNS names) and `ips`, and returns
/// `(certificate PEM, private key PEM)`.
///
/// The certificate is its own issuer, so a client that is given this PEM as
/// its trust anchor can verify the server. Clients doing opportunistic
/// discovery do not verify it at all. The validity period is rcgen's default
/// (1975 to 4096), so the certificate never expires on a router whose clock
/// is wrong before NTP has run.
pub fn generate_self_signed(
    names: &[String],
    ips: &[IpAddr],
) -> Result<(String, String), TlsError> {
    let generate = || -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut subject = DistinguishedName::new();
        let common_name = names.first().map_or(FALLBACK_COMMON_NAME, String::as_str);
        subject.push(DnType::CommonName, common_name);
        params.distinguished_name = subject;
        let certificate = params.self_signed(&key)?;
        Ok((certificate.pem(), key.serialize_pem()))
    };
    generate().map_err(|source| TlsError::Generate {
        names: names.to_vec(),
        ips: ips.to_vec(),
        source,
    })
}

/// The certificate currently served, swappable while listeners run.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CertStore")
            .field("chain_len", &self.current.load().cert.len())
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configurations of the encrypted listeners, sharing one
/// [`CertStore`]. Cloning is cheap, and every clone reloads the same store.
#[derive(Debug, Clone)]
pub struct ServerTls {
    store: Arc<CertStore>,
    dot: Arc<rustls::ServerConfig>,
    doq: Arc<rustls::ServerConfig>,
    doh: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Builds the DoT, DoQ and DoH configurations around `material`. DoT and
    /// DoH accept TLS 1.3 and 1.2; DoQ accepts TLS 1.3 only, as QUIC
    /// requires (RFC 9001 section 4.2).
    pub fn new(material: TlsMaterial) -> Result<Self, TlsError> {
        let store = Arc::new(CertStore {
            current: ArcSwap::new(material.key),
        });
        let both_versions: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let tls13_only: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        Ok(Self {
            dot: Arc::new(build_config(&store, both_versions, ALPN_DOT)?),
            doq: Arc::new(build_config(&store, tls13_only, ALPN_DOQ)?),
            doh: Arc::new(build_config(&store, both_versions, ALPN_H2)?),
            store,
        })
    }

    /// Replaces the served certificate. Handshakes that start afterwards get
    /// the new one; open connections are not touched.
    pub fn reload(&self, material: TlsMaterial) {
        self.store.current.store(material.key);
        tracing::info!(
            chain_len = self.store.current.load().cert.len(),
            "TLS certificate replaced"
        );
    }

    /// Returns the certificate chain served now.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.store.current.load().cert.clone()
    }

    pub(crate) fn dot_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.dot)
    }

    pub(crate) fn doq_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.doq)
    }

    pub(crate) fn doh_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.doh)
    }
}

#[expect(
    deprecated,
    reason = "dnsgate uses ring for portability to router CPUs; rustls deprecates it only because it lacks post-quantum key exchange"
)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_config(
    store: &Arc<CertStore>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Config { source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(store) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![alpn.to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Config { source })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["dns.home.arpa".to_owned()]
    }

    #[test]
    fn generated_pem_loads_back() {
        let ip: IpAddr = "192.0.2.53".parse().unwrap();
        let (cert_pem, key_pem) = generate_self_signed(&names(), &[ip]).unwrap();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key_pem.contains("PRIVATE KEY"));
        let material = TlsMaterial::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(material.chain().len(), 1);
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let (cert_pem, _) = generate_self_signed(&names(), &[]).unwrap();
        let (_, other_key) = generate_self_signed(&names(), &[]).unwrap();
        let error = TlsMaterial::from_pem(&cert_pem, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn missing_certificate_is_rejected() {
        let (_, key_pem) = generate_self_signed(&names(), &[]).unwrap();
        let error = TlsMaterial::from_pem(&key_pem, &key_pem).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::Pem {
                    kind: "certificate",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn missing_file_names_path() {
        let error = TlsMaterial::from_pem_files(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }

    #[test]
    fn invalid_dns_name_is_an_error() {
        let error = generate_self_signed(&["dns.\u{e4}.example".to_owned()], &[]).unwrap_err();
        assert!(matches!(error, TlsError::Generate { .. }), "{error}");
    }

    #[test]
    fn reload_swaps_served_chain() {
        let (cert_a, key_a) = generate_self_signed(&names(), &[]).unwrap();
        let (cert_b, key_b) = generate_self_signed(&names(), &[]).unwrap();
        let tls = ServerTls::new(TlsMaterial::from_pem(&cert_a, &key_a).unwrap()).unwrap();
        let first = tls.current_chain();
        tls.reload(TlsMaterial::from_pem(&cert_b, &key_b).unwrap());
        let second = tls.current_chain();
        assert_ne!(first, second);
        assert_eq!(tls.dot_config().alpn_protocols, vec![ALPN_DOT.to_vec()]);
        assert_eq!(tls.doq_config().alpn_protocols, vec![ALPN_DOQ.to_vec()]);
        assert_eq!(tls.doh_config().alpn_protocols, vec![ALPN_H2.to_vec()]);
    }
}
