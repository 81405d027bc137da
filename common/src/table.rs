//! Building a rule set for the kernel's table (two-choice cuckoo hashing,
//! see [`crate::rules`]).

use std::vec::Vec;

use crate::maps::Bucket;
use crate::rules::{bucket_pair, make_slot, slot_tag, RuleValue, BUCKET_SLOTS};

/// Load factor the builder aims for when it sizes a table by itself.
pub const TARGET_LOAD: f64 = 0.90;

/// Error returned when the rules do not fit the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull {
    /// Rules that were to be placed.
    pub rules: usize,
    /// Buckets available.
    pub buckets: u32,
}

impl core::fmt::Display for TableFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} rules do not fit in {} buckets of {} slots",
            self.rules, self.buckets, BUCKET_SLOTS
        )
    }
}

/// Buckets for `rules` rules at [`TARGET_LOAD`].
pub fn buckets_for(rules: usize) -> u32 {
    let slots = (rules as f64 / TARGET_LOAD).ceil() as usize;
    slots.div_ceil(BUCKET_SLOTS).max(1) as u32
}

/// A rule table in user-space memory, ready to be written to a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTable {
    /// The buckets, in map order.
    pub buckets: Vec<Bucket>,
    /// Rules placed.
    pub rules: usize,
}

const MAX_KICKS: usize = 2_000;

impl RuleTable {
    /// Places `rules` (key, value pairs with distinct keys) in `buckets`
    /// buckets. Keys that share a tag are merged, as the kernel could not
    /// tell them apart.
    pub fn build(rules: &[(u64, RuleValue)], buckets: u32) -> Result<Self, TableFull> {
        let full = TableFull { rules: rules.len(), buckets };
        let mut table = std::vec![[0u64; BUCKET_SLOTS]; buckets as usize];
        // Full keys beside the slots: evicting a slot needs its other bucket,
        // which the 48-bit tag alone cannot give.
        let mut keys = std::vec![[0u64; BUCKET_SLOTS]; buckets as usize];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut placed = 0;

        for &(key, value) in rules {
            if buckets == 0 {
                return Err(full);
            }
            let (first, second) = bucket_pair(key, buckets);
            // Same tag already present: merge instead of storing twice.
            if let Some((b, s)) = find(&table, first, second, key) {
                let merged = RuleValue(table[b][s] as u16).merge(value);
                table[b][s] = make_slot(key, merged);
                continue;
            }
            let (mut key, mut value) = (key, value);
            let mut bucket = first;
            let mut kicks = 0;
            loop {
                let (a, b) = bucket_pair(key, buckets);
                if let Some(s) = empty_slot(&table[a as usize]) {
                    table[a as usize][s] = make_slot(key, value);
                    keys[a as usize][s] = key;
                    break;
                }
                if let Some(s) = empty_slot(&table[b as usize]) {
                    table[b as usize][s] = make_slot(key, value);
                    keys[b as usize][s] = key;
                    break;
                }
                if kicks == MAX_KICKS {
                    return Err(full);
                }
                kicks += 1;
                // Evict a random slot of `bucket` (one of the entry's two
                // buckets) and carry the evicted entry on to its other one.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if bucket != a && bucket != b {
                    bucket = a;
                }
                let slot = (rng % BUCKET_SLOTS as u64) as usize;
                let row = bucket as usize;
                let evicted_key = keys[row][slot];
                let evicted_value = RuleValue(table[row][slot] as u16);
                table[row][slot] = make_slot(key, value);
                keys[row][slot] = key;
                key = evicted_key;
                value = evicted_value;
                let (ea, eb) = bucket_pair(key, buckets);
                bucket = if ea == bucket { eb } else { ea };
            }
            placed += 1;
        }
        Ok(Self { buckets: table, rules: placed })
    }
}

fn empty_slot(bucket: &Bucket) -> Option<usize> {
    bucket.iter().position(|&slot| slot == 0)
}

fn find(table: &[Bucket], first: u32, second: u32, key: u64) -> Option<(usize, usize)> {
    let tag = slot_tag(key);
    for b in [first as usize, second as usize] {
        if let Some(s) = table[b].iter().position(|&slot| slot != 0 && slot >> 16 == tag) {
            return Some((b, s));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::mix64;
    use crate::rules::{table_lookup, ACTION_BLOCK, ALL_GROUPS};

    fn value() -> RuleValue {
        RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS)
    }

    #[test]
    fn every_rule_is_found_at_target_load() {
        let rules: Vec<_> = (0..100_000u64).map(|i| (mix64(i), value())).collect();
        let table = RuleTable::build(&rules, buckets_for(rules.len())).unwrap();
        assert_eq!(table.rules, rules.len());
        for &(key, value) in &rules {
            assert_eq!(table_lookup(&table.buckets, key), Some(value));
        }
        let absent = (100_000..200_000u64).filter(|&i| table_lookup(&table.buckets, mix64(i)).is_some());
        assert_eq!(absent.count(), 0);
    }

    #[test]
    fn million_rules_fit_at_target_load() {
        let rules: Vec<_> = (0..1_000_000u64).map(|i| (mix64(i ^ 0x5555), value())).collect();
        let buckets = buckets_for(rules.len());
        let table = RuleTable::build(&rules, buckets).expect("1M random keys fit at 90 % load");
        assert_eq!(table.buckets.len(), buckets as usize);
        assert_eq!(table.rules, rules.len());
    }

    #[test]
    fn overfull_table_is_rejected() {
        let rules: Vec<_> = (0..100u64).map(|i| (mix64(i), value())).collect();
        assert_eq!(RuleTable::build(&rules, 10), Err(TableFull { rules: 100, buckets: 10 }));
    }

    #[test]
    fn duplicate_keys_are_merged() {
        let allow = RuleValue::new(crate::rules::ACTION_ALLOW, 0, ALL_GROUPS);
        let table = RuleTable::build(&[(7 << 20, value()), (7 << 20, allow)], 4).unwrap();
        assert_eq!(table.rules, 1);
        assert_eq!(table_lookup(&table.buckets, 7 << 20), Some(value().merge(allow)));
    }
}
