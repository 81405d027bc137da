//! Failure handling against unbound in an upstream namespace: failover from
//! a dead upstream, a stalled DoQ path abandoned at the attempt timeout,
//! serve-stale when every upstream is down, negative caching, local names
//! never forwarded, and CNAME cloaking. Needs root and unbound.

#[path = "support/resolver_env.rs"]
mod resolver_env;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dnsgate::resolver::{
    BlockStyle, NoPolicy, PolicyAction, QueryPolicy, Resolver, ResolverConfig, UpstreamConfig,
    UpstreamSpec, UpstreamStatus,
};
use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use resolver_env::*;

fn config(urls: &[String], env: &UpstreamNetns) -> ResolverConfig {
    let upstreams = urls
        .iter()
        .map(|url| {
            let url: UpstreamSpec = url.parse().unwrap();
            let ca_file = url.protocol.is_encrypted().then(|| env.ca_file.clone());
            UpstreamConfig {
                ca_file,
                ..UpstreamConfig::new(url)
            }
        })
        .collect();
    ResolverConfig {
        upstreams,
        timeout_ms: 500,
        ..ResolverConfig::default()
    }
}

fn resolver(config: ResolverConfig) -> Resolver {
    Resolver::new(&config, Arc::new(NoPolicy)).unwrap()
}

