//! Shared pieces of the listener tests: a test resolver behind the
//! `DnsHandler` trait, listeners on 127.0.0.1 with a certificate generated
//! at test time, and clients for each transport. A test whose external DNS
//! client is missing skips, except under `CI=true`, where it fails.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of these helpers"
)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dnsgate::resolver::server::{
    DnsHandler, ListenAddrs, Listeners, Request, ServerConfig, ServerTls, TlsMaterial, Transport,
    generate_self_signed, spawn_listeners,
};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TTL of every answer the test resolver gives.
pub const ANSWER_TTL: u32 = 300;
/// Address in every answer (from the documentation range of RFC 5737).
pub const ANSWER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Number of A records in the answer for names starting with `big`.
pub const BIG_ANSWER_RECORDS: u8 = 60;
/// Delay of the answer for names starting with `slow`.
pub const SLOW_DELAY: Duration = Duration::from_millis(800);
/// Name on the test certificate besides 127.0.0.1.
pub const TLS_NAME: &str = "dns.test";
/// Upper bound for one external client process.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A resolver for tests. It returns A 192.0.2.1 for every A query, with the
/// query's ID and question. Names starting with `big` get 60 records, names
/// starting with `slow` a delayed response, and names starting with `drop`
/// none. Anything hickory cannot parse gets FORMERR.
///
/// With `echo_unparsable` set, a query hickory cannot parse comes back as
/// its own bytes with QR set instead, so the listeners' response edits
/// (truncation, padding) run on garbage too.
#[derive(Debug, Default)]
pub struct TestHandler {
    pub handled: AtomicU64,
    pub echo_unparsable: bool,
}

impl DnsHandler for TestHandler {
    fn handle(
        &self,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>> {
        Box::pin(async move {
            self.handled.fetch_add(1, Ordering::Relaxed);
            answer(&request.message, self.echo_unparsable).await
        })
    }
}

async fn answer(query: &[u8], echo_unparsable: bool) -> Option<Vec<u8>> {
    let Ok(message) = Message::from_vec(query) else {
        if echo_unparsable {
            let mut echo = query.to_vec();
            echo[2] |= 0x80;
            return Some(echo);
        }
        let mut header = query.get(..12)?.to_vec();
        header[2] = 0x80;
        header[3] = ResponseCode::FormErr.low();
        header[4..12].fill(0);
        return Some(header);
    };
    let mut response = Message::new();
    response
        .set_id(message.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(message.recursion_desired())
        .set_recursion_available(true);
    response.add_queries(message.queries().to_vec());

    if let Some(question) = message.queries().first() {
        let label = question.name().to_ascii().to_ascii_lowercase();
        if label.starts_with("drop") {
            return None;
        }
        if label.starts_with("slow") {
            tokio::time::sleep(SLOW_DELAY).await;
        }
        if question.query_type() == RecordType::A {
            let count = if label.starts_with("big") {
                BIG_ANSWER_RECORDS
            } else {
                1
            };
            for index in 0..count {
                let octets = ANSWER_ADDRESS.octets();
                let address = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3] + index);
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    ANSWER_TTL,
                    RData::A(A(address)),
                ));
            }
        }
    }
    if message.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        response.set_edns(edns);
    }
    response.to_vec().ok()
}

/// Listeners on 127.0.0.1 with ephemeral ports for all five transports.
pub struct TestServer {
    pub listeners: Listeners,
    pub handler: Arc<TestHandler>,
    pub tls: ServerTls,
    pub cert_pem: String,
    pub cert_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_with_handler(config, TestHandler::default()).await
    }

    pub async fn start_with_handler(config: ServerConfig, handler: TestHandler) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory not created");
        let (cert_pem, key_pem) =
            generate_self_signed(&[TLS_NAME.to_owned()], &[Ipv4Addr::LOCALHOST.into()])
                .expect("certificate generation failed");
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, &cert_pem).expect("certificate not written");
        let tls = ServerTls::new(TlsMaterial::from_pem(&cert_pem, &key_pem).unwrap()).unwrap();

        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let addrs = ListenAddrs {
            udp: vec![loopback],
            tcp: vec![loopback],
            tls: vec![loopback],
            quic: vec![loopback],
            https: vec![loopback],
        };
        let handler = Arc::new(handler);
        let listeners = spawn_listeners(config, addrs, Some(tls.clone()), handler.clone())
            .await
            .expect("listeners did not start");
        Self {
            listeners,
            handler,
            tls,
            cert_pem,
            cert_path,
            dir,
        }
    }

    pub fn addr(&self, transport: Transport) -> SocketAddr {
        let addrs = self.listeners.local_addrs();
        let list = match transport {
            Transport::Udp => &addrs.udp,
            Transport::Tcp => &addrs.tcp,
            Transport::Tls => &addrs.tls,
            Transport::Quic => &addrs.quic,
            Transport::Https => &addrs.https,
        };
        list[0]
    }

    pub fn port(&self, transport: Transport) -> String {
        self.addr(transport).port().to_string()
    }
}

