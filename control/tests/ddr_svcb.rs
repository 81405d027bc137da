//! DDR answers (RFC 9462 §4, SVCB mapping of RFC 9461) built by the
//! resolver with the `ddr::Designated` hook, decoded with hickory-proto:
//! every SvcParam, the additional A / AAAA records, the addresses of the
//! arrival interface only, no link-local hints, and the size limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dnsgate::ddr::{Designated, FixedAddresses, endpoints};
use dnsgate::resolver::server::{DnsHandler, Request, ServerConfig, Transport};
use dnsgate::resolver::{NoPolicy, Resolver, ResolverConfig};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
use hickory_proto::rr::{Name, RData, RecordType};

const DOHPATH_KEY: u16 = 7;

fn lan() -> FixedAddresses {
    let pairs = [
        ("br-lan", "192.168.1.1"),
        ("br-lan", "fd42::1"),
        ("br-lan", "2001:db8:1::1"),
        ("br-lan", "fe80::1"),
        ("guest", "192.168.2.1"),
        ("guest", "fd43::1"),
    ];
    FixedAddresses(pairs.iter().map(|(name, ip)| ((*name).to_owned(), ip.parse().unwrap())).collect())
}

fn resolver() -> Resolver {
    let designated = Designated::new("router.example", endpoints(&ServerConfig::default()), 300, Arc::new(lan())).unwrap();
    Resolver::with_designated_resolvers(&ResolverConfig::default(), Arc::new(NoPolicy), Some(Arc::new(designated)))
        .unwrap()
}

async fn ask(resolver: &Resolver, name: &str, qtype: RecordType, local: &str, transport: Transport) -> (Message, Vec<u8>) {
    let mut query = Message::new();
    query.set_id(4242).set_recursion_desired(true);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let request = Request {
        message: query.to_vec().unwrap(),
        client: "192.168.1.50:40000".parse().unwrap(),
        local: local.parse::<SocketAddr>().unwrap(),
        transport,
    };
    let handler: &dyn DnsHandler = resolver;
    let bytes = handler.handle(request).await.expect("the resolver sent no answer");
    (Message::from_vec(&bytes).expect("the answer does not parse"), bytes)
}

#[tokio::test]
async fn rfc9462_4_every_svc_param_decodes() {
    let resolver = resolver();
    let (response, bytes) = ask(&resolver, "_dns.resolver.arpa.", RecordType::SVCB, "192.168.1.1:53", Transport::Udp).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(bytes.len() < 512, "the DDR answer is {} bytes, more than a plain UDP response may carry", bytes.len());
    // RFC 9460 §2.2: the TargetName is never compressed, so each of the
    // three records carries it in full.
    let target_wire = b"\x06router\x07example\x00";
    let full_targets = bytes.windows(target_wire.len()).filter(|window| window == target_wire).count();
    assert!(full_targets >= 3, "only {full_targets} uncompressed TargetNames in the answer");

    let mut alpns = Vec::new();
    for (record, expected_priority) in response.answers().iter().zip(1u16..) {
        let RData::SVCB(svcb) = record.data() else { panic!("not SVCB: {record:?}") };
        assert_eq!(svcb.svc_priority(), expected_priority, "ServiceMode priorities 1, 2, 3");
        assert_eq!(svcb.target_name(), &Name::from_ascii("router.example.").unwrap());
        let mut alpn = None;
        let mut port = None;
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut dohpath = None;
        for (key, value) in svcb.svc_params() {
            match (key, value) {
                (SvcParamKey::Alpn, SvcParamValue::Alpn(ids)) => alpn = Some(ids.0.clone()),
                (SvcParamKey::Port, SvcParamValue::Port(number)) => port = Some(*number),
                (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(hint)) => v4 = hint.0.iter().map(|a| a.0).collect(),
                (SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(hint)) => v6 = hint.0.iter().map(|a| a.0).collect(),
                (SvcParamKey::Unknown(DOHPATH_KEY), SvcParamValue::Unknown(bytes)) => {
                    dohpath = Some(String::from_utf8(bytes.0.clone()).unwrap())
                }
                other => panic!("unexpected SvcParam {other:?}"),
            }
        }
        let alpn = alpn.expect("alpn is missing");
        assert_eq!(alpn.len(), 1);
        match alpn[0].as_str() {
            "dot" => assert_eq!(port, Some(853)),
            "doq" => assert_eq!(port, Some(853)),
            "h2" => {
                assert_eq!(port, Some(443));
                assert_eq!(dohpath.as_deref(), Some("/dns-query{?dns}"));
            }
            other => panic!("unexpected ALPN {other}"),
        }
        if alpn[0] != "h2" {
            assert_eq!(dohpath, None, "dohpath belongs to DoH only");
        }
        assert_eq!(v4, ["192.168.1.1".parse::<std::net::Ipv4Addr>().unwrap()]);
        let v6: Vec<String> = v6.iter().map(ToString::to_string).collect();
        assert_eq!(v6, ["fd42::1", "2001:db8:1::1"], "ULA and global, never link-local");
        alpns.push(alpn[0].clone());
    }
    assert_eq!(alpns, ["dot", "h2", "doq"]);

    let mut additional: Vec<(RecordType, String)> = response
        .additionals()
        .iter()
        .map(|record| {
            assert_eq!(record.name(), &Name::from_ascii("router.example.").unwrap());
            let address = match record.data() {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(aaaa) => aaaa.0.to_string(),
                other => panic!("unexpected additional record {other:?}"),
            };
            (record.record_type(), address)
        })
        .collect();
    additional.sort();
    assert_eq!(
        additional,
        [
            (RecordType::A, "192.168.1.1".to_owned()),
            (RecordType::AAAA, "2001:db8:1::1".to_owned()),
            (RecordType::AAAA, "fd42::1".to_owned()),
        ]
    );
}

