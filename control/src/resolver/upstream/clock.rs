//! Certificate checks for upstreams on a router whose clock is not set yet.
//!
//! Most routers have no battery-backed clock: until NTP runs they boot at
//! the Unix epoch or at the time their firmware was made. NTP needs its
//! servers' addresses, and these come through dnsgate's encrypted upstreams,
//! whose certificates would all look "not valid yet" under such a clock.
//!
//! [`ClockAwareVerifier`] breaks that loop; its documentation says
//! precisely what it checks while the clock is not set.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// Seconds since the Unix epoch at which this binary was built, set by
/// `build.rs` from `SOURCE_DATE_EPOCH` or the time of the build.
const BUILD_UNIX: &str = env!("DNSGATE_BUILD_UNIX");

/// Returns the build time of this binary. A clock that reads earlier than
/// this has not been set since boot.
pub fn build_time() -> UnixTime {
    let secs = BUILD_UNIX.trim().parse::<u64>().unwrap_or(0);
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

/// Clock state seen by the last handshake of any upstream, kept so that a
/// change is logged once rather than on every handshake.
static CLOCK_STATE: AtomicU8 = AtomicU8::new(CLOCK_UNKNOWN);
const CLOCK_UNKNOWN: u8 = 0;
const CLOCK_IMPLAUSIBLE: u8 = 1;
const CLOCK_PLAUSIBLE: u8 = 2;

/// A server certificate verifier that checks names and chains as the
/// wrapped [`WebPkiServerVerifier`] does, but leaves out validity periods
/// while the clock reads earlier than a given build time.
///
/// Routers without a battery-backed clock boot with a time in the past,
/// and NTP needs the upstreams to find its servers. While the time rustls
/// reports is earlier than the build time of this binary, which is
/// certainly earlier than the real time, this verifier stops enforcing
/// certificate validity periods and keeps every other check. As soon as the clock reads a plausible time,
/// the next handshake is checked in full again; no restart is needed.
///
/// What is checked while the clock is implausible:
///
/// - the chain from the end-entity certificate up to a trusted root, with
///   every signature, the key usages and the name constraints;
/// - that the end-entity certificate is valid for the upstream's TLS name;
/// - that no certificate in the chain expired before the build time: the
///   real time is at least that, so such a certificate is expired for sure.
///
/// What is not checked while the clock is implausible:
///
/// - that the certificates are already valid (notBefore) and not yet
///   expired (notAfter) at the real time, which the router cannot know.
///   The chain is checked as of the earliest moment, no earlier than the
///   build time, at which the end entity and every intermediate the server
///   sent are all valid. If the server sends an unrelated extra certificate
///   that makes this window empty, the check is repeated as of the end
///   entity's own notBefore (or the build time, if later), so that the
///   certificates in the chain itself are then the ones that count.
///
/// A stolen certificate that has since expired is therefore accepted during
/// this window, as long as it expired after the build time. This is the
/// price of resolving the NTP servers' names; the window closes when the
/// clock is set, and a warning says so in the log.
///
/// The clock is the `now` that rustls passes to
/// [`ServerCertVerifier::verify_server_cert`], which comes from the
/// client configuration's time provider; tests pass their own. A warning
/// is logged once when a handshake finds the clock unset, and a note when
/// a later one finds it set.
///
/// NOTE: connections already open, and TLS sessions resumed from tickets
/// issued while the clock was unset, are not checked again once it is set.
pub struct ClockAwareVerifier {
    inner: Arc<WebPkiServerVerifier>,
    build_time: UnixTime,
    /// Clock state for logging, which is [`CLOCK_STATE`] except in tests of
    /// the logging.
    clock_state: &'static AtomicU8,
}

impl ClockAwareVerifier {
    /// Wraps `inner`, taking the build time of this binary as the earliest
    /// plausible time.
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self::with_build_time(inner, build_time())
    }

    /// Wraps `inner`, taking `build_time` as the earliest plausible time.
    pub fn with_build_time(inner: Arc<WebPkiServerVerifier>, build_time: UnixTime) -> Self {
        Self {
            inner,
            build_time,
            clock_state: &CLOCK_STATE,
        }
    }

    /// Returns the earliest plausible time.
    pub fn build_time(&self) -> UnixTime {
        self.build_time
    }

    /// Returns whether `now` is before the build time, so that validity
    /// periods are left out.
    pub fn clock_is_implausible(&self, now: UnixTime) -> bool {
        now.as_secs() < self.build_time.as_secs()
    }

    /// Returns the times at which to check the chain while the clock is
    /// implausible, in the order to try them (see the type's documentation).
    fn substitute_times(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Vec<UnixTime> {
        let floor = self.build_time.as_secs();
        // The inner verifier rejects a certificate that does not parse, so
        // the time it is checked at does not matter then.
        let Some(end_entity_start) = not_before(end_entity) else {
            return vec![self.build_time];
        };
        let chain_start = intermediates
            .iter()
            .filter_map(|cert| not_before(cert))
            .fold(end_entity_start, u64::max);
        let mut times = vec![chain_start.max(floor)];
        if chain_start != end_entity_start {
            times.push(end_entity_start.max(floor));
        }
        times
            .into_iter()
            .map(|secs| UnixTime::since_unix_epoch(Duration::from_secs(secs)))
            .collect()
    }

    fn note_clock(&self, implausible: bool, now: UnixTime) {
        if implausible {
            if self.clock_state.swap(CLOCK_IMPLAUSIBLE, Ordering::Relaxed) != CLOCK_IMPLAUSIBLE {
                tracing::warn!(
                    clock_unix = now.as_secs(),
                    build_unix = self.build_time.as_secs(),
                    "system clock reads earlier than this binary's build time, so it has not been set; \
                     upstream certificates are checked for name and chain but not for their validity \
                     period until the clock is set (by NTP, for example)"
                );
            }
        } else if self.clock_state.swap(CLOCK_PLAUSIBLE, Ordering::Relaxed) == CLOCK_IMPLAUSIBLE {
            tracing::info!(
                clock_unix = now.as_secs(),
                "system clock is set; upstream certificate validity periods are enforced again"
            );
        }
    }
}

/// Reads the notBefore of a DER certificate in seconds since the Unix
/// epoch, or `None` if it does not parse. Times before 1970 count as 1970.
fn not_before(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(u64::try_from(parsed.validity().not_before.timestamp()).unwrap_or(0))
}

/// Returns whether rustls rejected a certificate only for its validity
/// period.
fn is_time_error(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidCertificate(
            CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }
        )
    )
}

