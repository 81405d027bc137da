//! Offered load from dnsperf in the client namespace, and its figures:
//! throughput, latency percentiles and loss.
//!
//! dnsperf 2.10 prints only the mean latency, so it runs with `-v`, which
//! prints every answered query's latency, and the percentiles are computed
//! here from those lines.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    peers::CLIENT_CORE,
    topology::{ROUTER_ADDR, Topology},
};

/// Transport dnsperf speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Dot,
    Doh,
}

impl Transport {
    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Dot => "dot",
            Self::Doh => "doh",
        }
    }

    fn port(self) -> u16 {
        match self {
            Self::Udp => 53,
            Self::Dot => 853,
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

/// Runs dnsperf once from the client namespace against the router address.
///
/// The run stops by itself after `load.seconds`, and `timeout` ends it if
/// dnsperf hangs. Fails when nothing was answered or most answers were not
/// NOERROR, which means the server is misconfigured rather than slow.
pub fn run(topology: &Topology, load: &Load) -> Result<LoadResult> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &topology.client_ns, "taskset", "-c", &CLIENT_CORE.to_string()])
        .args(["timeout", &(load.seconds + 30).to_string(), "dnsperf", "-s", ROUTER_ADDR])
        .args(["-p", &load.transport.port().to_string(), "-m", transport_mode(load.transport)])
        .arg("-d")
        .arg(load.queries)
        .args(["-l", &load.seconds.to_string(), "-Q", &load.offered_qps.to_string()])
        .args(["-c", &load.clients.to_string(), "-q", "500", "-t", "2", "-v"]);
    if load.transport == Transport::Doh {
        command.args(["-O", &format!("doh-uri=https://{ROUTER_ADDR}/dns-query"), "-O", "doh-method=POST"]);
    }
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
    if result.completed == 0 || result.noerror * 10 < result.completed * 9 {
        bail!(
            "the server answered {} of {} queries, {} with NOERROR; it is misconfigured, not slow:\n{}",
            result.completed,
            result.sent,
            result.noerror,
            tail(&stdout, 20)
        );
    }
    Ok(result)
}

fn transport_mode(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        Transport::Dot => "dot",
        Transport::Doh => "doh",
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
    let percentile = |share: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * share).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index]
    };
    Ok(LoadResult {
        sent: field("Queries sent")? as u64,
        completed: field("Queries completed")? as u64,
        noerror,
        qps: field("Queries per second")?,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
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

    #[test]
    fn parse_rejects_output_without_statistics() {
        assert!(parse("> NOERROR a.x.test A 0.0001\n").is_err());
    }
}
