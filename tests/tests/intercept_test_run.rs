//! Interception of DNS sent to other resolvers, run on crafted frames
//! through `BPF_PROG_TEST_RUN`. The tests cover the XDP program's redirects,
//! kernel answers, exemptions, DoT refusals and DoQ drops, the TC program's
//! restored reply sources, and the bound on the state kept between the two.
//! They also cover the fallback for allowed queries while the controller is
//! down, which uses the same TC program.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};
use dnsgate::dataplane::{Dataplane, InterceptOptions, LoadOptions, PROGRAM_NAME};
use dnsgate_common::{
    maps::{INTERCEPT_CLIENTS_CAPACITY, INTERCEPT_FLOWS_CAPACITY},
    name::name_key,
    rules::{RuleValue, ACTION_BLOCK, ALL_GROUPS},
    table::{buckets_for, RuleTable},
};
use dnsgate_tests::{
    frames::{dns_query, parse_answer, udp_frame, FrameSpec, CLIENT_MAC, ROUTER_MAC},
    require_root,
};
use etherparse::{
    IpNumber, Ipv4Header, Ipv4HeaderSlice, Ipv6Header, Ipv6HeaderSlice, SlicedPacket, TcpHeader, TransportSlice,
    UdpHeader,
};
use hickory_proto::{op::Message, rr::RData};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TC_ACT_OK: u32 = 0;
const TYPE_A: u16 = 1;

const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A resolver hardcoded in a client; never contacted, frames only.
const FOREIGN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const EXEMPT_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const EXEMPT_SUBNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 7);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
/// A resolver hardcoded in a client, in the documentation prefix.
const FOREIGN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);

fn options() -> InterceptOptions {
    InterceptOptions {
        dns: true,
        refuse_dot: true,
        drop_doq: true,
        router_v4: Some(ROUTER),
        router_v6: Some(ROUTER6),
        exempt: vec![(IpAddr::V4(EXEMPT_HOST), 32), ("198.18.5.0".parse().unwrap(), 24)],
    }
}

fn load() -> Dataplane {
    let options_load = LoadOptions { rule_buckets: 64, ..LoadOptions::default() };
    let mut dataplane = Dataplane::load(&options_load).expect("load the XDP object");
    dataplane.set_router_addresses(&[IpAddr::V4(ROUTER), IpAddr::V6(ROUTER6)]).expect("router addresses");
    let entries = vec![(name_key("blocked.test").unwrap(), RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS))];
    let table = RuleTable::build(&entries, buckets_for(entries.len())).expect("build table");
    dataplane.publish(&table).expect("publish");
    dataplane.set_intercept(&options()).expect("interception settings");
    dataplane
}

fn run_xdp(dataplane: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let program = dataplane.program(PROGRAM_NAME).expect("program");
    let mut out = vec![0u8; 2048];
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("test run");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn run_tc(dataplane: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let program = dataplane.restore_program().expect("restore program");
    let mut out = vec![0u8; 2048];
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("test run");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn query_frame(client: Ipv4Addr, destination: Ipv4Addr, port: u16, name: &str) -> Vec<u8> {
    let spec = FrameSpec {
        client: IpAddr::V4(client),
        router: IpAddr::V4(destination),
        source_port: port,
        destination_port: 53,
        vlan: None,
    };
    udp_frame(&spec, &dns_query(0x1234, name, TYPE_A, None))
}

/// Builds a reply from the router's port 53 to a client port, with correct
/// checksums, as dnsgate's socket would send it.
fn reply_frame(client: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    reply_from(ROUTER, 53, client, port, payload)
}

/// Builds a UDP datagram from `source`:`source_port` to a client port, with
/// correct checksums.
fn reply_from(source: Ipv4Addr, source_port: u16, client: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, source.octets(), client.octets())
        .expect("IPv4 header");
    ip.header_checksum = ip.calc_header_checksum();
    let udp = UdpHeader::with_ipv4_checksum(source_port, port, &ip, payload).expect("UDP header");
    ip.write(&mut frame).expect("write IPv4");
    udp.write(&mut frame).expect("write UDP");
    frame.extend_from_slice(payload);
    frame
}

fn tcp_frame(destination_port: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut tcp = TcpHeader::new(50_000, destination_port, 0x0102_0304, 64_240);
    tcp.syn = syn;
    tcp.ack = ack;
    tcp.acknowledgment_number = if ack { 77 } else { 0 };
    tcp.set_options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)]).expect("TCP options");
    let mut ip = Ipv4Header::new(tcp.header_len() as u16, 64, IpNumber::TCP, CLIENT.octets(), FOREIGN.octets())
        .expect("IPv4 header");
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).expect("TCP checksum");
    let mut frame = Vec::new();
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    ip.write(&mut frame).expect("write IPv4");
    tcp.write(&mut frame).expect("write TCP");
    frame
}

