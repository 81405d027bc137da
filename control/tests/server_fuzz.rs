//! Random and mutated queries against every listener, bounded in count and
//! time, followed by a check that each listener still answers correctly and
//! that nothing in the process panicked.
//!
//! The generator is seeded; set `DNSGATE_FUZZ_SEED` to replay a run.

mod server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use dnsgate::resolver::server::{ServerConfig, Transport};
use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const UDP_MESSAGES: usize = 2000;
const TCP_MESSAGES: usize = 600;
const TLS_MESSAGES: usize = 400;
const QUIC_MESSAGES: usize = 400;
const HTTPS_MESSAGES: usize = 400;
/// Messages per TCP or TLS connection before it is replaced.
const STREAM_BATCH: usize = 25;
/// Upper bound for the whole flood.
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(120);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// xorshift64*: small, seedable, and good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Returns a random message: pure noise, or a valid query with bytes
/// flipped, counts inflated, a name turned into a pointer loop, or its tail
/// cut or extended. The first two bytes are left alone half the time so
/// most messages still pass the header check and reach the deeper paths.
fn fuzz_message(rng: &mut Rng) -> Vec<u8> {
    let names = [
        "a.example.test.",
        "big.example.test.",
        "x.y.z.example.test.",
    ];
    let edns: Option<&[(u16, Vec<u8>)]> = match rng.below(3) {
        0 => None,
        1 => Some(&[]),
        _ => Some(&[(11, Vec::new())]),
    };
    let mut message = query(names[rng.below(names.len())], rng.next() as u16, edns);
    match rng.below(6) {
        0 => {
            let len = rng.below(600);
            return rng.bytes(len);
        }
        1 => {
            for _ in 0..1 + rng.below(8) {
                let index = rng.below(message.len());
                message[index] = rng.next() as u8;
            }
        }
        2 => {
            let count_offset = 4 + 2 * rng.below(4);
            message[count_offset] = rng.next() as u8;
            message[count_offset + 1] = rng.next() as u8;
        }
        3 => {
            // A compression pointer to itself at the start of the question.
            message[12] = 0xC0;
            message[13] = 12;
        }
        4 => {
            let keep = 12 + rng.below(message.len() - 11);
            message.truncate(keep);
        }
        _ => {
            let len = rng.below(300);
            message.extend(rng.bytes(len));
        }
    }
    if rng.below(10) == 0 {
        message[2] |= 0x80;
    }
    message
}

async fn flood_udp(server: &TestServer, rng: &mut Rng) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = server.addr(Transport::Udp);
    for sent in 0..UDP_MESSAGES {
        let _ = socket.send_to(&fuzz_message(rng), target).await;
        // Pace the sender so the loopback socket buffer keeps up.
        if sent % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Writes framed messages (with an occasional broken length prefix) on
/// fresh connections and reads until the server closes or goes quiet.
async fn flood_stream<S, F, Fut>(count: usize, rng: &mut Rng, mut connect: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut sent = 0;
    while sent < count {
        let mut stream = connect().await;
        let mut batch = Vec::new();
        for _ in 0..STREAM_BATCH.min(count - sent) {
            let mut message = fuzz_message(rng);
            // A message shorter than a header or with QR set ends the
            // connection, so only one in 25 gets through unrepaired and the
            // rest of the batch reaches the resolver.
            if rng.below(25) != 0 {
                message.resize(message.len().max(12), 0);
                message[2] &= !0x80;
            }
            let prefix = if rng.below(40) == 0 {
                rng.next() as u16
            } else {
                message.len() as u16
            };
            batch.extend_from_slice(&prefix.to_be_bytes());
            batch.extend_from_slice(&message);
            sent += 1;
        }
        if stream.write_all(&batch).await.is_err() {
            continue;
        }
        // Closing the write side lets the server finish the batch and close.
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut sink)).await;
    }
}

async fn flood_quic(server: &TestServer, rng: &mut Rng) {
    let endpoint = quic_client(&server.cert_pem);
    let mut connection = None;
    for _ in 0..QUIC_MESSAGES {
        let live = match connection.take() {
            Some(live) => live,
            None => match endpoint
                .connect(server.addr(Transport::Quic), TLS_NAME)
                .unwrap()
                .await
            {
                Ok(live) => live,
                Err(_) => continue,
            },
        };
        let mut data = fuzz_message(rng);
        if rng.below(4) != 0
            && let Some(id) = data.get_mut(..2)
        {
            // DoQ requires message ID 0; keep most queries valid on that count.
            id.fill(0);
        }
        let mut frame = (data.len() as u16).to_be_bytes().to_vec();
        if rng.below(40) == 0 {
            frame = (rng.next() as u16).to_be_bytes().to_vec();
        }
        frame.extend_from_slice(&data);
        if let Ok((mut send, mut recv)) = live.open_bi().await {
            let _ = send.write_all(&frame).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(3), recv.read_to_end(65_537)).await;
        }
        if live.close_reason().is_none() {
            connection = Some(live);
        }
    }
}

