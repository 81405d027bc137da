//! The answer cache: positive and negative answers (RFC 2308), TTLs held
//! between a floor and a ceiling, expired entries kept for serve-stale
//! (RFC 8767), and a memory bound enforced by evicting the least recently
//! used entries.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use lru::LruCache;
use serde::Serialize;

use super::config::CacheConfig;

/// Bytes counted for an entry besides the answer's wire size: the key, the
/// record vectors and the LRU links, estimated.
const ENTRY_OVERHEAD: usize = 160;

/// The key of a cache entry. Answers differ by the DO bit (RFC 4035
/// §3.2.1) and the CD bit (RFC 4035 §3.2.2), so both are part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    /// Builds a key; the name is lowercased (RFC 4343).
    pub fn new(
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Self {
        Self {
            name: name.to_lowercase(),
            qtype,
            qclass,
            dnssec_ok,
            checking_disabled,
        }
    }
}

/// A cached answer, with TTLs already counted down.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    /// NOERROR or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The AD bit of the upstream's answer.
    pub authentic_data: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section, without OPT.
    pub additional: Vec<Record>,
}

impl CachedAnswer {
    /// Copies the records of an upstream answer, leaving out OPT.
    pub fn from_message(message: &Message) -> Self {
        let records = |records: &[Record]| {
            records
                .iter()
                .filter(|record| record.record_type() != RecordType::OPT)
                .cloned()
                .collect()
        };
        Self {
            rcode: message.response_code(),
            authentic_data: message.authentic_data(),
            answers: records(message.answers()),
            authority: records(message.name_servers()),
            additional: records(message.additionals()),
        }
    }
}

struct Entry {
    answer: CachedAnswer,
    stored: Instant,
    ttl: u32,
    size: usize,
}

struct Inner {
    entries: LruCache<CacheKey, Entry>,
    bytes: usize,
}

/// Cache counters and occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups answered from a live entry.
    pub hits: u64,
    /// Lookups that found no live entry.
    pub misses: u64,
    /// Expired entries served because every upstream failed.
    pub stale_hits: u64,
    /// Entries dropped to stay within the memory bound.
    pub evictions: u64,
    /// Entries held, expired ones included.
    pub entries: usize,
    /// Estimated memory held, in bytes.
    pub bytes: usize,
    /// The memory bound, in bytes.
    pub max_bytes: usize,
}

/// The answer cache.
pub struct Cache {
    config: CacheConfig,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
    evictions: AtomicU64,
}