/// Checks the IPv4 header checksum and returns the header.
fn checked_ipv4(frame: &[u8]) -> Ipv4Header {
    let header = Ipv4HeaderSlice::from_slice(&frame[14..]).expect("IPv4 header").to_header();
    assert_eq!(header.header_checksum, header.calc_header_checksum(), "IPv4 header checksum");
    header
}

macro_rules! root_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            if !require_root(stringify!($name)) {
                return;
            }
            let body: fn() = $body;
            body();
        }
    };
}

root_test!(blocked_query_answered_from_asked_address, || {
    let dataplane = load();
    let (action, out) = run_xdp(&dataplane, &query_frame(CLIENT, FOREIGN, 40_000, "blocked.test"));
    assert_eq!(action, XDP_TX);
    let answer = parse_answer(&out).expect("answer frame is well formed");
    assert_eq!(answer.source, IpAddr::V4(FOREIGN));
    assert_eq!(answer.destination, IpAddr::V4(CLIENT));
    assert_eq!(answer.source_port, 53);
    assert_eq!(answer.destination_port, 40_000);
    let message = Message::from_vec(&answer.dns).expect("hickory parses the answer");
    assert!(matches!(message.answers()[0].data(), RData::A(a) if a.0 == Ipv4Addr::UNSPECIFIED));
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.intercepted, 1);
    assert_eq!(counters.blocked, 1);
    assert_eq!(dataplane.intercept_flow_count().unwrap(), 0, "an answered query needs no flow");
});

root_test!(allowed_query_redirected_to_router, || {
    let dataplane = load();
    let frame = query_frame(CLIENT, FOREIGN, 40_001, "allowed.test");
    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out.len(), frame.len());
    let ip = checked_ipv4(&out);
    assert_eq!(ip.source, CLIENT.octets());
    assert_eq!(ip.destination, ROUTER.octets());
    assert_eq!(&out[34..36], &40_001u16.to_be_bytes(), "source port kept");
    assert_eq!(&out[40..42], &[0, 0], "UDP checksum cleared");
    assert_eq!(&out[42..], &frame[42..], "DNS message unchanged");

    assert_eq!(dataplane.intercept_flow_count().unwrap(), 1);
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.intercepted, 1);
    assert_eq!(counters.redirected, 1);
    let clients = dataplane.intercept_clients().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client, IpAddr::V4(CLIENT));
    assert_eq!(clients[0].queries, 1);
});

root_test!(restore_program_rewrites_reply_source, || {
    let dataplane = load();
    run_xdp(&dataplane, &query_frame(CLIENT, FOREIGN, 40_002, "allowed.test"));
    let payload = b"reply bytes, any will do";
    let reply = reply_frame(CLIENT, 40_002, payload);
    let (action, out) = run_tc(&dataplane, &reply);
    assert_eq!(action, TC_ACT_OK);
    let ip = checked_ipv4(&out);
    assert_eq!(ip.source, FOREIGN.octets(), "the reply must come from the address the client asked");
    assert_eq!(ip.destination, CLIENT.octets());
    let expected = UdpHeader::with_ipv4_checksum(53, 40_002, &ip, payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), expected.checksum, "UDP checksum");
    assert_eq!(dataplane.counters().unwrap().replies_restored, 1);
    assert_eq!(dataplane.intercept_flow_count().unwrap(), 0, "the flow ends with its reply");

    // Without a flow (a query sent to the router itself) nothing changes.
    let (_, again) = run_tc(&dataplane, &reply);
    assert_eq!(again, reply);
    let other_port = reply_frame(CLIENT, 40_003, payload);
    assert_eq!(run_tc(&dataplane, &other_port).1, other_port);
});

