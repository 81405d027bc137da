//! Offered load in the client namespace, and its figures: throughput,
//! latency percentiles and loss.
//!
//! Plain DNS and DoT load comes from dnsperf. dnsperf 2.10 prints only the
//! mean latency, so it runs with `-v`, which prints every answered query's
//! latency, and the percentiles are computed here from those lines.
//!
//! DoH load comes from h2load (package nghttp2-client) instead, because
//! dnsperf's DoH client (2.10, and 2.14 still) keeps one response per
//! connection per read. When one TLS record carries the DATA frames of two
//! responses, it discards the second. From then on every read of that
//! connection starts with a left-over frame, so each later response is
//! discarded too. Whether a server hits this depends on how it packs HTTP/2
//! frames into TLS records, not on its speed: unbound 1.17 sends one frame
//! per record and passes, while dnsgate (h2 over rustls) sends the frames
//! that are ready in one record and lost 93% of its answers. h2load sends
//! `GET` requests for the same names, one `dns` parameter per query line.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    peers::CLIENT_CORE,
    topology::{ROUTER_ADDR, Topology},
};

/// Transport of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Dot,
    Doh,
    Doq,
}

impl Transport {
    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Dot => "dot",
            Self::Doh => "doh",
            Self::Doq => "doq",
        }
    }

    fn port(self) -> u16 {
        match self {
            Self::Udp => 53,
            Self::Dot | Self::Doq => 853,
            Self::Doh => 443,
        }
    }
}

/// One bounded load run.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// Query file (`NAME TYPE` lines), cycled through.
    pub queries: &'a Path,
    /// Transport.
    pub transport: Transport,
    /// Offered load in queries per second (dnsperf `-Q`).
    pub offered_qps: u32,
    /// Run length in seconds (dnsperf `-l`).
    pub seconds: u32,
    /// Concurrent sockets or connections (dnsperf `-c`).
    pub clients: u32,
    /// Certificate (PEM) the servers present, which the DoQ client checks.
    pub ca: &'a Path,
}

/// Figures of one load run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Queries sent.
    pub sent: u64,
    /// Queries answered.
    pub completed: u64,
    /// Answered queries with RCODE NOERROR.
    pub noerror: u64,
    /// Answered queries per second of run time.
    pub qps: f64,
    /// Median latency of answered queries, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of answered queries, in milliseconds.
    pub p99_ms: f64,
}

impl LoadResult {
    /// Unanswered share of sent queries, in percent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 { 100.0 } else { 100.0 * (self.sent - self.completed) as f64 / self.sent as f64 }
    }

    /// The figures as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "sent": self.sent,
            "completed": self.completed,
            "noerror": self.noerror,
            "qps": round(self.qps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "loss_percent": round(self.loss_percent(), 3),
        })
    }
}

/// Rounds `value` to `digits` decimal places for the report.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Most queries outstanding at once, over all connections.
const MAX_OUTSTANDING: u32 = 500;

/// Seconds after which an unanswered query counts as lost.
const QUERY_TIMEOUT_SECONDS: u32 = 2;

/// Seconds a server gets to answer a first DoH query before the load.
const DOH_READY_TIMEOUT_SECONDS: u64 = 20;

