//! Names and value layouts of the maps the XDP program shares with user
//! space. All multi-byte integers are in host byte order unless a field says
//! otherwise; addresses are in network byte order.

use crate::rules::BUCKET_SLOTS;

/// Layout version of every map below. User space refuses to reuse pinned
/// maps that carry another version and replaces them instead.
pub const LAYOUT_VERSION: u32 = 5;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "dns_filter";

/// Array map, one [`DataplaneConfig`].
pub const MAP_CONFIG: &str = "CONFIG";
/// Array map, one `u32`: the rule set (0 or 1) queries are judged against.
pub const MAP_ACTIVE_SET: &str = "ACTIVE_SET";
/// Array map of [`Bucket`]s holding both rule sets: set `s` occupies
/// entries `s * set_buckets .. (s + 1) * set_buckets` (see
/// [`DataplaneConfig::set_buckets`]).
pub const MAP_RULES: &str = "RULES";
/// Hash map `u64` name key → `u32` rule value (low 16 bits): custom rules
/// that take effect at once, beside the compiled sets.
pub const MAP_OVERLAY: &str = "OVERLAY";
/// Hash map [`IpKey`] → `u32` (unused, 0): the router's own addresses.
pub const MAP_ROUTER_ADDRS: &str = "ROUTER_ADDRS";
/// Hash map [`IpKey`] → `u32` policy-group mask (low 8 bits).
pub const MAP_CLIENTS: &str = "CLIENTS";
/// Per-CPU array of `u64` counters indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Array map, one [`InterceptConfig`].
pub const MAP_INTERCEPT_CONFIG: &str = "INTERCEPT_CONFIG";
/// LPM trie → `u32` (unused, 0): clients and subnets whose DNS to other
/// resolvers is left alone. The key is a `u32` prefix length in bits (host
/// byte order) followed by an [`IpKey`]; an IPv4 subnet `a.b.c.d/n` is
/// stored as `::ffff:a.b.c.d/(96 + n)`.
pub const MAP_INTERCEPT_EXEMPT: &str = "INTERCEPT_EXEMPT";
/// LRU hash [`FlowKey`] → [`IpKey`]: the address each redirected query
/// was sent to, so that the reply can carry it as its source again.
pub const MAP_INTERCEPT_FLOWS: &str = "INTERCEPT_FLOWS";
/// LRU hash [`IpKey`] client → [`ClientIntercepts`].
pub const MAP_INTERCEPT_CLIENTS: &str = "INTERCEPT_CLIENTS";
/// Perf event array, one ring per CPU: an [`EventHeader`] followed by the
/// first bytes of each answer sent from the kernel, for the query log.
pub const MAP_EVENTS: &str = "EVENTS";
/// Array map, one [`RateLimitConfig`].
pub const MAP_RATE_LIMIT_CONFIG: &str = "RATE_LIMIT_CONFIG";
/// LRU hash [`IpKey`] client → [`RateLimitBucket`]: the token bucket of
/// each client that sent plain DNS while rate limiting was on.
pub const MAP_RATE_LIMIT: &str = "RATE_LIMIT";
/// Array of one [`FallbackConfig`]: where allowed plain queries go while
/// the controller's heartbeat is stale.
pub const MAP_FALLBACK: &str = "FALLBACK";

