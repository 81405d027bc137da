//! A bounded DNS-over-QUIC load generator (RFC 9250) for `cargo xtask
//! bench`, which has no other DoQ client that can offer a steady rate.
//!
//! ```text
//! doq-load --server ADDR:PORT --ca CERT.pem --queries FILE
//!          --qps RATE --seconds N --connections C
//!          [--max-outstanding M] [--timeout-ms T]
//! ```
//!
//! The query file has one `NAME TYPE` line per query, as dnsperf reads it,
//! and is cycled through. The program opens `C` connections (ALPN `doq`,
//! the server's certificate checked against `CERT.pem` and the server's IP
//! address), then sends queries at `RATE` per second for `N` seconds, one
//! bidirectional stream each, round robin over the connections. At most
//! `M` queries are outstanding; when that many are, sending waits, as
//! dnsperf does. A query without an answer within `T` milliseconds is lost.
//! After the last query it waits for the outstanding ones, then prints one
//! JSON object:
//!
//! ```text
//! {"sent":…,"completed":…,"noerror":…,"seconds":…,"qps":…,"p50_ms":…,"p99_ms":…,"reconnects":…}
//! ```
//!
//! A connection the server closes (some cap the queries per connection) is
//! opened again for the next query sent on it, as clients do.
//!
//! `qps` counts answered queries per second of sending time. The run always
//! ends: at most 10 s of connection attempts, `N` seconds of sending, then
//! one timeout.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    str::FromStr as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use quinn::crypto::rustls::QuicClientConfig;
use serde_json::json;
use tokio::sync::Semaphore;

/// Largest DNS message read from a stream (RFC 9250 §4.2: 2-byte length).
const MAX_MESSAGE_LEN: usize = 65_535;
/// How long connections are attempted before the run gives up.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

struct Args {
    server: SocketAddr,
    ca: PathBuf,
    queries: PathBuf,
    qps: u32,
    seconds: u64,
    connections: usize,
    max_outstanding: usize,
    timeout: Duration,
}

impl Args {
    fn parse(mut words: impl Iterator<Item = String>) -> Result<Self> {
        let (mut server, mut ca, mut queries, mut qps, mut seconds, mut connections) = (None, None, None, None, None, None);
        let mut max_outstanding = 500;
        let mut timeout = Duration::from_secs(2);
        while let Some(flag) = words.next() {
            let value = words.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--server" => server = Some(value.parse().with_context(|| format!("--server {value}: not ADDR:PORT"))?),
                "--ca" => ca = Some(PathBuf::from(value)),
                "--queries" => queries = Some(PathBuf::from(value)),
                "--qps" => qps = Some(value.parse().with_context(|| format!("--qps {value}: not a number"))?),
                "--seconds" => seconds = Some(value.parse().with_context(|| format!("--seconds {value}: not a number"))?),
                "--connections" => {
                    connections = Some(value.parse().with_context(|| format!("--connections {value}: not a number"))?)
                }
                "--max-outstanding" => {
                    max_outstanding = value.parse().with_context(|| format!("--max-outstanding {value}: not a number"))?
                }
                "--timeout-ms" => {
                    timeout = Duration::from_millis(value.parse().with_context(|| format!("--timeout-ms {value}: not a number"))?)
                }
                other => bail!("unknown option {other}"),
            }
        }
        let args = Self {
            server: server.context("--server is required")?,
            ca: ca.context("--ca is required")?,
            queries: queries.context("--queries is required")?,
            qps: qps.context("--qps is required")?,
            seconds: seconds.context("--seconds is required")?,
            connections: connections.context("--connections is required")?,
            max_outstanding,
            timeout,
        };
        if args.qps == 0 || args.seconds == 0 || args.connections == 0 || args.max_outstanding == 0 {
            bail!("--qps, --seconds, --connections and --max-outstanding must be at least 1");
        }
        Ok(args)
    }
}

/// Outcomes of the answered queries.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    noerror: u64,
    /// Connections opened again after the server closed them.
    reconnects: u64,
}

/// One of the connections queries are spread over.
type Slot = tokio::sync::Mutex<quinn::Connection>;

/// Opens connections to the server.
struct Dialer {
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    server_name: String,
}