/// Runs the load once from the client namespace against the router address:
/// dnsperf for plain DNS and DoT, h2load for DoH.
///
/// The run stops by itself after `load.seconds`, and `timeout` ends it if
/// the load generator hangs. Fails when nothing was answered or most answers
/// were not NOERROR (for DoH: not HTTP 2xx), which means the server is
/// misconfigured rather than slow.
pub fn run(topology: &Topology, load: &Load) -> Result<LoadResult> {
    match load.transport {
        Transport::Doh => return run_h2load(topology, load),
        Transport::Doq => return run_doq_load(topology, load),
        Transport::Udp | Transport::Dot => {}
    }
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &topology.client_ns, "taskset", "-c", &CLIENT_CORE.to_string()])
        .args(["timeout", &(load.seconds + 30).to_string(), "dnsperf", "-s", ROUTER_ADDR])
        .args(["-p", &load.transport.port().to_string(), "-m", transport_mode(load.transport)])
        .arg("-d")
        .arg(load.queries)
        .args(["-l", &load.seconds.to_string(), "-Q", &load.offered_qps.to_string()])
        .args(["-c", &load.clients.to_string(), "-q", &MAX_OUTSTANDING.to_string()])
        .args(["-t", &QUERY_TIMEOUT_SECONDS.to_string(), "-v"]);
    let output = command.output().context("failed to run dnsperf")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "dnsperf failed with {}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            tail(&stdout, 20)
        );
    }
    let result = parse(&stdout)?;
    check_answered(&result, &stdout)?;
    Ok(result)
}

/// Fails when nothing was answered or most answers were not NOERROR.
fn check_answered(result: &LoadResult, stdout: &str) -> Result<()> {
    if result.completed == 0 || result.noerror * 10 < result.completed * 9 {
        bail!(
            "the server answered {} of {} queries, {} with NOERROR; it is misconfigured, not slow:\n{}",
            result.completed,
            result.sent,
            result.noerror,
            tail(stdout, 20)
        );
    }
    Ok(())
}

/// Runs h2load once with `GET` requests built from the query file, at the
/// same rate, connection count and outstanding cap as dnsperf would use.
fn run_h2load(topology: &Topology, load: &Load) -> Result<LoadResult> {
    let uris = write_doh_uris(load.queries)?;
    wait_for_doh(topology, load.queries)?;
    let log = load.queries.with_extension("h2load.log");
    // A log left over from an earlier run must not be read as this one's.
    match std::fs::remove_file(&log) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("remove {}", log.display()));
        }
        _ => {}
    }
    let clients = load.clients.max(1);
    let per_client_qps = load.offered_qps.div_ceil(clients);
    let per_client_streams = (MAX_OUTSTANDING / clients).max(1);
    let total = u64::from(per_client_qps) * u64::from(clients) * u64::from(load.seconds);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &topology.client_ns, "taskset", "-c", &CLIENT_CORE.to_string()])
        .args(["timeout", &(load.seconds + 30).to_string(), "h2load", "--input-file"])
        .arg(&uris)
        .args(["--clients", &clients.to_string(), "--threads", "1"])
        .args(["--max-concurrent-streams", &per_client_streams.to_string()])
        // A request count, not `--duration`: with a duration, the requests
        // still open when it ends count as not done, which gave unbound 0.56%
        // loss at a 21 ms p99. dnsperf waits for the last answers too.
        .args(["--rps", &per_client_qps.to_string(), "--requests", &total.to_string()])
        .args(["--connection-inactivity-timeout", &QUERY_TIMEOUT_SECONDS.to_string()])
        .args(["--header", "accept: application/dns-message", "--log-file"])
        .arg(&log);
    let output = command.output().context("failed to run h2load; install it with `apt-get install nghttp2-client`")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed with {}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            tail(&stdout, 20)
        );
    }
    let log_text = std::fs::read_to_string(&log).with_context(|| format!("h2load wrote no log {}", log.display()))?;
    let result = parse_h2load(&stdout, &log_text, QUERY_TIMEOUT_SECONDS)?;
    check_answered(&result, &stdout)?;
    Ok(result)
}