/// Default number of buckets in each rule set when nothing else is
/// configured: room for about a million rules at 90 % load.
pub const DEFAULT_RULE_BUCKETS: u32 = 145_636;
/// Entries of the rules map as compiled into the object; user space sizes
/// the map to twice its configured set size before loading.
pub const DEFAULT_RULES_ENTRIES: u32 = 2 * DEFAULT_RULE_BUCKETS;
/// Entries in the overlay map.
pub const OVERLAY_CAPACITY: u32 = 4096;
/// Entries in the router address map.
pub const ROUTER_ADDRS_CAPACITY: u32 = 64;
/// Entries in the client map.
pub const CLIENTS_CAPACITY: u32 = 1024;
/// Entries in the exemption trie.
pub const INTERCEPT_EXEMPT_CAPACITY: u32 = 256;
/// Entries in the flow map: redirected queries still waiting for their
/// reply. Beyond this the least recently used entry is evicted, and the
/// reply to an evicted query leaves with the router's address as source.
pub const INTERCEPT_FLOWS_CAPACITY: u32 = 8192;
/// Entries in the per-client interception counters; the least recently
/// seen client is evicted first.
pub const INTERCEPT_CLIENTS_CAPACITY: u32 = 1024;
/// Entries in the rate-limit buckets; the least recently seen client is
/// evicted first and starts again with a full bucket.
pub const RATE_LIMIT_CAPACITY: u32 = 16384;

/// One bucket of a rule set: [`BUCKET_SLOTS`] slots (see [`crate::rules`]).
pub type Bucket = [u64; BUCKET_SLOTS];

/// How blocked names are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BlockMode {
    /// `0.0.0.0` for A, `::` for AAAA (or the configured sinkhole
    /// addresses), NODATA for other types.
    NullAddress = 0,
    /// NXDOMAIN with an SOA in the authority section.
    NxDomain = 1,
    /// REFUSED.
    Refused = 2,
}

impl BlockMode {
    /// The mode stored in [`DataplaneConfig::block_mode`]; unknown values
    /// fall back to [`BlockMode::NullAddress`].
    #[inline(always)]
    pub const fn from_u32(value: u32) -> Self {
        match value {
            1 => Self::NxDomain,
            2 => Self::Refused,
            _ => Self::NullAddress,
        }
    }
}

/// [`DataplaneConfig::flags`]: blocking is on (cleared while paused).
pub const CONFIG_BLOCKING: u32 = 1 << 0;
/// [`DataplaneConfig::flags`]: the overlay map holds at least one rule.
pub const CONFIG_HAS_OVERLAY: u32 = 1 << 1;
/// [`DataplaneConfig::flags`]: the client map holds at least one client.
pub const CONFIG_HAS_CLIENTS: u32 = 1 << 2;
/// [`DataplaneConfig::flags`]: answers sent from the kernel are copied to
/// [`MAP_EVENTS`] for the query log.
pub const CONFIG_LOG_EVENTS: u32 = 1 << 3;

/// [`EventHeader::kind`]: the frame that follows is an answer to a blocked
/// query, as sent back with `XDP_TX`.
pub const EVENT_ANSWER: u32 = 1;
/// Bytes of an answer frame copied after the [`EventHeader`]: enough for
/// the headers and any question the kernel answers.
pub const EVENT_CAPTURE_LEN: u32 = 512;

/// Start of every record in [`MAP_EVENTS`]. The kernel appends
/// `captured_len` bytes of the frame, then padding to eight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct EventHeader {
    /// What the record holds (`EVENT_*`).
    pub kind: u32,
    /// Length of the whole frame.
    pub frame_len: u32,
    /// Bytes of the frame that follow this header (at most
    /// [`EVENT_CAPTURE_LEN`]).
    pub captured_len: u32,
    /// Interface index the query arrived on (and the answer left by).
    pub ifindex: u32,
}

impl EventHeader {
    /// Size of the header in a record.
    pub const LEN: usize = core::mem::size_of::<Self>();