impl Cache {
    /// Creates an empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale_hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves only cache entries behind,
        // which stay valid, so a poisoned lock is used as it is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks up a live entry and counts a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<CachedAnswer> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &CacheKey, now: Instant) -> Option<CachedAnswer> {
        let found = {
            let mut inner = self.lock();
            inner.entries.get(key).and_then(|entry| {
                let elapsed = now.saturating_duration_since(entry.stored).as_secs();
                let remaining = u64::from(entry.ttl)
                    .checked_sub(elapsed)
                    .filter(|left| *left > 0)?;
                Some(with_ttl(&entry.answer, |ttl| ttl.min(remaining as u32)))
            })
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Looks up an expired entry that is still within the stale window
    /// (RFC 8767 §4); its records carry the stale-answer TTL.
    pub fn get_stale(&self, key: &CacheKey) -> Option<CachedAnswer> {
        self.get_stale_at(key, Instant::now())
    }

    fn get_stale_at(&self, key: &CacheKey, now: Instant) -> Option<CachedAnswer> {
        if !self.config.serve_stale {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        let limit =
            Duration::from_secs(u64::from(entry.ttl) + u64::from(self.config.max_stale_age));
        if age > limit {
            return None;
        }
        let stale_ttl = self.config.stale_answer_ttl;
        let answer = with_ttl(&entry.answer, |_| stale_ttl);
        drop(inner);
        self.stale_hits.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// Caches an upstream answer, if it is cacheable: NOERROR with records,
    /// or a negative answer with an SOA to take the TTL from (RFC 2308 §5).
    /// `wire_len` is the answer's size on the wire.
    pub fn insert(&self, key: CacheKey, response: &Message, wire_len: usize) {
        self.insert_at(key, response, wire_len, Instant::now());
    }

    fn insert_at(&self, key: CacheKey, response: &Message, wire_len: usize, now: Instant) {
        if self.config.size_bytes == 0 || response.truncated() {
            return;
        }
        let Some(ttl) = self.entry_ttl(response) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let answer = CachedAnswer {
            rcode: response.response_code(),
            authentic_data: response.authentic_data(),
            answers: self.clamped(response.answers()),
            authority: self.clamped(response.name_servers()),
            additional: self.clamped(response.additionals()),
        };
        let size = wire_len + ENTRY_OVERHEAD + key.name.len();
        if size > self.config.size_bytes {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.put(
            key,
            Entry {
                answer,
                stored: now,
                ttl,
                size,
            },
        ) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        while inner.bytes > self.config.size_bytes {
            let Some((_, evicted)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= evicted.size;
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clamp(&self, ttl: u32) -> u32 {
        ttl.clamp(
            self.config.min_ttl,
            self.config.max_ttl.max(self.config.min_ttl),
        )
    }

    fn clamped(&self, records: &[Record]) -> Vec<Record> {
        records
            .iter()
            .filter(|record| record.record_type() != RecordType::OPT)
            .map(|record| {
                let mut record = record.clone();
                record.set_ttl(self.clamp(record.ttl()));
                record
            })
            .collect()
    }

    /// The entry's lifetime: the smallest record TTL of a positive answer,
    /// or for a negative answer the smaller of the SOA's TTL and MINIMUM
    /// (RFC 2308 §3), each clamped to the configured bounds.
    fn entry_ttl(&self, response: &Message) -> Option<u32> {
        let negative = match response.response_code() {
            ResponseCode::NXDomain => true,
            ResponseCode::NoError => response.answers().is_empty(),
            _ => return None,
        };
        if negative {
            let ttl = response
                .name_servers()
                .iter()
                .find_map(|record| match record.data() {
                    RData::SOA(soa) => Some(record.ttl().min(soa.minimum())),
                    _ => None,
                })?;
            let ceiling = self.config.max_negative_ttl.max(self.config.min_ttl);
            return Some(ttl.clamp(self.config.min_ttl, ceiling));
        }
        let ttl = response
            .answers()
            .iter()
            .chain(response.name_servers())
            .map(Record::ttl)
            .min()?;
        Some(self.clamp(ttl))
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let inner = self.lock();
            (inner.entries.len(), inner.bytes)
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale_hits: self.stale_hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries,
            bytes,
            max_bytes: self.config.size_bytes,
        }
    }
}

fn with_ttl(answer: &CachedAnswer, ttl: impl Fn(u32) -> u32) -> CachedAnswer {
    let adjust = |records: &[Record]| {
        records
            .iter()
            .map(|record| {
                let mut record = record.clone();
                record.set_ttl(ttl(record.ttl()));
                record
            })
            .collect()
    };
    CachedAnswer {
        rcode: answer.rcode,
        authentic_data: answer.authentic_data,
        answers: adjust(&answer.answers),
        authority: adjust(&answer.authority),
        additional: adjust(&answer.additional),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::message::synthesized_soa;
    use hickory_proto::rr::rdata::A;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn key(text: &str) -> CacheKey {
        CacheKey::new(&name(text), RecordType::A, DNSClass::IN, false, false)
    }

    fn positive(owner: &str, ttl: u32) -> Message {
        let mut message = Message::new();
        message.add_answer(Record::from_rdata(
            name(owner),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        message
    }

    fn negative(rcode: ResponseCode, soa_ttl: u32, minimum: u32) -> Message {
        let mut message = Message::new();
        message.set_response_code(rcode);
        let mut soa = synthesized_soa(&name("example."), minimum);
        soa.set_ttl(soa_ttl);
        message.add_name_server(soa);
        message
    }

    fn cache(config: CacheConfig) -> Cache {
        Cache::new(config)
    }

    #[test]
    fn ttl_counts_down_and_expires() {
        let cache = cache(CacheConfig::default());
        let start = Instant::now();
        cache.insert_at(key("a.example."), &positive("a.example.", 100), 60, start);
        let hit = cache
            .get_at(&key("A.Example."), start + Duration::from_secs(40))
            .unwrap();
        assert_eq!(hit.answers[0].ttl(), 60);
        assert!(
            cache
                .get_at(&key("a.example."), start + Duration::from_secs(100))
                .is_none()
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn ttl_floor_and_ceiling() {
        let config = CacheConfig {
            min_ttl: 30,
            max_ttl: 300,
            ..CacheConfig::default()
        };
        let cache = cache(config);
        let start = Instant::now();
        cache.insert_at(key("low.example."), &positive("low.example.", 5), 60, start);
        cache.insert_at(
            key("high.example."),
            &positive("high.example.", 86_400),
            60,
            start,
        );
        assert_eq!(
            cache.get_at(&key("low.example."), start).unwrap().answers[0].ttl(),
            30
        );
        assert_eq!(
            cache.get_at(&key("high.example."), start).unwrap().answers[0].ttl(),
            300
        );
        assert!(
            cache
                .get_at(&key("high.example."), start + Duration::from_secs(301))
                .is_none()
        );
    }

    #[test]
    fn rfc2308_5_negative_ttl_from_soa() {
        let cache = cache(CacheConfig::default());
        let start = Instant::now();
        cache.insert_at(
            key("nx.example."),
            &negative(ResponseCode::NXDomain, 900, 120),
            80,
            start,
        );
        let hit = cache
            .get_at(&key("nx.example."), start + Duration::from_secs(20))
            .unwrap();
        assert_eq!(hit.rcode, ResponseCode::NXDomain);
        assert_eq!(hit.authority[0].ttl(), 100);
        assert!(
            cache
                .get_at(&key("nx.example."), start + Duration::from_secs(121))
                .is_none()
        );

        cache.insert_at(
            key("nodata.example."),
            &negative(ResponseCode::NoError, 60, 3600),
            80,
            start,
        );
        assert!(
            cache
                .get_at(&key("nodata.example."), start + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            cache
                .get_at(&key("nodata.example."), start + Duration::from_secs(61))
                .is_none()
        );
    }

    #[test]
    fn rfc2308_5_negative_without_soa_not_cached() {
        let cache = cache(CacheConfig::default());
        let mut message = Message::new();
        message.set_response_code(ResponseCode::NXDomain);
        cache.insert(key("nx.example."), &message, 40);
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn servfail_and_truncated_not_cached() {
        let cache = cache(CacheConfig::default());
        let mut message = positive("a.example.", 60);
        message.set_response_code(ResponseCode::ServFail);
        cache.insert(key("a.example."), &message, 40);
        let mut message = positive("a.example.", 60);
        message.set_truncated(true);
        cache.insert(key("a.example."), &message, 40);
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn rfc8767_4_stale_within_window() {
        let config = CacheConfig {
            max_stale_age: 100,
            stale_answer_ttl: 30,
            ..CacheConfig::default()
        };
        let cache = cache(config);
        let start = Instant::now();
        cache.insert_at(key("a.example."), &positive("a.example.", 10), 60, start);
        assert!(
            cache
                .get_at(&key("a.example."), start + Duration::from_secs(50))
                .is_none()
        );
        let stale = cache
            .get_stale_at(&key("a.example."), start + Duration::from_secs(50))
            .unwrap();
        assert_eq!(stale.answers[0].ttl(), 30);
        assert!(
            cache
                .get_stale_at(&key("a.example."), start + Duration::from_secs(111))
                .is_none()
        );
        assert_eq!(cache.stats().stale_hits, 1);
    }

    #[test]
    fn stale_off_serves_nothing() {
        let cache = cache(CacheConfig {
            serve_stale: false,
            ..CacheConfig::default()
        });
        let start = Instant::now();
        cache.insert_at(key("a.example."), &positive("a.example.", 10), 60, start);
        assert!(
            cache
                .get_stale_at(&key("a.example."), start + Duration::from_secs(11))
                .is_none()
        );
    }

    #[test]
    fn memory_bound_evicts_least_recently_used() {
        let entry_size = 100 + ENTRY_OVERHEAD + name("n0.example.").len();
        let cache = cache(CacheConfig {
            size_bytes: entry_size * 3,
            ..CacheConfig::default()
        });
        let start = Instant::now();
        for index in 0..3 {
            let owner = format!("n{index}.example.");
            cache.insert_at(key(&owner), &positive(&owner, 60), 100, start);
        }
        assert!(cache.get_at(&key("n0.example."), start).is_some());
        cache.insert_at(key("n3.example."), &positive("n3.example.", 60), 100, start);
        let stats = cache.stats();
        assert_eq!(stats.entries, 3);
        assert!(stats.bytes <= stats.max_bytes);
        assert_eq!(stats.evictions, 1);
        assert!(
            cache.get_at(&key("n1.example."), start).is_none(),
            "least recently used goes first"
        );
        assert!(cache.get_at(&key("n0.example."), start).is_some());
    }

    #[test]
    fn do_bit_is_part_of_key() {
        let cache = cache(CacheConfig::default());
        cache.insert(key("a.example."), &positive("a.example.", 60), 60);
        let with_do = CacheKey::new(
            &name("a.example."),
            RecordType::A,
            DNSClass::IN,
            true,
            false,
        );
        assert!(cache.get(&with_do).is_none());
        assert!(cache.get(&key("a.example.")).is_some());
    }
}