/// Bounds a whole test step, so a hang fails the test instead of stalling
/// the run; it checks liveness, not speed.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the resolver hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_from_dead_first_upstream() {
    if !require_namespace_and_unbound("failover_from_dead_first_upstream") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    // Nothing listens on 8853 in the namespace: the connection is refused.
    let urls = [
        format!("tls://{}:8853", env.addr),
        format!("udp://{}:53", env.addr),
    ];
    let resolver = resolver(config(&urls, &env));

    let response = within(ask(&resolver, "www.test.", RecordType::A, None)).await;
    assert_eq!(a_records(&response), vec![Ipv4Addr::new(192, 0, 2, 10)]);
    let stats = resolver.stats();
    assert_eq!(stats.upstream_status, UpstreamStatus::Degraded);
    assert_eq!(
        (stats.upstreams[0].queries, stats.upstreams[0].errors),
        (1, 1)
    );
    assert!(!stats.upstreams[0].healthy);
    assert_eq!(stats.upstreams[1].queries, 1);

    // The failed upstream rests: the next query goes straight to the other.
    let response = within(ask(&resolver, "www.test.", RecordType::AAAA, None)).await;
    assert_eq!(response.answers().len(), 1);
    let stats = resolver.stats();
    assert_eq!(stats.upstreams[0].queries, 1);
    assert_eq!(stats.upstreams[1].queries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_doq_upstream_abandoned() {
    if !require_namespace_and_unbound("stalled_doq_upstream_abandoned") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let doq = DoqServer::start(&ca, env.socket(53)).await;
    let relay = UdpRelay::start(doq.addr).await;
    let mut config = config(
        &[
            format!("quic://{}", relay.addr),
            format!("udp://{}:53", env.addr),
        ],
        &env,
    );
    config.upstreams[0].tls_name = Some("doq.test".to_owned());
    let resolver = resolver(config);

    let response = within(ask(&resolver, "www.test.", RecordType::A, None)).await;
    assert_eq!(a_records(&response), vec![Ipv4Addr::new(192, 0, 2, 10)]);
    assert_eq!(
        doq.streams.load(Ordering::Relaxed),
        1,
        "the first query went over DoQ"
    );

    // The path goes silent with the QUIC connection open.
    relay.drop_all.store(true, Ordering::Relaxed);
    let response = within(ask(&resolver, "www.test.", RecordType::AAAA, None)).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert_eq!(response.answers().len(), 1, "{response:?}");
    let stats = resolver.stats();
    assert_eq!(stats.upstreams[0].timeouts, 1, "{:?}", stats.upstreams[0]);
    assert!(!stats.upstreams[0].healthy);
    assert_eq!(stats.upstreams[1].queries, 1);

    // While it rests, queries skip the stalled upstream.
    within(ask(&resolver, "missing.test.", RecordType::A, None)).await;
    let stats = resolver.stats();
    assert_eq!(stats.upstreams[0].queries, 2);
    assert_eq!(stats.upstreams[1].queries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8767_serve_stale_when_all_upstreams_down() {
    if !require_namespace_and_unbound("rfc8767_serve_stale_when_all_upstreams_down") {
        return;
    }
    let ca = TestCa::new();
    let mut env = UpstreamNetns::start(&ca);
    let urls = [
        format!("udp://{}:53", env.addr),
        format!("tcp://{}:53", env.addr),
    ];
    let resolver = resolver(config(&urls, &env));

    // short.test has a TTL of 1 s.
    let response = within(ask(
        &resolver,
        "short.test.",
        RecordType::A,
        Some(Edns::new()),
    ))
    .await;
    assert_eq!(a_records(&response), vec![Ipv4Addr::new(192, 0, 2, 11)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.stop_unbound();

    let response = within(ask(
        &resolver,
        "short.test.",
        RecordType::A,
        Some(Edns::new()),
    ))
    .await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&response), vec![Ipv4Addr::new(192, 0, 2, 11)]);
    assert_eq!(response.answers()[0].ttl(), 30, "RFC 8767 §4 stale TTL");
    assert_eq!(ede_codes(&response), vec![3], "EDE 3 Stale Answer");
    let stats = resolver.stats();
    assert_eq!(stats.cache.stale_hits, 1);
    assert_eq!(stats.upstream_errors, 1);
    assert_eq!(stats.upstream_status, UpstreamStatus::Down);

    // A name never cached gets SERVFAIL with EDE 22.
    let response = within(ask(
        &resolver,
        "www.test.",
        RecordType::A,
        Some(Edns::new()),
    ))
    .await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);
    assert_eq!(ede_codes(&response), vec![22]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2308_negative_answers_cached() {
    if !require_namespace_and_unbound("rfc2308_negative_answers_cached") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let resolver = resolver(config(&[format!("udp://{}:53", env.addr)], &env));

    for _ in 0..3 {
        let response = within(ask(&resolver, "nothing.test.", RecordType::A, None)).await;
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
        let soa = &response.name_servers()[0];
        assert!(matches!(soa.data(), RData::SOA(_)));
        assert!(
            soa.ttl() <= 30,
            "negative TTL is the SOA MINIMUM, counted down: {}",
            soa.ttl()
        );
        let response = within(ask(&resolver, "www.test.", RecordType::MX, None)).await;
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty(), "NODATA");
    }
    // A positive control makes sure unbound's log is written.
    within(ask(&resolver, "www.test.", RecordType::A, None)).await;
    assert!(env.wait_logged("www.test. A IN"));
    assert_eq!(
        env.logged_count("nothing.test.", "A"),
        1,
        "NXDOMAIN is asked once: {}",
        env.query_log()
    );
    assert_eq!(
        env.logged_count("www.test.", "MX"),
        1,
        "NODATA is asked once"
    );
    let stats = resolver.stats();
    assert_eq!(stats.cache.hits, 4);
    assert_eq!(stats.cache.misses, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_names_never_reach_unbound() {
    if !require_namespace_and_unbound("local_names_never_reach_unbound") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let mut config = config(&[format!("udp://{}:53", env.addr)], &env);
    config.local.block_private_relay = true;
    let resolver = resolver(config);

    let local_names = [
        ("localhost.", RecordType::A),
        ("app.localhost.", RecordType::AAAA),
        ("_dns.resolver.arpa.", RecordType::SVCB),
        ("use-application-dns.net.", RecordType::A),
        ("mask.icloud.com.", RecordType::A),
        ("printer.lan.", RecordType::A),
        ("nas.home.arpa.", RecordType::AAAA),
        ("7.1.168.192.in-addr.arpa.", RecordType::PTR),
        ("1.0.16.172.in-addr.arpa.", RecordType::PTR),
    ];
    for (name, qtype) in local_names {
        let response = within(ask(&resolver, name, qtype, None)).await;
        assert_ne!(response.response_code(), ResponseCode::ServFail, "{name}");
    }
    within(ask(&resolver, "www.test.", RecordType::A, None)).await;
    assert!(
        env.wait_logged("www.test. A IN"),
        "the control query reached unbound"
    );
    let log = env.query_log();
    for needle in [
        "localhost",
        "resolver.arpa",
        "use-application-dns",
        "icloud",
        ".lan.",
        "home.arpa",
        "in-addr.arpa",
    ] {
        assert!(
            !log.contains(needle),
            "{needle} reached the upstream: {log}"
        );
    }
    assert_eq!(resolver.stats().upstreams[0].queries, 1);
}

/// Blocks `tracker.test` and its subdomains.
struct TrackerPolicy;

impl QueryPolicy for TrackerPolicy {
    fn check(&self, name: &Name, _qtype: u16, _client: IpAddr) -> PolicyAction {
        let rule = Name::from_ascii("tracker.test.").unwrap();
        if rule.zone_of(name) {
            return PolicyAction::Block {
                rule,
                style: BlockStyle::default(),
            };
        }
        PolicyAction::Pass
    }
}

/// Allows `cloaked.test` explicitly, which exempts its CNAME chain.
struct AllowCloaked;

impl QueryPolicy for AllowCloaked {
    fn check(&self, name: &Name, qtype: u16, client: IpAddr) -> PolicyAction {
        if name == &Name::from_ascii("cloaked.test.").unwrap() {
            return PolicyAction::Allow;
        }
        TrackerPolicy.check(name, qtype, client)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_cloaking_blocked() {
    if !require_namespace_and_unbound("cname_cloaking_blocked") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let config = config(&[format!("udp://{}:53", env.addr)], &env);
    let resolver = Resolver::new(&config, Arc::new(TrackerPolicy)).unwrap();

    // cloaked.test is a CNAME to pixel.tracker.test.
    for _ in 0..2 {
        let response = within(ask(
            &resolver,
            "cloaked.test.",
            RecordType::A,
            Some(Edns::new()),
        ))
        .await;
        assert_eq!(
            a_records(&response),
            vec![Ipv4Addr::UNSPECIFIED],
            "{response:?}"
        );
        assert_eq!(ede_codes(&response), vec![15]);
    }
    let stats = resolver.stats();
    assert_eq!(
        stats.blocked_cname, 2,
        "blocked from the upstream answer and from the cache"
    );
    assert_eq!(stats.cache.hits, 1);

    let response = within(ask(&resolver, "alias.test.", RecordType::A, None)).await;
    assert!(
        matches!(response.answers()[0].data(), RData::CNAME(_)),
        "an innocent alias passes"
    );

    let resolver = Resolver::new(&config, Arc::new(AllowCloaked)).unwrap();
    let response = within(ask(&resolver, "cloaked.test.", RecordType::A, None)).await;
    assert!(
        matches!(response.answers()[0].data(), RData::CNAME(_)),
        "an allow rule exempts the chain"
    );
    assert_eq!(resolver.stats().blocked_cname, 0);
}
