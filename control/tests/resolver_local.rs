//! Resolver-core behaviour that needs no upstream namespace, driven through
//! the `DnsHandler` interface: SERVFAIL without upstreams, FORMERR and
//! robustness on garbage, ECS stripping and random IDs and ports towards a
//! recording upstream, local names kept away from it, and blocked answers
//! that match the kernel's bytes.

#[path = "support/resolver_env.rs"]
mod resolver_env;

use std::net::IpAddr;
use std::sync::Arc;

use dnsgate::resolver::server::{DnsHandler, Transport};
use dnsgate::resolver::{
    BlockStyle, NoPolicy, PolicyAction, QueryPolicy, Resolver, ResolverConfig, UpstreamConfig,
    UpstreamSpec, UpstreamStatus,
};
use dnsgate_common::maps::BlockMode;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use rand::Rng;
use resolver_env::*;

fn resolver(config: ResolverConfig) -> Resolver {
    Resolver::new(&config, Arc::new(NoPolicy)).unwrap()
}

fn with_upstream(addr: std::net::SocketAddr) -> ResolverConfig {
    ResolverConfig {
        upstreams: vec![UpstreamConfig::new(UpstreamSpec::udp(addr))],
        ..ResolverConfig::default()
    }
}

#[tokio::test]
async fn no_upstream_servfail_rfc8914_ede_22() {
    let resolver = resolver(ResolverConfig::default());
    assert_eq!(resolver.upstream_status(), UpstreamStatus::NotConfigured);

    let response = ask(&resolver, "example.com.", RecordType::A, Some(Edns::new())).await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);
    assert_eq!(ede_codes(&response), vec![22]);

    let stats = resolver.stats();
    assert_eq!(stats.upstream_status, UpstreamStatus::NotConfigured);
    assert_eq!(stats.servfail, 1);
    assert_eq!(stats.queries.udp, 1);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["upstream_status"], "not_configured");
}

#[tokio::test]
async fn local_names_answered_without_upstream() {
    let resolver = resolver(ResolverConfig::default());
    let response = ask(&resolver, "localhost.", RecordType::A, None).await;
    assert_eq!(a_records(&response), vec![std::net::Ipv4Addr::LOCALHOST]);
    let response = ask(&resolver, "printer.lan.", RecordType::A, None).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);
    let response = ask(&resolver, "use-application-dns.net.", RecordType::A, None).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);
    let response = ask(&resolver, "_dns.resolver.arpa.", RecordType::SVCB, None).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(response.answers().is_empty());
    assert_eq!(resolver.stats().local, 4);
}

#[tokio::test]
async fn rfc1035_formerr_on_garbage() {
    let resolver = resolver(ResolverConfig::default());
    let handler: &dyn DnsHandler = &resolver;
    let cases: [&[u8]; 4] = [
        // A label length that runs past the end.
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'a'],
        // A question count of one with no question.
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
        // A compression pointer to itself.
        &[
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ],
        // Two questions, which no resolver answers.
        &[
            0x12, 0x34, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1, 1, b'b', 0, 0,
            1, 0, 1,
        ],
    ];
    for (index, bytes) in cases.iter().enumerate() {
        let response = handler
            .handle(request(bytes.to_vec(), Transport::Tcp))
            .await
            .expect("an answer");
        assert!(response.len() >= 12, "case {index}");
        assert_eq!(&response[0..2], &[0x12, 0x34], "case {index}: ID");
        assert_eq!(response[2] & 0x80, 0x80, "case {index}: QR");
        assert_eq!(response[3] & 0x0f, 1, "case {index}: RCODE FORMERR");
    }
    assert_eq!(resolver.stats().formerr, cases.len() as u64);

    // Too short to carry an ID, or a response: nothing is sent back.
    assert!(
        handler
            .handle(request(vec![1, 2, 3], Transport::Udp))
            .await
            .is_none()
    );
    let mut response_bit = query_bytes("example.com.", RecordType::A, None);
    response_bit[2] |= 0x80;
    assert!(
        handler
            .handle(request(response_bit, Transport::Udp))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn random_and_mutated_queries_never_crash() {
    let upstream = RecordingUpstream::start().await;
    let resolver = resolver(with_upstream(upstream.addr));
    let handler: &dyn DnsHandler = &resolver;
    let mut rng = rand::rng();
    let seed = query_bytes("www.example.com.", RecordType::A, Some(Edns::new()));
    // Bounded in count; each query is answered locally, from the cache or
    // by the loopback upstream.
    for round in 0..3000 {
        let bytes = if round % 2 == 0 {
            let len = rng.random_range(0..80);
            (0..len).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            let mut bytes = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let index = rng.random_range(0..bytes.len());
                bytes[index] = rng.random();
            }
            bytes
        };
        if let Some(response) = handler.handle(request(bytes.clone(), Transport::Udp)).await {
            assert!(
                response.len() >= 12,
                "round {round}: short answer to {bytes:02x?}"
            );
            assert_eq!(
                response[0..2],
                bytes[0..2],
                "round {round}: ID of {bytes:02x?}"
            );
            assert_eq!(
                response[2] & 0x80,
                0x80,
                "round {round}: QR of {bytes:02x?}"
            );
        }
    }
    let response = ask(&resolver, "after.example.", RecordType::A, None).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert_eq!(
        a_records(&response),
        vec![std::net::Ipv4Addr::new(192, 0, 2, 1)]
    );
}

