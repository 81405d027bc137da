//! Upstream certificate checks on a router whose clock is not set yet.
//! While the clock reads earlier than the build time, validity periods are
//! left out but names and chains are still checked. Once the clock is
//! plausible, everything is checked. No network beyond loopback.

use std::sync::Arc;
use std::time::Duration;

use dnsgate::resolver::upstream::{ClockAwareVerifier, build_time};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, Error, RootCertStore};

const DAY: u64 = 86_400;
/// The build time the tests pretend: 2026-01-01T00:00:00Z.
const BUILD: u64 = 1_767_225_600;
/// A clock that was never set: it reads the Unix epoch.
const UNSET_CLOCK: u64 = 0;
/// A clock set to the firmware's date: a year before the build.
const STALE_CLOCK: u64 = BUILD - 365 * DAY;

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

#[expect(
    deprecated,
    reason = "dnsgate uses the ring provider on purpose; see resolver::upstream::tls"
)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA, or an intermediate it issued, that issues certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

fn validity(params: &mut rcgen::CertificateParams, from: u64, to: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(from);
    params.not_after = epoch + Duration::from_secs(to);
}

impl Ca {
    /// Creates a root CA valid for the whole test range.
    fn root(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        validity(&mut params, UNSET_CLOCK, BUILD + 3650 * DAY);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues an intermediate CA, valid from `from` to `to`.
    fn intermediate(&self, name: &str, from: u64, to: u64) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        validity(&mut params, from, to);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Self {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues a server certificate for `name`, valid from `from` to `to`,
    /// and returns it with its key.
    fn leaf(
        &self,
        name: &str,
        from: u64,
        to: u64,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        validity(&mut params, from, to);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    fn verifier(&self) -> ClockAwareVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        ClockAwareVerifier::with_build_time(inner, at(BUILD))
    }
}

fn name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

fn verify(
    verifier: &ClockAwareVerifier,
    chain: &[CertificateDer<'static>],
    server: &str,
    now: u64,
) -> Result<(), Error> {
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name(server), &[], at(now))
        .map(|_| ())
}

fn is_not_valid_yet(result: &Result<(), Error>) -> bool {
    matches!(
        result,
        Err(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
        ))
    )
}

fn is_expired(result: &Result<(), Error>) -> bool {
    matches!(
        result,
        Err(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ))
    )
}

fn is_wrong_name(result: &Result<(), Error>) -> bool {
    matches!(
        result,
        Err(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ))
    )
}

fn is_unknown_issuer(result: &Result<(), Error>) -> bool {
    matches!(
        result,
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    )
}

#[test]
fn unset_clock_accepts_not_yet_valid_leaf() {
    let ca = Ca::root("test root");
    let (leaf, _) = ca.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let verifier = ca.verifier();
    for clock in [UNSET_CLOCK, STALE_CLOCK, BUILD - 1] {
        assert!(verifier.clock_is_implausible(at(clock)));
        let result = verify(&verifier, std::slice::from_ref(&leaf), "dns.example", clock);
        assert!(result.is_ok(), "clock {clock}: {result:?}");
    }
}

