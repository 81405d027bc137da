//! The Prometheus endpoint: the kernel and resolver counters that
//! `dnsgate stats` prints, plus query latency histograms per transport, in
//! the Prometheus text exposition format 0.0.4, served over plain HTTP/1.1
//! on `GET /metrics`.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use crate::{dataplane::CounterValues, resolver::ResolverStats};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Transports with a histogram, in the order of [`Latencies::per_transport`].
pub const TRANSPORTS: [&str; 5] = ["udp", "tcp", "tls", "quic", "https"];

/// Maximum bytes of a request head read before the endpoint closes the
/// connection.
const MAX_REQUEST_BYTES: usize = 8192;

/// Time a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One latency histogram, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let slot = LATENCY_BOUNDS.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the observation count.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, transport: &str) {
        let mut cumulative = 0;
        for (index, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.buckets[index].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{transport=\"{transport}\",le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{transport=\"{transport}\",le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{transport=\"{transport}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{transport=\"{transport}\"}} {}", self.count());
    }
}

/// Latency histograms of the queries user space answered.
#[derive(Debug, Default)]
pub struct Latencies {
    /// One histogram per entry of [`TRANSPORTS`].
    pub per_transport: [Histogram; 5],
}

impl Latencies {
    /// Records a query answered over `transport` (one of [`TRANSPORTS`]).
    pub fn observe(&self, transport: &str, latency: Duration) {
        if let Some(index) = TRANSPORTS.iter().position(|name| *name == transport) {
            self.per_transport[index].observe(latency);
        }
    }
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// Kernel counters; `None` when the XDP program is not loaded.
    pub dataplane: Option<CounterValues>,
    /// Resolver counters.
    pub resolver: &'a ResolverStats,
    /// Latency histograms.
    pub latencies: &'a Latencies,
    /// Blocking is paused.
    pub paused: bool,
    /// Custom rules in the overlay.
    pub custom_rules: usize,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Renders `snapshot` in the text exposition format.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(4096);
    if let Some(dataplane) = &snapshot.dataplane {
        counter(&mut out, "dnsgate_dataplane_seen_total", "DNS queries to the router parsed by the XDP program.", dataplane.seen);
        counter(&mut out, "dnsgate_dataplane_blocked_total", "Queries answered in the kernel.", dataplane.blocked);
        counter(&mut out, "dnsgate_dataplane_allowed_total", "Parsed queries passed on to user space.", dataplane.allowed);
        counter(&mut out, "dnsgate_dataplane_passed_total", "Frames that are not DNS queries for the router.", dataplane.passed);
        counter(&mut out, "dnsgate_dataplane_malformed_total", "Port-53 frames that could not be parsed.", dataplane.malformed);
        counter(&mut out, "dnsgate_dataplane_tx_failed_total", "Blocked queries that could not be answered in place.", dataplane.tx_failed);
        counter(&mut out, "dnsgate_dataplane_events_lost_total", "Answers sent from the kernel that are missing from the query log because their event was dropped.", dataplane.events_lost);
        counter(&mut out, "dnsgate_dataplane_rate_limited_total", "Plain DNS queries dropped because their client was over its rate limit.", dataplane.rate_limited);
        counter(&mut out, "dnsgate_dataplane_events_skipped_total", "Answers sent from the kernel left out of the query log by its per-CPU rate.", dataplane.events_skipped);
        counter(&mut out, "dnsgate_dataplane_fallback_total", "Plain DNS queries sent to the fallback resolver because the controller's heartbeat was stale.", dataplane.fallback);
    }
    let resolver = snapshot.resolver;
    let _ = writeln!(
        out,
        "# HELP dnsgate_resolver_queries_total Queries received by user space, by transport.\n# TYPE dnsgate_resolver_queries_total counter"
    );
    let queries = resolver.queries;
    for (transport, value) in TRANSPORTS.iter().zip([queries.udp, queries.tcp, queries.tls, queries.quic, queries.https]) {
        let _ = writeln!(out, "dnsgate_resolver_queries_total{{transport=\"{transport}\"}} {value}");
    }
    counter(&mut out, "dnsgate_resolver_blocked_total", "Queries blocked by the user-space policy.", resolver.blocked);
    counter(&mut out, "dnsgate_resolver_blocked_cname_total", "Answers blocked because their CNAME chain reached a blocked name.", resolver.blocked_cname);
    counter(&mut out, "dnsgate_resolver_rewritten_total", "Queries answered by a rewrite rule.", resolver.rewritten);
    counter(&mut out, "dnsgate_resolver_local_total", "Queries answered from local zones.", resolver.local);
    counter(&mut out, "dnsgate_resolver_servfail_total", "Queries answered SERVFAIL.", resolver.servfail);
    counter(&mut out, "dnsgate_resolver_upstream_errors_total", "Queries for which no upstream answered.", resolver.upstream_errors);
    counter(&mut out, "dnsgate_resolver_formerr_total", "Malformed queries answered FORMERR.", resolver.formerr);
    counter(&mut out, "dnsgate_resolver_dropped_total", "Queries dropped without an answer.", resolver.dropped);
    counter(&mut out, "dnsgate_cache_hits_total", "Cache lookups answered from a live entry.", resolver.cache.hits);
    counter(&mut out, "dnsgate_cache_misses_total", "Cache lookups that found no live entry.", resolver.cache.misses);
    counter(&mut out, "dnsgate_cache_stale_hits_total", "Expired entries served because every upstream failed.", resolver.cache.stale_hits);
    gauge(&mut out, "dnsgate_cache_entries", "Entries in the answer cache.", resolver.cache.entries);