#[tokio::test]
async fn rfc7871_client_subnet_stripped_and_bits_passed() {
    let upstream = RecordingUpstream::start().await;
    let resolver = resolver(with_upstream(upstream.addr));

    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            "192.168.1.0".parse().unwrap(),
            24,
            0,
        )));
    let mut message =
        Message::from_vec(&query_bytes("ecs.example.", RecordType::A, Some(edns))).unwrap();
    message.set_checking_disabled(true).set_authentic_data(true);
    let handler: &dyn DnsHandler = &resolver;
    let response = handler
        .handle(request(message.to_vec().unwrap(), Transport::Tls))
        .await
        .unwrap();
    let response = Message::from_vec(&response).unwrap();
    assert_eq!(
        a_records(&response),
        vec![std::net::Ipv4Addr::new(192, 0, 2, 1)]
    );
    let response_edns = response.extensions().as_ref().expect("OPT in the answer");
    assert!(
        response_edns.option(EdnsCode::Subnet).is_none(),
        "ECS is not echoed to the client"
    );

    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    let sent_edns = sent
        .extensions()
        .as_ref()
        .expect("the upstream query carries OPT");
    assert!(
        sent_edns.option(EdnsCode::Subnet).is_none(),
        "ECS reached the upstream: {sent_edns:?}"
    );
    assert!(sent_edns.options().as_ref().is_empty());
    assert!(sent_edns.flags().dnssec_ok, "DO passes through");
    assert!(sent.checking_disabled(), "CD passes through");
    assert!(sent.authentic_data(), "AD passes through");
}

#[tokio::test]
async fn rfc5452_random_ids_and_ports_upstream() {
    let upstream = RecordingUpstream::start().await;
    let resolver = resolver(with_upstream(upstream.addr));
    let handler: &dyn DnsHandler = &resolver;
    for index in 0..8 {
        let mut bytes = query_bytes(&format!("n{index}.example."), RecordType::A, None);
        bytes[0..2].copy_from_slice(&[0x11, 0x11]);
        let response = handler
            .handle(request(bytes, Transport::Udp))
            .await
            .unwrap();
        assert_eq!(&response[0..2], &[0x11, 0x11]);
    }
    let received = upstream.queries.lock().unwrap().clone();
    assert_eq!(received.len(), 8);
    let ids: std::collections::HashSet<[u8; 2]> = received
        .iter()
        .map(|(bytes, _)| [bytes[0], bytes[1]])
        .collect();
    let ports: std::collections::HashSet<u16> =
        received.iter().map(|(_, peer)| peer.port()).collect();
    assert!(ids.len() >= 7, "upstream IDs repeat: {ids:?}");
    assert!(
        !ids.contains(&[0x11, 0x11]) || ids.len() == 8,
        "the client's ID is reused"
    );
    assert!(ports.len() >= 7, "source ports repeat: {ports:?}");
}