    /// Reads a header from the start of a record, host byte order.
    pub fn parse(record: &[u8]) -> Option<Self> {
        let field = |index: usize| -> Option<u32> {
            let bytes = record.get(index * 4..index * 4 + 4)?;
            Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        Some(Self { kind: field(0)?, frame_len: field(1)?, captured_len: field(2)?, ifindex: field(3)? })
    }
}

/// Settings the XDP program reads on every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct DataplaneConfig {
    /// [`LAYOUT_VERSION`] of the maps.
    pub layout_version: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// A [`BlockMode`].
    pub block_mode: u32,
    /// TTL of blocked answers and of their SOA, in seconds.
    pub block_ttl: u32,
    /// Buckets in use in each rule set (at most `set_buckets`; 0: empty).
    pub buckets: [u32; 2],
    /// Buckets reserved for each set in the rules map: set `s` starts at
    /// entry `s * set_buckets`.
    pub set_buckets: u32,
    /// Address returned for blocked A queries in [`BlockMode::NullAddress`]
    /// mode, network byte order.
    pub sinkhole_v4: [u8; 4],
    /// Address returned for blocked AAAA queries, network byte order.
    pub sinkhole_v6: [u8; 16],
    /// Nanoseconds of event budget one logged answer costs on a CPU, whose
    /// budget refills by one nanosecond per nanosecond up to one second:
    /// 10^9 divided by the answers per second and CPU that reach the query
    /// log. 0 logs every answer. The rest are counted as `events_skipped`.
    pub event_cost_ns: u32,
}

impl DataplaneConfig {
    /// Default configuration: blocking on, null addresses, TTL 10 s.
    pub const DEFAULT: Self = Self {
        layout_version: LAYOUT_VERSION,
        flags: CONFIG_BLOCKING,
        block_mode: BlockMode::NullAddress as u32,
        block_ttl: 10,
        buckets: [0, 0],
        set_buckets: 0,
        sinkhole_v4: [0; 4],
        sinkhole_v6: [0; 16],
        event_cost_ns: 0,
    };
}

/// Key of the address maps: an IPv6 address, or an IPv4 address mapped into
/// IPv6 (`::ffff:a.b.c.d`), in network byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct IpKey(pub [u8; 16]);

impl IpKey {
    /// Key of an IPv4 address given in network byte order.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        Self([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
    }
}

/// Indices of the per-CPU counters. User space sums the CPUs' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// DNS queries to the router that were parsed.
    Seen = 0,
    /// Queries answered in the kernel.
    Blocked = 1,
    /// Parsed queries passed on to user space.
    Allowed = 2,
    /// Frames that are not DNS queries for the router.
    Passed = 3,
    /// Port-53 frames that could not be parsed, passed on.
    Malformed = 4,
    /// Blocked queries passed on because the answer could not be built in
    /// place (no room to grow the frame).
    TxFailed = 5,
    /// Plain DNS queries to another resolver that were handled as if sent
    /// to the router (answered in the kernel or redirected).
    Intercepted = 6,
    /// Intercepted queries whose destination was rewritten to the router.
    Redirected = 7,
    /// Replies whose source address was restored by the egress program.
    RepliesRestored = 8,
    /// TCP SYNs to port 853 of another resolver answered with a RST.
    DotRefused = 9,
    /// UDP datagrams to port 853 of another resolver dropped.
    DoqDropped = 10,
    /// Answers sent from the kernel that could not be copied to
    /// [`MAP_EVENTS`] (the CPU's ring was full or not opened), so they are
    /// missing from the query log.
    EventsLost = 11,
    /// Plain DNS queries dropped because their client was over its rate
    /// limit.
    RateLimited = 12,
    /// Plain DNS queries for the router sent to the fallback resolver's
    /// port because the controller's heartbeat was stale.
    Fallback = 13,
    /// UDP datagrams from a LAN client straight to the fallback resolver's
    /// port, dropped: that resolver filters nothing.
    FallbackPortDropped = 14,
    /// Replies from the fallback resolver's port given port 53 as their
    /// source on the way out.
    FallbackReplies = 15,
    /// Answers sent from the kernel left out of the query log because more
    /// than its per-CPU rate of them came (`event_cost_ns`).
    EventsSkipped = 16,
}

/// Number of counters in [`MAP_COUNTERS`].
pub const COUNTER_COUNT: u32 = 24;

/// Names of the counters as `dnsgate stats --json` prints them, by index.
pub const COUNTER_NAMES: [&str; 17] = [
    "seen",
    "blocked",
    "allowed",
    "passed",
    "malformed",
    "tx_failed",
    "intercepted",
    "redirected",
    "replies_restored",
    "dot_refused",
    "doq_dropped",
    "events_lost",
    "rate_limited",
    "fallback",
    "fallback_port_dropped",
    "fallback_replies",
    "events_skipped",
];