root_test!(exempt_clients_pass_untouched, || {
    let dataplane = load();
    for client in [EXEMPT_HOST, EXEMPT_SUBNET_HOST] {
        for name in ["blocked.test", "allowed.test"] {
            let frame = query_frame(client, FOREIGN, 40_000, name);
            let (action, out) = run_xdp(&dataplane, &frame);
            assert_eq!(action, XDP_PASS, "{client} {name}");
            assert_eq!(out, frame, "{client} {name}: an exempt client's frame must be unmodified");
        }
    }
    assert_eq!(dataplane.counters().unwrap().intercepted, 0);
    assert!(dataplane.intercept_clients().unwrap().is_empty());
});

root_test!(interception_off_passes_untouched, || {
    let mut dataplane = load();
    dataplane
        .set_intercept(&InterceptOptions { dns: false, refuse_dot: false, drop_doq: false, ..options() })
        .unwrap();
    for frame in [
        query_frame(CLIENT, FOREIGN, 40_000, "blocked.test"),
        query_frame(CLIENT, FOREIGN, 40_000, "allowed.test"),
        tcp_frame(853, true, false),
    ] {
        let (action, out) = run_xdp(&dataplane, &frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, frame);
    }
    // Queries to the router are still judged.
    let (action, _) = run_xdp(&dataplane, &query_frame(CLIENT, ROUTER, 40_000, "blocked.test"));
    assert_eq!(action, XDP_TX);
});

root_test!(dot_syn_answered_with_rst, || {
    let dataplane = load();
    let (action, out) = run_xdp(&dataplane, &tcp_frame(853, true, false));
    assert_eq!(action, XDP_TX);
    assert_eq!(out.len(), 14 + 20 + 20, "options and padding are cut");
    assert_eq!(&out[0..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &ROUTER_MAC);
    let ip = checked_ipv4(&out);
    assert_eq!(ip.source, FOREIGN.octets());
    assert_eq!(ip.destination, CLIENT.octets());
    let packet = SlicedPacket::from_ethernet(&out).expect("RST frame parses");
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else { panic!("not TCP: {out:?}") };
    assert!(tcp.rst() && tcp.ack() && !tcp.syn());
    assert_eq!(tcp.source_port(), 853);
    assert_eq!(tcp.destination_port(), 50_000);
    assert_eq!(tcp.acknowledgment_number(), 0x0102_0305, "RST acknowledges the SYN");
    let header = tcp.to_header();
    assert_eq!(header.checksum, header.calc_checksum_ipv4(&ip, &[]).unwrap(), "TCP checksum");
    assert_eq!(dataplane.counters().unwrap().dot_refused, 1);
    assert_eq!(dataplane.intercept_clients().unwrap()[0].encrypted, 1);

    // Segments of a connection opened before interception are left alone.
    let established = tcp_frame(853, false, true);
    assert_eq!(run_xdp(&dataplane, &established), (XDP_PASS, established.clone()));
    // So is TCP to other ports.
    let https = tcp_frame(443, true, false);
    assert_eq!(run_xdp(&dataplane, &https), (XDP_PASS, https.clone()));
});

root_test!(doq_datagram_dropped, || {
    let dataplane = load();
    let spec = FrameSpec {
        client: IpAddr::V4(CLIENT),
        router: IpAddr::V4(FOREIGN),
        source_port: 50_000,
        destination_port: 853,
        vlan: None,
    };
    let frame = udp_frame(&spec, b"QUIC initial, any bytes");
    assert_eq!(run_xdp(&dataplane, &frame).0, XDP_DROP);
    assert_eq!(dataplane.counters().unwrap().doq_dropped, 1);
    let exempt = udp_frame(&FrameSpec { client: IpAddr::V4(EXEMPT_HOST), ..spec }, b"QUIC initial, any bytes");
    assert_eq!(run_xdp(&dataplane, &exempt).0, XDP_PASS);
});

root_test!(flow_state_bounded_by_capacity, || {
    let dataplane = load();
    let capacity = INTERCEPT_FLOWS_CAPACITY as usize;
    // Three times the capacity, over more clients than the client map
    // holds, each client using several ports.
    let total = 3 * capacity;
    for i in 0..total {
        let client = Ipv4Addr::new(198, 18, 64 + (i / 8 / 250) as u8, 1 + (i / 8 % 250) as u8);
        let port = 1024 + (i % 8) as u16 * 7919;
        let (action, _) = run_xdp(&dataplane, &query_frame(client, FOREIGN, port, "allowed.test"));
        assert_eq!(action, XDP_PASS, "query {i}");
        if i % 4096 == 4095 {
            let flows = dataplane.intercept_flow_count().unwrap();
            assert!(flows <= capacity, "{flows} flows after {} queries; capacity {capacity}", i + 1);
        }
    }
    let flows = dataplane.intercept_flow_count().unwrap();
    assert!(flows <= capacity, "{flows} flows; capacity {capacity}");
    // An LRU map evicts from per-CPU free lists before it is full; most of
    // it must still be in use, or eviction is too eager to keep flows.
    assert!(flows >= capacity / 2, "only {flows} of {capacity} flows kept");
    let clients = dataplane.intercept_clients().unwrap();
    assert!(clients.len() <= INTERCEPT_CLIENTS_CAPACITY as usize, "{} clients", clients.len());
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.redirected, total as u64, "every query was redirected, none lost to a full map");

    // The newest flow survived the evictions and still restores its reply.
    let i = total - 1;
    let client = Ipv4Addr::new(198, 18, 64 + (i / 8 / 250) as u8, 1 + (i / 8 % 250) as u8);
    let port = 1024 + (i % 8) as u16 * 7919;
    let (_, out) = run_tc(&dataplane, &reply_frame(client, port, b"reply"));
    assert_eq!(checked_ipv4(&out).source, FOREIGN.octets());
});