/// Builds an A query; `edns` adds an OPT record with the given options.
pub fn query(name: &str, id: u16, edns: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut message = Message::new();
    message.set_id(id).set_recursion_desired(true);
    message.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    if let Some(options) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        for (code, data) in options {
            opt.options_mut()
                .insert(EdnsOption::Unknown(*code, data.clone()));
        }
        message.set_edns(opt);
    }
    message.to_vec().unwrap()
}

pub fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes)
        .unwrap_or_else(|error| panic!("response does not parse: {error}; bytes {bytes:02x?}"))
}

/// Asserts that `response` answers `name` with the test address.
pub fn assert_answer(response: &Message, name: &str, id: u16) {
    assert_eq!(response.id(), id, "response ID");
    assert_eq!(response.response_code(), ResponseCode::NoError);
    let question = response
        .queries()
        .first()
        .expect("response has no question");
    assert_eq!(
        question.name().to_ascii().to_ascii_lowercase(),
        name.to_ascii_lowercase()
    );
    let addresses: Vec<_> = response
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        addresses.first(),
        Some(&ANSWER_ADDRESS),
        "answers: {:?}",
        response.answers()
    );
}

/// Returns the data of an EDNS option in `response`, if present.
pub fn edns_option(response: &Message, code: u16) -> Option<Vec<u8>> {
    let edns = response.extensions().as_ref()?;
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(option_code, option)| {
            if u16::from(*option_code) != code {
                return None;
            }
            match option {
                EdnsOption::Unknown(_, data) => Some(data.clone()),
                other => panic!("EDNS option {code} decoded as {other:?}, expected raw bytes"),
            }
        })
}

/// Returns true when `program` can run. When it cannot, prints why the test
/// skips, or panics when `CI=true`, where a missing client is a failure.
pub fn tool_available(program: &str, probe: &[&str]) -> bool {
    let available = std::process::Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        let message = format!(
            "{program} {} failed, so the test cannot run it",
            probe.join(" ")
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}; CI=true requires it");
        }
        eprintln!("SKIPPED: {message}");
    }
    available
}

/// Returns true when dnspython with DoT, DoH and DoQ support is importable.
pub fn dnspython_available() -> bool {
    tool_available(
        "python3",
        &[
            "-c",
            "import dns.query, dns.quic, dns.message; assert dns.query.have_doh",
        ],
    )
}

/// Runs a client process to completion and returns its stdout. Panics with
/// both output streams when it fails or exceeds [`CLIENT_TIMEOUT`].
pub async fn run_client(program: &str, args: &[String], envs: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true).stdin(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("{program} did not start: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// Asserts that dig or kdig output contains an answer `name A 192.0.2.1`.
pub fn assert_dig_answer(output: &str, name: &str) {
    let found = output.lines().any(|line| {
        let fields: Vec<_> = line.split_whitespace().collect();
        fields
            .first()
            .is_some_and(|owner| owner.eq_ignore_ascii_case(name))
            && fields.contains(&"A")
            && fields.last() == Some(&ANSWER_ADDRESS.to_string().as_str())
    });
    assert!(
        found,
        "no `{name} A {ANSWER_ADDRESS}` answer in output:\n{output}"
    );
}

/// Builds a rustls client configuration that trusts only the test
/// certificate.
#[expect(
    deprecated,
    reason = "dnsgate uses the ring provider; rustls deprecates it only for lacking post-quantum key exchange"
)]
pub fn client_tls(cert_pem: &str, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// Opens a TLS connection to `addr`, verifying the certificate for `dns.test`.
pub async fn connect_tls(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(TLS_NAME).unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake failed")
}

/// Writes one message with its 2-byte length prefix.
pub async fn write_framed<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) {
    let mut frame = (message.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
}

/// Reads one length-prefixed message, or `None` at end of stream. Gives up
/// after ten seconds.
pub async fn read_framed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let read = async {
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.ok()?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut message).await.ok()?;
        Some(message)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no frame within 10 s")
}

/// Creates a QUIC client endpoint that trusts the test certificate and
/// offers ALPN `doq`.
pub fn quic_client(cert_pem: &str) -> quinn::Endpoint {
    let tls = client_tls(cert_pem, b"doq");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Sends one DoQ query on a new stream and returns the response message.
pub async fn doq_exchange(connection: &quinn::Connection, query: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|error| error.to_string())?;
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    send.write_all(&frame)
        .await
        .map_err(|error| error.to_string())?;
    send.finish().map_err(|error| error.to_string())?;
    let data = recv
        .read_to_end(65_537)
        .await
        .map_err(|error| error.to_string())?;
    let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
    assert_eq!(
        len,
        data.len() - 2,
        "DoQ length prefix does not match the stream data"
    );
    Ok(data[2..].to_vec())
}
