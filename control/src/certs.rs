//! The certificate manager of the encrypted listeners.
//!
//! Without configured files it generates an ECDSA P-256 key and a
//! self-signed certificate on first start, naming the resolver name and
//! every LAN address, and keeps both under `<state_dir>/tls/` with mode
//! 0600. Later starts reuse them while they still name the resolver name
//! and the current addresses, and generate new ones otherwise. Clients use
//! such a certificate for opportunistic discovery (RFC 9462 §4).
//!
//! Supplied PEM files serve verified discovery (RFC 9462 §4). The
//! manager polls them and loads a changed pair into the running listeners;
//! open connections keep the certificate they were set up with.
//!
//! Expiry within [`EXPIRY_WARNING`] is a warning in the logs and in
//! [`CertInfo::expiry_warning`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::config::TlsSettings;
use crate::resolver::server::{ServerTls, TlsError, TlsMaterial, generate_self_signed};

/// Time before `notAfter` from which the expiry is a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often the watcher repeats an expiry warning in the logs.
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The source of the served certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertMode {
    /// Generated and self-signed, kept in the state directory.
    Generated,
    /// Supplied as `[tls] cert_file` and `key_file`.
    Supplied,
}

/// Names, addresses and expiry of the served end-entity certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The certificate's source.
    pub mode: CertMode,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among the subject alternative names.
    pub ips: Vec<IpAddr>,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Whether the issuer equals the subject.
    pub self_signed: bool,
}

impl CertInfo {
    /// Reads the names, addresses and expiry of a DER certificate.
    pub fn from_der(mode: CertMode, der: &[u8], origin: &Path) -> Result<Self, CertError> {
        let invalid = |reason: String| CertError::Invalid { path: origin.to_owned(), reason };
        let (_, certificate) = X509Certificate::from_der(der).map_err(|error| invalid(error.to_string()))?;
        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        let san = certificate.subject_alternative_name().map_err(|error| invalid(error.to_string()))?;
        for name in san.iter().flat_map(|extension| extension.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(name) => dns_names.push(name.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        ips.push(IpAddr::V4(Ipv4Addr::from(octets)));
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        ips.push(IpAddr::V6(Ipv6Addr::from(octets)));
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            mode,
            dns_names,
            ips,
            not_after_unix: certificate.validity().not_after.timestamp(),
            self_signed: certificate.subject() == certificate.issuer(),
        })
    }

    /// Returns whether a DNS name SAN matches `name`, a `*.` wildcard
    /// covering one label (RFC 6125 §6.4.3).
    pub fn covers_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(parent) => name.split_once('.').is_some_and(|(_, rest)| rest == parent),
            None => *pattern == name,
        })
    }

    /// Lists what the certificate does not name among `name` and `ips`.
    pub fn missing(&self, name: &str, ips: &[IpAddr]) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.covers_name(name) {
            missing.push(name.to_owned());
        }
        missing.extend(ips.iter().filter(|ip| !self.ips.contains(ip)).map(IpAddr::to_string));
        missing
    }

    /// Returns a warning when the certificate expires within
    /// [`EXPIRY_WARNING`] of `now`, or has expired.
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64);
        let remaining = self.not_after_unix.saturating_sub(now_unix);
        if remaining <= 0 {
            return Some(format!(
                "the TLS certificate expired {} days ago; clients that verify it will not connect until it is replaced",
                remaining.unsigned_abs() / 86_400
            ));
        }
        if remaining as u64 <= EXPIRY_WARNING.as_secs() {
            return Some(format!(
                "the TLS certificate expires in {} days; renew it and write the new files in place",
                remaining as u64 / 86_400
            ));
        }
        None
    }
}

/// Errors from loading, generating or storing the certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM files could not be read or do not form a usable pair.
    #[error("loading the certificate {path} failed: {source}")]
    Load {
        /// The certificate file.
        path: PathBuf,
        /// The error of rustls or the PEM parser.
        #[source]
        source: TlsError,
    },
    /// The certificate is not valid X.509.
    #[error("invalid certificate {path}: {reason}")]
    Invalid {
        /// The certificate file.
        path: PathBuf,
        /// The X.509 parser's reason.
        reason: String,
    },
    /// Generating a key and certificate failed.
    #[error("generating a self-signed certificate failed: {source}")]
    Generate {
        /// The generator's error.
        #[source]
        source: TlsError,
    },
    /// Writing the generated files failed.
    #[error("writing {path} failed: {source}; check that the state directory is writable")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Modification time and length of the certificate and key files, to see