/// [`InterceptConfig::flags`]: plain DNS (UDP/53) to other resolvers is
/// handled as if sent to the router.
pub const INTERCEPT_DNS: u32 = 1 << 0;
/// [`InterceptConfig::flags`]: TCP SYNs to port 853 of other resolvers are
/// answered with a RST.
pub const INTERCEPT_REFUSE_DOT: u32 = 1 << 1;
/// [`InterceptConfig::flags`]: UDP to port 853 of other resolvers (DoQ) is
/// dropped.
pub const INTERCEPT_DROP_DOQ: u32 = 1 << 2;

/// Settings of the interception of DNS sent to other resolvers. All zero
/// (the state before user space writes it) turns interception off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct InterceptConfig {
    /// `INTERCEPT_*` bits.
    pub flags: u32,
    /// The router's IPv4 address that redirected queries are sent to,
    /// network byte order. Interception of IPv4 is off while it is zero.
    pub router_v4: [u8; 4],
    /// The router's IPv6 address that redirected queries are sent to,
    /// network byte order. Interception of IPv6 is off while it is `::`.
    pub router_v6: [u8; 16],
}

/// Key of [`MAP_INTERCEPT_FLOWS`]: the client end of a redirected query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// Client address.
    pub client: IpKey,
    /// Client UDP port, network byte order.
    pub port: [u8; 2],
    /// Always zero.
    pub padding: [u8; 2],
}

/// Value of [`MAP_INTERCEPT_CLIENTS`], host byte order. Updated without
/// atomics from several CPUs, so a count may miss an increment under
/// load: these are for spotting devices, not for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ClientIntercepts {
    /// Plain DNS queries to other resolvers.
    pub queries: u64,
    /// DoT connections refused and DoQ datagrams dropped.
    pub encrypted: u64,
}

/// Settings of the per-client rate limit of plain DNS queries. All zero
/// (the state before user space writes it) turns the limit off.
///
/// A client's bucket stores credit in nanoseconds: it fills by one
/// nanosecond per nanosecond elapsed, up to `capacity_ns`, and a query
/// takes `cost_ns`. The credit is the token count in fixed point, one
/// token being `cost_ns`, so the program needs neither a division nor a
/// multiplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RateLimitConfig {
    /// Nanoseconds per token: 10^9 divided by the rate in queries per
    /// second. 0 turns the limit off.
    pub cost_ns: u64,
    /// Credit of a full bucket: the burst times `cost_ns`.
    pub capacity_ns: u64,
}

impl RateLimitConfig {
    /// Nanoseconds in a second.
    pub const NS_PER_SECOND: u64 = 1_000_000_000;

    /// The settings for `rate` queries per second with bursts of `burst`
    /// queries; `rate` 0 turns the limit off, and a `burst` of 0 counts as
    /// 1.
    pub const fn new(rate: u32, burst: u32) -> Self {
        if rate == 0 {
            return Self { cost_ns: 0, capacity_ns: 0 };
        }
        // Above 10^9 queries per second a token would cost less than a
        // nanosecond; 1 ns keeps the limit on.
        let cost_ns = Self::NS_PER_SECOND / rate as u64;
        let cost_ns = if cost_ns == 0 { 1 } else { cost_ns };
        let burst = if burst == 0 { 1 } else { burst as u64 };
        Self { cost_ns, capacity_ns: cost_ns * burst }
    }
}