#[test]
fn unset_clock_accepts_later_intermediate() {
    // The leaf alone would be checked as of BUILD + 1 day, when the
    // intermediate is not valid yet, so the checked time must suit both.
    let root = Ca::root("test root");
    let intermediate = root.intermediate("test intermediate", BUILD + 2 * DAY, BUILD + 400 * DAY);
    let (leaf, _) = intermediate.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let result = verify(
        &root.verifier(),
        &[leaf, intermediate.der.clone()],
        "dns.example",
        UNSET_CLOCK,
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn unset_clock_ignores_stray_certificate() {
    // The server also sends a certificate outside the chain whose validity
    // starts after the leaf expires. The chain itself is still accepted.
    let root = Ca::root("test root");
    let intermediate = root.intermediate("test intermediate", BUILD, BUILD + 400 * DAY);
    let (leaf, _) = intermediate.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let stray = root.intermediate("stray", BUILD + 100 * DAY, BUILD + 200 * DAY);
    let result = verify(
        &root.verifier(),
        &[leaf, intermediate.der.clone(), stray.der.clone()],
        "dns.example",
        UNSET_CLOCK,
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn unset_clock_rejects_a_wrong_name() {
    let ca = Ca::root("test root");
    let (leaf, _) = ca.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let result = verify(&ca.verifier(), &[leaf], "other.example", UNSET_CLOCK);
    assert!(is_wrong_name(&result), "{result:?}");
}

#[test]
fn unset_clock_rejects_an_untrusted_chain() {
    let trusted = Ca::root("trusted root");
    let untrusted = Ca::root("untrusted root");
    let (leaf, _) = untrusted.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let verifier = trusted.verifier();
    let result = verify(&verifier, &[leaf], "dns.example", UNSET_CLOCK);
    assert!(is_unknown_issuer(&result), "{result:?}");

    // The same through an intermediate of the untrusted root.
    let intermediate = untrusted.intermediate("untrusted intermediate", BUILD, BUILD + 400 * DAY);
    let (leaf, _) = intermediate.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let result = verify(
        &verifier,
        &[leaf, intermediate.der.clone()],
        "dns.example",
        UNSET_CLOCK,
    );
    assert!(is_unknown_issuer(&result), "{result:?}");
}

#[test]
fn unset_clock_rejects_expired_before_build() {
    // The real time is at least the build time, so this one is expired
    // whatever the clock reads.
    let ca = Ca::root("test root");
    let (leaf, _) = ca.leaf("dns.example", BUILD - 60 * DAY, BUILD - 30 * DAY);
    let result = verify(&ca.verifier(), &[leaf], "dns.example", STALE_CLOCK);
    assert!(is_expired(&result), "{result:?}");

    let intermediate = ca.intermediate("old intermediate", BUILD - 400 * DAY, BUILD - DAY);
    let (leaf, _) = intermediate.leaf("dns.example", BUILD - 10 * DAY, BUILD + 31 * DAY);
    let result = verify(
        &ca.verifier(),
        &[leaf, intermediate.der.clone()],
        "dns.example",
        STALE_CLOCK,
    );
    assert!(is_expired(&result), "{result:?}");
}

#[test]
fn plausible_clock_enforces_validity_periods() {
    let ca = Ca::root("test root");
    let (leaf, _) = ca.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let verifier = ca.verifier();
    let chain = [leaf];

    // Not valid yet, at the build time and an hour after it.
    for clock in [BUILD, BUILD + 3600] {
        assert!(!verifier.clock_is_implausible(at(clock)));
        let result = verify(&verifier, &chain, "dns.example", clock);
        assert!(is_not_valid_yet(&result), "clock {clock}: {result:?}");
    }
    // Valid.
    let result = verify(&verifier, &chain, "dns.example", BUILD + 2 * DAY);
    assert!(result.is_ok(), "{result:?}");
    // Expired.
    let result = verify(&verifier, &chain, "dns.example", BUILD + 60 * DAY);
    assert!(is_expired(&result), "{result:?}");
    // Once the clock is set, the same verifier enforces the period again
    // without being rebuilt.
    assert!(verify(&verifier, &chain, "dns.example", UNSET_CLOCK).is_ok());
    let result = verify(&verifier, &chain, "dns.example", BUILD + 3600);
    assert!(is_not_valid_yet(&result), "{result:?}");
}

#[test]
fn build_time_is_embedded() {
    let built = build_time().as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Later than this code was written, and not in the future unless the
    // build used SOURCE_DATE_EPOCH.
    assert!(
        built >= 1_764_547_200,
        "build time {built} is before 2025-12-01"
    );
    if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
        assert!(built <= now, "build time {built} is after now {now}");
    }
    let root = Ca::root("test root");
    let mut roots = RootCertStore::empty();
    roots.add(root.der.clone()).unwrap();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    assert_eq!(ClockAwareVerifier::new(inner).build_time().as_secs(), built);
}

/// A clock fixed at one time, as a rustls time provider.
#[derive(Debug)]
struct FixedClock(u64);

impl rustls::time_provider::TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(at(self.0))
    }
}

/// Runs one TLS 1.3 handshake over loopback against a server presenting
/// `chain`, with the client's clock fixed at `clock`.
async fn handshake(
    root: &Ca,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    server: &str,
    clock: u64,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await
    });

    let client_config =
        rustls::ClientConfig::builder_with_details(provider(), Arc::new(FixedClock(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(root.verifier()))
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let result = async {
        let mut tls = connector.connect(name(server), tcp).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        assert_eq!(&byte, b"x");
        Ok(())
    }
    .await;
    let served = tokio::time::timeout(Duration::from_secs(10), server_task).await;
    if result.is_ok() {
        served.expect("server finished").unwrap()?;
    }
    result
}

#[tokio::test]
async fn loopback_handshake_follows_the_clock() {
    let root = Ca::root("test root");
    let intermediate = root.intermediate("test intermediate", BUILD, BUILD + 400 * DAY);
    let (leaf, key) = intermediate.leaf("dns.example", BUILD + DAY, BUILD + 31 * DAY);
    let chain = vec![leaf, intermediate.der.clone()];

    handshake(
        &root,
        chain.clone(),
        key.clone_key(),
        "dns.example",
        UNSET_CLOCK,
    )
    .await
    .expect("unset clock: not-yet-valid certificate accepted");

    let error = handshake(
        &root,
        chain.clone(),
        key.clone_key(),
        "other.example",
        UNSET_CLOCK,
    )
    .await
    .expect_err("unset clock: wrong name rejected");
    assert!(error.to_string().contains("not valid for name"), "{error}");

    let error = handshake(&root, chain, key, "dns.example", BUILD + 3600)
        .await
        .expect_err("set clock: not-yet-valid certificate rejected");
    assert!(error.to_string().contains("not valid yet"), "{error}");
}
