//! Choosing an upstream and failing over. Each query goes to the fastest
//! upstream that is healthy (lowest smoothed round-trip time), and to the
//! first configured one while none has been measured. On a timeout, an
//! error or SERVFAIL the next one is tried, up to the configured number of
//! attempts, each bounded by the attempt timeout. An upstream that failed
//! rests for a back-off period during which it is tried only after the
//! healthy ones; its next success makes it healthy again. Every
//! [`EXPLORE_EVERY`]th query goes first to the healthy upstream measured
//! longest ago, so new and slower upstreams keep a current RTT.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use serde::Serialize;

use super::{Connector, UpstreamConfigError, UpstreamError};
use crate::resolver::config::ResolverConfig;

/// Back-off after the first failure; it doubles with each further failure.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Weight of a new sample in the smoothed RTT.
const RTT_WEIGHT: f64 = 0.3;
/// One query in this many measures the least recently measured upstream.
pub const EXPLORE_EVERY: u64 = 64;
/// Pooled connections carrying no query for this long are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Health {
    rtt_ms: Option<f64>,
    measured_at: Option<Instant>,
    consecutive_failures: u32,
    retry_at: Option<Instant>,
}

impl Health {
    fn available(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }
}

struct Upstream {
    label: String,
    connector: Connector,
    health: Mutex<Health>,
    queries: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    servfails: AtomicU64,
}

impl Upstream {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_success(&self, rtt: Duration) {
        let sample = rtt.as_secs_f64() * 1000.0;
        let mut health = self.health();
        health.rtt_ms = Some(match health.rtt_ms {
            Some(old) => old * (1.0 - RTT_WEIGHT) + sample * RTT_WEIGHT,
            None => sample,
        });
        if health.consecutive_failures > 0 {
            tracing::info!(upstream = %self.label, "upstream recovered");
        }
        health.measured_at = Some(Instant::now());
        health.consecutive_failures = 0;
        health.retry_at = None;
    }

    /// Marks a failure and returns the number of failures in a row.
    fn record_failure(&self, now: Instant) -> u32 {
        let mut health = self.health();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        let exponent = (health.consecutive_failures - 1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
        health.retry_at = Some(now + backoff);
        health.consecutive_failures
    }
}

/// The result of sending a query upstream.
#[derive(Debug)]
pub enum Outcome {
    /// An answer (any RCODE but SERVFAIL), with its wire size.
    Answer(Message, usize),
    /// Every upstream tried answered SERVFAIL or failed, and at least one
    /// answered SERVFAIL; this is the last such answer.
    ServFail(Message),
    /// No upstream answered at all.
    Unreachable,
}

/// Health and counters of one upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamStats {
    /// The upstream's URL.
    pub url: String,
    /// Whether the upstream is tried in its RTT order (no failure, or its
    /// back-off has run out).
    pub healthy: bool,
    /// Smoothed round-trip time in milliseconds, once measured.
    pub rtt_ms: Option<f64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Queries sent.
    pub queries: u64,
    /// Exchanges that failed with an error.
    pub errors: u64,
    /// Exchanges abandoned at the attempt timeout.
    pub timeouts: u64,
    /// SERVFAIL answers received.
    pub servfails: u64,
}

/// The configured upstreams.
pub struct UpstreamPool {
    upstreams: Vec<Upstream>,
    attempt_timeout: Duration,
    max_attempts: usize,
    sent: AtomicU64,
}