/// The fallback for allowed plain queries while the controller is down.
/// All zero (the state before user space writes it) turns it off.
///
/// The controller writes `heartbeat_ns` every second. When it is older than
/// `stale_after_ns`, the XDP program sends UDP queries for the router that
/// it does not answer itself to `port` on the same address (the router's
/// stock resolver, such as dnsmasq), and the TC egress program gives the
/// replies port 53 as their source again. Blocked names are still answered
/// in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FallbackConfig {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) when the controller last
    /// wrote this value.
    pub heartbeat_ns: u64,
    /// Age of the heartbeat after which the fallback takes over.
    pub stale_after_ns: u64,
    /// The fallback resolver's UDP port on the router, host byte order;
    /// 0 turns the fallback off.
    pub port: u16,
    /// Always zero.
    pub padding: [u8; 6],
}

impl FallbackConfig {
    /// Returns whether queries go to the fallback port at time `now_ns`.
    #[inline(always)]
    pub fn diverts(&self, now_ns: u64) -> bool {
        self.port != 0 && now_ns.saturating_sub(self.heartbeat_ns) > self.stale_after_ns
    }
}

/// Value of [`MAP_RATE_LIMIT`], host byte order. Updated without atomics
/// from several CPUs, so two queries from one client that arrive at the
/// same moment on two CPUs may both pass on the same credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RateLimitBucket {
    /// Credit left, in nanoseconds (see [`RateLimitConfig`]).
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns` at the last refill.
    pub last_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these types are `#[repr(C)]`, made only of integers and byte
    // arrays laid out without padding, so every bit pattern is valid and no
    // byte is uninitialised.
    unsafe impl aya::Pod for super::DataplaneConfig {}
    // SAFETY: as above: sixteen bytes, no padding.
    unsafe impl aya::Pod for super::IpKey {}
    // SAFETY: as above: 24 bytes, no padding.
    unsafe impl aya::Pod for super::InterceptConfig {}
    // SAFETY: as above: twenty bytes, the padding spelt out as a field.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above: sixteen bytes, no padding.
    unsafe impl aya::Pod for super::ClientIntercepts {}
    // SAFETY: as above: sixteen bytes, no padding.
    unsafe impl aya::Pod for super::RateLimitConfig {}
    // SAFETY: as above: sixteen bytes, no padding.
    unsafe impl aya::Pod for super::RateLimitBucket {}
    // SAFETY: as above: 24 bytes, the padding spelt out as a field.
    unsafe impl aya::Pod for super::FallbackConfig {}
}

#[cfg(test)]
mod tests {
    use super::{FallbackConfig, RateLimitConfig};

    #[test]
    fn fallback_diverts_only_when_on_and_stale() {
        let config = FallbackConfig { heartbeat_ns: 10_000, stale_after_ns: 3_000, port: 54, padding: [0; 6] };
        assert!(!config.diverts(10_000), "a fresh heartbeat keeps queries on port 53");
        assert!(!config.diverts(13_000), "exactly the stale age is not stale yet");
        assert!(config.diverts(13_001));
        assert!(!config.diverts(5_000), "a heartbeat from the future is fresh");
        assert!(!FallbackConfig { port: 0, ..config }.diverts(u64::MAX), "port 0 turns the fallback off");
        assert!(!FallbackConfig::default().diverts(u64::MAX));
    }

    #[test]
    fn rate_limit_config_in_nanoseconds() {
        assert_eq!(RateLimitConfig::new(0, 10), RateLimitConfig { cost_ns: 0, capacity_ns: 0 });
        assert_eq!(RateLimitConfig::new(20, 100), RateLimitConfig { cost_ns: 50_000_000, capacity_ns: 5_000_000_000 });
        assert_eq!(RateLimitConfig::new(3, 0), RateLimitConfig { cost_ns: 333_333_333, capacity_ns: 333_333_333 });
    }

    #[test]
    fn rate_limit_config_extremes_do_not_overflow() {
        let config = RateLimitConfig::new(1, u32::MAX);
        assert_eq!(config.capacity_ns, RateLimitConfig::NS_PER_SECOND * u64::from(u32::MAX));
        let config = RateLimitConfig::new(u32::MAX, u32::MAX);
        assert_eq!(config, RateLimitConfig { cost_ns: 1, capacity_ns: u64::from(u32::MAX) }, "the limit stays on");
    }
}
