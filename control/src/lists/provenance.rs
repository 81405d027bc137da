//! Compact records of every name rule: which key, which source and line,
//! what the rule does and what compilation made of it.
//!
//! A record takes 16 bytes and contains no text, so a million rules cost
//! 16 MB. `explain` finds a key's records by binary search and re-reads the
//! rule text from the source file when asked.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use super::rule::{Action, Scope};

/// One name rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Key of the rule's name.
    pub key: u64,
    /// Line of the rule in its source, counted from 1.
    pub line: u32,
    /// Index of the source in the order given to the loader.
    pub source: u16,
    /// Scope (bits 0–1), action (bits 2–3) and the `FLAG_*` bits.
    pub bits: u16,
}

const SCOPE_MASK: u16 = 0b11;
const ACTION_SHIFT: u16 = 2;
const ACTION_MASK: u16 = 0b11 << ACTION_SHIFT;

/// The rule is `$important`.
pub const FLAG_IMPORTANT: u16 = 1 << 4;
/// The rule has a `$dnstype` filter or a rewrite address, kept in the
/// user-space rules.
pub const FLAG_DETAILED: u16 = 1 << 5;
/// Compilation moved the rule to user space, because the kernel's
/// "allow beats block" would decide it wrongly (`$important` against an
/// exception, or an allow regex that matches the rule's name).
pub const FLAG_CONFLICT: u16 = 1 << 6;
/// An earlier rule on the same key has the same scope, action and flags.
pub const FLAG_DUPLICATE: u16 = 1 << 7;
/// A block rule on a parent name already blocks everything this block
/// rule covers.
pub const FLAG_COVERED: u16 = 1 << 8;
/// A `$badfilter` rule disabled this rule.
pub const FLAG_DISABLED: u16 = 1 << 9;

impl Record {
    /// Builds a record with no compilation flags.
    pub fn new(
        key: u64,
        source: u16,
        line: u32,
        scope: Scope,
        action: Action,
        important: bool,
        detailed: bool,
    ) -> Self {
        let scope_bits = match scope {
            Scope::Exact => 0,
            Scope::Subtree => 1,
            Scope::StrictSubtree => 2,
        };
        let action_bits = match action {
            Action::Block => 1,
            Action::Allow => 2,
            Action::Rewrite(_) => 3,
        } << ACTION_SHIFT;
        let mut bits = scope_bits | action_bits;
        if important {
            bits |= FLAG_IMPORTANT;
        }
        if detailed {
            bits |= FLAG_DETAILED;
        }
        Self {
            key,
            line,
            source,
            bits,
        }
    }

    /// Names the rule covers.
    pub fn scope(&self) -> Scope {
        match self.bits & SCOPE_MASK {
            0 => Scope::Exact,
            1 => Scope::Subtree,
            _ => Scope::StrictSubtree,
        }
    }

    /// Returns the rule's kind of action, without a rewrite's address.
    pub fn kind(&self) -> RuleKind {
        match (self.bits & ACTION_MASK) >> ACTION_SHIFT {
            2 => RuleKind::Allow,
            3 => RuleKind::Rewrite,
            _ => RuleKind::Block,
        }
    }

    /// Checks whether the record has `flag` set.
    pub fn has(&self, flag: u16) -> bool {
        self.bits & flag != 0
    }

    /// Checks whether the rule takes part in matching (not disabled, not
    /// covered).
    pub fn is_active(&self) -> bool {
        !self.has(FLAG_DISABLED | FLAG_COVERED)
    }

    /// Checks whether the rule is an unconditional block or allow that the
    /// kernel can apply without help.
    pub fn is_plain(&self) -> bool {
        !self.has(FLAG_DETAILED) && self.kind() != RuleKind::Rewrite
    }
}

/// Kind of action of a rule, as reports and explanations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Blocks the names it covers.
    Block,
    /// Allows the names it covers.
    Allow,
    /// Returns local addresses for the names it covers.
    Rewrite,
}

/// Location of a source and the local file its text is read from.
#[derive(Debug, Clone)]
pub struct SourceOrigin {
    /// The source as configured (path or URL).
    pub location: String,
    /// The local file that was parsed.
    pub path: PathBuf,
}

/// Every name rule of a compiled set, sorted by key.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub(crate) records: Vec<Record>,
    pub(crate) sources: Vec<SourceOrigin>,
}

impl Provenance {
    /// Returns the records of the rules on `key`.
    pub fn records_for(&self, key: u64) -> &[Record] {
        let start = self.records.partition_point(|record| record.key < key);
        let end = start + self.records[start..].partition_point(|record| record.key == key);
        &self.records[start..end]
    }

    /// Returns the sources, by index.
    pub fn sources(&self) -> &[SourceOrigin] {
        &self.sources
    }

    /// Number of name rules, including disabled, duplicate and covered ones.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Checks whether the set has no name rules.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Re-reads line `line` of source `source`; `None` when the file or the
    /// line is gone.
    pub fn line_text(&self, source: u16, line: u32) -> Option<String> {
        let origin = self.sources.get(source as usize)?;
        let file = std::fs::File::open(&origin.path).ok()?;
        let text = BufReader::new(file)
            .split(b'\n')
            .nth(line.checked_sub(1)? as usize)?
            .ok()?;
        let text = String::from_utf8_lossy(&text);
        let text = text.trim_end_matches('\r').trim_start_matches('\u{feff}');
        Some(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 16);
    }

    #[test]
    fn record_fields_round_trip() {
        let record = Record::new(42, 3, 7, Scope::StrictSubtree, Action::Allow, true, false);
        assert_eq!(record.scope(), Scope::StrictSubtree);
        assert_eq!(record.kind(), RuleKind::Allow);
        assert!(record.has(FLAG_IMPORTANT));
        assert!(!record.has(FLAG_DETAILED));
        assert!(record.is_active());
        assert!(record.is_plain());
    }
}