fn query_frame_v6(destination: Ipv6Addr, port: u16, name: &str) -> Vec<u8> {
    let spec = FrameSpec {
        client: IpAddr::V6(CLIENT6),
        router: IpAddr::V6(destination),
        source_port: port,
        destination_port: 53,
        vlan: None,
    };
    udp_frame(&spec, &dns_query(0x4321, name, TYPE_A, None))
}

/// Builds a UDP datagram from `source_port` of the router's IPv6 address
/// to a client port, with a correct checksum.
fn reply_from_v6(source_port: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: (8 + payload.len()) as u16,
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: ROUTER6.octets(),
        destination: CLIENT6.octets(),
    };
    let udp = UdpHeader::with_ipv6_checksum(source_port, port, &header, payload).expect("UDP header");
    header.write(&mut frame).expect("write IPv6");
    udp.write(&mut frame).expect("write UDP");
    frame.extend_from_slice(payload);
    frame
}

fn ipv6_header(frame: &[u8]) -> Ipv6Header {
    Ipv6HeaderSlice::from_slice(&frame[14..]).expect("IPv6 header").to_header()
}

root_test!(ipv6_blocked_query_answered_from_asked_address, || {
    let dataplane = load();
    let (action, out) = run_xdp(&dataplane, &query_frame_v6(FOREIGN6, 40_010, "blocked.test"));
    assert_eq!(action, XDP_TX);
    let answer = parse_answer(&out).expect("answer frame is well formed");
    assert_eq!(answer.source, IpAddr::V6(FOREIGN6));
    assert_eq!(answer.destination, IpAddr::V6(CLIENT6));
    assert_eq!(answer.destination_port, 40_010);
});

