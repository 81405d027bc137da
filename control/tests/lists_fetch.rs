//! List downloads against a local HTTP server on 127.0.0.1: the first
//! download, a conditional refresh that gets 304 (RFC 9110 §15.4.5),
//! the cached copy still serving after the server is gone, and HTTPS with
//! certificate verification.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, mpsc};
use std::thread;

use dnsgate::lists::{
    Budget, HttpFetcher, ListFetcher, ListFormat, ListRole, SourceSpec, load_and_compile_with,
};
use dnsgate::policy::{Decision, Policy};

const LIST: &str = "! test list\n||fetched.example^\n||other.example^\n";
const ETAG: &str = "\"list-v1\"";

/// Serves `LIST` for `requests` connections, then stops. The first response
/// uses chunked encoding, and a conditional request with the current ETag
/// gets 304. Sends each request's header lines and the returned status.
fn serve(
    listener: TcpListener,
    requests: usize,
    seen: mpsc::Sender<(Vec<String>, u16)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for index in 0..requests {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read request");
                let line = line.trim_end().to_owned();
                if line.is_empty() {
                    break;
                }
                headers.push(line);
            }
            let conditional = headers
                .iter()
                .any(|line| line.eq_ignore_ascii_case(&format!("If-None-Match: {ETAG}")));
            let mut stream = stream;
            let status = if conditional {
                write!(
                    stream,
                    "HTTP/1.1 304 Not Modified\r\nETag: {ETAG}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                304
            } else if index == 0 {
                let (head, tail) = LIST.split_at(10);
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nETag: {ETAG}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{head}\r\n{:x}\r\n{tail}\r\n0\r\n\r\n",
                    head.len(),
                    tail.len()
                )
                .unwrap();
                200
            } else {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nETag: {ETAG}\r\nContent-Length: {}\r\n\r\n{LIST}",
                    LIST.len()
                )
                .unwrap();
                200
            };
            seen.send((headers, status)).unwrap();
        }
    })
}

#[test]
fn conditional_refresh_and_cache_survive_server() {
    let cache = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/lists/test.txt", listener.local_addr().unwrap());
    let (sender, seen) = mpsc::channel();
    let server = serve(listener, 2, sender);
    let fetcher = HttpFetcher::new(cache.path()).with_timeout(std::time::Duration::from_secs(5));

    let first = fetcher.fetch(&url).expect("first download");
    assert_eq!(std::fs::read_to_string(&first.path).unwrap(), LIST);
    let (headers, status) = seen.recv().unwrap();
    assert_eq!(status, 200);
    assert!(
        !headers.iter().any(|line| line.starts_with("If-None-Match")),
        "{headers:?}"
    );
    assert!(first.last_update.is_some());

    let second = fetcher.fetch(&url).expect("conditional refresh");
    let (headers, status) = seen.recv().unwrap();
    assert_eq!(status, 304, "the refresh must be conditional: {headers:?}");
    assert_eq!(second.path, first.path);
    assert_eq!(
        second.last_update, first.last_update,
        "a 304 does not change the update time"
    );
    assert_eq!(std::fs::read_to_string(&second.path).unwrap(), LIST);

    // The server has served its two requests and is gone.
    server.join().unwrap();
    let third = fetcher
        .fetch(&url)
        .expect("the cached copy serves without the server");
    assert_eq!(std::fs::read_to_string(&third.path).unwrap(), LIST);

    let spec = SourceSpec::new(url.clone(), ListFormat::Auto, ListRole::Block);
    let compiled = load_and_compile_with(&[spec], &Budget::default(), &fetcher)
        .expect("lists load from the cache");
    assert_eq!(compiled.reports[0].name, url);
    assert_eq!(compiled.reports[0].accepted, 2);
    let policy = Policy::new(compiled).unwrap();
    assert!(matches!(
        policy.decide("www.fetched.example", 1, 1),
        Decision::Block { .. }
    ));
}

#[test]
fn unreachable_server_without_cache_fails() {
    let cache = tempfile::tempdir().unwrap();
    // Bind and drop a listener, so the port is very likely closed.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{address}/list.txt");
    let fetcher = HttpFetcher::new(cache.path()).with_timeout(std::time::Duration::from_secs(2));
    let error = fetcher.fetch(&url).unwrap_err();
    assert!(error.to_string().contains(&url), "{error}");

    let spec = SourceSpec::new(url, ListFormat::Auto, ListRole::Block);
    let message = load_and_compile_with(&[spec], &Budget::default(), &fetcher)
        .unwrap_err()
        .to_string();
    assert!(message.contains("failed to fetch list"), "{message}");
}

#[test]
fn url_source_without_fetcher_is_rejected() {
    let spec = SourceSpec::new(
        "https://lists.invalid/list.txt",
        ListFormat::Auto,
        ListRole::Block,
    );
    let message = dnsgate::lists::load_and_compile(&[spec], &Budget::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("need a fetcher"), "{message}");
}

#[expect(
    deprecated,
    reason = "dnsgate uses the ring provider; rustls deprecates it only for lacking post-quantum key exchange"
)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[test]
fn https_download_checks_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server_config = rustls::ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let server_config = Arc::new(server_config);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/list.txt", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        // Two connections: one from a client that trusts the certificate,
        // one from a client that does not and aborts the handshake.
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            let connection = rustls::ServerConnection::new(server_config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            if !request.ends_with(b"\r\n\r\n") {
                continue;
            }
            write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{LIST}",
                LIST.len()
            )
            .unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        }
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let cache = tempfile::tempdir().unwrap();
    let trusting = HttpFetcher::new(cache.path())
        .with_timeout(std::time::Duration::from_secs(5))
        .with_tls_config(Arc::new(client_config));
    let fetched = trusting.fetch(&url).expect("HTTPS download");
    assert_eq!(std::fs::read_to_string(&fetched.path).unwrap(), LIST);

    // The built-in Mozilla roots do not include the test certificate.
    let other_cache = tempfile::tempdir().unwrap();
    let strict =
        HttpFetcher::new(other_cache.path()).with_timeout(std::time::Duration::from_secs(5));
    let error = strict.fetch(&url).unwrap_err();
    assert!(error.to_string().contains("failed to download"), "{error}");
    server.join().unwrap();
}
