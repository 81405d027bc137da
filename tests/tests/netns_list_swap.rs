//! Replacing a 300k-name rule set under a steady query load: no query is
//! lost, and every answer comes from exactly one of the two sets.
//!
//! The program is attached natively to the router's veth end. A responder
//! in the router namespace answers what the kernel passes on, so every
//! query gets an answer: 0.0.0.0 from the kernel for a blocked name,
//! 192.0.2.99 from user space otherwise. The client alternates names of
//! list A and list B; the sequence of verdicts must switch from "A
//! blocked, B not" to "B blocked, A not" exactly once.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dnsgate::dataplane::{Dataplane, LoadOptions, PASS_PROGRAM_NAME};
use dnsgate_common::{
    name::name_key,
    rules::{RuleValue, ACTION_BLOCK, ACTION_NONE, ALL_GROUPS},
    table::{buckets_for, RuleTable},
};
use dnsgate_tests::{
    frames::dns_query,
    netns::{veth_pair, Namespace},
    require_root,
};

const NAMES_PER_LIST: usize = 300_000;
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
const USER_SPACE_ANSWER: [u8; 4] = [192, 0, 2, 99];

/// Runs `work` on a new thread that has joined network namespace `name`.
fn in_namespace<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open namespace");
        // SAFETY: setns on a valid namespace file descriptor changes only
        // this thread's network namespace.
        let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
}

fn table(prefix: &str) -> RuleTable {
    let entries: Vec<(u64, RuleValue)> = (0..NAMES_PER_LIST)
        .map(|i| {
            let key = name_key(&format!("n{i}.{prefix}.test")).unwrap();
            (key, RuleValue::new(ACTION_BLOCK, ACTION_NONE, ALL_GROUPS))
        })
        .collect();
    RuleTable::build(&entries, buckets_for(entries.len())).expect("table")
}

/// Answers every query with A 192.0.2.99 until `stop` is set.
fn respond(socket: UdpSocket, stop: Arc<AtomicBool>) {
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buffer) else { continue };
        if len < 12 {
            continue;
        }
        let mut answer = buffer[..len].to_vec();
        answer[2] |= 0x80; // QR
        answer[7] = 1; // ANCOUNT
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        answer.extend_from_slice(&USER_SPACE_ANSWER);
        let _ = socket.send_to(&answer, peer);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Kernel,
    UserSpace,
    Lost,
}