/// when either was rewritten.
type FileStamp = [Option<(SystemTime, u64)>; 2];

/// Loads, generates and reloads the served certificate.
pub struct CertManager {
    tls: ServerTls,
    mode: CertMode,
    cert_path: PathBuf,
    key_path: PathBuf,
    info: ArcSwap<CertInfo>,
    stamp: Mutex<FileStamp>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CertManager")
            .field("mode", &self.mode)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// Loads the supplied files, or the generated certificate under
    /// `<state_dir>/tls/`, generating it when it is missing, unreadable or
    /// does not name `resolver_name` and every address in `ips`.
    pub fn load(settings: &TlsSettings, state_dir: &Path, ips: &[IpAddr]) -> Result<Self, CertError> {
        let resolver_name = settings.resolver_name();
        let (mode, cert_path, key_path) = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => (CertMode::Supplied, cert.clone(), key.clone()),
            _ => {
                let dir = state_dir.join("tls");
                (CertMode::Generated, dir.join("cert.pem"), dir.join("key.pem"))
            }
        };
        if mode == CertMode::Generated {
            ensure_generated(&cert_path, &key_path, &resolver_name, ips)?;
        }
        let stamp = file_stamp(&cert_path, &key_path);
        let (material, info) = load_pair(mode, &cert_path, &key_path)?;
        if mode == CertMode::Supplied {
            let missing = info.missing(&resolver_name, ips);
            if !missing.is_empty() {
                tracing::warn!(
                    path = %cert_path.display(),
                    ?missing,
                    "the supplied certificate does not name these; verified discovery fails for them"
                );
            }
        }
        let tls = ServerTls::new(material).map_err(|source| CertError::Load { path: cert_path.clone(), source })?;
        tracing::info!(
            mode = ?mode,
            path = %cert_path.display(),
            dns_names = ?info.dns_names,
            ips = ?info.ips,
            not_after_unix = info.not_after_unix,
            "TLS certificate loaded"
        );
        let manager = Self {
            tls,
            mode,
            cert_path,
            key_path,
            info: ArcSwap::from_pointee(info),
            stamp: Mutex::new(stamp),
        };
        manager.log_expiry();
        Ok(manager)
    }

    /// Returns the TLS configurations to hand to the listeners; they follow
    /// every reload.
    pub fn server_tls(&self) -> ServerTls {
        self.tls.clone()
    }

    /// Returns what the served certificate covers.
    pub fn info(&self) -> CertInfo {
        CertInfo::clone(&self.info.load())
    }

    /// Returns the certificate file in use.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Logs a warning when the certificate expires soon; returns whether
    /// it did.
    pub fn log_expiry(&self) -> bool {
        match self.info.load().expiry_warning(SystemTime::now()) {
            Some(warning) => {
                tracing::warn!(path = %self.cert_path.display(), "{warning}");
                true
            }
            None => false,
        }
    }

    /// Loads the supplied files again when either changed since the last
    /// look. Returns `Ok(true)` after a reload. A pair that fails to load
    /// leaves the served certificate in place, and is tried again after
    /// the next change. Generated certificates are never reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, CertError> {
        if self.mode != CertMode::Supplied {
            return Ok(false);
        }
        let stamp = file_stamp(&self.cert_path, &self.key_path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if *last == stamp {
                return Ok(false);
            }
            *last = stamp;
        }
        let (material, info) = load_pair(self.mode, &self.cert_path, &self.key_path)?;
        self.tls.reload(material);
        tracing::info!(
            path = %self.cert_path.display(),
            dns_names = ?info.dns_names,
            ips = ?info.ips,
            not_after_unix = info.not_after_unix,
            "TLS certificate reloaded"
        );
        self.info.store(Arc::new(info));
        self.log_expiry();
        Ok(true)
    }

    /// Spawns a task that calls [`Self::reload_if_changed`] every
    /// `interval` and repeats the expiry warning once a day.
    pub fn spawn_watcher(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_expiry_log = Instant::now();
            loop {
                ticker.tick().await;
                if let Err(error) = self.reload_if_changed() {
                    tracing::warn!(%error, "the changed certificate was not loaded; still serving the previous one");
                }
                if last_expiry_log.elapsed() >= EXPIRY_LOG_INTERVAL {
                    last_expiry_log = Instant::now();
                    self.log_expiry();
                }
            }
        })
    }
}

