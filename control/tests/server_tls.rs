//! DNS over TLS listener (RFC 7858) against kdig, dig and dnspython. A
//! rustls client checks what the tools cannot show: out-of-order pipelined
//! answers (RFC 7766 section 7), padding to 468-byte blocks (RFC 8467
//! section 4.1), the keepalive option (RFC 7828) and a certificate swapped
//! while connections stay open.

mod server_support;

use std::time::{Duration, Instant};

use dnsgate::resolver::server::{TlsMaterial, Transport, generate_self_signed};
use server_support::*;
use tokio::io::AsyncWriteExt;

const OPTION_KEEPALIVE: u16 = 11;
const OPTION_PADDING: u16 = 12;

fn tool_args(server: &TestServer, transport: Transport, extra: &[&str], name: &str) -> Vec<String> {
    let mut args = vec![
        "@127.0.0.1".to_owned(),
        "-p".to_owned(),
        server.port(transport),
        format!("+tls-ca={}", server.cert_path.display()),
        format!("+tls-hostname={TLS_NAME}"),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args.push(name.to_owned());
    args.push("A".to_owned());
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_tls_gets_padded_answer() {
    if !tool_available("kdig", &["--version"]) {
        return;
    }
    let server = TestServer::start().await;
    let args = tool_args(
        &server,
        Transport::Tls,
        &["+tls", "+padding", "+time=5", "+retry=0"],
        "kdig.example.test",
    );
    let output = run_client("kdig", &args, &[]).await;
    assert_dig_answer(&output, "kdig.example.test.");
    assert!(
        output.contains("PADDING"),
        "kdig shows no padding option:\n{output}"
    );
    assert_eq!(server.listeners.stats().tls.responses, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_tls_gets_answer() {
    if !tool_available("dig", &["-v"]) {
        return;
    }
    let server = TestServer::start().await;
    let args = tool_args(
        &server,
        Transport::Tls,
        &["+tls", "+time=5", "+tries=1"],
        "dig.example.test",
    );
    let output = run_client("dig", &args, &[]).await;
    assert_dig_answer(&output, "dig.example.test.");
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnspython_tls_gets_answer() {
    if !dnspython_available() {
        return;
    }
    let server = TestServer::start().await;
    let script = format!(
        r#"
import dns.message, dns.query
q = dns.message.make_query("python.example.test.", "A", use_edns=0)
r = dns.query.tls(q, "127.0.0.1", port={port}, timeout=10, verify="{ca}", server_hostname="{name}")
assert r.id == q.id, (r.id, q.id)
print(r.answer[0].to_text())
print("padded" if len(r.to_wire()) % 468 == 0 else "unpadded", len(r.to_wire()))
"#,
        port = server.port(Transport::Tls),
        ca = server.cert_path.display(),
        name = TLS_NAME,
    );
    let output = run_client("python3", &["-c".to_owned(), script], &[]).await;
    assert_dig_answer(&output, "python.example.test.");
    assert!(output.contains("padded"), "{output}");
    assert!(
        !output.contains("unpadded"),
        "EDNS response over DoT not padded: {output}"
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_pipelined_answers_rfc7766_arrive_out_of_order() {
    let server = TestServer::start().await;
    let mut stream = connect_tls(
        server.addr(Transport::Tls),
        client_tls(&server.cert_pem, b"dot"),
    )
    .await;

    let names = [
        "slow.example.test.",
        "fast1.example.test.",
        "fast2.example.test.",
    ];
    let mut batch = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let message = query(name, 100 + index as u16, None);
        batch.extend_from_slice(&(message.len() as u16).to_be_bytes());
        batch.extend_from_slice(&message);
    }
    stream.write_all(&batch).await.unwrap();
    stream.flush().await.unwrap();

    let mut order = Vec::new();
    for _ in names {
        let response = parse(
            &read_framed(&mut stream)
                .await
                .expect("connection closed early"),
        );
        let index = usize::from(response.id() - 100);
        assert_answer(&response, names[index], response.id());
        order.push(index);
    }
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], 0, "slow answer was not last: order {order:?}");
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_padding_rfc8467_only_with_edns() {
    let server = TestServer::start().await;
    let mut stream = connect_tls(
        server.addr(Transport::Tls),
        client_tls(&server.cert_pem, b"dot"),
    )
    .await;

    for (id, name) in [(1u16, "a.example.test."), (2, "big.example.test.")] {
        write_framed(&mut stream, &query(name, id, Some(&[]))).await;
        let bytes = read_framed(&mut stream).await.unwrap();
        assert_eq!(
            bytes.len() % 468,
            0,
            "{name}: {}-byte response not a multiple of 468",
            bytes.len()
        );
        let response = parse(&bytes);
        assert_answer(&response, name, id);
        assert!(edns_option(&response, OPTION_PADDING).is_some());
    }

    write_framed(&mut stream, &query("plain.example.test.", 3, None)).await;
    let response = parse(&read_framed(&mut stream).await.unwrap());
    assert!(
        response.extensions().is_none(),
        "response to a query without EDNS carries OPT"
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_keepalive_rfc7828_echoed_with_padding() {
    let server = TestServer::start().await;
    let mut stream = connect_tls(
        server.addr(Transport::Tls),
        client_tls(&server.cert_pem, b"dot"),
    )
    .await;
    write_framed(
        &mut stream,
        &query("ka.example.test.", 11, Some(&[(OPTION_KEEPALIVE, vec![])])),
    )
    .await;
    let bytes = read_framed(&mut stream).await.unwrap();
    let response = parse(&bytes);
    assert_eq!(
        edns_option(&response, OPTION_KEEPALIVE),
        Some(100u16.to_be_bytes().to_vec())
    );
    assert_eq!(bytes.len() % 468, 0);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_certificate_reload_keeps_open_connections() {
    let server = TestServer::start().await;
    let mut open = connect_tls(
        server.addr(Transport::Tls),
        client_tls(&server.cert_pem, b"dot"),
    )
    .await;

    let (new_cert, new_key) = generate_self_signed(&[TLS_NAME.to_owned()], &[]).unwrap();
    server
        .tls
        .reload(TlsMaterial::from_pem(&new_cert, &new_key).unwrap());

    // The connection opened before the swap still works.
    write_framed(&mut open, &query("before.example.test.", 21, None)).await;
    assert_answer(
        &parse(&read_framed(&mut open).await.unwrap()),
        "before.example.test.",
        21,
    );

    // New full handshakes present the new certificate: the old trust anchor
    // fails and the new one succeeds. A fresh client configuration has no
    // session ticket, which would resume without a certificate.
    let tcp = tokio::net::TcpStream::connect(server.addr(Transport::Tls))
        .await
        .unwrap();
    let fresh_old_client = client_tls(&server.cert_pem, b"dot");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(fresh_old_client));
    let name = rustls::pki_types::ServerName::try_from(TLS_NAME).unwrap();
    assert!(
        connector.connect(name, tcp).await.is_err(),
        "old certificate still served"
    );

    let mut fresh = connect_tls(server.addr(Transport::Tls), client_tls(&new_cert, b"dot")).await;
    write_framed(&mut fresh, &query("after.example.test.", 22, None)).await;
    assert_answer(
        &parse(&read_framed(&mut fresh).await.unwrap()),
        "after.example.test.",
        22,
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stalled_handshake_times_out() {
    let mut config = dnsgate::resolver::server::ServerConfig::default();
    config.limits.handshake_timeout_ms = 200;
    let server = TestServer::start_with(config).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr(Transport::Tls))
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "silent client not disconnected: {read:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(server.listeners.stats().tls.handshake_failures, 1);
    server.listeners.shutdown().await;
}
