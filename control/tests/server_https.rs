//! DNS over HTTPS listener (RFC 8484) against kdig, dig and dnspython, and
//! an h2 client for the HTTP side: GET and POST, cache-control from the
//! answer TTL, padding, and the status codes of bad requests.

mod server_support;

use base64::Engine;
use bytes::Bytes;
use dnsgate::resolver::server::Transport;
use http::{HeaderMap, Method, StatusCode};
use server_support::*;

const OPTION_PADDING: u16 = 12;

fn tool_args(server: &TestServer, extra: &[&str], name: &str) -> Vec<String> {
    let mut args = vec![
        "@127.0.0.1".to_owned(),
        "-p".to_owned(),
        server.port(Transport::Https),
        format!("+tls-ca={}", server.cert_path.display()),
        format!("+tls-hostname={TLS_NAME}"),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args.push(name.to_owned());
    args.push("A".to_owned());
    args
}

async fn h2_client(server: &TestServer) -> h2::client::SendRequest<Bytes> {
    let tls = connect_tls(
        server.addr(Transport::Https),
        client_tls(&server.cert_pem, b"h2"),
    )
    .await;
    let (send, connection) = h2::client::handshake(tls)
        .await
        .expect("HTTP/2 handshake failed");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

struct HttpReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn request(
    client: &mut h2::client::SendRequest<Bytes>,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> HttpReply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("https://{TLS_NAME}{path}"));
    if let Some(content_type) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    let ready = client.clone().ready().await.unwrap();
    let mut ready = ready;
    let (response, mut stream) = ready
        .send_request(builder.body(()).unwrap(), body.is_none())
        .unwrap();
    if let Some(body) = body {
        stream.send_data(Bytes::from(body), true).unwrap();
    }
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), response)
        .await
        .expect("no HTTP response within 10 s")
        .expect("HTTP/2 request failed");
    let (head, mut received) = response.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = received.data().await {
        let chunk = chunk.unwrap();
        let _ = received.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    HttpReply {
        status: head.status,
        headers: head.headers,
        body,
    }
}

