//! `explain`: which rules of which sources match a name, and which of them
//! decide.

use serde::Serialize;

use dnsgate_common::rules::{ACTION_ALLOW, ACTION_BLOCK, Verdict};

use super::{Decision, Policy, QueryName};
use crate::lists::provenance::{
    FLAG_CONFLICT, FLAG_COVERED, FLAG_DETAILED, FLAG_DISABLED, FLAG_DUPLICATE,
};
use crate::lists::{Action, Record, RuleKind, Scope};

/// Source name shown for custom rules from the overlay.
pub const CUSTOM_SOURCE: &str = "custom rules";

/// Decision on a query and the rules that match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The name in the form rules match it (lowercase, no trailing dot).
    pub name: String,
    /// The query type.
    pub qtype: u16,
    /// The decision, as [`Policy::decide`] returns it.
    pub decision: Decision,
    /// The kernel's verdict: `block`, `allow`, `no_match` (both pass the
    /// query on) or `user_space`.
    pub kernel_verdict: &'static str,
    /// Every rule that matches the name, from the top-level label down,
    /// then regex rules.
    pub rules: Vec<ExplainedRule>,
}

/// Place where a rule is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RulePlace {
    /// In the kernel's compiled table.
    Kernel,
    /// In the kernel's overlay of custom rules.
    Overlay,
    /// By the controller, on queries the kernel passes on.
    UserSpace,
}

/// Whether a matching rule takes part in the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleStatus {
    /// The rule is in force.
    Active,
    /// An earlier rule on the same name says the same.
    Duplicate,
    /// A block on a parent name covers this block.
    CoveredByParent,
    /// A `$badfilter` rule disabled it.
    DisabledByBadfilter,
    /// Its `$dnstype` excludes the query type.
    OtherQueryType,
    /// Its policy groups exclude the client.
    OtherClientGroup,
}

/// One rule that matches the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedRule {
    /// The source's location, or [`CUSTOM_SOURCE`].
    pub source: String,
    /// Line in the source, counted from 1; `None` for custom rules.
    pub line: Option<u32>,
    /// The line's text as the source contains it now; `None` when it cannot be
    /// read again.
    pub text: Option<String>,
    /// The part of the query name the rule matched: a suffix for name
    /// rules, the whole name for regex rules.
    pub matched: String,
    /// Scope of a name rule; `None` for regex rules.
    pub scope: Option<Scope>,
    /// The rule's kind of action.
    pub kind: RuleKind,
    /// `$important`.
    pub important: bool,
    /// Place where the rule is applied.
    pub place: RulePlace,
    /// Whether it is in force.
    pub status: RuleStatus,
    /// Whether this rule is one of those that decide the query.
    pub decisive: bool,
    #[serde(skip)]
    label: usize,
}

fn kind_of(action: Action) -> RuleKind {
    match action {
        Action::Block => RuleKind::Block,
        Action::Allow => RuleKind::Allow,
        Action::Rewrite(_) => RuleKind::Rewrite,
    }
}

fn status_of(record: &Record) -> RuleStatus {
    if record.has(FLAG_DISABLED) {
        RuleStatus::DisabledByBadfilter
    } else if record.has(FLAG_COVERED) {
        RuleStatus::CoveredByParent
    } else if record.has(FLAG_DUPLICATE) {
        RuleStatus::Duplicate
    } else {
        RuleStatus::Active
    }
}

