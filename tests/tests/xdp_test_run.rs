//! The real XDP object run on crafted frames through `BPF_PROG_TEST_RUN`.
//!
//! Answers are parsed with hickory-proto, their checksums verified with
//! etherparse, and their DNS bytes compared with what `dnsgate_common`'s
//! response builder produces on the host for the same input.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use dnsgate::dataplane::{CounterValues, Dataplane, LoadOptions, PROGRAM_NAME};
use dnsgate_common::{
    maps::{BlockMode, DataplaneConfig},
    name::name_key,
    response::build_blocked,
    rules::{
        table_lookup, Judge, RuleValue, Verdict, ACTION_ALLOW, ACTION_BLOCK, ACTION_NONE, ACTION_USER_SPACE,
        ALL_GROUPS, DEFAULT_CLIENT_GROUPS,
    },
    table::{buckets_for, RuleTable},
    wire::parse_query,
};
use dnsgate_tests::{
    frames::{dns_query, parse_answer, udp_frame, FrameSpec, CLIENT_MAC, ROUTER_MAC},
    require_root,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, RecordType},
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_TXT: u16 = 16;

fn router_v4() -> IpAddr {
    "198.18.0.2".parse().unwrap()
}
fn client_v4() -> IpAddr {
    "198.18.0.1".parse().unwrap()
}
fn router_v6() -> IpAddr {
    "fd00:dead::2".parse().unwrap()
}
fn client_v6() -> IpAddr {
    "fd00:dead::1".parse().unwrap()
}

fn name_255() -> String {
    format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61))
}

fn rules() -> Vec<(String, RuleValue)> {
    vec![
        ("blocked.test".into(), RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS)),
        ("exact.test".into(), RuleValue::new(ACTION_BLOCK, ACTION_NONE, ALL_GROUPS)),
        ("allowed.blocked.test".into(), RuleValue::new(ACTION_ALLOW, ACTION_NONE, ALL_GROUPS)),
        ("user.test".into(), RuleValue::new(ACTION_USER_SPACE, ACTION_NONE, ALL_GROUPS)),
        (name_255(), RuleValue::new(ACTION_BLOCK, ACTION_NONE, ALL_GROUPS)),
    ]
}

struct Fixture {
    dataplane: Dataplane,
    table: RuleTable,
}

