//! Rule values, the layout of the rule table and the decision rule that the
//! kernel and user space share.
//!
//! # Rule value
//!
//! A rule value is a `u16` stored in the low bits of a table slot:
//!
//! | bits  | field                                                    |
//! |-------|----------------------------------------------------------|
//! | 0–1   | action when the query name *is* the rule's name (exact)  |
//! | 2–3   | action when the query name is the name or lies under it  |
//! | 4–7   | reserved, zero                                           |
//! | 8–15  | policy groups the rule applies to, one bit per group     |
//!
//! Actions are ordered so that merging two rules for the same name keeps the
//! larger one: [`ACTION_USER_SPACE`] > [`ACTION_ALLOW`] > [`ACTION_BLOCK`] >
//! [`ACTION_NONE`]. The same order decides a query: an allow anywhere on the
//! name's path beats a block, and a rule that only user space can judge
//! (regex, `$dnstype`, `$important`) sends the query to user space.
//!
//! # Table
//!
//! Each rule set is an array of buckets of [`BUCKET_SLOTS`] `u64` slots.
//! A key may live in one of two buckets (two-choice cuckoo hashing), so a
//! lookup reads at most two 64-byte buckets. A slot holds a 48-bit tag of the
//! key in its upper bits and the rule value in its low 16 bits; 0 is an empty
//! slot.

use crate::name::mix64;

/// No rule of this kind.
pub const ACTION_NONE: u8 = 0;
/// Answer with the blocked response.
pub const ACTION_BLOCK: u8 = 1;
/// Let the query through to the resolver, whatever blocks it elsewhere.
pub const ACTION_ALLOW: u8 = 2;
/// A rule the kernel cannot evaluate applies: user space decides.
pub const ACTION_USER_SPACE: u8 = 3;

/// Slots per bucket: one 64-byte cache line.
pub const BUCKET_SLOTS: usize = 8;

/// Policy-group mask of a rule that applies to every client.
pub const ALL_GROUPS: u8 = 0xff;
/// Group mask of a client that has no entry in the client map.
pub const DEFAULT_CLIENT_GROUPS: u8 = 0x01;

/// A rule value, as stored in the table and the overlay map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct RuleValue(pub u16);

impl RuleValue {
    /// Builds a value from its fields.
    #[inline(always)]
    pub const fn new(exact: u8, subtree: u8, groups: u8) -> Self {
        Self((exact as u16 & 3) | ((subtree as u16 & 3) << 2) | ((groups as u16) << 8))
    }

    /// Action when the query name equals the rule's name.
    #[inline(always)]
    pub const fn exact(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Action when the query name is under the rule's name.
    #[inline(always)]
    pub const fn subtree(self) -> u8 {
        ((self.0 >> 2) & 3) as u8
    }

    /// Policy groups the rule applies to.
    #[inline(always)]
    pub const fn groups(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Merges two rules for the same name, keeping the stronger action of
    /// each kind and the union of their groups.
    #[inline(always)]
    pub const fn merge(self, other: Self) -> Self {
        let exact = max(self.exact(), other.exact());
        let subtree = max(self.subtree(), other.subtree());
        Self::new(exact, subtree, self.groups() | other.groups())
    }
}

#[inline(always)]
const fn max(a: u8, b: u8) -> u8 {
    if a > b { a } else { b }
}

/// Tag stored in a slot for `key`: its upper 48 bits, never zero.
#[inline(always)]
pub const fn slot_tag(key: u64) -> u64 {
    let tag = key >> 16;
    if tag == 0 { 1 } else { tag }
}

/// Slot contents for `key` with `value`.
#[inline(always)]
pub const fn make_slot(key: u64, value: RuleValue) -> u64 {
    (slot_tag(key) << 16) | value.0 as u64
}

/// Rule value in `slot` if the slot holds `key`.
#[inline(always)]
pub const fn slot_value(slot: u64, key: u64) -> Option<RuleValue> {
    if slot != 0 && slot >> 16 == slot_tag(key) {
        Some(RuleValue(slot as u16))
    } else {
        None
    }
}

const BUCKET_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The two candidate buckets of `key` in a table of `buckets` buckets.
///
/// Multiply-shift maps a 32-bit hash onto `0..buckets` without a division,
/// so the table size need not be a power of two.
#[inline(always)]
pub const fn bucket_pair(key: u64, buckets: u32) -> (u32, u32) {
    let h = mix64(key ^ BUCKET_SEED);
    let first = (((h & 0xffff_ffff) * buckets as u64) >> 32) as u32;
    let second = (((h >> 32) * buckets as u64) >> 32) as u32;
    (first, second)
}

/// Outcome of judging a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched: the query goes to the resolver.
    NoMatch,
    /// An allow rule matched.
    Allow,
    /// A rule only user space can evaluate matched.
    UserSpace,
    /// A block rule matched; the value is the index of the first label of
    /// the blocking rule's name (0: the query name itself).
    Block { rule_label: usize },
}

/// Folds the rules found on a name's path into a verdict.
///
/// Call [`Judge::visit`] for each suffix from the top-level label down to
/// the whole name (`label` counts down to 0), with the merged rule value
/// found for that suffix, if any.
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    /// Strongest action seen so far.
    pub action: u8,
    /// Label index of the most specific block seen so far.
    pub block_label: usize,
    /// Groups of the client that sent the query.
    pub client_groups: u8,
}