pub(super) fn explain(policy: &Policy, name: &str, qtype: u16, client_groups: u8) -> Explanation {
    let decision = policy.decide(name, qtype, client_groups);
    let Some(query) = QueryName::new(name) else {
        return Explanation {
            name: name.to_owned(),
            qtype,
            decision,
            kernel_verdict: "no_match",
            rules: Vec::new(),
        };
    };
    let kernel_verdict = match policy.kernel_verdict(&query, client_groups) {
        Verdict::Block { .. } => "block",
        Verdict::Allow => "allow",
        Verdict::UserSpace => "user_space",
        Verdict::NoMatch => "no_match",
    };
    let sources = policy.provenance.sources();
    let mut rules = Vec::new();

    for (label, key) in query.suffixes() {
        let matched = query.suffix(label).to_owned();
        for record in policy.provenance.records_for(key) {
            if !record.scope().applies_at(label) {
                continue;
            }
            let mut status = status_of(record);
            if status == RuleStatus::Active && record.has(FLAG_DETAILED) {
                let excluded = policy.keyed.get(&key).into_iter().flatten().any(|rule| {
                    rule.origin.source == record.source
                        && rule.origin.line == record.line
                        && rule
                            .qtypes
                            .as_ref()
                            .is_some_and(|filter| !filter.admits(qtype))
                });
                if excluded {
                    status = RuleStatus::OtherQueryType;
                }
            }
            let in_user_space =
                record.has(FLAG_DETAILED | FLAG_CONFLICT) || record.kind() == RuleKind::Rewrite;
            rules.push(ExplainedRule {
                source: sources
                    .get(record.source as usize)
                    .map_or_else(String::new, |origin| origin.location.clone()),
                line: Some(record.line),
                text: policy.provenance.line_text(record.source, record.line),
                matched: matched.clone(),
                scope: Some(record.scope()),
                kind: record.kind(),
                important: record.has(crate::lists::provenance::FLAG_IMPORTANT),
                place: if in_user_space {
                    RulePlace::UserSpace
                } else {
                    RulePlace::Kernel
                },
                status,
                decisive: false,
                label,
            });
        }
        if let Some(value) = policy.overlay.get(&key) {
            let applies = value.groups() & client_groups != 0;
            let mut actions = vec![(Scope::Subtree, value.subtree())];
            if label == 0 {
                actions.push((Scope::Exact, value.exact()));
            }
            for (scope, action) in actions {
                let kind = match action {
                    ACTION_BLOCK => RuleKind::Block,
                    ACTION_ALLOW => RuleKind::Allow,
                    _ => continue,
                };
                rules.push(ExplainedRule {
                    source: CUSTOM_SOURCE.to_owned(),
                    line: None,
                    text: None,
                    matched: matched.clone(),
                    scope: Some(scope),
                    kind,
                    important: false,
                    place: RulePlace::Overlay,
                    status: if applies {
                        RuleStatus::Active
                    } else {
                        RuleStatus::OtherClientGroup
                    },
                    decisive: false,
                    label,
                });
            }
        }
    }

    for rule in policy
        .regexes
        .iter()
        .filter(|rule| rule.applies_to(&query.text))
    {
        let admitted = rule
            .qtypes
            .as_ref()
            .is_none_or(|filter| filter.admits(qtype));
        rules.push(ExplainedRule {
            source: sources
                .get(rule.origin.source as usize)
                .map_or_else(String::new, |origin| origin.location.clone()),
            line: Some(rule.origin.line),
            text: policy
                .provenance
                .line_text(rule.origin.source, rule.origin.line),
            matched: query.text.to_string(),
            scope: None,
            kind: kind_of(rule.action),
            important: rule.important,
            place: RulePlace::UserSpace,
            status: if admitted {
                RuleStatus::Active
            } else {
                RuleStatus::OtherQueryType
            },
            decisive: false,
            label: 0,
        });
    }

    mark_decisive(&mut rules, &decision);
    Explanation {
        name: query.text.to_string(),
        qtype,
        decision,
        kernel_verdict,
        rules,
    }
}

/// Marks the active rules that produce the decision.
fn mark_decisive(rules: &mut [ExplainedRule], decision: &Decision) {
    let active = |rule: &ExplainedRule| rule.status == RuleStatus::Active;
    match decision {
        Decision::NoMatch => {}
        Decision::Allow => {
            let important = rules
                .iter()
                .any(|rule| active(rule) && rule.kind == RuleKind::Allow && rule.important);
            for rule in rules.iter_mut() {
                rule.decisive =
                    active(rule) && rule.kind == RuleKind::Allow && rule.important == important;
            }
        }
        Decision::Block { rule_label } => {
            let important = rules
                .iter()
                .any(|rule| active(rule) && rule.kind == RuleKind::Block && rule.important);
            for rule in rules.iter_mut() {
                rule.decisive = active(rule)
                    && rule.kind == RuleKind::Block
                    && rule.label == *rule_label
                    && (rule.important || !important);
            }
        }
        Decision::Rewrite { .. } => {
            let label = rules
                .iter()
                .filter(|rule| active(rule) && rule.kind == RuleKind::Rewrite)
                .map(|rule| rule.label)
                .min();
            for rule in rules.iter_mut() {
                rule.decisive =
                    active(rule) && rule.kind == RuleKind::Rewrite && Some(rule.label) == label;
            }
        }
    }
}
