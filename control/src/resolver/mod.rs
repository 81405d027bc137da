//! The forwarding resolver: the LAN listeners hand it each query through
//! [`server::DnsHandler`], and it answers from the user-space policy, the
//! local zones, the cache or the upstreams, in that order.
//!
//! * The policy comes first, as in the kernel, which judges a query before
//!   anything else sees it.
//! * Local names (`localhost`, `resolver.arpa`, the LAN's names) never go
//!   upstream.
//! * Upstream answers are cached, and checked for CNAME chains that reach a
//!   blocked name.
//! * With no upstream configured, or none answering and nothing stale in
//!   the cache, the answer is SERVFAIL with Extended DNS Error 22.

pub mod cache;
pub mod config;
pub mod local;
pub mod message;
pub mod policy;
pub mod server;
pub mod stats;
pub mod upstream;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};

pub use cache::{CacheKey, CacheStats};
pub use config::{CacheConfig, LocalConfig, ResolverConfig, UpstreamConfig};
pub use local::{DesignatedResolvers, DohBypassNames};
pub use policy::{BlockStyle, NoPolicy, PolicyAction, QueryPolicy};
pub use stats::{ResolverStats, TransportCounts, UpstreamStatus};
pub use upstream::{Protocol, UpstreamConfigError, UpstreamSpec, UpstreamSpecError, UpstreamStats};

use cache::{Cache, CachedAnswer};
use local::{LocalRoute, LocalZones};
use message::{ClientQuery, ExtendedError, Rejection, encode};
use server::{DnsHandler, Request};
use stats::{Counters, bump};
use upstream::{Outcome, UpstreamPool};

/// Errors from building a resolver out of its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// An upstream's settings are unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    /// The LAN name server is not plain DNS at an IP address.
    #[error(
        "local name server {server} must be udp:// or tcp:// with an IP address, such as udp://127.0.0.1:5353"
    )]
    InvalidLocalServer {
        /// The server as configured.
        server: String,
    },
}

/// The resolver core.
pub struct Resolver {
    policy: Arc<dyn QueryPolicy>,
    local: LocalZones,
    local_server: Option<UpstreamPool>,
    cache: Cache,
    upstreams: UpstreamPool,
    counters: Counters,
}

impl Resolver {
    /// Builds a resolver that judges queries with `policy`.
    pub fn new(
        config: &ResolverConfig,
        policy: Arc<dyn QueryPolicy>,
    ) -> Result<Self, ResolverError> {
        Self::with_designated_resolvers(config, policy, None)
    }

    /// Builds a resolver whose `_dns.resolver.arpa` SVCB answers come from
    /// `designated` (RFC 9462 §4).
    pub fn with_designated_resolvers(
        config: &ResolverConfig,
        policy: Arc<dyn QueryPolicy>,
        designated: Option<Arc<dyn DesignatedResolvers>>,
    ) -> Result<Self, ResolverError> {
        let (local_server, upstreams) = Self::pools(config)?;
        // The daemon warns when none is configured, naming the setting.
        if !upstreams.is_empty() {
            let urls: Vec<String> =
                config.upstreams.iter().map(|upstream| upstream.url.to_string()).collect();
            tracing::info!(?urls, "resolver forwarding to upstreams");
        }
        Ok(Self {
            policy,
            local: LocalZones::new(&config.local, designated),
            local_server,
            cache: Cache::new(config.cache.clone()),
            upstreams,
            counters: Counters::default(),
        })
    }

    /// Checks the settings as [`new`](Self::new) does, without building a
    /// resolver or logging: every upstream, its bootstrap servers and the
    /// LAN name server must be usable.
    pub fn check_config(config: &ResolverConfig) -> Result<(), ResolverError> {
        Self::pools(config).map(drop)
    }

    /// Builds the pool of the LAN name server, if one is set, and the pool
    /// of upstreams. Neither opens a connection yet.
    fn pools(config: &ResolverConfig) -> Result<(Option<UpstreamPool>, UpstreamPool), ResolverError> {
        let local_server = match &config.local.server {
            None => None,
            Some(server) => {
                if server.socket_addr().is_none() || !matches!(server.protocol, Protocol::Udp | Protocol::Tcp) {
                    return Err(ResolverError::InvalidLocalServer { server: server.to_string() });
                }
                let local_config = ResolverConfig {
                    upstreams: vec![UpstreamConfig::new(server.clone())],
                    max_attempts: 1,
                    ..config.clone()
                };
                Some(UpstreamPool::new(&local_config)?)
            }
        };
        Ok((local_server, UpstreamPool::new(config)?))
    }

