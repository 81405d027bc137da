//! The rule matcher user space applies, with the same answers as the kernel.
//!
//! A [`Policy`] contains the user-space copy of the kernel's rule table, the
//! overlay of custom rules, and the rules only user space can apply.
//! [`Policy::decide`] first folds the table and overlay values of every
//! suffix of the query name exactly as the XDP program does
//! ([`dnsgate_common::rules::Judge`]). A block there is final, because the
//! kernel answers such queries before user space sees them. Otherwise the
//! kernel has passed the query on, and user space judges it completely:
//! every keyed rule on the name's path, with its `$important`, `$dnstype`
//! and rewrite details, plus the regex rules. Priority there, highest
//! first: important allow, important block, allow, rewrite, block.
//!
//! The overlay is looked up beside the table for each suffix and its value
//! merged with the table's ([`RuleValue::merge`]), as the XDP program does.
//! Compiled rules apply to every policy group, so the merged group mask is
//! that of the compiled rule whenever both exist.

mod eval;
mod explain;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use dnsgate_common::rules::{Judge, RuleValue, Verdict, table_lookup};
use dnsgate_common::table::{RuleTable, TableFull, buckets_for};
use regex::{RegexSet, RegexSetBuilder};

use crate::lists::{Compiled, KeyedRule, Provenance, RegexRule, SourceReport};

pub use self::explain::{ExplainedRule, Explanation, RulePlace, RuleStatus};

/// Times [`Policy::new`] grows the table when placement fails.
const MAX_TABLE_GROWTH: u32 = 4;

/// Upper bound on the compiled size of the combined regex set, in bytes.
const MAX_REGEX_SET_SIZE: usize = 64 << 20;

/// Decision on a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// No rule matched: resolve the query.
    NoMatch,
    /// An allow rule matched: resolve the query.
    Allow,
    /// Answer with the blocked response. `rule_label` is the index of the
    /// first label of the blocking rule's name (0: the query name itself),
    /// as in [`Verdict::Block`].
    Block {
        /// Label where the blocking rule's name starts.
        rule_label: usize,
    },
    /// Answer A and AAAA queries with these addresses; an empty list for the
    /// query's type means an empty NOERROR answer. How other types are
    /// answered is the resolver's choice.
    Rewrite {
        /// IPv4 addresses for A queries.
        v4: Vec<Ipv4Addr>,
        /// IPv6 addresses for AAAA queries.
        v6: Vec<Ipv6Addr>,
    },
}