impl Judge {
    /// Starts judging a query from a client in `client_groups`.
    #[inline(always)]
    pub const fn new(client_groups: u8) -> Self {
        Self { action: ACTION_NONE, block_label: 0, client_groups }
    }

    /// Takes the rule found for the suffix starting at `label` into account.
    #[inline(always)]
    pub fn visit(&mut self, label: usize, value: RuleValue) {
        if value.groups() & self.client_groups == 0 {
            return;
        }
        let mut action = value.subtree();
        if label == 0 {
            action = max(action, value.exact());
        }
        if action == ACTION_BLOCK {
            self.block_label = label;
        }
        self.action = max(self.action, action);
    }

    /// The verdict once every suffix has been visited.
    #[inline(always)]
    pub const fn verdict(&self) -> Verdict {
        match self.action {
            ACTION_BLOCK => Verdict::Block { rule_label: self.block_label },
            ACTION_ALLOW => Verdict::Allow,
            ACTION_USER_SPACE => Verdict::UserSpace,
            _ => Verdict::NoMatch,
        }
    }
}

/// Looks `key` up in a rule table held in user-space memory, exactly as the
/// kernel does in its array map.
pub fn table_lookup(buckets: &[[u64; BUCKET_SLOTS]], key: u64) -> Option<RuleValue> {
    if buckets.is_empty() {
        return None;
    }
    let (first, second) = bucket_pair(key, buckets.len() as u32);
    for index in [first, second] {
        for &slot in &buckets[index as usize] {
            if let Some(value) = slot_value(slot, key) {
                return Some(value);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_fields_round_trip() {
        let value = RuleValue::new(ACTION_ALLOW, ACTION_BLOCK, 0x81);
        assert_eq!(value.exact(), ACTION_ALLOW);
        assert_eq!(value.subtree(), ACTION_BLOCK);
        assert_eq!(value.groups(), 0x81);
    }

    #[test]
    fn merge_keeps_stronger_action() {
        let block = RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, 1);
        let allow = RuleValue::new(ACTION_ALLOW, ACTION_NONE, 2);
        let merged = block.merge(allow);
        assert_eq!(merged.exact(), ACTION_ALLOW);
        assert_eq!(merged.subtree(), ACTION_BLOCK);
        assert_eq!(merged.groups(), 3);
    }

    #[test]
    fn judge_allow_beats_block_on_parent() {
        let mut judge = Judge::new(DEFAULT_CLIENT_GROUPS);
        judge.visit(1, RuleValue::new(ACTION_NONE, ACTION_BLOCK, ALL_GROUPS));
        judge.visit(0, RuleValue::new(ACTION_ALLOW, ACTION_NONE, ALL_GROUPS));
        assert_eq!(judge.verdict(), Verdict::Allow);
    }

    #[test]
    fn judge_exact_rule_ignores_subdomains() {
        let mut judge = Judge::new(DEFAULT_CLIENT_GROUPS);
        judge.visit(1, RuleValue::new(ACTION_BLOCK, ACTION_NONE, ALL_GROUPS));
        assert_eq!(judge.verdict(), Verdict::NoMatch);
    }

    #[test]
    fn judge_reports_most_specific_block() {
        let mut judge = Judge::new(DEFAULT_CLIENT_GROUPS);
        judge.visit(2, RuleValue::new(ACTION_NONE, ACTION_BLOCK, ALL_GROUPS));
        judge.visit(1, RuleValue::new(ACTION_NONE, ACTION_BLOCK, ALL_GROUPS));
        assert_eq!(judge.verdict(), Verdict::Block { rule_label: 1 });
    }

    #[test]
    fn judge_skips_rules_of_other_groups() {
        let mut judge = Judge::new(0x02);
        judge.visit(0, RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, 0x01));
        assert_eq!(judge.verdict(), Verdict::NoMatch);
    }

    #[test]
    fn slot_matches_only_its_key() {
        let slot = make_slot(0xdead_beef_0000_1234, RuleValue(7));
        assert_eq!(slot_value(slot, 0xdead_beef_0000_1234), Some(RuleValue(7)));
        assert_eq!(slot_value(slot, 0xdead_beef_0001_1234), None);
        assert_eq!(slot_value(0, 0), None);
    }

    proptest::proptest! {
        #[test]
        fn buckets_are_in_range(key in proptest::num::u64::ANY, buckets in 1u32..5_000_000) {
            let (a, b) = bucket_pair(key, buckets);
            proptest::prop_assert!(a < buckets && b < buckets);
        }
    }
}