#[tokio::test]
async fn local_names_never_reach_recording_upstream() {
    let upstream = RecordingUpstream::start().await;
    let lan_server = RecordingUpstream::start().await;
    let mut config = with_upstream(upstream.addr);
    config.local.server = Some(UpstreamSpec::udp(lan_server.addr));
    config.local.block_private_relay = true;
    let resolver = resolver(config);

    let local_names = [
        ("localhost.", RecordType::A),
        ("db.localhost.", RecordType::AAAA),
        ("1.0.0.127.in-addr.arpa.", RecordType::PTR),
        ("_dns.resolver.arpa.", RecordType::SVCB),
        ("use-application-dns.net.", RecordType::A),
        ("mask.icloud.com.", RecordType::A),
        ("mask-h2.icloud.com.", RecordType::AAAA),
        ("printer.lan.", RecordType::A),
        ("nas.home.arpa.", RecordType::A),
        ("5.1.168.192.in-addr.arpa.", RecordType::PTR),
        ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
    ];
    for (name, qtype) in local_names {
        let response = ask(&resolver, name, qtype, None).await;
        assert_ne!(response.response_code(), ResponseCode::ServFail, "{name}");
    }
    ask(&resolver, "www.example.", RecordType::A, None).await;

    let forwarded: Vec<String> = upstream
        .received()
        .iter()
        .map(|query| query.queries()[0].name().to_ascii())
        .collect();
    assert_eq!(
        forwarded,
        vec!["www.example.".to_owned()],
        "only the public name goes upstream"
    );
    let lan: Vec<String> = lan_server
        .received()
        .iter()
        .map(|query| query.queries()[0].name().to_ascii())
        .collect();
    assert_eq!(
        lan,
        vec![
            "printer.lan.",
            "nas.home.arpa.",
            "5.1.168.192.in-addr.arpa.",
            "1.0.0.10.in-addr.arpa."
        ]
    );
}

struct BlockAds(BlockMode);

impl QueryPolicy for BlockAds {
    fn check(&self, name: &Name, _qtype: u16, _client: IpAddr) -> PolicyAction {
        let rule = Name::from_ascii("ads.example.").unwrap();
        if rule.zone_of(name) {
            PolicyAction::Block {
                rule,
                style: BlockStyle {
                    mode: self.0,
                    ttl: 10,
                    ..BlockStyle::default()
                },
            }
        } else {
            PolicyAction::Pass
        }
    }
}

#[tokio::test]
async fn blocked_answer_equals_kernel_bytes() {
    let upstream = RecordingUpstream::start().await;
    for mode in [
        BlockMode::NullAddress,
        BlockMode::NxDomain,
        BlockMode::Refused,
    ] {
        let resolver =
            Resolver::new(&with_upstream(upstream.addr), Arc::new(BlockAds(mode))).unwrap();
        for (qtype, edns) in [
            (RecordType::A, None),
            (RecordType::AAAA, Some(Edns::new())),
            (RecordType::TXT, Some(Edns::new())),
        ] {
            let bytes = query_bytes("pixel.Ads.example.", qtype, edns);
            let parsed = dnsgate_common::wire::parse_query(&bytes).unwrap();
            let style = BlockStyle {
                mode,
                ttl: 10,
                ..BlockStyle::default()
            };
            let mut expected = vec![0u8; 512];
            let len = dnsgate_common::response::build_blocked(
                &bytes,
                &parsed,
                1,
                &style.dataplane_config(),
                &mut expected,
            )
            .unwrap();
            expected.truncate(len);

            let handler: &dyn DnsHandler = &resolver;
            let answer = handler
                .handle(request(bytes, Transport::Quic))
                .await
                .unwrap();
            assert_eq!(answer, expected, "{mode:?} {qtype}");
        }
        assert_eq!(resolver.stats().blocked, 3);
    }
    assert!(
        upstream.received().is_empty(),
        "blocked names never go upstream"
    );
}
