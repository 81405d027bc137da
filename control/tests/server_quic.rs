//! DNS over QUIC listener (RFC 9250) against kdig and dnspython, and a
//! quinn client for many concurrent streams, the DoQ error codes, padding
//! and the connection limit.

mod server_support;

use std::sync::Arc;

use dnsgate::resolver::server::{ServerConfig, Transport, doq_error_code};
use server_support::*;

const OPTION_PADDING: u16 = 12;

async fn connect(server: &TestServer) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quic_client(&server.cert_pem);
    let connection = endpoint
        .connect(server.addr(Transport::Quic), TLS_NAME)
        .unwrap()
        .await
        .expect("QUIC handshake failed");
    (endpoint, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_quic_gets_answer() {
    if !tool_available("kdig", &["--version"]) {
        return;
    }
    let server = TestServer::start().await;
    let args: Vec<String> = vec![
        "@127.0.0.1".into(),
        "-p".into(),
        server.port(Transport::Quic),
        // kdig applies options in order, and `+tls-ca` selects TLS over TCP,
        // so `+quic` must come after it.
        format!("+tls-ca={}", server.cert_path.display()),
        format!("+tls-hostname={TLS_NAME}"),
        "+quic".into(),
        "+time=5".into(),
        "+retry=0".into(),
        "kdig.example.test".into(),
        "A".into(),
    ];
    let output = run_client("kdig", &args, &[]).await;
    assert_dig_answer(&output, "kdig.example.test.");
    assert_eq!(server.listeners.stats().quic.responses, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnspython_quic_gets_answer() {
    if !dnspython_available() {
        return;
    }
    let server = TestServer::start().await;
    let script = format!(
        r#"
import dns.message, dns.query
q = dns.message.make_query("python.example.test.", "A", use_edns=0)
r = dns.query.quic(q, "127.0.0.1", port={port}, timeout=10, verify="{ca}", server_hostname="{name}")
assert r.id == 0, r.id
print(r.answer[0].to_text())
"#,
        port = server.port(Transport::Quic),
        ca = server.cert_path.display(),
        name = TLS_NAME,
    );
    let output = run_client("python3", &["-c".to_owned(), script], &[]).await;
    assert_dig_answer(&output, "python.example.test.");
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doq_many_concurrent_streams_rfc9250_section_4_2() {
    const STREAMS: usize = 300;
    let mut config = ServerConfig::default();
    config.limits.max_streams_per_connection = 16;
    let server = TestServer::start_with(config).await;
    let (_endpoint, connection) = connect(&server).await;

    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..STREAMS {
        let connection = connection.clone();
        tasks.spawn(async move {
            let name = format!("s{index}.example.test.");
            let edns = if index % 2 == 0 { Some(&[][..]) } else { None };
            let response = doq_exchange(&connection, &query(&name, 0, edns)).await;
            (index, name, response)
        });
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, name, response) = joined.unwrap();
        let bytes = response.unwrap_or_else(|error| panic!("stream {index} failed: {error}"));
        let message = parse(&bytes);
        assert_answer(&message, &name, 0);
        if index % 2 == 0 {
            assert_eq!(
                bytes.len() % 468,
                0,
                "stream {index}: {} bytes",
                bytes.len()
            );
            assert!(edns_option(&message, OPTION_PADDING).is_some());
        } else {
            assert!(message.extensions().is_none());
        }
        answered += 1;
    }
    assert_eq!(answered, STREAMS);
    let stats = server.listeners.stats();
    assert_eq!(stats.quic.responses, STREAMS as u64);
    assert_eq!(stats.quic.connections_accepted, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doq_nonzero_id_rfc9250_closes_with_protocol_error() {
    let server = TestServer::start().await;
    let (_endpoint, connection) = connect(&server).await;
    let result = doq_exchange(&connection, &query("bad.example.test.", 4321, None)).await;
    assert!(result.is_err(), "query with ID 4321 was answered");
    match connection.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, doq_error_code::PROTOCOL_ERROR);
        }
        other => panic!("connection closed with {other:?}, expected DOQ_PROTOCOL_ERROR"),
    }
    assert_eq!(server.listeners.stats().quic.malformed, 1);

    // Other connections are unaffected.
    let (_endpoint, healthy) = connect(&server).await;
    let bytes = doq_exchange(&healthy, &query("good.example.test.", 0, None))
        .await
        .unwrap();
    assert_answer(&parse(&bytes), "good.example.test.", 0);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doq_dropped_query_resets_stream() {
    let server = TestServer::start().await;
    let (_endpoint, connection) = connect(&server).await;
    let error = doq_exchange(&connection, &query("drop.example.test.", 0, None))
        .await
        .unwrap_err();
    assert!(
        error.contains("reset") && error.contains('3'),
        "expected a reset with DOQ_REQUEST_CANCELLED, got: {error}"
    );
    // The connection stays usable.
    let bytes = doq_exchange(&connection, &query("next.example.test.", 0, None))
        .await
        .unwrap();
    assert_answer(&parse(&bytes), "next.example.test.", 0);
    assert_eq!(server.listeners.stats().quic.dropped, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doq_per_client_connection_limit_refuses() {
    let mut config = ServerConfig::default();
    config.limits.max_connections_per_client = 1;
    let server = TestServer::start_with(config).await;
    let (_first_endpoint, first) = connect(&server).await;
    doq_exchange(&first, &query("one.example.test.", 0, None))
        .await
        .unwrap();

    let second_endpoint = quic_client(&server.cert_pem);
    let second = second_endpoint
        .connect(server.addr(Transport::Quic), TLS_NAME)
        .unwrap()
        .await;
    assert!(
        second.is_err(),
        "second connection from the same client accepted"
    );
    assert_eq!(server.listeners.stats().quic.rejected, 1);

    let bytes = doq_exchange(&first, &query("two.example.test.", 0, None))
        .await
        .unwrap();
    assert_answer(&parse(&bytes), "two.example.test.", 0);
    drop(Arc::new(second_endpoint));
    server.listeners.shutdown().await;
}