/// Runs the project's DoQ load generator (`doq-load`, built with the
/// benchmark) with the same rate, connection count, outstanding cap and
/// timeout as dnsperf gets.
fn run_doq_load(topology: &Topology, load: &Load) -> Result<LoadResult> {
    let binary = std::env::current_dir()?.join("target/release/doq-load");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &topology.client_ns, "taskset", "-c", &CLIENT_CORE.to_string()])
        .args(["timeout", &(load.seconds + 30).to_string()])
        .arg(&binary)
        .args(["--server", &format!("{ROUTER_ADDR}:{}", load.transport.port()), "--ca"])
        .arg(load.ca)
        .arg("--queries")
        .arg(load.queries)
        .args(["--qps", &load.offered_qps.to_string(), "--seconds", &load.seconds.to_string()])
        .args(["--connections", &load.clients.max(1).to_string()])
        .args(["--max-outstanding", &MAX_OUTSTANDING.to_string()])
        .args(["--timeout-ms", &(QUERY_TIMEOUT_SECONDS * 1000).to_string()]);
    let output = command.output().with_context(|| format!("failed to run {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("doq-load failed with {}: {}", output.status, tail(&String::from_utf8_lossy(&output.stderr), 20));
    }
    let result = parse_doq_load(&stdout)?;
    check_answered(&result, &stdout)?;
    Ok(result)
}

/// Reads the JSON object `doq-load` prints.
fn parse_doq_load(stdout: &str) -> Result<LoadResult> {
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).context("doq-load printed no result")?;
    let report: Value = serde_json::from_str(line).with_context(|| format!("doq-load printed {line}"))?;
    let number = |key: &str| report[key].as_f64().with_context(|| format!("doq-load printed no {key}: {line}"));
    Ok(LoadResult {
        sent: number("sent")? as u64,
        completed: number("completed")? as u64,
        noerror: number("noerror")? as u64,
        qps: number("qps")?,
        p50_ms: number("p50_ms")?,
        p99_ms: number("p99_ms")?,
    })
}