fn file_stamp(cert_path: &Path, key_path: &Path) -> FileStamp {
    let stamp = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    [stamp(cert_path), stamp(key_path)]
}

fn load_pair(mode: CertMode, cert_path: &Path, key_path: &Path) -> Result<(TlsMaterial, CertInfo), CertError> {
    let material = TlsMaterial::from_pem_files(cert_path, key_path)
        .map_err(|source| CertError::Load { path: cert_path.to_owned(), source })?;
    let end_entity = material.chain().first().ok_or_else(|| CertError::Invalid {
        path: cert_path.to_owned(),
        reason: "the file contains no certificate".into(),
    })?;
    let info = CertInfo::from_der(mode, end_entity.as_ref(), cert_path)?;
    Ok((material, info))
}

/// Keeps the generated pair when it loads and names everything needed,
/// and writes a new one otherwise.
fn ensure_generated(cert_path: &Path, key_path: &Path, resolver_name: &str, ips: &[IpAddr]) -> Result<(), CertError> {
    if cert_path.exists() || key_path.exists() {
        match load_pair(CertMode::Generated, cert_path, key_path) {
            Ok((_, info)) => {
                let missing = info.missing(resolver_name, ips);
                if missing.is_empty() {
                    return Ok(());
                }
                tracing::info!(?missing, "the generated certificate does not name these; generating a new one");
            }
            Err(error) => tracing::warn!(%error, "the generated certificate is unusable; generating a new one"),
        }
    }
    let (cert_pem, key_pem) =
        generate_self_signed(&[resolver_name.to_owned()], ips).map_err(|source| CertError::Generate { source })?;
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    write_private(dir, key_path, &key_pem)?;
    write_private(dir, cert_path, &cert_pem)?;
    tracing::info!(path = %cert_path.display(), name = resolver_name, ?ips, "generated a self-signed certificate");
    Ok(())
}

/// Writes `text` to `path` with mode 0600 through a temporary file and a
/// rename, so a crash never leaves half a file, in a directory of mode 0700.
fn write_private(dir: &Path, path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Write { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_error(dir))?;
    let temporary = path.with_extension("pem.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error(&temporary))?;
    file.write_all(text.as_bytes()).map_err(write_error(&temporary))?;
    file.sync_all().map_err(write_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str], ips: &[&str]) -> CertInfo {
        CertInfo {
            mode: CertMode::Supplied,
            dns_names: names.iter().map(|name| (*name).to_owned()).collect(),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            not_after_unix: 2_000_000_000,
            self_signed: false,
        }
    }

    #[test]
    fn rfc6125_wildcard_covers_one_label() {
        let certificate = info(&["*.example.net", "router.lan"], &[]);
        assert!(certificate.covers_name("dns.example.net."));
        assert!(!certificate.covers_name("a.dns.example.net"));
        assert!(!certificate.covers_name("example.net"));
        assert!(certificate.covers_name("ROUTER.lan"));
    }

    #[test]
    fn missing_lists_name_and_addresses() {
        let certificate = info(&["router.lan"], &["192.168.1.1"]);
        let ips: Vec<IpAddr> = vec!["192.168.1.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert_eq!(certificate.missing("other.lan", &ips), ["other.lan", "fd00::1"]);
        assert!(certificate.missing("router.lan", &ips[..1]).is_empty());
    }

    #[test]
    fn expiry_warning_inside_fourteen_days() {
        let certificate = info(&[], &[]);
        let at = |unix: i64| UNIX_EPOCH + Duration::from_secs(unix as u64);
        let day = 86_400;
        assert_eq!(certificate.expiry_warning(at(2_000_000_000 - 15 * day)), None);
        let soon = certificate.expiry_warning(at(2_000_000_000 - 13 * day)).unwrap();
        assert!(soon.contains("expires in 13 days"), "{soon}");
        let late = certificate.expiry_warning(at(2_000_000_000 + 2 * day)).unwrap();
        assert!(late.contains("expired 2 days ago"), "{late}");
    }
}