root_test!(ipv6_query_redirected_and_reply_restored, || {
    let dataplane = load();
    let frame = query_frame_v6(FOREIGN6, 40_011, "allowed.test");
    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_PASS);
    let ip = ipv6_header(&out);
    assert_eq!(ip.source, CLIENT6.octets());
    assert_eq!(ip.destination, ROUTER6.octets());
    let payload = &out[62..];
    assert_eq!(payload, &frame[62..], "DNS message unchanged");
    let expected = UdpHeader::with_ipv6_checksum(40_011, 53, &ip, payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[60], out[61]]), expected.checksum, "UDP checksum");
    assert_eq!(dataplane.intercept_flow_count().unwrap(), 1);

    // The reply from the router's port 53 leaves with the asked address.
    let reply_payload = b"reply bytes, any will do";
    let reply = reply_from_v6(53, 40_011, reply_payload);
    let (action, out) = run_tc(&dataplane, &reply);
    assert_eq!(action, TC_ACT_OK);
    let ip = ipv6_header(&out);
    assert_eq!(ip.source, FOREIGN6.octets());
    let expected = UdpHeader::with_ipv6_checksum(53, 40_011, &ip, reply_payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[60], out[61]]), expected.checksum, "UDP checksum");
    assert_eq!(dataplane.intercept_flow_count().unwrap(), 0);
});

root_test!(ipv6_dot_syn_answered_with_rst, || {
    let dataplane = load();
    let mut tcp = TcpHeader::new(50_000, 853, 0x0a0b_0c0d, 64_240);
    tcp.syn = true;
    let mut ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber::TCP,
        hop_limit: 64,
        source: CLIENT6.octets(),
        destination: FOREIGN6.octets(),
    };
    ip.payload_length = tcp.header_len() as u16;
    tcp.checksum = tcp.calc_checksum_ipv6(&ip, &[]).unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    ip.write(&mut frame).unwrap();
    tcp.write(&mut frame).unwrap();

    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(out.len(), 14 + 40 + 20);
    let ip = ipv6_header(&out);
    assert_eq!(ip.source, FOREIGN6.octets());
    assert_eq!(ip.destination, CLIENT6.octets());
    assert_eq!(ip.payload_length, 20);
    let packet = SlicedPacket::from_ethernet(&out).expect("RST frame parses");
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else { panic!("not TCP: {out:?}") };
    assert!(tcp.rst() && tcp.ack());
    assert_eq!(tcp.acknowledgment_number(), 0x0a0b_0c0e);
    let header = tcp.to_header();
    assert_eq!(header.checksum, header.calc_checksum_ipv6(&ip, &[]).unwrap(), "TCP checksum");
});

/// The fallback resolver's port in these tests, as on OpenWrt.
const FALLBACK_PORT: u16 = 54;

/// Builds a query from the client to `destination`:`destination_port`.
fn query_to_port(destination: Ipv4Addr, destination_port: u16, name: &str) -> Vec<u8> {
    let spec = FrameSpec {
        client: IpAddr::V4(CLIENT),
        router: IpAddr::V4(destination),
        source_port: 40_020,
        destination_port,
        vlan: None,
    };
    udp_frame(&spec, &dns_query(0x1234, name, TYPE_A, None))
}

/// Loads a dataplane whose fallback is on with a heartbeat that is already
/// stale (a delay of zero), as after the controller died.
fn load_with_stale_heartbeat() -> Dataplane {
    let mut dataplane = load();
    dataplane.set_fallback(FALLBACK_PORT, Duration::ZERO).expect("fallback settings");
    dataplane
}

root_test!(fresh_heartbeat_keeps_queries_on_port_53, || {
    let mut dataplane = load();
    dataplane.set_fallback(FALLBACK_PORT, Duration::from_secs(3600)).expect("fallback settings");
    let frame = query_to_port(ROUTER, 53, "allowed.test");
    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, frame, "a live controller gets the query unchanged");

    // Straight to the fallback port: dropped, the resolver there filters
    // nothing.
    let (action, _) = run_xdp(&dataplane, &query_to_port(ROUTER, FALLBACK_PORT, "blocked.test"));
    assert_eq!(action, XDP_DROP);
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.fallback, 0);
    assert_eq!(counters.fallback_port_dropped, 1);
    assert_eq!(counters.allowed, 1);

    // With the fallback off, port 54 is nobody's business.
    dataplane.set_fallback(0, Duration::ZERO).expect("fallback off");
    let direct = query_to_port(ROUTER, FALLBACK_PORT, "blocked.test");
    assert_eq!(run_xdp(&dataplane, &direct), (XDP_PASS, direct.clone()));
    assert_eq!(run_xdp(&dataplane, &frame), (XDP_PASS, frame.clone()), "port 0 never diverts");
});