impl fmt::Debug for ClockAwareVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockAwareVerifier")
            .field("build_unix", &self.build_time.as_secs())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ClockAwareVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let implausible = self.clock_is_implausible(now);
        self.note_clock(implausible, now);
        if !implausible {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let mut result = Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        for time in self.substitute_times(end_entity, intermediates) {
            result = self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                time,
            );
            match &result {
                Err(error) if is_time_error(error) => continue,
                _ => break,
            }
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use rustls::RootCertStore;

    use super::*;

    const BUILD: u64 = 1_767_225_600;

    /// Collects what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    #[expect(
        deprecated,
        reason = "dnsgate uses the ring provider on purpose; see tls.rs"
    )]
    fn warns_once_while_the_clock_is_unset_and_notes_when_it_is_set() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["dns.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let mut verifier = ClockAwareVerifier::with_build_time(
            inner,
            UnixTime::since_unix_epoch(Duration::from_secs(BUILD)),
        );
        // A state of its own, so other tests' handshakes do not interfere.
        verifier.clock_state = Box::leak(Box::new(AtomicU8::new(CLOCK_UNKNOWN)));

        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let name = ServerName::try_from("dns.example").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            for secs in [0, 1_000, BUILD + 10, BUILD + 20] {
                let now = UnixTime::since_unix_epoch(Duration::from_secs(secs));
                // webpki rejects this self-signed certificate as an end
                // entity because it is also the trust anchor. Only the
                // logging matters here.
                let _ = verifier.verify_server_cert(cert.der(), &[], &name, &[], now);
            }
        });

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("WARN").count(), 1, "{log}");
        assert!(log.contains("has not been set"), "{log}");
        assert!(log.contains("until the clock is set"), "{log}");
        assert_eq!(log.matches("enforced again").count(), 1, "{log}");
    }
}