async fn flood_https(server: &TestServer, rng: &mut Rng) {
    let mut client: Option<h2::client::SendRequest<Bytes>> = None;
    for _ in 0..HTTPS_MESSAGES {
        let sender = match client.take() {
            Some(sender) => sender,
            None => {
                let tls = connect_tls(
                    server.addr(Transport::Https),
                    client_tls(&server.cert_pem, b"h2"),
                )
                .await;
                let Ok((sender, connection)) = h2::client::handshake(tls).await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                sender
            }
        };
        let Ok(mut ready) = sender.clone().ready().await else {
            continue;
        };
        let message = fuzz_message(rng);
        let post = rng.below(2) == 0;
        let uri = if post {
            format!("https://{TLS_NAME}/dns-query")
        } else {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&message);
            format!("https://{TLS_NAME}/dns-query?dns={encoded}")
        };
        let method = if post {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let head = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/dns-message")
            .body(())
            .unwrap();
        let Ok((response, mut body)) = ready.send_request(head, !post) else {
            continue;
        };
        if post {
            let _ = body.send_data(Bytes::from(message), true);
        }
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(3), response).await {
            let mut received = response.into_body();
            while let Some(Ok(chunk)) = received.data().await {
                let _ = received.flow_control().release_capacity(chunk.len());
            }
        }
        client = Some(sender);
    }
}

async fn check_all_answer(server: &TestServer) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(
            &query("udp.check.test.", 1, None),
            server.addr(Transport::Udp),
        )
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buffer))
        .await
        .expect("UDP silent after fuzzing")
        .unwrap();
    assert_answer(&parse(&buffer[..len]), "udp.check.test.", 1);

    let mut tcp = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .unwrap();
    write_framed(&mut tcp, &query("tcp.check.test.", 2, None)).await;
    assert_answer(
        &parse(
            &read_framed(&mut tcp)
                .await
                .expect("TCP silent after fuzzing"),
        ),
        "tcp.check.test.",
        2,
    );

    let mut tls = connect_tls(
        server.addr(Transport::Tls),
        client_tls(&server.cert_pem, b"dot"),
    )
    .await;
    write_framed(&mut tls, &query("tls.check.test.", 3, Some(&[]))).await;
    let bytes = read_framed(&mut tls)
        .await
        .expect("DoT silent after fuzzing");
    assert_eq!(bytes.len() % 468, 0);
    assert_answer(&parse(&bytes), "tls.check.test.", 3);

    let endpoint = quic_client(&server.cert_pem);
    let connection = endpoint
        .connect(server.addr(Transport::Quic), TLS_NAME)
        .unwrap()
        .await
        .expect("DoQ handshake failed after fuzzing");
    let bytes = doq_exchange(&connection, &query("quic.check.test.", 0, None))
        .await
        .expect("DoQ silent after fuzzing");
    assert_answer(&parse(&bytes), "quic.check.test.", 0);

    let tls = connect_tls(
        server.addr(Transport::Https),
        client_tls(&server.cert_pem, b"h2"),
    )
    .await;
    let (sender, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let head = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("https://{TLS_NAME}/dns-query"))
        .header("content-type", "application/dns-message")
        .body(())
        .unwrap();
    let mut ready = sender.ready().await.unwrap();
    let (response, mut body) = ready.send_request(head, false).unwrap();
    body.send_data(Bytes::from(query("https.check.test.", 0, None)), true)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("DoH silent after fuzzing")
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut received = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = received.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert_answer(&parse(&bytes), "https.check.test.", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_queries_leave_every_listener_answering() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let seed = std::env::var("DNSGATE_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 | 1 << 32);
    eprintln!("fuzz seed {seed} (set DNSGATE_FUZZ_SEED to replay)");

    let mut config = ServerConfig::default();
    config.limits.query_timeout_ms = 2_000;
    let handler = TestHandler {
        echo_unparsable: true,
        ..TestHandler::default()
    };
    let server = Arc::new(TestServer::start_with_handler(config, handler).await);

    let flood = async {
        let mut rng = Rng(seed);
        flood_udp(&server, &mut rng).await;
        let tcp_addr = server.addr(Transport::Tcp);
        flood_stream(TCP_MESSAGES, &mut rng, || async move {
            TcpStream::connect(tcp_addr).await.unwrap()
        })
        .await;
        let tls_addr = server.addr(Transport::Tls);
        let cert = server.cert_pem.clone();
        flood_stream(TLS_MESSAGES, &mut rng, || {
            let cert = cert.clone();
            async move { connect_tls(tls_addr, client_tls(&cert, b"dot")).await }
        })
        .await;
        flood_quic(&server, &mut rng).await;
        flood_https(&server, &mut rng).await;
    };
    tokio::time::timeout(FLOOD_TIME_LIMIT, flood)
        .await
        .expect("fuzzing did not finish within its time limit");

    check_all_answer(&server).await;

    let stats = server.listeners.stats();
    eprintln!("{}", serde_json::to_string_pretty(&stats).unwrap());
    for transport in [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Quic,
        Transport::Https,
    ] {
        let counters = stats.transport(transport);
        assert!(
            counters.queries > 0,
            "{transport:?}: no fuzzed query reached the resolver"
        );
        assert!(
            counters.malformed > 0,
            "{transport:?}: no malformed input detected, so the fuzzer is not reaching the checks"
        );
    }
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a listener task panicked during fuzzing"
    );
    let _ = std::panic::take_hook();
}