/// Error returned when a policy cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The kernel entries did not fit the table; this happens only when
    /// too many keys share a bucket pair, and a larger table fixes it.
    #[error("failed to build the rule table: {0}")]
    TableFull(TableFull),
    /// The regex rules together exceed the compiled-size limit.
    #[error(
        "the {count} regex rules together compile to more than {limit} bytes; remove regex lists"
    )]
    RegexSetTooLarge {
        /// Regex rules in the set.
        count: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// A compiled rule set ready to judge queries.
#[derive(Debug)]
pub struct Policy {
    table: RuleTable,
    overlay: HashMap<u64, RuleValue>,
    keyed: HashMap<u64, Vec<KeyedRule>>,
    regexes: Vec<RegexRule>,
    regex_set: Option<RegexSet>,
    provenance: Provenance,
    reports: Vec<SourceReport>,
}

impl Policy {
    /// Builds the table for a compiled set, sized by [`buckets_for`] its
    /// number of entries. When the cuckoo placement fails at that size, the
    /// table grows by an eighth, up to four times.
    pub fn new(compiled: Compiled) -> Result<Self, PolicyError> {
        let mut buckets = buckets_for(compiled.kernel_entries.len());
        let mut attempt = 0;
        let table = loop {
            match RuleTable::build(&compiled.kernel_entries, buckets) {
                Ok(table) => break table,
                // NOTE: common's `RuleTable::build` fails at its own target
                // load for random keys, because its eviction walk returns to
                // the bucket it came from; growing the table works around it.
                Err(full) if attempt < MAX_TABLE_GROWTH => {
                    tracing::debug!(
                        rules = full.rules,
                        buckets,
                        "rule table placement failed; growing the table"
                    );
                    buckets += buckets.div_ceil(8);
                    attempt += 1;
                }
                Err(full) => return Err(PolicyError::TableFull(full)),
            }
        };
        Self::from_parts(compiled, table)
    }

    /// Builds the table for a compiled set with exactly `buckets` buckets
    /// (for a kernel map of fixed size).
    pub fn with_buckets(compiled: Compiled, buckets: u32) -> Result<Self, PolicyError> {
        let table =
            RuleTable::build(&compiled.kernel_entries, buckets).map_err(PolicyError::TableFull)?;
        Self::from_parts(compiled, table)
    }

    fn from_parts(compiled: Compiled, table: RuleTable) -> Result<Self, PolicyError> {
        drop(compiled.kernel_entries);
        let regexes = compiled.user_space.regexes;
        let regex_set = if regexes.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(regexes.iter().map(|rule| rule.regex.as_str()))
                .case_insensitive(true)
                .size_limit(MAX_REGEX_SET_SIZE)
                .dfa_size_limit(MAX_REGEX_SET_SIZE)
                .build()
                .map_err(|_| PolicyError::RegexSetTooLarge {
                    count: regexes.len(),
                    limit: MAX_REGEX_SET_SIZE,
                })?;
            Some(set)
        };
        tracing::info!(
            kernel_rules = table.rules,
            buckets = table.buckets.len(),
            user_space_keys = compiled.user_space.keyed.len(),
            regex_rules = regexes.len(),
            "rule set built"
        );
        Ok(Self {
            table,
            overlay: HashMap::new(),
            keyed: compiled.user_space.keyed,
            regexes,
            regex_set,
            provenance: compiled.provenance,
            reports: compiled.reports,
        })
    }

    /// The table the kernel's inactive rule set must receive, bucket for
    /// bucket.
    pub fn table(&self) -> &RuleTable {
        &self.table
    }

    /// Replaces the custom rules (the kernel's overlay map).
    pub fn set_overlay(&mut self, overlay: HashMap<u64, RuleValue>) {
        self.overlay = overlay;
    }

    /// Returns the custom rules.
    pub fn overlay(&self) -> &HashMap<u64, RuleValue> {
        &self.overlay
    }

    /// Returns the per-source reports of the compiled set.
    pub fn reports(&self) -> &[SourceReport] {
        &self.reports
    }

    /// Decides a query for `name` (presentation form, any case, trailing
    /// dot optional) of type `qtype` from a client in `client_groups`.
    pub fn decide(&self, name: &str, qtype: u16, client_groups: u8) -> Decision {
        let Some(query) = QueryName::new(name) else {
            return Decision::NoMatch;
        };
        if let Verdict::Block { rule_label } = self.kernel_verdict(&query, client_groups) {
            return Decision::Block { rule_label };
        }
        eval::judge(self, &query, qtype, client_groups).decision()
    }

    /// Computes the kernel's verdict for a name: the table and overlay values
    /// of each suffix folded from the top-level label down.
    pub fn kernel_verdict_for(&self, name: &str, client_groups: u8) -> Verdict {
        match QueryName::new(name) {
            Some(query) => self.kernel_verdict(&query, client_groups),
            None => Verdict::NoMatch,
        }
    }

    fn kernel_verdict(&self, query: &QueryName<'_>, client_groups: u8) -> Verdict {
        let mut judge = Judge::new(client_groups);
        for (label, key) in query.suffixes() {
            if let Some(value) = self.lookup(key) {
                judge.visit(label, value);
            }
        }
        judge.verdict()
    }

    /// Looks `key` up as the kernel does: the table's value merged with the
    /// overlay's, as the XDP program merges them.
    fn lookup(&self, key: u64) -> Option<RuleValue> {
        let from_table = table_lookup(&self.table.buckets, key);
        match (from_table, self.overlay.get(&key)) {
            (Some(table), Some(&overlay)) => Some(table.merge(overlay)),
            (table, overlay) => table.or(overlay.copied()),
        }
    }

    /// Says how a query would be decided and by which rules.
    pub fn explain(&self, name: &str, qtype: u16, client_groups: u8) -> Explanation {
        explain::explain(self, name, qtype, client_groups)
    }
}

/// A query name split for matching.
pub(crate) struct QueryName<'a> {
    /// Lowercase, without the trailing dot.
    text: std::borrow::Cow<'a, str>,
    /// Keys of the suffixes from the top-level label down.
    keys: Vec<u64>,
}