impl UpstreamPool {
    /// Builds a client for every configured upstream.
    pub fn new(config: &ResolverConfig) -> Result<Self, UpstreamConfigError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|upstream| {
                Ok(Upstream {
                    label: upstream.url.to_string(),
                    connector: Connector::new(upstream, &config.bootstrap, IDLE_TIMEOUT)?,
                    health: Mutex::new(Health::default()),
                    queries: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    servfails: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, UpstreamConfigError>>()?;
        Ok(Self {
            upstreams,
            attempt_timeout: config.attempt_timeout(),
            max_attempts: usize::try_from(config.max_attempts.max(1)).unwrap_or(usize::MAX),
            sent: AtomicU64::new(0),
        })
    }

    /// Returns whether no upstream is configured.
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Indices of the upstreams in the order they are tried: available ones
    /// by smoothed RTT (unmeasured ones after them, in configuration order),
    /// then the ones resting after a failure, soonest retry first. When
    /// `explore` is set, the available upstream measured longest ago (or
    /// never) moves to the front.
    fn order(&self, now: Instant, explore: bool) -> Vec<usize> {
        let mut keys: Vec<(bool, f64, usize, Option<Instant>)> = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, upstream)| {
                let health = upstream.health();
                let available = health.available(now);
                let rank = if available {
                    health.rtt_ms.unwrap_or(f64::INFINITY)
                } else {
                    health
                        .retry_at
                        .map_or(0.0, |at| at.saturating_duration_since(now).as_secs_f64())
                };
                (!available, rank, index, health.measured_at)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        if explore {
            // `None` (never measured) sorts before every instant.
            let stalest = keys
                .iter()
                .enumerate()
                .filter(|(_, key)| !key.0)
                .min_by_key(|(_, key)| key.3)
                .map(|(position, _)| position);
            if let Some(position) = stalest {
                let key = keys.remove(position);
                keys.insert(0, key);
            }
        }
        keys.into_iter().map(|(_, _, index, _)| index).collect()
    }

    /// Sends `query` (an upstream query from
    /// [`crate::resolver::message::upstream_query`]) until an upstream
    /// answers.
    pub async fn resolve(&self, query: &Message) -> Outcome {
        let Some(question) = query.queries().first() else {
            return Outcome::Unreachable;
        };
        let bytes = match query.to_vec() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "failed to encode upstream query");
                return Outcome::Unreachable;
            }
        };
        let mut last_servfail = None;
        let explore =
            self.sent.fetch_add(1, Ordering::Relaxed) % EXPLORE_EVERY == EXPLORE_EVERY - 1;
        for index in self
            .order(Instant::now(), explore)
            .into_iter()
            .take(self.max_attempts)
        {
            let upstream = &self.upstreams[index];
            upstream.queries.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = tokio::time::timeout(
                self.attempt_timeout,
                upstream.connector.exchange(bytes.clone()),
            )
            .await;
            let error = match result {
                Ok(Ok(raw)) => match validate(&upstream.label, &raw, question) {
                    Ok(response) if response.response_code() == ResponseCode::ServFail => {
                        upstream.record_success(started.elapsed());
                        upstream.servfails.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(upstream = %upstream.label, name = %question.name(), "SERVFAIL, trying the next upstream");
                        last_servfail = Some(response);
                        continue;
                    }
                    Ok(response) => {
                        upstream.record_success(started.elapsed());
                        return Outcome::Answer(response, raw.len());
                    }
                    Err(error) => error,
                },
                Ok(Err(error)) => error,
                Err(_) => {
                    upstream.timeouts.fetch_add(1, Ordering::Relaxed);
                    let failures = upstream.record_failure(Instant::now());
                    upstream.connector.reset();
                    let timeout_ms = self.attempt_timeout.as_millis() as u64;
                    // Only the first failure in a row is a warning, so a dead
                    // upstream does not log once per query.
                    if failures == 1 {
                        tracing::warn!(upstream = %upstream.label, timeout_ms, name = %question.name(), "upstream timed out, trying the next one");
                    } else {
                        tracing::debug!(upstream = %upstream.label, timeout_ms, failures, "upstream timed out again");
                    }
                    continue;
                }
            };
            upstream.errors.fetch_add(1, Ordering::Relaxed);
            let failures = upstream.record_failure(Instant::now());
            if failures == 1 {
                tracing::warn!(upstream = %upstream.label, %error, "upstream failed, trying the next one");
            } else {
                tracing::debug!(upstream = %upstream.label, %error, failures, "upstream failed again");
            }
        }
        match last_servfail {
            Some(response) => Outcome::ServFail(response),
            None => Outcome::Unreachable,
        }
    }

    /// Health and counters of every upstream, in configuration order.
    pub fn stats(&self) -> Vec<UpstreamStats> {
        let now = Instant::now();
        self.upstreams
            .iter()
            .map(|upstream| {
                let health = upstream.health();
                UpstreamStats {
                    url: upstream.label.clone(),
                    healthy: health.available(now),
                    rtt_ms: health.rtt_ms,
                    consecutive_failures: health.consecutive_failures,
                    queries: upstream.queries.load(Ordering::Relaxed),
                    errors: upstream.errors.load(Ordering::Relaxed),
                    timeouts: upstream.timeouts.load(Ordering::Relaxed),
                    servfails: upstream.servfails.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// Parses an upstream answer and checks that it answers `question`.
fn validate(label: &str, raw: &[u8], question: &Query) -> Result<Message, UpstreamError> {
    let invalid = |reason| UpstreamError::InvalidResponse {
        upstream: label.to_owned(),
        reason,
    };
    let response = Message::from_vec(raw).map_err(|_| invalid("not a valid DNS message"))?;
    if response.message_type() != MessageType::Response {
        return Err(invalid("QR bit is not set"));
    }
    if response.truncated() {
        return Err(invalid("answer is truncated"));
    }
    match response.queries() {
        [echoed] if echoed == question => Ok(response),
        _ => Err(invalid("question does not match the query")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::config::UpstreamConfig;

    fn pool(count: usize) -> UpstreamPool {
        let config = ResolverConfig {
            upstreams: (0..count)
                .map(|index| {
                    UpstreamConfig::new(format!("udp://127.0.0.{}:53", index + 1).parse().unwrap())
                })
                .collect(),
            ..ResolverConfig::default()
        };
        UpstreamPool::new(&config).unwrap()
    }

    #[tokio::test]
    async fn fastest_available_first_then_resting() {
        let pool = pool(4);
        let now = Instant::now();
        pool.upstreams[0].record_success(Duration::from_millis(50));
        pool.upstreams[1].record_success(Duration::from_millis(5));
        pool.upstreams[2].record_success(Duration::from_millis(1));
        pool.upstreams[2].record_failure(now);
        assert_eq!(
            pool.order(now, false),
            vec![1, 0, 3, 2],
            "unmeasured after measured, resting last"
        );
        assert_eq!(
            pool.order(now + BACKOFF_BASE, false),
            vec![2, 1, 0, 3],
            "back-off over, RTT order again"
        );
    }

    #[tokio::test]
    async fn unmeasured_in_configuration_order() {
        let pool = pool(3);
        assert_eq!(pool.order(Instant::now(), false), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn exploring_puts_stalest_first() {
        let pool = pool(3);
        let now = Instant::now();
        pool.upstreams[0].record_success(Duration::from_millis(5));
        pool.upstreams[1].record_success(Duration::from_millis(2));
        assert_eq!(pool.order(now, false), vec![1, 0, 2]);
        assert_eq!(
            pool.order(now, true),
            vec![2, 1, 0],
            "never measured goes first"
        );
        pool.upstreams[2].record_success(Duration::from_millis(3));
        assert_eq!(
            pool.order(Instant::now(), true),
            vec![0, 1, 2],
            "then the one measured longest ago"
        );
    }

    #[tokio::test]
    async fn backoff_doubles_and_success_resets() {
        let pool = pool(1);
        let upstream = &pool.upstreams[0];
        let now = Instant::now();
        upstream.record_failure(now);
        upstream.record_failure(now);
        assert_eq!(upstream.health().retry_at, Some(now + BACKOFF_BASE * 2));
        for _ in 0..40 {
            upstream.record_failure(now);
        }
        assert_eq!(upstream.health().retry_at, Some(now + BACKOFF_MAX));
        upstream.record_success(Duration::from_millis(3));
        assert!(upstream.health().available(now));
        assert_eq!(upstream.health().consecutive_failures, 0);
    }

    #[test]
    fn rejects_answers_to_other_questions() {
        use hickory_proto::rr::{Name, RecordType};
        let question = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A);
        let mut response = Message::new();
        response.set_message_type(MessageType::Response);
        response.add_query(Query::query(
            Name::from_ascii("example.net.").unwrap(),
            RecordType::A,
        ));
        let raw = response.to_vec().unwrap();
        assert!(validate("test", &raw, &question).is_err());
        response.queries_mut()[0] =
            Query::query(Name::from_ascii("EXAMPLE.com.").unwrap(), RecordType::A);
        let raw = response.to_vec().unwrap();
        assert!(validate("test", &raw, &question).is_ok());
    }
}
