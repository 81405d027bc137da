//! The maps shared with user space (layouts in `dnsgate_common::maps`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerfEventArray},
};
use dnsgate_common::{
    maps::{
        Bucket, ClientIntercepts, Counter, DataplaneConfig, EventHeader, FallbackConfig, FlowKey, InterceptConfig, IpKey,
        RateLimitBucket, RateLimitConfig, RATE_LIMIT_CAPACITY,
        CLIENTS_CAPACITY, COUNTER_COUNT, DEFAULT_RULES_ENTRIES, INTERCEPT_CLIENTS_CAPACITY,
        INTERCEPT_EXEMPT_CAPACITY, INTERCEPT_FLOWS_CAPACITY, OVERLAY_CAPACITY,
        ROUTER_ADDRS_CAPACITY,
    },
    rules::{bucket_pair, slot_value, RuleValue, BUCKET_SLOTS},
    wire::MAX_LABELS,
};

#[map]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

#[map]
pub static ACTIVE_SET: Array<u32> = Array::with_max_entries(1, 0);

// Both rule sets in one map, so a lookup needs no branch on the active set
// (a branch that doubled the verifier's states). User space sizes the map
// before loading; this is only the default.
#[map]
pub static RULES: Array<Bucket> = Array::with_max_entries(DEFAULT_RULES_ENTRIES, 0);

#[map]
pub static OVERLAY: HashMap<u64, u32> = HashMap::with_max_entries(OVERLAY_CAPACITY, 0);

#[map]
pub static ROUTER_ADDRS: HashMap<IpKey, u32> = HashMap::with_max_entries(ROUTER_ADDRS_CAPACITY, 0);

#[map]
pub static CLIENTS: HashMap<IpKey, u32> = HashMap::with_max_entries(CLIENTS_CAPACITY, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

// One ring per CPU; aya sizes the map to the number of CPUs when it is
// created with zero entries.
#[map]
pub static EVENTS: PerfEventArray<EventHeader> = PerfEventArray::new(0);

#[map]
pub static INTERCEPT_CONFIG: Array<InterceptConfig> = Array::with_max_entries(1, 0);

#[map]
pub static INTERCEPT_EXEMPT: LpmTrie<IpKey, u32> = LpmTrie::with_max_entries(INTERCEPT_EXEMPT_CAPACITY, 0);

#[map]
pub static INTERCEPT_FLOWS: LruHashMap<FlowKey, IpKey> = LruHashMap::with_max_entries(INTERCEPT_FLOWS_CAPACITY, 0);

#[map]
pub static INTERCEPT_CLIENTS: LruHashMap<IpKey, ClientIntercepts> =
    LruHashMap::with_max_entries(INTERCEPT_CLIENTS_CAPACITY, 0);

#[map]
pub static RATE_LIMIT_CONFIG: Array<RateLimitConfig> = Array::with_max_entries(1, 0);

#[map]
pub static FALLBACK: Array<FallbackConfig> = Array::with_max_entries(1, 0);

/// Each CPU's budget of answers copied to the query log (see
/// `DataplaneConfig::event_cost_ns`).
#[map]
pub static EVENT_BUDGET: PerCpuArray<RateLimitBucket> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static RATE_LIMIT: LruHashMap<IpKey, RateLimitBucket> = LruHashMap::with_max_entries(RATE_LIMIT_CAPACITY, 0);

/// Per-CPU scratch space for the question walk.
///
/// Two verifier constraints shape it. Variable-offset stack access needs
/// 5.12, but a map value may be indexed by any bounded variable. And the
/// walk's state lives in memory rather than in registers: the verifier does
/// not track map contents, so the states of different paths through the
/// name loop look alike and are pruned; with the state in registers the
/// label count and position stay exact and the paths multiply past the
/// 1M-instruction limit (seen on 6.18 while writing this).
#[repr(C)]
pub struct Labels {
    /// FNV-1a hash of each label, lowercased.
    pub hashes: [u64; MAX_LABELS],
    /// Offset of each label's length byte from the start of the name.
    pub offsets: [u8; MAX_LABELS],
    /// Hash of the label being read.
    pub hash: u64,
    /// Labels read so far (may exceed `MAX_LABELS`).
    pub count: u32,
    /// Bytes left in the label being read.
    pub remaining: u32,
    /// Length of the name in wire form, root label included.
    pub name_len: u32,
    /// Strongest rule action found on the name's path so far.
    pub action: u32,
    /// Label index of the most specific block found so far.
    pub block_label: u32,
    /// Policy groups of the client.
    pub groups: u32,
    /// First bucket of the active set in [`RULES`].
    pub set_base: u32,
    /// Buckets in use in the active set.
    pub set_buckets: u32,
    /// Whether the overlay map holds rules (0 or 1).
    pub overlay: u32,
    /// Whether the frame is a query to another resolver that is being
    /// intercepted (0 or 1).
    pub intercepted: u32,
    /// The frame's layout, parked here while the name is judged.
    pub frame: crate::query::Frame,
    /// The question, parked here while the name is judged.
    pub question: crate::query::Question,
}

#[map]
pub static LABELS: PerCpuArray<Labels> = PerCpuArray::with_max_entries(1, 0);

/// Reads a scratch field through memory. Volatile, so the compiler can
/// neither keep the field in a register across a loop nor forward the last
/// value stored to it: the verifier must see a load from the map value,
/// whose result it does not track (see [`Labels`]).
#[inline(always)]
pub fn load<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid reference.
    unsafe { core::ptr::read_volatile(field) }
}

/// Writes a scratch field through memory (see [`load`]).
#[inline(always)]
pub fn store<T: Copy>(field: &mut T, value: T) {
    // SAFETY: `field` is a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(field, value) }
}

/// Adds one to a per-CPU counter. No atomics are needed: an XDP program
/// runs to completion on one CPU and this CPU's slot is written by no one
/// else.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it points at this CPU's `u64` for as long as the program
        // runs.
        unsafe { *value += 1 };
    }
}

/// Looks `key` up in the set that starts at bucket `base` and uses
/// `buckets` buckets, in both candidate buckets.
#[inline(always)]
fn lookup_in_set(base: u32, buckets: u32, key: u64) -> Option<RuleValue> {
    if buckets == 0 {
        return None;
    }
    let (first, second) = bucket_pair(key, buckets);
    for index in [first, second] {
        if let Some(bucket) = RULES.get(base.wrapping_add(index)) {
            for slot in 0..BUCKET_SLOTS {
                if let Some(value) = slot_value(bucket[slot], key) {
                    return Some(value);
                }
            }
        }
    }
    None
}

/// Rule value of `key` in the active set merged with the overlay's.
#[inline(always)]
pub fn lookup_rule(base: u32, buckets: u32, key: u64, overlay: bool) -> Option<RuleValue> {
    let mut found = lookup_in_set(base, buckets, key);
    if overlay {
        // SAFETY: the value is copied out at once; user space may replace it
        // concurrently, which only changes which of two valid values we see.
        if let Some(&value) = unsafe { OVERLAY.get(&key) } {
            let value = RuleValue(value as u16);
            found = Some(match found {
                Some(from_set) => from_set.merge(value),
                None => value,
            });
        }
    }
    found
}
