//! Publishing a compiled rule table: fill the inactive set, then flip the
//! active-set word, so no query ever sees a half-written list.

use aya::maps::{Array, HashMap};
use dnsgate_common::{
    maps::{Bucket, CONFIG_HAS_OVERLAY, MAP_OVERLAY, MAP_RULES},
    rules::RuleValue,
    table::RuleTable,
};
use tracing::info;

use super::{
    DataplaneError, loader::map_error,
    Dataplane,
};

impl Dataplane {
    /// Buckets each rule set can hold.
    pub fn rule_capacity(&self) -> u32 {
        self.rule_buckets
    }

    /// The rule set queries are judged against now (0 or 1).
    pub fn active_set(&self) -> u32 {
        self.active_set
    }

    /// Writes `table` into the inactive set and makes it the active one.
    ///
    /// The inactive set is written bucket by bucket while the kernel keeps
    /// reading the active one; then its bucket count goes into the
    /// configuration, and last the active-set word flips. Buckets beyond the
    /// table's size may keep old rules: the kernel never reads past the
    /// bucket count of the set.
    pub fn publish(&mut self, table: &RuleTable) -> Result<(), DataplaneError> {
        if table.buckets.len() > self.rule_buckets as usize {
            return Err(DataplaneError::TableTooLarge { needed: table.buckets.len(), capacity: self.rule_buckets });
        }
        let next = self.active_set ^ 1;
        let base = next * self.rule_buckets;
        {
            let mut rules: Array<_, Bucket> = self.map_mut(MAP_RULES)?;
            for (index, bucket) in table.buckets.iter().enumerate() {
                rules
                    .set(base + index as u32, *bucket, 0)
                    .map_err(|source| map_error(MAP_RULES, "writing a bucket", source))?;
            }
        }
        let mut config = self.config;
        config.buckets[next as usize] = table.buckets.len() as u32;
        self.write_config(config)?;
        self.write_active_set(next)?;
        info!(set = next, rules = table.rules, buckets = table.buckets.len(), "rule set published");
        Ok(())
    }

    /// Replaces the overlay of custom rules, which the kernel merges with
    /// the active set's values.
    pub fn set_overlay(&mut self, rules: &[(u64, RuleValue)]) -> Result<(), DataplaneError> {
        {
            let mut overlay: HashMap<_, u64, u32> = self.map_mut(MAP_OVERLAY)?;
            let stale: Vec<u64> = overlay
                .keys()
                .filter_map(Result::ok)
                .filter(|key| !rules.iter().any(|(wanted, _)| wanted == key))
                .collect();
            for (key, value) in rules {
                overlay
                    .insert(key, value.0 as u32, 0)
                    .map_err(|source| map_error(MAP_OVERLAY, "adding a custom rule", source))?;
            }
            for key in stale {
                overlay.remove(&key).map_err(|source| map_error(MAP_OVERLAY, "removing a custom rule", source))?;
            }
        }
        let mut config = self.config;
        if rules.is_empty() {
            config.flags &= !CONFIG_HAS_OVERLAY;
        } else {
            config.flags |= CONFIG_HAS_OVERLAY;
        }
        self.write_config(config)
    }
}