impl Dialer {
    /// Returns the connection in `slot`, opened again if the server has closed it:
    /// servers may cap the queries per connection (hickory-dns does), and
    /// clients then reconnect.
    async fn open(&self, slot: &Slot, tally: &Mutex<Tally>) -> Result<quinn::Connection> {
        let mut connection = slot.lock().await;
        if connection.close_reason().is_some() {
            *connection = self.endpoint.connect(self.server, &self.server_name)?.await?;
            tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reconnects += 1;
        }
        Ok(connection.clone())
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("doq-load: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("doq-load: starting the runtime failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("doq-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let messages = read_queries(&args.queries)?;
    let endpoint = client_endpoint(&args)?;
    let server_name = args.server.ip().to_string();
    let mut connections = Vec::with_capacity(args.connections);
    // A server that has just started may not listen yet; it gets this long.
    let connect_deadline = Instant::now() + CONNECT_WAIT;
    while connections.len() < args.connections {
        let attempt = endpoint.connect(args.server, &server_name).context("starting a QUIC connection failed")?;
        match attempt.await {
            Ok(connection) => connections.push(connection),
            Err(error) if Instant::now() < connect_deadline => {
                eprintln!("doq-load: the QUIC handshake with {} failed ({error}); trying again", args.server);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => bail!("the QUIC handshake with {} failed: {error}", args.server),
        }
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    let slots: Arc<Vec<Slot>> = Arc::new(connections.into_iter().map(tokio::sync::Mutex::new).collect());
    let dialer = Arc::new(Dialer { endpoint: endpoint.clone(), server: args.server, server_name });
    let outstanding = Arc::new(Semaphore::new(args.max_outstanding));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.qps));
    let length = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut sent: u64 = 0;
    while started.elapsed() < length {
        tokio::time::sleep_until((started + interval.mul_f64(sent as f64)).into()).await;
        let permit = outstanding.clone().acquire_owned().await.context("the query limit was closed")?;
        let slot = sent as usize % slots.len();
        let message = messages[sent as usize % messages.len()].clone();
        let (slots, dialer, tally) = (slots.clone(), dialer.clone(), tally.clone());
        let timeout = args.timeout;
        tokio::spawn(async move {
            let sent_at = Instant::now();
            let answer = tokio::time::timeout(timeout, async {
                let connection = dialer.open(&slots[slot], &tally).await?;
                match exchange(&connection, &message).await {
                    // Closed by the server under this query: asked again
                    // on a new connection, as a client would.
                    Err(_) if connection.close_reason().is_some() => {
                        let connection = dialer.open(&slots[slot], &tally).await?;
                        exchange(&connection, &message).await
                    }
                    answer => answer,
                }
            })
            .await;
            if let Ok(Ok(rcode)) = answer {
                let mut tally = tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                tally.latencies_ms.push(sent_at.elapsed().as_secs_f64() * 1000.0);
                if rcode == ResponseCode::NoError {
                    tally.noerror += 1;
                }
            }
            drop(permit);
        });
        sent += 1;
    }
    let sending = started.elapsed().as_secs_f64();
    // Every query holds a permit until it is answered or times out.
    let all = u32::try_from(args.max_outstanding).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(args.timeout + Duration::from_secs(1), outstanding.acquire_many(all)).await;
    for slot in slots.iter() {
        // DOQ_NO_ERROR (RFC 9250 §4.3).
        slot.lock().await.close(0u32.into(), b"");
    }

    let mut tally = tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tally.latencies_ms.sort_by(f64::total_cmp);
    let completed = tally.latencies_ms.len() as u64;
    let report = json!({
        "sent": sent,
        "completed": completed,
        "noerror": tally.noerror,
        "seconds": sending,
        "qps": completed as f64 / sending,
        "p50_ms": percentile(&tally.latencies_ms, 0.50),
        "p99_ms": percentile(&tally.latencies_ms, 0.99),
        "reconnects": tally.reconnects,
    });
    println!("{report}");
    endpoint.wait_idle().await;
    Ok(())
}

/// Reads `NAME TYPE` lines into DoQ query messages (ID 0, RD set).
fn read_queries(path: &PathBuf) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {} failed", path.display()))?;
    let mut messages = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let name = Name::from_ascii(name).with_context(|| format!("{}:{}: bad name", path.display(), number + 1))?;
        let kind = RecordType::from_str(kind).with_context(|| format!("{}:{}: bad type", path.display(), number + 1))?;
        let mut message = Message::new();
        message.set_id(0).set_recursion_desired(true).add_query(Query::query(name, kind));
        messages.push(message.to_vec().context("encoding a query failed")?);
    }
    if messages.is_empty() {
        bail!("{} has no `NAME TYPE` line", path.display());
    }
    Ok(messages)
}

/// Builds a client endpoint whose connections trust only the certificates in
/// `args.ca` and offer ALPN `doq`.
fn client_endpoint(args: &Args) -> Result<quinn::Endpoint> {
    let pem = std::fs::read(&args.ca).with_context(|| format!("reading {} failed", args.ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(certificate.with_context(|| format!("{} holds a bad certificate", args.ca.display()))?)
            .with_context(|| format!("{} holds a certificate rustls cannot use", args.ca.display()))?;
    }
    let provider = Arc::new(ring_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"doq".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).context("the TLS settings do not suit QUIC")?;
    let unspecified: SocketAddr =
        if args.server.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let mut endpoint = quinn::Endpoint::client(unspecified).context("binding a UDP socket failed")?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}

/// Returns the `ring` crypto provider, which dnsgate's own clients use.
#[expect(deprecated, reason = "dnsgate uses ring; rustls deprecated it only for lacking post-quantum key exchange")]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Sends one query on a new stream and returns the answer's RCODE.
async fn exchange(connection: &quinn::Connection, message: &[u8]) -> Result<ResponseCode> {
    let (mut send, mut receive) = connection.open_bi().await?;
    let mut frame = Vec::with_capacity(message.len() + 2);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(message);
    send.write_all(&frame).await?;
    send.finish()?;
    let answer = receive.read_to_end(MAX_MESSAGE_LEN + 2).await?;
    if answer.len() < 2 || usize::from(u16::from_be_bytes([answer[0], answer[1]])) != answer.len() - 2 {
        bail!("the answer's length prefix does not match its size");
    }
    Ok(Message::from_vec(&answer[2..])?.response_code())
}

/// Returns the `share` quantile of sorted values, or 0 when there are none.
fn percentile(sorted: &[f64], share: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
