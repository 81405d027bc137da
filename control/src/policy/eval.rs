//! The complete user-space judgement of a query the kernel passed on.

use std::net::IpAddr;

use dnsgate_common::rules::{ACTION_ALLOW, ACTION_BLOCK, RuleValue};

use super::{Decision, Policy, QueryName};
use crate::lists::Action;

/// The strongest matches seen so far, by priority class.
#[derive(Debug, Default)]
pub(super) struct Matches {
    important_allow: bool,
    important_block: bool,
    allow: bool,
    /// Label of the most specific rewrite and the addresses of all rewrites
    /// there.
    rewrite: Option<(usize, Vec<IpAddr>)>,
    /// Smallest label index of any block, important or not, as the kernel's
    /// fold reports the most specific block.
    block: Option<usize>,
}

impl Matches {
    pub(super) fn add(&mut self, label: usize, action: Action, important: bool) {
        match (action, important) {
            (Action::Allow, true) => self.important_allow = true,
            (Action::Allow, false) => self.allow = true,
            (Action::Block, important) => {
                self.important_block |= important;
                self.block = Some(self.block.map_or(label, |known| known.min(label)));
            }
            (Action::Rewrite(address), _) => match &mut self.rewrite {
                Some((at, addresses)) if *at == label => {
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
                Some((at, _)) if *at < label => {}
                _ => self.rewrite = Some((label, vec![address])),
            },
        }
    }

    /// Adds the unconditional actions of a table or overlay value found at
    /// `label`. A user-space action there has its rules in the keyed map.
    fn add_value(&mut self, label: usize, value: RuleValue, client_groups: u8) {
        if value.groups() & client_groups == 0 {
            return;
        }
        let mut actions = [value.subtree(), 0];
        if label == 0 {
            actions[1] = value.exact();
        }
        for action in actions {
            match action {
                ACTION_BLOCK => self.add(label, Action::Block, false),
                ACTION_ALLOW => self.add(label, Action::Allow, false),
                _ => {}
            }
        }
    }

    pub(super) fn decision(self) -> Decision {
        if self.important_allow {
            return Decision::Allow;
        }
        if let (true, Some(rule_label)) = (self.important_block, self.block) {
            return Decision::Block { rule_label };
        }
        if self.allow {
            return Decision::Allow;
        }
        if let Some((_, addresses)) = self.rewrite {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for address in addresses {
                match address {
                    IpAddr::V4(address) => v4.push(address),
                    IpAddr::V6(address) => v6.push(address),
                }
            }
            return Decision::Rewrite { v4, v6 };
        }
        match self.block {
            Some(rule_label) => Decision::Block { rule_label },
            None => Decision::NoMatch,
        }
    }
}

/// Collects every rule that applies to a query.
pub(super) fn judge(
    policy: &Policy,
    query: &QueryName<'_>,
    qtype: u16,
    client_groups: u8,
) -> Matches {
    let mut matches = Matches::default();
    for (label, key) in query.suffixes() {
        match policy.keyed.get(&key) {
            Some(rules) => {
                // Compiled rules apply to every policy group.
                for rule in rules {
                    let admitted = rule
                        .qtypes
                        .as_ref()
                        .is_none_or(|filter| filter.admits(qtype));
                    if rule.scope.applies_at(label) && admitted {
                        matches.add(label, rule.action, rule.important);
                    }
                }
                if let Some(&value) = policy.overlay.get(&key) {
                    matches.add_value(label, value, client_groups);
                }
            }
            None => {
                if let Some(value) = policy.lookup(key) {
                    matches.add_value(label, value, client_groups);
                }
            }
        }
    }
    if let Some(set) = &policy.regex_set {
        let hits = set.matches(&query.text);
        for (index, rule) in policy.regexes.iter().enumerate() {
            let admitted = rule
                .qtypes
                .as_ref()
                .is_none_or(|filter| filter.admits(qtype));
            if hits.matched(index) != rule.inverted && admitted {
                matches.add(0, rule.action, rule.important);
            }
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_order() {
        let mut matches = Matches::default();
        matches.add(1, Action::Block, false);
        matches.add(0, Action::Rewrite("192.0.2.1".parse().unwrap()), false);
        assert_eq!(
            matches.decision(),
            Decision::Rewrite {
                v4: vec!["192.0.2.1".parse().unwrap()],
                v6: vec![]
            }
        );

        let mut matches = Matches::default();
        matches.add(1, Action::Block, true);
        matches.add(0, Action::Allow, false);
        assert_eq!(matches.decision(), Decision::Block { rule_label: 1 });

        let mut matches = Matches::default();
        matches.add(1, Action::Block, true);
        matches.add(0, Action::Allow, true);
        assert_eq!(matches.decision(), Decision::Allow);
    }

    #[test]
    fn most_specific_rewrite_wins() {
        let mut matches = Matches::default();
        matches.add(1, Action::Rewrite("192.0.2.1".parse().unwrap()), false);
        matches.add(0, Action::Rewrite("192.0.2.2".parse().unwrap()), false);
        matches.add(0, Action::Rewrite("2001:db8::2".parse().unwrap()), false);
        assert_eq!(
            matches.decision(),
            Decision::Rewrite {
                v4: vec!["192.0.2.2".parse().unwrap()],
                v6: vec!["2001:db8::2".parse().unwrap()]
            }
        );
    }

    #[test]
    fn block_keeps_smallest_label() {
        let mut matches = Matches::default();
        matches.add(2, Action::Block, false);
        matches.add(1, Action::Block, false);
        assert_eq!(matches.decision(), Decision::Block { rule_label: 1 });
    }
}
