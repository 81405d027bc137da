//! Every upstream transport against real servers: unbound in its own
//! network namespace for UDP, TCP, DoT and DoH, and the test-support DoQ
//! server (forwarding to that unbound) for DoQ. Needs root and unbound.

#[path = "support/resolver_env.rs"]
mod resolver_env;

use std::net::Ipv4Addr;
use std::sync::Arc;

use dnsgate::resolver::{
    NoPolicy, Resolver, ResolverConfig, UpstreamConfig, UpstreamSpec, UpstreamStatus,
};
use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use resolver_env::*;

fn upstream(url: &str, env: &UpstreamNetns) -> UpstreamConfig {
    let url: UpstreamSpec = url.parse().unwrap();
    let ca_file = url.protocol.is_encrypted().then(|| env.ca_file.clone());
    UpstreamConfig {
        ca_file,
        ..UpstreamConfig::new(url)
    }
}

fn resolver(upstreams: Vec<UpstreamConfig>) -> Resolver {
    let config = ResolverConfig {
        upstreams,
        ..ResolverConfig::default()
    };
    Resolver::new(&config, Arc::new(NoPolicy)).unwrap()
}

/// Resolves the test zone's names over the resolver's single upstream and
/// checks the answers, the counters and that nothing failed.
async fn check_upstream(resolver: &Resolver, env: &UpstreamNetns) {
    assert_eq!(resolver.upstream_status(), UpstreamStatus::Untested, "nothing forwarded yet");
    let response = ask(resolver, "www.test.", RecordType::A, None).await;
    assert_eq!(
        response.response_code(),
        ResponseCode::NoError,
        "{response:?}"
    );
    assert_eq!(a_records(&response), vec![Ipv4Addr::new(192, 0, 2, 10)]);

    // unbound's local data does not follow the CNAME, so the answer is the
    // alias alone.
    let response = ask(resolver, "alias.test.", RecordType::A, Some(Edns::new())).await;
    let RData::CNAME(target) = response.answers()[0].data() else {
        panic!("no CNAME: {response:?}")
    };
    assert_eq!(target.0.to_ascii(), "www.test.");
    assert!(response.extensions().is_some(), "OPT answered with OPT");

    let response = ask(resolver, "www.test.", RecordType::AAAA, None).await;
    assert_eq!(response.answers().len(), 1);

    let response = ask(resolver, "missing.test.", RecordType::A, None).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);

    let stats = resolver.stats();
    assert_eq!(stats.upstream_status, UpstreamStatus::Healthy);
    let upstream = &stats.upstreams[0];
    assert_eq!(upstream.queries, 4, "{upstream:?}");
    assert_eq!(upstream.errors + upstream.timeouts, 0, "{upstream:?}");
    assert!(upstream.rtt_ms.is_some());
    assert!(
        env.wait_logged("missing.test."),
        "unbound logged no query: {}",
        env.query_log()
    );
}

macro_rules! transport_test {
    ($name:ident, $url:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if !require_namespace_and_unbound(stringify!($name)) {
                return;
            }
            let ca = TestCa::new();
            let env = UpstreamNetns::start(&ca);
            let url = format!($url, env.addr);
            let resolver = resolver(vec![upstream(&url, &env)]);
            check_upstream(&resolver, &env).await;
        }
    };
}

transport_test!(udp_upstream, "udp://{}:53");
transport_test!(tcp_upstream_rfc7766, "tcp://{}:53");
transport_test!(tls_upstream_rfc7858, "tls://{}:853");
transport_test!(https_upstream_rfc8484, "https://{}:443/dns-query");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_upstream_rfc9250() {
    if !require_namespace_and_unbound("quic_upstream_rfc9250") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let doq = DoqServer::start(&ca, env.socket(53)).await;
    let resolver = resolver(vec![upstream(&format!("quic://{}", doq.addr), &env)]);
    check_upstream(&resolver, &env).await;
    assert_eq!(
        doq.streams.load(std::sync::atomic::Ordering::Relaxed),
        4,
        "one stream per query"
    );
    assert_eq!(
        doq.connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one connection for all queries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_by_name_through_bootstrap() {
    if !require_namespace_and_unbound("tls_upstream_by_name_through_bootstrap") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let mut config = upstream("tls://dns.upstream.test:853", &env);
    config.bootstrap = vec![format!("udp://{}", env.addr).parse().unwrap()];
    let resolver = resolver(vec![config]);
    check_upstream(&resolver, &env).await;
    assert!(
        env.logged_count("dns.upstream.test.", "A") >= 1,
        "the bootstrap lookup went to unbound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_with_wrong_name_fails() {
    if !require_namespace_and_unbound("tls_upstream_with_wrong_name_fails") {
        return;
    }
    let ca = TestCa::new();
    let env = UpstreamNetns::start(&ca);
    let mut config = upstream(&format!("tls://{}:853", env.addr), &env);
    config.tls_name = Some("other.example".to_owned());
    let resolver = resolver(vec![config]);
    let response = ask(&resolver, "www.test.", RecordType::A, Some(Edns::new())).await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);
    assert_eq!(ede_codes(&response), vec![22]);
    assert_eq!(resolver.stats().upstreams[0].errors, 1);
}