#[test]
fn list_swap_under_load_loses_nothing() {
    if !require_root("list_swap_under_load_loses_nothing") {
        return;
    }
    let client = Namespace::new("dgsc");
    let router = Namespace::new("dgsr");
    let (client_if, router_if) =
        veth_pair(&client, Some(&format!("{CLIENT}/24")), &router, Some(&format!("{ROUTER}/24")));

    let list_a = table("swap-a");
    let list_b = table("swap-b");

    // Load and attach from threads inside the namespaces: interface
    // indices are resolved in the calling thread's namespace.
    let dataplane = in_namespace(&router.name, move || {
        let options = LoadOptions { rule_buckets: list_a.buckets.len().max(list_b.buckets.len()) as u32, ..LoadOptions::default() };
        let mut dataplane = Dataplane::load(&options).expect("load");
        dataplane.set_router_addresses(&[ROUTER.into()]).unwrap();
        dataplane.publish(&list_a).unwrap();
        let attachment = dataplane.attach(&router_if).expect("attach to the router's end");
        (dataplane, attachment, list_b)
    })
    .join()
    .unwrap();
    let (mut dataplane, _attachment, list_b) = dataplane;
    let pass = in_namespace(&client.name, move || {
        let options = LoadOptions { rule_buckets: 1, ..LoadOptions::default() };
        let mut pass = Dataplane::load(&options).expect("load");
        let attachment = pass.attach_program(PASS_PROGRAM_NAME, &client_if).expect("attach pass");
        (pass, attachment)
    })
    .join()
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let stop = stop.clone();
        in_namespace(&router.name, move || {
            let socket = UdpSocket::bind(SocketAddr::from((ROUTER, 53))).expect("bind responder");
            respond(socket, stop);
        })
    };

    // The client: alternate A and B names, one query in flight at a time,
    // until told to stop after the swap. The count and the deadline only
    // bound a run whose stop never comes; on a quiet machine the kernel
    // answers about 150k queries a second, so the count must cover the
    // three seconds around the swap many times over.
    let sending = Arc::new(AtomicBool::new(true));
    let client_thread = {
        let sending = sending.clone();
        in_namespace(&client.name, move || {
            let socket = UdpSocket::bind(SocketAddr::from((CLIENT, 0))).unwrap();
            socket.connect(SocketAddr::from((ROUTER, 53))).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut results = Vec::new();
            let mut buffer = [0u8; 512];
            for i in 0..20_000_000u32 {
                if (!sending.load(Ordering::Relaxed) && i % 2 == 0) || Instant::now() > deadline {
                    break;
                }
                let list = if i % 2 == 0 { "swap-a" } else { "swap-b" };
                let name = format!("n{}.{list}.test", (i as usize * 7919) % NAMES_PER_LIST);
                let id = i as u16;
                socket.send(&dns_query(id, &name, 1, None)).unwrap();
                let verdict = loop {
                    match socket.recv(&mut buffer) {
                        Ok(len) if len >= 16 && u16::from_be_bytes([buffer[0], buffer[1]]) == id => {
                            let address = &buffer[len - 4..len];
                            break if address == [0, 0, 0, 0] { Verdict::Kernel } else { Verdict::UserSpace };
                        }
                        Ok(_) => continue,
                        Err(_) => break Verdict::Lost,
                    }
                };
                results.push(verdict);
            }
            results
        })
    };

    std::thread::sleep(Duration::from_millis(1500));
    let swap_started = Instant::now();
    dataplane.publish(&list_b).expect("publish list B");
    let swap_time = swap_started.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    sending.store(false, Ordering::Relaxed);
    let results = client_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    drop(pass);

    let lost_at: Vec<usize> =
        results.iter().enumerate().filter(|(_, verdict)| **verdict == Verdict::Lost).map(|(index, _)| index).collect();
    eprintln!("lost queries at positions {lost_at:?} of {}", results.len());
    let lost = lost_at.len();
    eprintln!("{} queries, {lost} lost, publishing 300k rules took {swap_time:?}", results.len());
    assert!(results.len() > 100, "too few queries were sent: {}", results.len());
    assert_eq!(lost, 0, "queries went unanswered during the swap");

    // Pairs (A name, B name): before the flip (Kernel, UserSpace), after it
    // (UserSpace, Kernel). The flip happens between two queries, so at most
    // one pair straddles it; every other pair is one of the two states, and
    // the states switch exactly once.
    let pairs: Vec<(Verdict, Verdict)> = results.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect();
    let before = (Verdict::Kernel, Verdict::UserSpace);
    let after = (Verdict::UserSpace, Verdict::Kernel);
    let mut switches = 0;
    let mut state = before;
    for (index, pair) in pairs.iter().enumerate() {
        if *pair == state {
            continue;
        }
        let straddling = *pair == (Verdict::Kernel, Verdict::Kernel) || *pair == (Verdict::UserSpace, Verdict::UserSpace);
        if straddling && state == before && pairs.get(index + 1) == Some(&after) {
            continue;
        }
        assert_eq!(*pair, after, "pair {index} is {pair:?}, a mix of the two lists");
        state = after;
        switches += 1;
    }
    assert_eq!(pairs.first(), Some(&before), "list A was not in force at the start");
    assert_eq!(pairs.last(), Some(&after), "list B was not in force at the end");
    assert_eq!(switches, 1, "the verdicts switched {switches} times");
    drop(client);
    drop(router);
}
