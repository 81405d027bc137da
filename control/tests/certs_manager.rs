//! The certificate manager. The self-signed certificate for opportunistic
//! discovery (RFC 9462 §4) is generated on first start with private file
//! permissions, reused on the next, and generated again for new addresses.
//! A supplied certificate is reloaded by the file watcher while a DoT
//! connection stays open, and its expiry gives a warning.

mod server_support;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dnsgate::certs::{CertManager, CertMode};
use dnsgate::config::TlsSettings;
use dnsgate::resolver::server::{ListenAddrs, ServerConfig, spawn_listeners};
use server_support::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_on_first_start_then_reused() {
    let state = tempfile::tempdir().unwrap();
    let settings = TlsSettings { resolver_name: Some("router.lan".into()), ..TlsSettings::default() };
    let ips = [ip("192.168.1.1"), ip("fd00::1")];

    let first = CertManager::load(&settings, state.path(), &ips).unwrap();
    let cert_path = state.path().join("tls/cert.pem");
    let key_path = state.path().join("tls/key.pem");
    assert_eq!(first.cert_path(), cert_path);
    assert_eq!(mode_of(&cert_path), 0o600);
    assert_eq!(mode_of(&key_path), 0o600);
    assert_eq!(mode_of(&state.path().join("tls")), 0o700);
    assert!(std::fs::read_to_string(&key_path).unwrap().contains("PRIVATE KEY"));

    let info = first.info();
    assert_eq!(info.mode, CertMode::Generated);
    assert!(info.self_signed);
    assert_eq!(info.dns_names, ["router.lan"]);
    assert_eq!(info.ips, ips);
    assert_eq!(info.expiry_warning(SystemTime::now()), None);

    let cert_before = std::fs::read(&cert_path).unwrap();
    let key_before = std::fs::read(&key_path).unwrap();
    let second = CertManager::load(&settings, state.path(), &ips[..1]).unwrap();
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert_before, "a restart must reuse the certificate");
    assert_eq!(std::fs::read(&key_path).unwrap(), key_before, "a restart must reuse the key");
    assert_eq!(second.info().ips, ips);
}

#[test]
fn generated_again_when_address_is_new() {
    let state = tempfile::tempdir().unwrap();
    let settings = TlsSettings::default();
    CertManager::load(&settings, state.path(), &[ip("192.168.1.1")]).unwrap();
    let cert_path = state.path().join("tls/cert.pem");
    let before = std::fs::read(&cert_path).unwrap();

    let manager = CertManager::load(&settings, state.path(), &[ip("192.168.1.1"), ip("10.0.0.1")]).unwrap();
    assert_ne!(std::fs::read(&cert_path).unwrap(), before);
    assert!(manager.info().ips.contains(&ip("10.0.0.1")));
    assert_eq!(manager.info().dns_names, ["dnsgate.lan"], "the default resolver name");
    assert_eq!(mode_of(&cert_path), 0o600);
}

#[test]
fn unusable_generated_file_is_replaced() {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("tls")).unwrap();
    std::fs::write(state.path().join("tls/cert.pem"), "not a certificate").unwrap();
    let manager = CertManager::load(&TlsSettings::default(), state.path(), &[ip("192.168.1.1")]).unwrap();
    assert_eq!(manager.info().ips, [ip("192.168.1.1")]);
}

/// Returns the (year, month, day) of a day count since 1970-01-01, for the
/// proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Writes a self-signed certificate for `TLS_NAME` and 127.0.0.1 that
/// expires `days_left` days from today.
fn write_supplied(dir: &Path, days_left: i64) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec![TLS_NAME.to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress(ip("127.0.0.1")));
    let today = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 / 86_400;
    let (year, month, day) = civil_from_days(today + days_left);
    params.not_after = rcgen::date_time_ymd(year, month, day);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("supplied-cert.pem");
    let key_path = dir.join("supplied-key.pem");
    // The key is written first, so the watcher never loads the new
    // certificate beside the old key except between two writes.
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    (cert.pem(), cert_path, key_path)
}

#[test]
fn expiry_within_fourteen_days_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_path, key_path) = write_supplied(dir.path(), 10);
    let settings = TlsSettings { cert_file: Some(cert_path), key_file: Some(key_path), ..TlsSettings::default() };
    let manager = CertManager::load(&settings, dir.path(), &[]).unwrap();
    let warning = manager.info().expiry_warning(SystemTime::now()).expect("no warning 10 days before expiry");
    assert!(warning.contains("expires in"), "{warning}");
    assert!(manager.log_expiry());

    let (_, cert_path, key_path) = write_supplied(dir.path(), 60);
    let settings = TlsSettings { cert_file: Some(cert_path), key_file: Some(key_path), ..TlsSettings::default() };
    let manager = CertManager::load(&settings, dir.path(), &[]).unwrap();
    assert_eq!(manager.info().expiry_warning(SystemTime::now()), None);
    assert!(!manager.log_expiry());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplied_reload_keeps_dot_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let (old_pem, cert_path, key_path) = write_supplied(dir.path(), 365);
    let settings = TlsSettings {
        cert_file: Some(cert_path.clone()),
        key_file: Some(key_path.clone()),
        ..TlsSettings::default()
    };
    let manager = Arc::new(CertManager::load(&settings, dir.path(), &[ip("127.0.0.1")]).unwrap());
    assert_eq!(manager.info().mode, CertMode::Supplied);
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let addrs = ListenAddrs { udp: vec![], tcp: vec![], tls: vec![loopback], quic: vec![], https: vec![] };
    let listeners = spawn_listeners(
        ServerConfig::default(),
        addrs,
        Some(manager.server_tls()),
        Arc::new(TestHandler::default()),
    )
    .await
    .unwrap();
    let address = listeners.local_addrs().tls[0];
    let watcher = manager.clone().spawn_watcher(Duration::from_millis(50));

    let mut open = connect_tls(address, client_tls(&old_pem, b"dot")).await;
    write_framed(&mut open, &query("before.example.test.", 1, None)).await;
    assert_answer(&parse(&read_framed(&mut open).await.unwrap()), "before.example.test.", 1);

    let not_after_before = manager.info().not_after_unix;
    let (new_pem, _, _) = write_supplied(dir.path(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.info().not_after_unix == not_after_before {
        assert!(Instant::now() < deadline, "the watcher did not load the new certificate within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    write_framed(&mut open, &query("after.example.test.", 2, None)).await;
    assert_answer(&parse(&read_framed(&mut open).await.unwrap()), "after.example.test.", 2);

    let mut fresh = connect_tls(address, client_tls(&new_pem, b"dot")).await;
    write_framed(&mut fresh, &query("fresh.example.test.", 3, None)).await;
    assert_answer(&parse(&read_framed(&mut fresh).await.unwrap()), "fresh.example.test.", 3);

    watcher.abort();
    listeners.shutdown().await;
}

#[test]
fn broken_supplied_pair_keeps_serving_old() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_path, key_path) = write_supplied(dir.path(), 365);
    let settings = TlsSettings { cert_file: Some(cert_path.clone()), key_file: Some(key_path), ..TlsSettings::default() };
    let manager = CertManager::load(&settings, dir.path(), &[]).unwrap();
    let before = manager.info();
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n").unwrap();
    let error = manager.reload_if_changed().expect_err("a broken certificate was loaded");
    assert!(error.to_string().contains("supplied-cert.pem"), "{error}");
    assert_eq!(manager.info(), before);
    assert!(!manager.reload_if_changed().unwrap(), "the same broken files are not retried until they change");
}