root_test!(stale_heartbeat_sends_allowed_queries_to_the_fallback_port, || {
    let dataplane = load_with_stale_heartbeat();
    let frame = query_to_port(ROUTER, 53, "allowed.test");
    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_PASS);
    let ip = checked_ipv4(&out);
    assert_eq!(ip.destination, ROUTER.octets());
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 40_020, "source port kept");
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), FALLBACK_PORT);
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 0, "no checksum, which is valid over IPv4");
    assert_eq!(&out[42..], &frame[42..], "DNS message unchanged");

    // Blocked names are still answered in the kernel.
    let (action, out) = run_xdp(&dataplane, &query_to_port(ROUTER, 53, "blocked.test"));
    assert_eq!(action, XDP_TX);
    let answer = parse_answer(&out).expect("answer frame is well formed");
    assert_eq!(answer.source_port, 53);

    // An intercepted query goes to the router's fallback port as well, and
    // its reply gets back both the port and the asked address.
    let (action, out) = run_xdp(&dataplane, &query_frame(CLIENT, FOREIGN, 40_021, "allowed.test"));
    assert_eq!(action, XDP_PASS);
    assert_eq!(checked_ipv4(&out).destination, ROUTER.octets());
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), FALLBACK_PORT);
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.fallback, 2);
    assert_eq!(counters.redirected, 1);
    assert_eq!(counters.blocked, 1);

    let payload = b"a reply from the stock resolver";
    let (action, out) = run_tc(&dataplane, &reply_from(ROUTER, FALLBACK_PORT, CLIENT, 40_021, payload));
    assert_eq!(action, TC_ACT_OK);
    let ip = checked_ipv4(&out);
    assert_eq!(ip.source, FOREIGN.octets(), "the reply comes from the address the client asked");
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 53);
    let expected = UdpHeader::with_ipv4_checksum(53, 40_021, &ip, payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), expected.checksum, "UDP checksum");

    let (_, out) = run_tc(&dataplane, &reply_from(ROUTER, FALLBACK_PORT, CLIENT, 40_020, payload));
    let ip = checked_ipv4(&out);
    assert_eq!(ip.source, ROUTER.octets());
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 53);
    let expected = UdpHeader::with_ipv4_checksum(53, 40_020, &ip, payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), expected.checksum, "UDP checksum");
    let counters = dataplane.counters().unwrap();
    assert_eq!(counters.fallback_replies, 2);
    assert_eq!(counters.replies_restored, 1);

    // Forwarded traffic from a remote port 54 is left alone.
    let forwarded = reply_from(FOREIGN, FALLBACK_PORT, CLIENT, 40_022, payload);
    assert_eq!(run_tc(&dataplane, &forwarded).1, forwarded);
    assert_eq!(dataplane.counters().unwrap().fallback_replies, 2);
});

root_test!(ipv6_stale_heartbeat_diverts_with_a_valid_checksum, || {
    let dataplane = load_with_stale_heartbeat();
    let frame = query_frame_v6(ROUTER6, 40_030, "allowed.test");
    let (action, out) = run_xdp(&dataplane, &frame);
    assert_eq!(action, XDP_PASS);
    let ip = ipv6_header(&out);
    assert_eq!(u16::from_be_bytes([out[56], out[57]]), FALLBACK_PORT);
    let payload = &out[62..];
    assert_eq!(payload, &frame[62..], "DNS message unchanged");
    let expected = UdpHeader::with_ipv6_checksum(40_030, FALLBACK_PORT, &ip, payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[60], out[61]]), expected.checksum, "UDP checksum");

    let reply_payload = b"a reply from the stock resolver";
    let reply = reply_from_v6(FALLBACK_PORT, 40_030, reply_payload);
    let (action, out) = run_tc(&dataplane, &reply);
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(u16::from_be_bytes([out[54], out[55]]), 53);
    let expected = UdpHeader::with_ipv6_checksum(53, 40_030, &ipv6_header(&out), reply_payload).unwrap();
    assert_eq!(u16::from_be_bytes([out[60], out[61]]), expected.checksum, "UDP checksum");
});
