//! The log of recent queries behind `dnsgate log`: a bounded in-memory ring
//! of the queries answered, and a broadcast channel for
//! `dnsgate log --follow`.
//!
//! User space records the queries it answers as it answers them. Queries
//! the XDP program answers arrive as events from its perf buffers
//! (`crate::dataplane::KernelAnswer`) and are marked with
//! [`QueryEntry::kernel`]; events the kernel could not hand over are counted
//! in `events_lost` under `dataplane` in `dnsgate stats`.

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::ClientPrivacy;

/// Entries a `--follow` reader may fall behind by before it misses some.
const FOLLOW_BACKLOG: usize = 256;

/// One answered query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryEntry {
    /// When the query arrived, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The client's address as the privacy setting allows; `None` when
    /// addresses are omitted.
    pub client: Option<String>,
    /// The query name, lowercase, with the trailing dot.
    pub name: String,
    /// The query type mnemonic (`A`, `AAAA`, `TYPE65534`).
    pub qtype: String,
    /// The transport: `udp`, `tcp`, `tls`, `quic` or `https`.
    pub transport: String,
    /// `blocked`, `rewritten`, `allowed`, `resolved` (no rule matched) or
    /// `dropped` (no answer sent).
    pub decision: String,
    /// The response code sent, when a response was sent.
    pub rcode: Option<String>,
    /// Time from receipt to answer, in microseconds; 0 for queries
    /// answered in the kernel, which are not timed.
    pub latency_us: u64,
    /// Whether the XDP program answered the query in the kernel (then the
    /// query never reached user space).
    #[serde(default)]
    pub kernel: bool,
}

/// The bounded log.
#[derive(Debug)]
pub struct QueryLog {
    entries: Mutex<VecDeque<QueryEntry>>,
    capacity: usize,
    privacy: ClientPrivacy,
    follow: broadcast::Sender<QueryEntry>,
}

impl QueryLog {
    /// Creates a log that keeps the last `capacity` queries and records
    /// client addresses as `privacy` sets.
    pub fn new(capacity: usize, privacy: ClientPrivacy) -> Self {
        let (follow, _) = broadcast::channel(FOLLOW_BACKLOG);
        Self { entries: Mutex::new(VecDeque::with_capacity(capacity.min(4096))), capacity: capacity.max(1), privacy, follow }
    }

    /// Returns the client address in the form the privacy setting allows.
    pub fn client_text(&self, client: IpAddr) -> Option<String> {
        redact(client, self.privacy)
    }

    /// Appends an entry, dropping the oldest when the log is full.
    pub fn record(&self, entry: QueryEntry) {
        {
            let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if entries.len() == self.capacity {
                entries.pop_front();
            }
            entries.push_back(entry.clone());
        }
        // An error only means that no `--follow` reader is connected.
        let _ = self.follow.send(entry);
    }

    /// Returns up to `limit` of the newest entries, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<QueryEntry> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let skip = entries.len().saturating_sub(limit);
        entries.iter().skip(skip).cloned().collect()
    }

    /// Subscribes to entries recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QueryEntry> {
        self.follow.subscribe()
    }
}

/// Applies a privacy setting to an address: `Truncate` keeps the IPv4 /24
/// or the IPv6 /48 network and zeroes the rest.
pub fn redact(client: IpAddr, privacy: ClientPrivacy) -> Option<String> {
    match (privacy, client) {
        (ClientPrivacy::Full, address) => Some(address.to_string()),
        (ClientPrivacy::Omit, _) => None,
        (ClientPrivacy::Truncate, IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            Some(std::net::Ipv4Addr::new(a, b, c, 0).to_string())
        }
        (ClientPrivacy::Truncate, IpAddr::V6(v6)) => {
            let mut segments = v6.segments();
            segments[3..].fill(0);
            Some(std::net::Ipv6Addr::from(segments).to_string())
        }
    }
}

/// Milliseconds since the Unix epoch for `time`.
pub fn epoch_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> QueryEntry {
        QueryEntry {
            time_ms: 1,
            client: None,
            name: name.to_owned(),
            qtype: "A".to_owned(),
            transport: "udp".to_owned(),
            decision: "resolved".to_owned(),
            rcode: Some("NOERROR".to_owned()),
            latency_us: 5,
            kernel: false,
        }
    }

    #[test]
    fn full_log_drops_oldest() {
        let log = QueryLog::new(2, ClientPrivacy::Full);
        for name in ["a.", "b.", "c."] {
            log.record(entry(name));
        }
        let names: Vec<String> = log.recent(10).into_iter().map(|entry| entry.name).collect();
        assert_eq!(names, ["b.", "c."]);
        assert_eq!(log.recent(1)[0].name, "c.");
    }

    #[test]
    fn privacy_truncates_and_omits() {
        let v4: IpAddr = "192.0.2.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(redact(v4, ClientPrivacy::Full).as_deref(), Some("192.0.2.77"));
        assert_eq!(redact(v4, ClientPrivacy::Truncate).as_deref(), Some("192.0.2.0"));
        assert_eq!(redact(v6, ClientPrivacy::Truncate).as_deref(), Some("2001:db8:1::"));
        assert_eq!(redact(v4, ClientPrivacy::Omit), None);
    }

    #[test]
    fn entries_without_the_kernel_marker_still_parse() {
        let json = r#"{"time_ms":1,"client":null,"name":"a.","qtype":"A","transport":"udp","decision":"blocked","rcode":null,"latency_us":0}"#;
        let parsed: QueryEntry = serde_json::from_str(json).unwrap();
        assert!(!parsed.kernel);
    }

    #[test]
    fn subscriber_sees_new_entries() {
        let log = QueryLog::new(4, ClientPrivacy::Full);
        let mut follow = log.subscribe();
        log.record(entry("x."));
        assert_eq!(follow.try_recv().unwrap().name, "x.");
    }
}