    /// Returns whether upstreams are configured and healthy.
    pub fn upstream_status(&self) -> UpstreamStatus {
        let upstreams = self.upstreams.stats();
        let healthy = upstreams.iter().filter(|upstream| upstream.healthy).count();
        match (upstreams.len(), healthy) {
            (0, _) => UpstreamStatus::NotConfigured,
            (total, healthy) if healthy == total && upstreams.iter().all(|upstream| upstream.queries == 0) => {
                UpstreamStatus::Untested
            }
            (total, healthy) if healthy == total => UpstreamStatus::Healthy,
            (_, 0) => UpstreamStatus::Down,
            _ => UpstreamStatus::Degraded,
        }
    }

    /// Replaces the names of DoH resolvers that are answered NXDOMAIN with
    /// their subdomains (`[intercept] doh_resolver_lists`).
    pub fn set_doh_bypass(&self, names: DohBypassNames) {
        self.local.set_doh_bypass(names);
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> ResolverStats {
        self.counters.snapshot(
            self.upstream_status(),
            self.cache.stats(),
            self.upstreams.stats(),
        )
    }

    /// Answers one query; `None` means send nothing.
    pub async fn resolve(&self, request: Request) -> Option<Vec<u8>> {
        self.counters.count_query(&request.transport);
        let query = match message::parse_client_query(&request.message) {
            Ok(query) => query,
            Err(Rejection::Drop) => {
                bump(&self.counters.dropped);
                return None;
            }
            Err(Rejection::Respond(response)) => {
                let formerr = response.get(3).is_some_and(|flags| flags & 0x0f == 1);
                bump(if formerr {
                    &self.counters.formerr
                } else {
                    &self.counters.rejected
                });
                return Some(response);
            }
        };
        let client = request.client.ip();
        let qtype = u16::from(query.qtype());

        let mut check_cnames = true;
        match self.policy.check(query.name(), qtype, client) {
            PolicyAction::Block { rule, style } => {
                bump(&self.counters.blocked);
                tracing::debug!(name = %query.name(), qtype, %client, %rule, "blocked");
                return Some(policy::blocked_answer(
                    &request.message,
                    &query,
                    &rule,
                    &style,
                ));
            }
            PolicyAction::Rewrite { v4, v6, ttl } => {
                bump(&self.counters.rewritten);
                return Some(encode(&policy::rewrite_message(&query, &v4, &v6, ttl)));
            }
            PolicyAction::Allow => check_cnames = false,
            PolicyAction::Pass => {}
        }

        match self.local.route(&query, request.local) {
            LocalRoute::Answer(response) => {
                bump(&self.counters.local);
                return Some(encode(&response));
            }
            LocalRoute::DohBypass(response) => {
                bump(&self.counters.doh_bypass_nxdomain);
                tracing::debug!(name = %query.name(), qtype, %client, "DoH resolver name answered NXDOMAIN");
                return Some(encode(&response));
            }
            LocalRoute::LanNames { zone } => {
                bump(&self.counters.local);
                return Some(self.resolve_lan_name(&query, &zone).await);
            }
            LocalRoute::Upstream => {}
        }
        Some(self.forward(&query, client, check_cnames).await)
    }

    async fn forward(&self, query: &ClientQuery, client: IpAddr, check_cnames: bool) -> Vec<u8> {
        let key = CacheKey::new(
            query.name(),
            query.qtype(),
            query.question.query_class(),
            query.dnssec_ok(),
            query.message.checking_disabled(),
        );
        if let Some(cached) = self.cache.get(&key) {
            return self.answer(query, cached, client, check_cnames, None);
        }
        if self.upstreams.is_empty() {
            bump(&self.counters.servfail);
            let response = message::servfail(
                query,
                ExtendedError::NoReachableAuthority,
                "no upstream resolver is configured",
            );
            return encode(&response);
        }

        // NOTE: identical queries in flight are not merged, so each cache
        // miss sends its own upstream query.
        let outcome = self
            .upstreams
            .resolve(&message::upstream_query(query))
            .await;
        let servfail = match outcome {
            Outcome::Answer(response, wire_len) => {
                self.cache.insert(key, &response, wire_len);
                return self.answer(
                    query,
                    CachedAnswer::from_message(&response),
                    client,
                    check_cnames,
                    None,
                );
            }
            Outcome::ServFail(response) => Some(response),
            Outcome::Unreachable => {
                bump(&self.counters.upstream_errors);
                None
            }
        };
        // RFC 8767 §4: answer from an expired entry when no upstream can.
        if let Some(stale) = self.cache.get_stale(&key) {
            tracing::debug!(name = %query.name(), "every upstream failed, serving a stale answer");
            return self.answer(
                query,
                stale,
                client,
                check_cnames,
                Some(ExtendedError::StaleAnswer),
            );
        }
        bump(&self.counters.servfail);
        let response = match servfail {
            Some(_) => message::response_to(query, ResponseCode::ServFail),
            None => message::servfail(
                query,
                ExtendedError::NoReachableAuthority,
                "no upstream resolver answered",
            ),
        };
        encode(&response)
    }

    /// Builds the client's response from an upstream or cached answer, or a
    /// blocked answer when its CNAME chain reaches a blocked name.
    fn answer(
        &self,
        query: &ClientQuery,
        answer: CachedAnswer,
        client: IpAddr,
        check_cnames: bool,
        extended_error: Option<ExtendedError>,
    ) -> Vec<u8> {
        if check_cnames {
            let qtype = u16::from(query.qtype());
            if let Some((rule, style)) =
                policy::cloaked_block(self.policy.as_ref(), &answer.answers, qtype, client)
            {
                bump(&self.counters.blocked_cname);
                tracing::debug!(name = %query.name(), %rule, %client, "blocked a CNAME-cloaked answer");
                return encode(&policy::blocked_message(query, &rule, &style));
            }
        }
        encode(&response_from_answer(query, answer, extended_error))
    }

    async fn resolve_lan_name(&self, query: &ClientQuery, zone: &Name) -> Vec<u8> {
        let Some(server) = &self.local_server else {
            return encode(&self.local.negative(query, zone, ResponseCode::NXDomain));
        };
        match server.resolve(&message::upstream_query(query)).await {
            Outcome::Answer(response, _) | Outcome::ServFail(response) => encode(
                &response_from_answer(query, CachedAnswer::from_message(&response), None),
            ),
            Outcome::Unreachable => {
                bump(&self.counters.servfail);
                encode(&message::servfail(
                    query,
                    ExtendedError::NetworkError,
                    "the local name server did not answer",
                ))
            }
        }
    }
}

/// Builds the client's response carrying `answer`'s records. AD is passed
/// on only to clients that set DO or AD in the query (RFC 6840 §5.8).
fn response_from_answer(
    query: &ClientQuery,
    answer: CachedAnswer,
    extended_error: Option<ExtendedError>,
) -> Message {
    let mut response = message::response_to(query, answer.rcode);
    let wants_ad = query.dnssec_ok() || query.message.authentic_data();
    response.set_authentic_data(answer.authentic_data && wants_ad);
    let strip_dnssec = !query.dnssec_ok();
    let keep = |record: &Record| !(strip_dnssec && is_dnssec_type(record.record_type()));
    response.add_answers(answer.answers.into_iter().filter(keep));
    response.add_name_servers(answer.authority.into_iter().filter(keep));
    response.add_additionals(answer.additional.into_iter().filter(keep));
    if let Some(code) = extended_error {
        message::add_extended_error(&mut response, code, "");
    }
    response
}

/// RRSIG, NSEC and NSEC3, which a client without DO does not receive
/// (RFC 4035 §3.2.1).
fn is_dnssec_type(rtype: RecordType) -> bool {
    matches!(u16::from(rtype), 46 | 47 | 50)
}

impl DnsHandler for Resolver {
    fn handle(
        &self,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>> {
        Box::pin(self.resolve(request))
    }
}