    let _ = writeln!(
        out,
        "# HELP dnsgate_upstream_healthy Whether the upstream is in rotation (1) or resting after failures (0).\n# TYPE dnsgate_upstream_healthy gauge"
    );
    for upstream in &resolver.upstreams {
        let _ = writeln!(out, "dnsgate_upstream_healthy{{upstream=\"{}\"}} {}", escape_label(&upstream.url), u8::from(upstream.healthy));
    }
    let _ = writeln!(
        out,
        "# HELP dnsgate_upstream_rtt_seconds Smoothed round-trip time of the upstream.\n# TYPE dnsgate_upstream_rtt_seconds gauge"
    );
    for upstream in &resolver.upstreams {
        if let Some(rtt) = upstream.rtt_ms {
            let _ = writeln!(out, "dnsgate_upstream_rtt_seconds{{upstream=\"{}\"}} {}", escape_label(&upstream.url), rtt / 1000.0);
        }
    }
    gauge(&mut out, "dnsgate_blocking_paused", "1 while blocking is paused.", u8::from(snapshot.paused));
    gauge(&mut out, "dnsgate_custom_rules", "Custom rules in the kernel overlay.", snapshot.custom_rules);

    let name = "dnsgate_query_duration_seconds";
    let _ = writeln!(out, "# HELP {name} Time from receipt to answer of queries user space answered.\n# TYPE {name} histogram");
    for (transport, histogram) in TRANSPORTS.iter().zip(&snapshot.latencies.per_transport) {
        histogram.render(&mut out, name, transport);
    }
    out
}

/// Escapes a label value (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is dropped, rendering
/// each response with `scrape`.
pub async fn serve<F>(listener: TcpListener, scrape: F)
where
    F: Fn() -> String + Send + Sync + Clone + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, scrape).await {
                debug!(%peer, %error, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, scrape: impl Fn() -> String) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let read = async {
        while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
            let count = stream.read(&mut chunk).await?;
            if count == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..count]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request not received in time"))??;
    let request_line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(request_line).unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let response = match (method, path) {
        ("GET", "/metrics") => {
            let body = scrape();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        ("GET", _) => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        _ => "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let mut out = String::new();
        histogram.render(&mut out, "h", "udp");
        assert!(out.contains("h_bucket{transport=\"udp\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{transport=\"udp\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{transport=\"udp\",le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{transport=\"udp\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count{transport=\"udp\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