#[tokio::test]
async fn rfc9462_4_hints_follow_arrival_interface() {
    let resolver = resolver();
    let (response, _) = ask(&resolver, "_dns.resolver.arpa.", RecordType::SVCB, "[fd43::1]:53", Transport::Tcp).await;
    let RData::SVCB(svcb) = response.answers()[0].data() else { panic!("not SVCB") };
    let hints: Vec<String> = svcb
        .svc_params()
        .iter()
        .flat_map(|(_, value)| match value {
            SvcParamValue::Ipv4Hint(hint) => hint.0.iter().map(|a| a.0.to_string()).collect(),
            SvcParamValue::Ipv6Hint(hint) => hint.0.iter().map(|a| a.0.to_string()).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(hints, ["192.168.2.1", "fd43::1"], "only the guest interface's addresses");
}

#[tokio::test]
async fn rfc9462_5_own_name_svcb_and_addresses() {
    let resolver = resolver();
    let (response, _) = ask(&resolver, "_dns.router.example.", RecordType::SVCB, "192.168.1.1:853", Transport::Tls).await;
    assert_eq!(response.answers().len(), 3);
    assert_eq!(response.answers()[0].name(), &Name::from_ascii("_dns.router.example.").unwrap());
    assert!(response.authoritative());

    let (response, _) = ask(&resolver, "router.example.", RecordType::A, "192.168.1.1:853", Transport::Tls).await;
    let addresses: Vec<IpAddr> = response
        .answers()
        .iter()
        .map(|record| match record.data() {
            RData::A(a) => IpAddr::V4(a.0),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(addresses, ["192.168.1.1".parse::<IpAddr>().unwrap()]);

    let (response, _) = ask(&resolver, "router.example.", RecordType::AAAA, "192.168.2.1:53", Transport::Udp).await;
    assert_eq!(response.answers().len(), 1);
    assert_eq!(response.answers()[0].data(), &RData::AAAA("fd43::1".parse::<std::net::Ipv6Addr>().unwrap().into()));

    let (response, _) = ask(&resolver, "router.example.", RecordType::MX, "192.168.1.1:53", Transport::Udp).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(response.answers().is_empty(), "NODATA for other types");
}

#[tokio::test]
async fn rfc9462_4_disabled_listeners_not_advertised() {
    let config = ServerConfig { doq_port: 0, doh_port: 0, ..ServerConfig::default() };
    let designated = Designated::new("router.example", endpoints(&config), 300, Arc::new(lan())).unwrap();
    let resolver =
        Resolver::with_designated_resolvers(&ResolverConfig::default(), Arc::new(NoPolicy), Some(Arc::new(designated)))
            .unwrap();
    let (response, _) = ask(&resolver, "_dns.resolver.arpa.", RecordType::SVCB, "192.168.1.1:53", Transport::Udp).await;
    assert_eq!(response.answers().len(), 1);
}

#[test]
fn invalid_resolver_name_is_rejected() {
    let error = Designated::new("bad..name", Vec::new(), 300, Arc::new(lan())).err().expect("accepted an invalid name");
    assert!(error.to_string().contains("bad..name"), "{error}");
}

/// A router with 20 IPv6 addresses on one interface gives a DDR answer of
/// more than 512 bytes.
fn crowded_resolver() -> Arc<Resolver> {
    let mut pairs = vec![("lo".to_owned(), "127.0.0.1".parse::<IpAddr>().unwrap())];
    pairs.extend((1..=20).map(|index| ("lo".to_owned(), format!("fd00::{index}").parse::<IpAddr>().unwrap())));
    let designated = Designated::new("router.example", endpoints(&ServerConfig::default()), 300, Arc::new(FixedAddresses(pairs)))
        .unwrap();
    Arc::new(
        Resolver::with_designated_resolvers(&ResolverConfig::default(), Arc::new(NoPolicy), Some(Arc::new(designated)))
            .unwrap(),
    )
}

#[tokio::test]
async fn rfc1035_large_answer_sets_tc_over_udp() {
    use dnsgate::resolver::server::{ListenAddrs, spawn_listeners};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let addrs = ListenAddrs { udp: vec![loopback], tcp: vec![loopback], tls: vec![], quic: vec![], https: vec![] };
    let listeners = spawn_listeners(ServerConfig::default(), addrs, None, crowded_resolver()).await.unwrap();
    let udp_address = listeners.local_addrs().udp[0];
    let tcp_address = listeners.local_addrs().tcp[0];

    let mut query = Message::new();
    query.set_id(99).set_recursion_desired(true);
    query.add_query(Query::query(Name::from_ascii("_dns.resolver.arpa.").unwrap(), RecordType::SVCB));
    let bytes = query.to_vec().unwrap();

    // UDP without EDNS: at most 512 bytes, so TC is set and the client
    // retries over TCP (RFC 1035 §4.2.1).
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&bytes, udp_address).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let received = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("no UDP response within 5 s")
        .unwrap();
    assert!(received <= 512, "UDP response of {received} bytes");
    let response = Message::from_vec(&buffer[..received]).unwrap();
    assert!(response.truncated(), "TC is not set on a cut answer");
    assert!(response.answers().is_empty());

    let mut stream = tokio::net::TcpStream::connect(tcp_address).await.unwrap();
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame).await.unwrap();
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await.unwrap();
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message).await.unwrap();
    assert!(message.len() > 512, "the TCP answer is only {} bytes", message.len());
    let response = Message::from_vec(&message).unwrap();
    assert!(!response.truncated());
    assert_eq!(response.answers().len(), 3);

    listeners.shutdown().await;
}