impl Fixture {
    fn new(ignore_kernel_btf: bool) -> Self {
        let options = LoadOptions { rule_buckets: 64, ignore_kernel_btf, ..LoadOptions::default() };
        let mut dataplane = Dataplane::load(&options).expect("load the XDP object");
        dataplane.set_router_addresses(&[router_v4(), router_v6()]).expect("router addresses");
        let entries: Vec<(u64, RuleValue)> =
            rules().iter().map(|(name, value)| (name_key(name).unwrap(), *value)).collect();
        let table = RuleTable::build(&entries, buckets_for(entries.len())).expect("build table");
        dataplane.publish(&table).expect("publish");
        Self { dataplane, table }
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let program = self.dataplane.program(PROGRAM_NAME).expect("program");
        let mut out = vec![0u8; 2048];
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
            .expect("test run");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn counters(&self) -> CounterValues {
        self.dataplane.counters().expect("counters")
    }

    /// What user space computes for the same DNS message: the blocked
    /// answer's bytes, or `None` if the query must be passed on.
    fn host_answer(&self, dns: &[u8]) -> Option<Vec<u8>> {
        let query = parse_query(dns).ok()?;
        let mut judge = Judge::new(DEFAULT_CLIENT_GROUPS);
        for label in (0..query.label_count).rev() {
            if let Some(value) = table_lookup(&self.table.buckets, query.suffix_key(label)) {
                judge.visit(label, value);
            }
        }
        let Verdict::Block { rule_label } = judge.verdict() else { return None };
        let mut out = vec![0u8; 1024];
        let len = build_blocked(dns, &query, rule_label, &self.dataplane.config(), &mut out).ok()?;
        out.truncate(len);
        Some(out)
    }
}

fn spec(client: IpAddr, router: IpAddr) -> FrameSpec {
    FrameSpec { client, router, source_port: 40_000, destination_port: 53, vlan: None }
}

fn v4() -> FrameSpec {
    spec(client_v4(), router_v4())
}

fn v6() -> FrameSpec {
    spec(client_v6(), router_v6())
}

/// Runs a query that must be answered in the kernel and checks the frame
/// around the answer; returns the parsed DNS message.
fn expect_answer(fixture: &Fixture, spec: &FrameSpec, dns: &[u8]) -> Message {
    let frame = udp_frame(spec, dns);
    let (action, out) = fixture.run(&frame);
    assert_eq!(action, XDP_TX, "expected XDP_TX for {:?}", String::from_utf8_lossy(dns));
    let answer = parse_answer(&out).expect("answer frame is well formed");
    assert_eq!(answer.source_mac, ROUTER_MAC);
    assert_eq!(answer.destination_mac, CLIENT_MAC);
    assert_eq!(answer.vlan, spec.vlan);
    assert_eq!(answer.source, spec.router);
    assert_eq!(answer.destination, spec.client);
    assert_eq!(answer.source_port, 53);
    assert_eq!(answer.destination_port, spec.source_port);
    let expected = fixture.host_answer(dns).expect("the host builder blocks it too");
    assert_eq!(answer.dns, expected, "kernel and host answers differ");
    Message::from_vec(&answer.dns).expect("hickory parses the answer")
}

fn expect_pass(fixture: &Fixture, frame: &[u8]) {
    let (action, out) = fixture.run(frame);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, frame, "a passed frame must be unmodified");
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

root_test!(answers_beyond_the_event_rate_skip_the_query_log, || {
    let mut fixture = Fixture::new(false);
    let mut config = fixture.dataplane.config();
    config.flags |= dnsgate_common::maps::CONFIG_LOG_EVENTS;
    // Two answers a second per CPU reach the query log.
    config.event_cost_ns = 500_000_000;
    fixture.dataplane.set_config(config).unwrap();
    for _ in 0..5 {
        expect_answer(&fixture, &v4(), &dns_query(0x1234, "blocked.test", TYPE_A, None));
    }
    let counters = fixture.counters();
    assert_eq!(counters.blocked, 5);
    // No buffer is open in a test run, so every copy the budget allows
    // fails and counts as lost; the test thread may run on any CPU.
    assert_eq!(counters.events_lost + counters.events_skipped, 5);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(counters.events_lost <= 2 * cpus, "{counters:?}");
    assert!(counters.events_skipped >= 5u64.saturating_sub(2 * cpus), "{counters:?}");
    assert!(counters.events_skipped > 0, "{counters:?}");

    // Without a rate every answer is copied.
    config.event_cost_ns = 0;
    fixture.dataplane.set_config(config).unwrap();
    expect_answer(&fixture, &v4(), &dns_query(0x1234, "blocked.test", TYPE_A, None));
    assert_eq!(fixture.counters().events_skipped, counters.events_skipped);
    assert_eq!(fixture.counters().events_lost, counters.events_lost + 1);
});

root_test!(ipv4_blocked_a_gets_null_address, || {
    let fixture = Fixture::new(false);
    let message = expect_answer(&fixture, &v4(), &dns_query(0x1234, "blocked.test", TYPE_A, None));
    assert_eq!(message.id(), 0x1234);
    assert_eq!(message.response_code(), ResponseCode::NoError);
    assert!(message.recursion_available());
    assert!(message.recursion_desired());
    assert!(!message.authoritative());
    assert_eq!(message.answers().len(), 1);
    assert_eq!(message.answers()[0].data(), &RData::A("0.0.0.0".parse().unwrap()));
    assert_eq!(message.answers()[0].ttl(), DataplaneConfig::DEFAULT.block_ttl);
    assert!(message.extensions().is_none(), "no OPT without one in the query");
});

root_test!(ipv6_blocked_aaaa_gets_unspecified_address, || {
    let fixture = Fixture::new(false);
    let message = expect_answer(&fixture, &v6(), &dns_query(7, "blocked.test", TYPE_AAAA, None));
    assert_eq!(message.answers()[0].data(), &RData::AAAA("::".parse().unwrap()));
});

root_test!(vlan_tagged_query_is_answered_tagged, || {
    let fixture = Fixture::new(false);
    let spec = FrameSpec { vlan: Some(42), ..v4() };
    expect_answer(&fixture, &spec, &dns_query(7, "blocked.test", TYPE_A, None));
    let spec = FrameSpec { vlan: Some(42), ..v6() };
    expect_answer(&fixture, &spec, &dns_query(7, "blocked.test", TYPE_AAAA, None));
});

root_test!(edns_query_gets_opt_with_blocked_ede, || {
    let fixture = Fixture::new(false);
    for options in [vec![], vec![(10u16, vec![1, 2, 3, 4, 5, 6, 7, 8])]] {
        let message = expect_answer(&fixture, &v4(), &dns_query(9, "blocked.test", TYPE_A, Some(&options)));
        let edns = message.extensions().as_ref().expect("OPT record");
        assert_eq!(edns.version(), 0);
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok, "DO is copied");
        let options = edns.options().as_ref();
        assert_eq!(options.len(), 1, "only EDE is sent, the cookie is not echoed: {options:?}");
        let raw = &message.to_vec().unwrap();
        let tail = &raw[raw.len() - 6..];
        assert_eq!(tail, &[0, 15, 0, 2, 0, 15], "EDE option code 15, info code 15 (Blocked)");
    }
});

