//! Plain DNS listeners (UDP and TCP 53) against real clients (kdig, dig)
//! and raw sockets. The tests cover answers, UDP truncation (RFC 1035
//! section 4.2.1, RFC 6891 section 7), TCP pipelining and keepalive
//! (RFC 7766, RFC 7828), the idle timeout, malformed frames, connection
//! limits and shutdown.

mod server_support;

use std::time::Duration;

use dnsgate::resolver::server::{Limits, ServerConfig, Transport};
use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const OPTION_KEEPALIVE: u16 = 11;
const OPTION_PADDING: u16 = 12;

async fn udp_exchange(server: &TestServer, query: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(query, server.addr(Transport::Udp))
        .await
        .unwrap();
    let mut buffer = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buffer))
        .await
        .expect("no UDP response within 10 s")
        .unwrap();
    buffer.truncate(len);
    buffer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_udp_and_tcp_get_answer() {
    if !tool_available("kdig", &["--version"]) {
        return;
    }
    let server = TestServer::start().await;
    for (transport, flag) in [(Transport::Udp, "+notcp"), (Transport::Tcp, "+tcp")] {
        let args: Vec<String> = [
            "@127.0.0.1",
            "-p",
            &server.port(transport),
            flag,
            "+time=5",
            "+retry=0",
            "plain.example.test",
            "A",
        ]
        .map(String::from)
        .to_vec();
        let output = run_client("kdig", &args, &[]).await;
        assert_dig_answer(&output, "plain.example.test.");
        assert!(output.contains("NOERROR"), "{output}");
    }
    let stats = server.listeners.stats();
    assert_eq!(stats.udp.responses, 1);
    assert_eq!(stats.tcp.responses, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_udp_and_tcp_get_answer() {
    if !tool_available("dig", &["-v"]) {
        return;
    }
    let server = TestServer::start().await;
    for (transport, flag) in [(Transport::Udp, "+notcp"), (Transport::Tcp, "+tcp")] {
        let args: Vec<String> = [
            "@127.0.0.1",
            "-p",
            &server.port(transport),
            flag,
            "+time=5",
            "+tries=1",
            "dig.example.test",
            "A",
        ]
        .map(String::from)
        .to_vec();
        let output = run_client("dig", &args, &[]).await;
        assert_dig_answer(&output, "dig.example.test.");
    }
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_truncation_rfc1035_sets_tc_without_edns() {
    let server = TestServer::start().await;

    let response = udp_exchange(&server, &query("big.example.test.", 0x0101, None)).await;
    assert!(
        response.len() <= 512,
        "truncated response is {} bytes",
        response.len()
    );
    let message = parse(&response);
    assert!(message.truncated(), "TC not set");
    assert_eq!(message.id(), 0x0101);
    assert_eq!(message.queries().len(), 1, "question section lost");
    assert!(message.answers().is_empty());

    // RFC 6891 section 6.2.5: the EDNS payload size raises the limit.
    let response = udp_exchange(&server, &query("big.example.test.", 0x0102, Some(&[]))).await;
    let message = parse(&response);
    assert!(
        !message.truncated(),
        "{}-byte response truncated despite EDNS 1232",
        response.len()
    );
    assert_eq!(message.answers().len(), usize::from(BIG_ANSWER_RECORDS));
    assert!(response.len() > 512);

    // Plain UDP gets no padding even with EDNS.
    assert_eq!(edns_option(&message, OPTION_PADDING), None);
    assert_eq!(server.listeners.stats().udp.truncated, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_udp_sees_tc_flag() {
    if !tool_available("kdig", &["--version"]) {
        return;
    }
    let server = TestServer::start().await;
    // `+ignore` keeps kdig from retrying over TCP, which would go to the UDP
    // port number, where the test has no TCP listener.
    let args: Vec<String> = [
        "@127.0.0.1",
        "-p",
        &server.port(Transport::Udp),
        "+notcp",
        "+ignore",
        "+noedns",
        "+time=5",
        "+retry=0",
        "big.example.test",
        "A",
    ]
    .map(String::from)
    .to_vec();
    let output = run_client("kdig", &args, &[]).await;
    let flags_line = output
        .lines()
        .find(|line| line.contains("Flags:"))
        .unwrap_or_else(|| panic!("no flags line:\n{output}"));
    assert!(flags_line.contains(" tc"), "TC flag missing: {flags_line}");
    assert_eq!(server.listeners.stats().udp.truncated, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelining_rfc7766_answers_every_query() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    let mut batch = Vec::new();
    for id in 1..=5u16 {
        let message = query(&format!("q{id}.example.test."), id, None);
        batch.extend_from_slice(&(message.len() as u16).to_be_bytes());
        batch.extend_from_slice(&message);
    }
    stream.write_all(&batch).await.unwrap();

    let mut seen = Vec::new();
    for _ in 1..=5 {
        let response = parse(
            &read_framed(&mut stream)
                .await
                .expect("connection closed early"),
        );
        let id = response.id();
        assert_answer(&response, &format!("q{id}.example.test."), id);
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalive_rfc7828_echoed_only_when_sent() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();

    write_framed(
        &mut stream,
        &query("ka.example.test.", 7, Some(&[(OPTION_KEEPALIVE, vec![])])),
    )
    .await;
    let response = parse(&read_framed(&mut stream).await.unwrap());
    assert_answer(&response, "ka.example.test.", 7);
    let timeout = edns_option(&response, OPTION_KEEPALIVE).expect("keepalive option not echoed");
    let expected_units = (Limits::default().tcp_idle_timeout_ms / 100) as u16;
    assert_eq!(timeout, expected_units.to_be_bytes().to_vec());
    assert_eq!(
        edns_option(&response, OPTION_PADDING),
        None,
        "plain TCP must not be padded"
    );

    write_framed(&mut stream, &query("nka.example.test.", 8, Some(&[]))).await;
    let response = parse(&read_framed(&mut stream).await.unwrap());
    assert_eq!(edns_option(&response, OPTION_KEEPALIVE), None);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_idle_connection_rfc7766_closed() {
    let mut config = ServerConfig::default();
    config.limits.tcp_idle_timeout_ms = 200;
    let server = TestServer::start_with(config).await;
    let mut stream = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    write_framed(&mut stream, &query("idle.example.test.", 1, None)).await;
    assert!(read_framed(&mut stream).await.is_some());
    // The server closes; the read ends with EOF rather than timing out.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "connection not closed by the server: {read:?}"
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_malformed_frame_closes_only_its_connection() {
    let server = TestServer::start().await;
    let mut healthy = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    let mut broken = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();

    broken.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), broken.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "malformed connection left open: {read:?}"
    );

    write_framed(&mut healthy, &query("ok.example.test.", 9, None)).await;
    assert_answer(
        &parse(&read_framed(&mut healthy).await.unwrap()),
        "ok.example.test.",
        9,
    );
    assert_eq!(server.listeners.stats().tcp.malformed, 1);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_per_client_limit_rejects_extra_connection() {
    let mut config = ServerConfig::default();
    config.limits.max_connections_per_client = 2;
    let server = TestServer::start_with(config).await;
    let mut first = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    let mut second = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    // Both connections are open once each has returned a response.
    for (stream, id) in [(&mut first, 1u16), (&mut second, 2)] {
        write_framed(stream, &query("lim.example.test.", id, None)).await;
        assert!(read_framed(stream).await.is_some());
    }

    let mut third = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    let _ = third.write_all(&[0, 12]).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "third connection served: {read:?}"
    );

    let stats = server.listeners.stats();
    assert_eq!(stats.tcp.rejected, 1);
    assert_eq!(stats.tcp.connections_open, 2);

    write_framed(&mut first, &query("still.example.test.", 3, None)).await;
    assert_answer(
        &parse(&read_framed(&mut first).await.unwrap()),
        "still.example.test.",
        3,
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_response_from_client_is_ignored() {
    let server = TestServer::start().await;
    let mut response_bytes = query("loop.example.test.", 4, None);
    response_bytes[2] |= 0x80;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&response_bytes, server.addr(Transport::Udp))
        .await
        .unwrap();
    // A valid query afterwards is answered, and the QR=1 message counted.
    let answer = udp_exchange(&server, &query("after.example.test.", 5, None)).await;
    assert_answer(&parse(&answer), "after.example.test.", 5);
    assert_eq!(server.listeners.stats().udp.malformed, 1);
    assert_eq!(
        server
            .handler
            .handled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_listeners_and_connections() {
    let server = TestServer::start().await;
    let tcp_addr = server.addr(Transport::Tcp);
    let mut open = TcpStream::connect(tcp_addr).await.unwrap();
    write_framed(&mut open, &query("open.example.test.", 1, None)).await;
    assert!(read_framed(&mut open).await.is_some());

    tokio::time::timeout(Duration::from_secs(10), server.listeners.shutdown())
        .await
        .expect("shutdown did not finish");

    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), open.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "open connection survived shutdown: {read:?}"
    );
    assert!(
        TcpStream::connect(tcp_addr).await.is_err(),
        "TCP listener still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_rejects_missing_tls_and_busy_port() {
    use dnsgate::resolver::server::{ListenAddrs, ServerError, spawn_listeners};
    use std::sync::Arc;

    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let addrs = ListenAddrs {
        tls: vec![loopback],
        ..ListenAddrs::default()
    };
    let error = spawn_listeners(
        ServerConfig::default(),
        addrs,
        None,
        Arc::new(TestHandler::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ServerError::TlsMissing {
                transport: Transport::Tls,
                ..
            }
        ),
        "{error}"
    );

    let holder = std::net::TcpListener::bind(loopback).unwrap();
    let busy = holder.local_addr().unwrap();
    let addrs = ListenAddrs {
        tcp: vec![busy],
        ..ListenAddrs::default()
    };
    let error = spawn_listeners(
        ServerConfig::default(),
        addrs,
        None,
        Arc::new(TestHandler::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ServerError::Bind { transport: Transport::Tcp, addr, .. } if addr == busy),
        "{error}"
    );
    assert!(error.to_string().contains(&busy.to_string()), "{error}");
}
