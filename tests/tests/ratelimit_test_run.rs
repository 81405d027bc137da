//! The per-client rate limit of plain DNS queries, run on crafted frames
//! through `BPF_PROG_TEST_RUN`: the burst passes, the next query is dropped
//! and counted, other clients keep their own bucket, the bucket refills,
//! and with the limit off (the default) nothing is dropped.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::programs::{TestRun, TestRunOptions};
use dnsgate::dataplane::{Dataplane, InterceptOptions, LoadOptions, PROGRAM_NAME};
use dnsgate_common::{
    name::name_key,
    rules::{RuleValue, ACTION_BLOCK, ALL_GROUPS},
    table::{buckets_for, RuleTable},
};
use dnsgate_tests::{
    frames::{dns_query, udp_frame, FrameSpec},
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TYPE_A: u16 = 1;

const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const CLIENT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// A resolver hardcoded in a client; never contacted, frames only.
const FOREIGN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 10);

/// One query per second: slow enough that no test run refills a token
/// between two frames sent back to back.
const SLOW_RATE: u32 = 1;
const BURST: u32 = 4;

fn load() -> Dataplane {
    let options = LoadOptions { rule_buckets: 64, ..LoadOptions::default() };
    let mut dataplane = Dataplane::load(&options).expect("load the XDP object");
    dataplane.set_router_addresses(&[IpAddr::V4(ROUTER), IpAddr::V6(ROUTER6)]).expect("router addresses");
    let entries = vec![(name_key("blocked.test").unwrap(), RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS))];
    let table = RuleTable::build(&entries, buckets_for(entries.len())).expect("build table");
    dataplane.publish(&table).expect("publish");
    dataplane
}

fn run(dataplane: &Dataplane, frame: &[u8]) -> u32 {
    let program = dataplane.program(PROGRAM_NAME).expect("program");
    let mut out = vec![0u8; 2048];
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("test run");
    result.return_value
}

fn query(client: IpAddr, destination: IpAddr, destination_port: u16, name: &str) -> Vec<u8> {
    let spec = FrameSpec { client, router: destination, source_port: 40_000, destination_port, vlan: None };
    udp_frame(&spec, &dns_query(0x1234, name, TYPE_A, None))
}

fn to_router(client: Ipv4Addr, name: &str) -> Vec<u8> {
    query(IpAddr::V4(client), IpAddr::V4(ROUTER), 53, name)
}

fn rate_limited(dataplane: &Dataplane) -> u64 {
    dataplane.counters().expect("counters").rate_limited
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

root_test!(burst_passes_then_queries_are_dropped_and_counted, || {
    let mut dataplane = load();
    dataplane.set_rate_limit(SLOW_RATE, BURST).expect("rate limit");
    // Blocked names are answered in the kernel, others go to user space:
    // both count against the bucket.
    for index in 0..BURST {
        let (name, expected) = if index % 2 == 0 { ("blocked.test", XDP_TX) } else { ("example.test", XDP_PASS) };
        assert_eq!(run(&dataplane, &to_router(CLIENT_A, name)), expected, "query {index} of the burst");
    }
    assert_eq!(rate_limited(&dataplane), 0);
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_DROP);
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "example.test")), XDP_DROP);
    let counters = dataplane.counters().expect("counters");
    assert_eq!(counters.rate_limited, 2);
    // Dropped queries are not parsed, so they are neither seen nor answered.
    assert_eq!(counters.seen, u64::from(BURST));
    assert_eq!(counters.blocked, u64::from(BURST / 2));
});

root_test!(other_clients_keep_their_own_bucket, || {
    let mut dataplane = load();
    dataplane.set_rate_limit(SLOW_RATE, BURST).expect("rate limit");
    for _ in 0..BURST {
        assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_TX);
    }
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_DROP);
    for index in 0..BURST {
        assert_eq!(run(&dataplane, &to_router(CLIENT_B, "blocked.test")), XDP_TX, "client B query {index}");
    }
    assert_eq!(run(&dataplane, &to_router(CLIENT_B, "blocked.test")), XDP_DROP);
    let v6 = query(IpAddr::V6(CLIENT6), IpAddr::V6(ROUTER6), 53, "blocked.test");
    for index in 0..BURST {
        assert_eq!(run(&dataplane, &v6), XDP_TX, "IPv6 client query {index}");
    }
    assert_eq!(run(&dataplane, &v6), XDP_DROP);
    assert_eq!(rate_limited(&dataplane), 3);
});

root_test!(limit_applies_only_to_dns_queries, || {
    let mut dataplane = load();
    dataplane.set_rate_limit(SLOW_RATE, 1).expect("rate limit");
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_TX);
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_DROP);
    // Other UDP from the same client, to the router or elsewhere, passes.
    for _ in 0..3 {
        assert_eq!(run(&dataplane, &query(IpAddr::V4(CLIENT_A), IpAddr::V4(ROUTER), 5353, "x.test")), XDP_PASS);
        assert_eq!(run(&dataplane, &query(IpAddr::V4(CLIENT_A), IpAddr::V4(FOREIGN), 53, "x.test")), XDP_PASS);
    }
    assert_eq!(rate_limited(&dataplane), 1);
});

root_test!(intercepted_queries_are_limited_too, || {
    let mut dataplane = load();
    dataplane
        .set_intercept(&InterceptOptions {
            dns: true,
            refuse_dot: false,
            drop_doq: false,
            router_v4: Some(ROUTER),
            router_v6: None,
            exempt: Vec::new(),
        })
        .expect("interception settings");
    dataplane.set_rate_limit(SLOW_RATE, 2).expect("rate limit");
    let foreign = query(IpAddr::V4(CLIENT_A), IpAddr::V4(FOREIGN), 53, "example.test");
    // Redirected to the router (passed up) while credit lasts, then
    // dropped rather than redirected; queries to the router share the
    // bucket.
    assert_eq!(run(&dataplane, &foreign), XDP_PASS);
    assert_eq!(run(&dataplane, &to_router(CLIENT_A, "blocked.test")), XDP_TX);
    assert_eq!(run(&dataplane, &foreign), XDP_DROP);
    let counters = dataplane.counters().expect("counters");
    assert_eq!(counters.rate_limited, 1);
    assert_eq!(counters.redirected, 1);
});

root_test!(bucket_refills_over_time, || {
    let mut dataplane = load();
    // Ten queries per second: a token every 100 ms.
    dataplane.set_rate_limit(10, 2).expect("rate limit");
    let frame = to_router(CLIENT_A, "blocked.test");
    let mut dropped = false;
    // The burst of two is used up at once; well within a token's time.
    for _ in 0..20 {
        if run(&dataplane, &frame) == XDP_DROP {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a client sending back to back must be limited");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(run(&dataplane, &frame), XDP_TX, "a token is back after 400 ms");
});

root_test!(off_by_default_and_when_rate_is_zero, || {
    let mut dataplane = load();
    let frame = to_router(CLIENT_A, "blocked.test");
    for index in 0..200 {
        assert_eq!(run(&dataplane, &frame), XDP_TX, "query {index} with the default settings");
    }
    dataplane.set_rate_limit(SLOW_RATE, 1).expect("rate limit");
    assert_eq!(run(&dataplane, &frame), XDP_TX);
    assert_eq!(run(&dataplane, &frame), XDP_DROP);
    dataplane.set_rate_limit(0, 1).expect("rate limit off");
    for index in 0..200 {
        assert_eq!(run(&dataplane, &frame), XDP_TX, "query {index} after turning the limit off");
    }
    assert_eq!(rate_limited(&dataplane), 1);
});