root_test!(mixed_case_question_is_echoed, || {
    let fixture = Fixture::new(false);
    let dns = dns_query(3, "Ads.BLOCKED.Test", TYPE_A, None);
    let frame = udp_frame(&v4(), &dns);
    let (action, out) = fixture.run(&frame);
    assert_eq!(action, XDP_TX);
    let answer = parse_answer(&out).unwrap();
    let question_len = dns.len() - 12;
    assert_eq!(&answer.dns[12..12 + question_len], &dns[12..], "question bytes, case included");
    expect_answer(&fixture, &v4(), &dns);
});

root_test!(subdomain_nodata_has_soa_of_rule, || {
    let fixture = Fixture::new(false);
    let message = expect_answer(&fixture, &v4(), &dns_query(3, "x.y.blocked.test", TYPE_TXT, None));
    assert_eq!(message.response_code(), ResponseCode::NoError);
    assert!(message.answers().is_empty());
    let soa = &message.name_servers()[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name().to_ascii(), "blocked.test.");
    let RData::SOA(data) = soa.data() else { panic!("SOA expected") };
    assert_eq!(data.minimum(), DataplaneConfig::DEFAULT.block_ttl);
});

root_test!(allow_exception_under_blocked_parent_passes, || {
    let fixture = Fixture::new(false);
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "allowed.blocked.test", TYPE_A, None)));
    // The exception is exact: its own subdomains stay blocked.
    expect_answer(&fixture, &v4(), &dns_query(1, "x.allowed.blocked.test", TYPE_A, None));
});

root_test!(exact_rule_does_not_cover_subdomains, || {
    let fixture = Fixture::new(false);
    expect_answer(&fixture, &v4(), &dns_query(1, "exact.test", TYPE_A, None));
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "www.exact.test", TYPE_A, None)));
});

root_test!(user_space_rule_passes_query_on, || {
    let fixture = Fixture::new(false);
    let before = fixture.counters();
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "user.test", TYPE_A, None)));
    let after = fixture.counters();
    assert_eq!(after.seen - before.seen, 1);
    assert_eq!(after.allowed - before.allowed, 1);
});

