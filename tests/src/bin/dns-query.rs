//! Sends one DNS query over UDP and prints the answer on one line, for
//! tests that run where no DNS client is installed (the `vm-test` guest).
//!
//! ```text
//! dns-query SERVER NAME QTYPE [TIMEOUT_MS]
//! ```
//!
//! SERVER is an IP address, optionally with a port (`198.18.0.2`,
//! `198.18.0.2:5353`, `[fd00::2]:53`). The query has a random ID and asks
//! for recursion. The reply, the first one with the query's ID, is printed
//! as
//!
//! ```text
//! rcode=NOERROR answers=0.0.0.0,192.0.2.1
//! ```
//!
//! listing the A and AAAA records of the answer section in order (empty
//! after `answers=` when there are none). With no reply within TIMEOUT_MS
//! (2000 by default) the program prints `timeout` and exits with status 2;
//! usage or network errors exit with status 1.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher as _,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::ExitCode,
    str::FromStr as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (server, name, qtype, timeout) = match args.as_slice() {
        [server, name, qtype] => (server, name, qtype, DEFAULT_TIMEOUT),
        [server, name, qtype, millis] => match millis.parse::<u64>() {
            Ok(millis) if millis > 0 => (server, name, qtype, Duration::from_millis(millis)),
            _ => {
                eprintln!("dns-query: TIMEOUT_MS must be a whole number of milliseconds above 0, not {millis:?}");
                return ExitCode::from(1);
            }
        },
        _ => {
            eprintln!(
                "usage: dns-query SERVER NAME QTYPE [TIMEOUT_MS]   (for example: dns-query 198.18.0.2 ads.example A)"
            );
            return ExitCode::from(1);
        }
    };
    match run(server, name, qtype, timeout) {
        Ok(Some(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("timeout");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("dns-query: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_server(server: &str) -> Result<SocketAddr> {
    if let Ok(address) = server.parse::<IpAddr>() {
        return Ok(SocketAddr::new(address, 53));
    }
    server
        .parse::<SocketAddr>()
        .with_context(|| format!("invalid server {server:?}: give an IP address, optionally with a port"))
}

/// A query ID from the process's randomly keyed hasher, so no two runs
/// share IDs predictably.
fn random_id() -> u16 {
    let hash = RandomState::new().hash_one(std::process::id());
    (hash & 0xffff) as u16
}

fn run(server: &str, name: &str, qtype: &str, timeout: Duration) -> Result<Option<String>> {
    let server = parse_server(server)?;
    let name = Name::from_ascii(name).with_context(|| format!("invalid name {name:?}"))?;
    let qtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .with_context(|| format!("invalid query type {qtype:?}: use A, AAAA, TXT, ..."))?;

    let id = random_id();
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, qtype));
    let bytes = query.to_vec().context("failed to encode the query")?;

    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let socket = UdpSocket::bind(bind).context("failed to open a UDP socket")?;
    socket.connect(server).with_context(|| format!("failed to set {server} as the peer"))?;
    socket.send(&bytes).with_context(|| format!("failed to send the query to {server}"))?;

    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        let length = match socket.recv(&mut buffer) {
            Ok(length) => length,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None);
            }
            // An ICMP port unreachable from the server shows up here.
            Err(error) => bail!("no answer from {server}: {error}"),
        };
        // Anything that is not a reply to this query is ignored, as a
        // resolver would.
        let Ok(reply) = Message::from_vec(&buffer[..length]) else {
            continue;
        };
        if reply.id() != id || reply.message_type() != MessageType::Response {
            continue;
        }
        return Ok(Some(format_reply(&reply)));
    }
}

fn rcode_mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

fn format_reply(reply: &Message) -> String {
    let addresses: Vec<String> = reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(address) => Some(address.to_string()),
            RData::AAAA(address) => Some(address.to_string()),
            _ => None,
        })
        .collect();
    format!("rcode={} answers={}", rcode_mnemonic(reply.response_code()), addresses.join(","))
}