/// Waits until the server answers the query file's first name over DoH
/// with NOERROR. Started before dnsdist's DoH listener was up, h2load gave
/// up within a millisecond, where dnsperf reconnects. The probe also checks
/// the RCODE, which h2load does not read.
fn wait_for_doh(topology: &Topology, queries: &Path) -> Result<()> {
    let text = std::fs::read_to_string(queries).with_context(|| format!("read {}", queries.display()))?;
    let name = text.split_whitespace().next().with_context(|| format!("query file {} is empty", queries.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(DOH_READY_TIMEOUT_SECONDS);
    loop {
        let output = Command::new("ip")
            .args(["netns", "exec", &topology.client_ns, "timeout", "5", "kdig", "-p", "443", "+https"])
            .args(["+time=2", "+retry=0", &format!("@{ROUTER_ADDR}"), name, "A"])
            .output()
            .context("failed to run kdig")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && stdout.contains("status: NOERROR") {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "no NOERROR answer for {name} over DoH at {ROUTER_ADDR} within {DOH_READY_TIMEOUT_SECONDS} s; \
                 check the server's DoH listener:\n{}{}",
                tail(&stdout, 10),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Writes one DoH `GET` URI per line of the query file (RFC 8484 section
/// 4.1: the query in the `dns` parameter as base64url, ID 0), beside it.
fn write_doh_uris(queries: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(queries).with_context(|| format!("read {}", queries.display()))?;
    let mut uris = String::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(kind)) = (fields.next(), fields.next()) else {
            bail!("query line {line:?} in {} is not `NAME TYPE`", queries.display());
        };
        let query = dns_query(name, kind)?;
        writeln!(uris, "https://{ROUTER_ADDR}/dns-query?dns={}", base64url(&query))?;
    }
    if uris.is_empty() {
        bail!("query file {} has no queries", queries.display());
    }
    let path = queries.with_extension("doh-uris");
    std::fs::write(&path, uris).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// A recursive query for `name` of type `kind` (A or AAAA) with ID 0.
fn dns_query(name: &str, kind: &str) -> Result<Vec<u8>> {
    let qtype: u16 = match kind.to_ascii_uppercase().as_str() {
        "A" => 1,
        "AAAA" => 28,
        other => bail!("query type {other} is not supported in DoH load; use A or AAAA"),
    };
    // ID 0, RD set, one question.
    let mut message = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        let length = u8::try_from(label.len()).ok().filter(|length| (1..=63).contains(length));
        let Some(length) = length else { bail!("name {name:?} has an empty or over-long label") };
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    Ok(message)
}

/// base64url without padding (RFC 4648 section 5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (index, byte)| bits | u32::from(*byte) << (16 - 8 * index));
        for index in 0..=chunk.len() {
            text.push(char::from(ALPHABET[(bits >> (18 - 6 * index) & 0x3F) as usize]));
        }
    }
    text
}

/// Parses h2load's summary and its `--log-file` (one `start_us status
/// elapsed_us` line per finished request). A request counts as answered when
/// it got a 2xx status within `timeout_seconds`, like a dnsperf answer
/// within `-t`.
fn parse_h2load(stdout: &str, log: &str, timeout_seconds: u32) -> Result<LoadResult> {
    let finished = stdout
        .lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .with_context(|| format!("h2load printed no \"finished in\" line:\n{}", tail(stdout, 20)))?;
    let seconds = finished
        .split(',')
        .next()
        .and_then(|text| duration_seconds(text.trim()))
        .with_context(|| format!("invalid h2load line \"finished in {finished}\""))?;
    let requests = stdout
        .lines()
        .find_map(|line| line.strip_prefix("requests: "))
        .with_context(|| format!("h2load printed no \"requests:\" line:\n{}", tail(stdout, 20)))?;
    let started = requests
        .split(',')
        .find_map(|field| field.trim().strip_suffix(" started"))
        .and_then(|count| count.parse::<u64>().ok())
        .with_context(|| format!("no started count in h2load line \"requests: {requests}\""))?;
    let limit_us = f64::from(timeout_seconds) * 1e6;
    let mut latencies = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, status, elapsed_us] = fields[..] else { continue };
        let (Ok(status), Ok(elapsed_us)) = (status.parse::<u16>(), elapsed_us.parse::<f64>()) else { continue };
        if (200..300).contains(&status) && elapsed_us <= limit_us {
            latencies.push(elapsed_us / 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let completed = latencies.len() as u64;
    Ok(LoadResult {
        sent: started.max(completed),
        completed,
        noerror: completed,
        qps: if seconds > 0.0 { completed as f64 / seconds } else { 0.0 },
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// Converts an h2load duration such as `2.00s`, `1.50ms` or `381us` to
/// seconds.
fn duration_seconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1e-6)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|value| value * scale)
}

/// The `share` percentile of sorted `latencies`, NaN when there are none.
fn percentile(latencies: &[f64], share: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    let index = ((latencies.len() as f64 * share).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index]
}

fn transport_mode(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        Transport::Dot => "dot",
        Transport::Doh => "doh",
        // doq-load, not dnsperf, runs the DoQ load.
        Transport::Doq => "doq",
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|line| !line.starts_with("> ")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parses dnsperf's `-v` output.
fn parse(stdout: &str) -> Result<LoadResult> {
    let mut latencies = Vec::new();
    let mut noerror = 0;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("> ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(rcode), Some(latency)) = (fields.first(), fields.last()) else { continue };
        // Timed-out queries are listed as `> T ...`; only answers count.
        let Ok(seconds) = latency.parse::<f64>() else { continue };
        if *rcode == "T" {
            continue;
        }
        if *rcode == "NOERROR" {
            noerror += 1;
        }
        latencies.push(seconds * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let field = |label: &str| -> Result<f64> {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .with_context(|| format!("dnsperf printed no {label:?} line:\n{}", tail(stdout, 20)))?;
        let value = line.split(':').nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
        value.parse::<f64>().with_context(|| format!("invalid value in dnsperf line {line:?}"))
    };
    Ok(LoadResult {
        sent: field("Queries sent")? as u64,
        completed: field("Queries completed")? as u64,
        noerror,
        qps: field("Queries per second")?,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
> NOERROR a.x.test A 0.000100
> NOERROR b.x.test A 0.000300
> T c.x.test A 2.000000
> REFUSED d.x.test A 0.000200
Statistics:

  Queries sent:         5
  Queries completed:    3 (60.00%)
  Queries lost:         2 (40.00%)

  Queries per second:   1500.5
";

    #[test]
    fn parse_reads_counts_and_percentiles() {
        let result = parse(OUTPUT).unwrap();
        assert_eq!(result.sent, 5);
        assert_eq!(result.completed, 3);
        assert_eq!(result.noerror, 2);
        assert_eq!(result.qps, 1500.5);
        assert!((result.p50_ms - 0.2).abs() < 1e-9, "p50 {}", result.p50_ms);
        assert!((result.p99_ms - 0.3).abs() < 1e-9, "p99 {}", result.p99_ms);
        assert!((result.loss_percent() - 40.0).abs() < 1e-9);
    }

    const H2LOAD_OUTPUT: &str = "\
finished in 2.00s, 4.50 req/s, 1.00KB/s
requests: 5 total, 5 started, 4 done, 4 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 3 2xx, 0 3xx, 1 4xx, 0 5xx
";

    const H2LOAD_LOG: &str = "\
1796422700005540\t200\t300
1796422700005532\t200\t100
1796422700005600\t400\t150
1796422700005700\t200\t2500000
";

    #[test]
    fn parse_h2load_counts_timely_2xx_answers() {
        let result = parse_h2load(H2LOAD_OUTPUT, H2LOAD_LOG, 2).unwrap();
        assert_eq!(result.sent, 5);
        // The 400 and the answer after 2.5 s do not count.
        assert_eq!(result.completed, 2);
        assert_eq!(result.noerror, 2);
        assert!((result.qps - 1.0).abs() < 1e-9, "qps {}", result.qps);
        assert!((result.p50_ms - 0.1).abs() < 1e-9, "p50 {}", result.p50_ms);
        assert!((result.p99_ms - 0.3).abs() < 1e-9, "p99 {}", result.p99_ms);
        assert!((result.loss_percent() - 60.0).abs() < 1e-9);
        assert!(parse_h2load("requests: 1 total, 1 started\n", "", 2).is_err());

        let quick = H2LOAD_OUTPUT.replace("finished in 2.00s", "finished in 381us");
        let result = parse_h2load(&quick, H2LOAD_LOG, 2).unwrap();
        assert!((result.qps - 2.0 / 381e-6).abs() < 1e-3, "qps {}", result.qps);
        assert_eq!(duration_seconds("1.50ms"), Some(0.0015));
        assert_eq!(duration_seconds("2m"), None);
    }

    #[test]
    fn doh_query_is_rfc8484_get_parameter() {
        // RFC 4648 section 10 vectors, without padding.
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        // RFC 8484 section 4.1.1: www.example.com A, ID 0, RD set.
        let query = dns_query("www.example.com", "A").unwrap();
        assert_eq!(base64url(&query), "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB");
        assert!(dns_query("a..test", "A").is_err());
        assert!(dns_query("a.test", "MX").is_err());
    }

    #[test]
    fn parse_doq_load_reads_its_json_line() {
        let stdout = "{\"completed\":5999,\"noerror\":5990,\"p50_ms\":2.96,\"p99_ms\":11.9,\"qps\":1999.1,\"seconds\":3.0,\"sent\":6000}\n";
        let result = parse_doq_load(stdout).unwrap();
        assert_eq!((result.sent, result.completed, result.noerror), (6000, 5999, 5990));
        assert_eq!((result.qps, result.p50_ms, result.p99_ms), (1999.1, 2.96, 11.9));
        assert!(parse_doq_load("the QUIC handshake failed\n").is_err());
        assert!(parse_doq_load("{\"sent\":1}\n").is_err(), "a missing figure is an error");
    }

    #[test]
    fn parse_rejects_output_without_statistics() {
        assert!(parse("> NOERROR a.x.test A 0.0001\n").is_err());
    }
}