root_test!(name_of_255_bytes_is_blocked, || {
    let fixture = Fixture::new(false);
    let dns = dns_query(5, &name_255(), TYPE_A, Some(&[]));
    assert_eq!(dns.len(), 12 + 255 + 4 + 11);
    expect_answer(&fixture, &v4(), &dns);
});

root_test!(frames_that_are_not_queries_pass_unchanged, || {
    let fixture = Fixture::new(false);
    let query = dns_query(1, "blocked.test", TYPE_A, None);
    let before = fixture.counters();

    // Non-DNS UDP.
    expect_pass(&fixture, &udp_frame(&FrameSpec { destination_port: 123, ..v4() }, &query));
    // Not addressed to the router.
    expect_pass(&fixture, &udp_frame(&spec(client_v4(), "198.18.0.9".parse().unwrap()), &query));
    // TCP to port 53: the UDP frame with the protocol changed to TCP.
    let mut tcp = udp_frame(&v4(), &query);
    tcp[14 + 9] = 6;
    expect_pass(&fixture, &tcp);
    // A response.
    let mut response = query.clone();
    response[2] |= 0x80;
    expect_pass(&fixture, &udp_frame(&v4(), &response));
    // Two questions.
    let mut two = query.clone();
    two[5] = 2;
    expect_pass(&fixture, &udp_frame(&v4(), &two));

    let after = fixture.counters();
    assert_eq!(after.passed - before.passed, 5);
    assert_eq!(after.seen, before.seen);
    assert_eq!(after.blocked, before.blocked);
});

root_test!(truncated_frames_pass_unchanged, || {
    let fixture = Fixture::new(false);
    for spec in [v4(), v6(), FrameSpec { vlan: Some(3), ..v4() }] {
        let frame = udp_frame(&spec, &dns_query(1, "ads.blocked.test", TYPE_A, Some(&[(10, vec![0; 8])])));
        // Test runs need at least an Ethernet header.
        for len in 14..frame.len() {
            let (action, out) = fixture.run(&frame[..len]);
            assert_eq!(action, XDP_PASS, "length {len} of {}", frame.len());
            assert_eq!(out, &frame[..len], "length {len}: frame changed");
        }
    }
    let counters = fixture.counters();
    assert_eq!(counters.blocked, 0);
    assert!(counters.malformed > 0, "truncations after the UDP header count as malformed");
});

root_test!(malformed_questions_pass_unchanged, || {
    let fixture = Fixture::new(false);
    let before = fixture.counters();
    // A compression pointer as the question name.
    let mut pointer = dns_query(1, "", TYPE_A, None);
    pointer.splice(12..13, [0xc0, 0x0c]);
    expect_pass(&fixture, &udp_frame(&v4(), &pointer));
    // A name of 256 bytes.
    let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, &long, TYPE_A, None)));
    // Bytes after the question.
    let mut trailing = dns_query(1, "blocked.test", TYPE_A, None);
    trailing.push(0);
    expect_pass(&fixture, &udp_frame(&v4(), &trailing));
    let after = fixture.counters();
    assert_eq!(after.malformed - before.malformed, 3);
});

root_test!(edns_version_1_goes_to_user_space, || {
    let fixture = Fixture::new(false);
    let mut dns = dns_query(1, "blocked.test", TYPE_A, Some(&[]));
    let version = dns.len() - 5;
    dns[version] = 1;
    expect_pass(&fixture, &udp_frame(&v4(), &dns));
});