impl<'a> QueryName<'a> {
    fn new(name: &'a str) -> Option<Self> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() || trimmed.split('.').any(str::is_empty) {
            return None;
        }
        let text = if trimmed.bytes().any(|byte| byte.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(trimmed)
        };
        let keys = crate::lists::name::suffix_keys(&text).collect();
        Some(Self { text, keys })
    }

    /// (label index, key) of every suffix, from the top-level label (the
    /// highest index) down to the whole name (index 0), the order in which
    /// the kernel visits them.
    fn suffixes(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let count = self.keys.len();
        self.keys
            .iter()
            .enumerate()
            .map(move |(depth, &key)| (count - 1 - depth, key))
    }

    /// Returns the suffix that starts at label `label`.
    fn suffix(&self, label: usize) -> &str {
        let mut rest: &str = &self.text;
        for _ in 0..label {
            rest = rest.split_once('.').map_or("", |(_, tail)| tail);
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use dnsgate_common::rules::DEFAULT_CLIENT_GROUPS;
    use dnsgate_common::wire::{CLASS_IN, parse_query};
    use proptest::prelude::*;

    use super::*;
    use crate::lists::{Budget, ListFormat, ListRole, SourceSpec, load_and_compile};

    const LABELS: [&str; 4] = ["a", "b", "ads", "cdn"];
    const TOP_LEVEL: [&str; 2] = ["com", "net"];
    const A: u16 = 1;
    const AAAA: u16 = 28;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum RuleScope {
        Exact,
        Subtree,
        Strict,
    }

    #[derive(Debug, Clone)]
    struct TestRule {
        name: String,
        scope: RuleScope,
        allow: bool,
        important: bool,
        aaaa_only: bool,
    }

    impl TestRule {
        fn adblock_line(&self) -> String {
            let exception = if self.allow { "@@" } else { "" };
            let pattern = match self.scope {
                RuleScope::Exact => format!("|{}^", self.name),
                RuleScope::Subtree => format!("||{}^", self.name),
                RuleScope::Strict => format!("||*.{}^", self.name),
            };
            let mut modifiers = Vec::new();
            if self.important {
                modifiers.push("important");
            }
            if self.aaaa_only {
                modifiers.push("dnstype=AAAA");
            }
            if modifiers.is_empty() {
                format!("{exception}{pattern}")
            } else {
                format!("{exception}{pattern}${}", modifiers.join(","))
            }
        }

        fn applies(&self, name: &str, qtype: u16) -> bool {
            let below = name
                .strip_suffix(self.name.as_str())
                .is_some_and(|head| head.ends_with('.'));
            let matched = match self.scope {
                RuleScope::Exact => name == self.name,
                RuleScope::Subtree => name == self.name || below,
                RuleScope::Strict => below,
            };
            matched && (!self.aaaa_only || qtype == AAAA)
        }
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(proptest::sample::select(&LABELS[..]), 0..=3),
            proptest::sample::select(&TOP_LEVEL[..]),
        )
            .prop_map(|(labels, top)| {
                let mut name: Vec<&str> = labels;
                name.push(top);
                name.join(".")
            })
    }

    fn rule_strategy() -> impl Strategy<Value = TestRule> {
        let scope = prop_oneof![
            Just(RuleScope::Exact),
            Just(RuleScope::Subtree),
            Just(RuleScope::Strict)
        ];
        (name_strategy(), scope, any::<bool>(), 0u8..6, 0u8..8).prop_map(
            |(name, scope, allow, important, aaaa)| TestRule {
                name,
                scope,
                allow,
                important: important == 0,
                aaaa_only: aaaa == 0,
            },
        )
    }

    /// Evaluates the rules naively by priority: important allow, important
    /// block, allow, block.
    fn reference(rules: &[TestRule], name: &str, qtype: u16) -> &'static str {
        let applying: Vec<&TestRule> = rules
            .iter()
            .filter(|rule| rule.applies(name, qtype))
            .collect();
        let any = |allow: bool, important: bool| {
            applying
                .iter()
                .any(|rule| rule.allow == allow && (rule.important || !important))
        };
        if any(true, true) {
            "allow"
        } else if any(false, true) {
            "block"
        } else if any(true, false) {
            "allow"
        } else if any(false, false) {
            "block"
        } else {
            "no_match"
        }
    }

    fn kind(decision: &Decision) -> &'static str {
        match decision {
            Decision::NoMatch => "no_match",
            Decision::Allow => "allow",
            Decision::Block { .. } => "block",
            Decision::Rewrite { .. } => "rewrite",
        }
    }

    /// Walks the name as the kernel does: the question parsed by common's wire
    /// parser, each suffix key looked up in the table and folded by `Judge`.
    fn kernel_walk(table: &RuleTable, name: &str) -> Verdict {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(&A.to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        let query = parse_query(&message).expect("the test query parses");
        let mut judge = Judge::new(DEFAULT_CLIENT_GROUPS);
        for label in (0..query.label_count).rev() {
            if let Some(value) = table_lookup(&table.buckets, query.suffix_key(label)) {
                judge.visit(label, value);
            }
        }
        judge.verdict()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn decide_agrees_with_kernel_walk(
            rules in proptest::collection::vec(rule_strategy(), 1..40),
            queries in proptest::collection::vec(name_strategy(), 1..24),
        ) {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            for rule in &rules {
                writeln!(file, "{}", rule.adblock_line()).unwrap();
            }
            let spec = SourceSpec::new(file.path().to_str().unwrap(), ListFormat::Adblock, ListRole::Block);
            let compiled = load_and_compile(&[spec], &Budget::default()).unwrap();
            let policy = Policy::new(compiled).unwrap();

            for name in &queries {
                for qtype in [A, AAAA] {
                    let decision = policy.decide(name, qtype, DEFAULT_CLIENT_GROUPS);
                    match kernel_walk(policy.table(), name) {
                        Verdict::Block { rule_label } => prop_assert_eq!(&decision, &Decision::Block { rule_label }),
                        Verdict::Allow => prop_assert_eq!(&decision, &Decision::Allow),
                        Verdict::NoMatch => prop_assert_eq!(&decision, &Decision::NoMatch),
                        Verdict::UserSpace => {}
                    }
                    prop_assert_eq!(kind(&decision), reference(&rules, name, qtype), "{} type {}", name, qtype);
                }
            }
        }
    }
}