fn header<'a>(reply: &'a HttpReply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_https_post_and_get_get_answer() {
    if !tool_available("kdig", &["--version"]) {
        return;
    }
    let server = TestServer::start().await;
    for (method, name) in [
        ("+https", "post.example.test"),
        ("+https-get", "get.example.test"),
    ] {
        let args = tool_args(&server, &[method, "+time=5", "+retry=0"], name);
        let output = run_client("kdig", &args, &[]).await;
        assert_dig_answer(&output, &format!("{name}."));
    }
    assert_eq!(server.listeners.stats().https.responses, 2);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_https_gets_answer() {
    if !tool_available("dig", &["-v"]) {
        return;
    }
    let server = TestServer::start().await;
    for (method, name) in [
        ("+https", "post.example.test"),
        ("+https-get", "get.example.test"),
    ] {
        let args = tool_args(&server, &[method, "+time=5", "+tries=1"], name);
        let output = run_client("dig", &args, &[]).await;
        assert_dig_answer(&output, &format!("{name}."));
    }
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnspython_https_post_and_get_get_answer() {
    if !dnspython_available() {
        return;
    }
    let server = TestServer::start().await;
    let script = format!(
        r#"
import dns.message, dns.query
for post in (True, False):
    q = dns.message.make_query("python.example.test.", "A", use_edns=0)
    r = dns.query.https(q, "127.0.0.1", port={port}, path="/dns-query", post=post, timeout=10, verify="{ca}")
    assert r.id == q.id, (r.id, q.id)
    print(r.answer[0].to_text())
"#,
        port = server.port(Transport::Https),
        ca = server.cert_path.display(),
    );
    let output = run_client("python3", &["-c".to_owned(), script], &[]).await;
    assert_eq!(
        output
            .lines()
            .filter(|line| line.contains("192.0.2.1"))
            .count(),
        2,
        "{output}"
    );
    assert_dig_answer(&output, "python.example.test.");
    assert_eq!(server.listeners.stats().https.responses, 2);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_get_and_post_rfc8484_section_4_1() {
    let server = TestServer::start().await;
    let mut client = h2_client(&server).await;

    let get_query = query("get.example.test.", 0, Some(&[]));
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&get_query);
    let reply = request(
        &mut client,
        Method::GET,
        &format!("/dns-query?dns={encoded}"),
        None,
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "content-type"), "application/dns-message");
    assert_eq!(
        header(&reply, "cache-control"),
        format!("max-age={ANSWER_TTL}")
    );
    assert_eq!(
        header(&reply, "content-length"),
        reply.body.len().to_string()
    );
    assert_eq!(
        reply.body.len() % 468,
        0,
        "EDNS response over DoH not padded"
    );
    let message = parse(&reply.body);
    assert_answer(&message, "get.example.test.", 0);
    assert!(edns_option(&message, OPTION_PADDING).is_some());

    let post_query = query("post.example.test.", 0x4242, None);
    let reply = request(
        &mut client,
        Method::POST,
        "/dns-query",
        Some("application/dns-message"),
        Some(post_query),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let message = parse(&reply.body);
    assert_answer(&message, "post.example.test.", 0x4242);
    assert!(
        message.extensions().is_none(),
        "query without EDNS got an OPT record"
    );
    server.listeners.shutdown().await;
}

/// Opens 200 streams at once on one connection, as a load generator does.
/// Every GET and every POST must get its own response. The client queues
/// the streams beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_many_streams_one_connection() {
    const REQUESTS: u16 = 200;
    let server = TestServer::start().await;
    let mut client = h2_client(&server).await;

    // The h2 client sets no stream limit of its own until the server's
    // SETTINGS arrive, and the server refuses streams beyond its limit
    // (REFUSED_STREAM, RFC 9113 section 5.1.2). The first response comes
    // after those SETTINGS, so the burst below sees the limit.
    let first = query("first.example.test.", 0x0101, None);
    let content_type = Some("application/dns-message");
    let reply = request(
        &mut client,
        Method::POST,
        "/dns-query",
        content_type,
        Some(first),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let mut requests = tokio::task::JoinSet::new();
    for index in 0..REQUESTS {
        let mut client = client.clone();
        requests.spawn(async move {
            let name = format!("many{index}.example.test.");
            let reply = if index % 2 == 0 {
                let encoded =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query(&name, 0, None));
                let path = format!("/dns-query?dns={encoded}");
                request(&mut client, Method::GET, &path, None, None).await
            } else {
                let body = query(&name, index, None);
                let content_type = Some("application/dns-message");
                request(
                    &mut client,
                    Method::POST,
                    "/dns-query",
                    content_type,
                    Some(body),
                )
                .await
            };
            (index, name, reply)
        });
    }
    let mut answered = 0;
    while let Some(joined) = requests.join_next().await {
        let (index, name, reply) = joined.expect("request task panicked");
        assert_eq!(reply.status, StatusCode::OK, "request {index} for {name}");
        let id = if index % 2 == 0 { 0 } else { index };
        assert_answer(&parse(&reply.body), &name, id);
        answered += 1;
    }
    assert_eq!(answered, REQUESTS);
    let stats = server.listeners.stats().https;
    assert_eq!(stats.responses, u64::from(REQUESTS) + 1);
    server.listeners.shutdown().await;
}

/// One malformed DoH request and the status it must get.
struct BadRequest {
    label: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    expected: StatusCode,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_bad_requests_get_http_errors() {
    let mut config = dnsgate::resolver::server::ServerConfig::default();
    config.limits.max_query_size = 512;
    let server = TestServer::start_with(config).await;
    let mut client = h2_client(&server).await;
    let valid = query("x.example.test.", 0, None);

    let dns = Some("application/dns-message");
    let cases = [
        BadRequest {
            label: "GET without dns",
            method: Method::GET,
            path: "/dns-query",
            content_type: None,
            body: None,
            expected: StatusCode::BAD_REQUEST,
        },
        BadRequest {
            label: "GET bad base64",
            method: Method::GET,
            path: "/dns-query?dns=!!!",
            content_type: None,
            body: None,
            expected: StatusCode::BAD_REQUEST,
        },
        BadRequest {
            label: "GET short message",
            method: Method::GET,
            path: "/dns-query?dns=AAAA",
            content_type: None,
            body: None,
            expected: StatusCode::BAD_REQUEST,
        },
        BadRequest {
            label: "POST text/plain",
            method: Method::POST,
            path: "/dns-query",
            content_type: Some("text/plain"),
            body: Some(valid.clone()),
            expected: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        },
        BadRequest {
            label: "POST no content type",
            method: Method::POST,
            path: "/dns-query",
            content_type: None,
            body: Some(valid.clone()),
            expected: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        },
        BadRequest {
            label: "POST oversized",
            method: Method::POST,
            path: "/dns-query",
            content_type: dns,
            body: Some(vec![0; 600]),
            expected: StatusCode::PAYLOAD_TOO_LARGE,
        },
        BadRequest {
            label: "PUT",
            method: Method::PUT,
            path: "/dns-query",
            content_type: dns,
            body: Some(valid.clone()),
            expected: StatusCode::METHOD_NOT_ALLOWED,
        },
        BadRequest {
            label: "wrong path",
            method: Method::POST,
            path: "/resolve",
            content_type: dns,
            body: Some(valid.clone()),
            expected: StatusCode::NOT_FOUND,
        },
    ];
    let case_count = cases.len() as u64;
    for case in cases {
        let is_put = case.method == Method::PUT;
        let reply = request(
            &mut client,
            case.method,
            case.path,
            case.content_type,
            case.body,
        )
        .await;
        assert_eq!(reply.status, case.expected, "{}", case.label);
        if is_put {
            assert_eq!(header(&reply, "allow"), "GET, POST", "{}", case.label);
        }
    }

    // The connection survives every rejection.
    let reply = request(
        &mut client,
        Method::POST,
        "/dns-query",
        Some("application/dns-message"),
        Some(valid),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_answer(&parse(&reply.body), "x.example.test.", 0);
    assert_eq!(server.listeners.stats().https.malformed, case_count);
    server.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_dropped_query_resets_stream() {
    let server = TestServer::start().await;
    let mut client = h2_client(&server).await;
    let request_head = http::Request::builder()
        .method(Method::POST)
        .uri(format!("https://{TLS_NAME}/dns-query"))
        .header(http::header::CONTENT_TYPE, "application/dns-message")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request_head, false).unwrap();
    stream
        .send_data(Bytes::from(query("drop.example.test.", 0, None)), true)
        .unwrap();
    let error = response
        .await
        .expect_err("dropped query got an HTTP response");
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");

    let reply = request(
        &mut client,
        Method::POST,
        "/dns-query",
        Some("application/dns-message"),
        Some(query("ok.example.test.", 0, None)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    server.listeners.shutdown().await;
}