root_test!(block_modes_match_host_builder, || {
    let mut fixture = Fixture::new(false);
    let modes = [BlockMode::NullAddress, BlockMode::NxDomain, BlockMode::Refused];
    for mode in modes {
        let config = DataplaneConfig {
            block_mode: mode as u32,
            block_ttl: 300,
            sinkhole_v4: [192, 0, 2, 1],
            sinkhole_v6: "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            ..DataplaneConfig::DEFAULT
        };
        fixture.dataplane.set_config(config).unwrap();
        for qtype in [TYPE_A, TYPE_AAAA, TYPE_TXT, 65] {
            for edns in [None, Some(&[][..])] {
                for name in ["blocked.test", "a.b.c.blocked.test", "exact.test"] {
                    let message = expect_answer(&fixture, &v4(), &dns_query(77, name, qtype, edns));
                    let expected_rcode = match mode {
                        BlockMode::NullAddress => ResponseCode::NoError,
                        BlockMode::NxDomain => ResponseCode::NXDomain,
                        BlockMode::Refused => ResponseCode::Refused,
                    };
                    assert_eq!(message.response_code(), expected_rcode, "{mode:?} {name} {qtype}");
                    expect_answer(&fixture, &v6(), &dns_query(77, name, qtype, edns));
                }
            }
        }
    }
});

root_test!(counters_match_queries_sent, || {
    let fixture = Fixture::new(false);
    let blocked = dns_query(1, "blocked.test", TYPE_A, None);
    let allowed = dns_query(1, "example.org", TYPE_A, None);
    for _ in 0..5 {
        fixture.run(&udp_frame(&v4(), &blocked));
    }
    for _ in 0..3 {
        fixture.run(&udp_frame(&v6(), &allowed));
    }
    let counters = fixture.counters();
    assert_eq!(counters.seen, 8);
    assert_eq!(counters.blocked, 5);
    assert_eq!(counters.allowed, 3);
    assert_eq!(counters.passed, 0);
    assert_eq!(counters.malformed, 0);
});

root_test!(publish_flips_rule_set, || {
    let mut fixture = Fixture::new(false);
    let query = udp_frame(&v4(), &dns_query(1, "new.test", TYPE_A, None));
    expect_pass(&fixture, &query);
    let first = fixture.dataplane.active_set();
    let entries = [(name_key("new.test").unwrap(), RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS))];
    let table = RuleTable::build(&entries, buckets_for(1)).unwrap();
    fixture.dataplane.publish(&table).unwrap();
    fixture.table = table;
    assert_ne!(fixture.dataplane.active_set(), first);
    expect_answer(&fixture, &v4(), &dns_query(1, "new.test", TYPE_A, None));
    // The old set's rules are gone with it.
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "blocked.test", TYPE_A, None)));
});

root_test!(overlay_rule_takes_effect, || {
    let mut fixture = Fixture::new(false);
    let frame = udp_frame(&v4(), &dns_query(1, "custom.test", TYPE_A, None));
    expect_pass(&fixture, &frame);
    let rule = (name_key("custom.test").unwrap(), RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS));
    fixture.dataplane.set_overlay(&[rule]).unwrap();
    let (action, _) = fixture.run(&frame);
    assert_eq!(action, XDP_TX);
    // An overlay allow beats a compiled block.
    let allow = (name_key("blocked.test").unwrap(), RuleValue::new(ACTION_ALLOW, ACTION_NONE, ALL_GROUPS));
    fixture.dataplane.set_overlay(&[allow]).unwrap();
    expect_pass(&fixture, &frame);
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "blocked.test", TYPE_A, None)));
});

root_test!(paused_blocking_passes_everything, || {
    let mut fixture = Fixture::new(false);
    let config = DataplaneConfig { flags: 0, ..fixture.dataplane.config() };
    fixture.dataplane.set_config(config).unwrap();
    expect_pass(&fixture, &udp_frame(&v4(), &dns_query(1, "blocked.test", TYPE_A, None)));
});

root_test!(loads_and_blocks_without_kernel_btf, || {
    let fixture = Fixture::new(true);
    expect_answer(&fixture, &v4(), &dns_query(1, "blocked.test", TYPE_A, None));
});
