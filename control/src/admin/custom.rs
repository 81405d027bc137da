//! Custom rules added with `dnsgate block` and `dnsgate allow`: kept in a
//! JSON file in the state directory and compiled into the kernel's overlay
//! map, which takes single rules at once beside the compiled lists.
//!
//! A bare name (`ads.example`) means the name and every name below it,
//! and is stored as the adblock rule `||ads.example^`. Any other line is
//! read with the list parsers, its format detected as for a list file, so
//! `0.0.0.0 ads.example`, `address=/ads.example/` or `*.ads.example` work
//! too. Rules only user space could apply (regexes, `$dnstype`, rewrites)
//! are rejected, because the overlay contains name rules only.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use dnsgate_common::rules::RuleValue;
use serde::{Deserialize, Serialize};

use crate::lists::{self, Budget, ListFormat, ListRole, SourceSpec};

/// Name of the rules file in the state directory.
pub const RULES_FILE: &str = "custom-rules.json";

/// Maximum custom rules per list. The overlay map has room for 4096 keys,
/// and a hosts line can add several.
pub const MAX_RULES: usize = 1024;

/// The custom list a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleList {
    /// Names to block.
    Block,
    /// Names to allow even when a list blocks them.
    Allow,
}

impl RuleList {
    fn role(self) -> ListRole {
        match self {
            Self::Block => ListRole::Block,
            Self::Allow => ListRole::Allow,
        }
    }
}

/// Errors of custom rules.
#[derive(Debug, thiserror::Error)]
pub enum CustomRuleError {
    /// The rule is not valid in any supported list syntax.
    #[error("invalid rule {rule:?}: {reason}")]
    Invalid {
        /// The rule as given.
        rule: String,
        /// The parser's reason for rejecting it.
        reason: String,
    },
    /// The rule needs user space, which the overlay cannot express.
    #[error("rule {rule:?} needs the user-space matcher (regex, $dnstype or rewrite); put it in a list file instead")]
    NeedsUserSpace {
        /// The rule as given.
        rule: String,
    },
    /// The rule is not in the list.
    #[error("no custom {} rule {rule:?}; `dnsgate {} list` shows the rules", list_command(*list), list_command(*list))]
    NotFound {
        /// The list.
        list: RuleList,
        /// The rule as given.
        rule: String,
    },
    /// The list is full.
    #[error("the custom {list:?} list already has {MAX_RULES} rules; move some into a list file")]
    Full {
        /// The list.
        list: RuleList,
    },
    /// Reading or writing the rules file failed.
    #[error("{action} {path} failed: {source}")]
    Io {
        /// The operation that failed.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is not valid JSON.
    #[error("the custom rules file {path} is invalid: {reason}; fix or delete it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

fn list_command(list: RuleList) -> &'static str {
    match list {
        RuleList::Block => "block",
        RuleList::Allow => "allow",
    }
}

/// The custom rules, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomRules {
    /// Block rules, in stored form.
    pub block: Vec<String>,
    /// Allow rules, in stored form.
    pub allow: Vec<String>,
}

impl CustomRules {
    /// Reads the rules file in `state_dir`; a missing file means no rules.
    pub fn load(state_dir: &Path) -> Result<Self, CustomRuleError> {
        let path = state_dir.join(RULES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| CustomRuleError::Corrupt { path, reason: error.to_string() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(CustomRuleError::Io { action: "reading", path, source }),
        }
    }

    /// Writes the rules file in `state_dir` through a temporary file, so a
    /// crash never leaves half a file.
    pub fn save(&self, state_dir: &Path) -> Result<(), CustomRuleError> {
        let path = state_dir.join(RULES_FILE);
        let temporary = state_dir.join(format!("{RULES_FILE}.tmp"));
        std::fs::create_dir_all(state_dir)
            .map_err(|source| CustomRuleError::Io { action: "creating", path: state_dir.to_owned(), source })?;
        let text = serde_json::to_string_pretty(self).expect("rules always serialize");
        std::fs::write(&temporary, text)
            .map_err(|source| CustomRuleError::Io { action: "writing", path: temporary.clone(), source })?;
        std::fs::rename(&temporary, &path).map_err(|source| CustomRuleError::Io { action: "renaming", path, source })
    }

    /// Returns the rules of `list`.
    pub fn rules(&self, list: RuleList) -> &[String] {
        match list {
            RuleList::Block => &self.block,
            RuleList::Allow => &self.allow,
        }
    }

    fn rules_mut(&mut self, list: RuleList) -> &mut Vec<String> {
        match list {
            RuleList::Block => &mut self.block,
            RuleList::Allow => &mut self.allow,
        }
    }

    /// Checks `rule` and adds it to `list` in stored form, which it
    /// returns. Adding a rule that is already there changes nothing.
    pub fn add(&mut self, list: RuleList, rule: &str, scratch_dir: &Path) -> Result<String, CustomRuleError> {
        let stored = stored_form(rule);
        compile_rule(&stored, list, scratch_dir)?;
        let rules = self.rules_mut(list);
        if !rules.contains(&stored) {
            if rules.len() >= MAX_RULES {
                return Err(CustomRuleError::Full { list });
            }
            rules.push(stored.clone());
        }
        Ok(stored)
    }

    /// Removes `rule` (as given to `add`, or in stored form) from `list`.
    pub fn remove(&mut self, list: RuleList, rule: &str) -> Result<String, CustomRuleError> {
        let stored = stored_form(rule);
        let rules = self.rules_mut(list);
        let position = rules
            .iter()
            .position(|existing| *existing == stored || existing == rule.trim())
            .ok_or_else(|| CustomRuleError::NotFound { list, rule: rule.to_owned() })?;
        Ok(rules.remove(position))
    }

    /// Compiles every rule into overlay entries: one merged value per name
    /// key, as the kernel's overlay map stores them.
    pub fn overlay(&self, scratch_dir: &Path) -> Result<HashMap<u64, RuleValue>, CustomRuleError> {
        let mut overlay: HashMap<u64, RuleValue> = HashMap::new();
        for list in [RuleList::Block, RuleList::Allow] {
            for rule in self.rules(list) {
                for (key, value) in compile_rule(rule, list, scratch_dir)? {
                    overlay.entry(key).and_modify(|existing| *existing = existing.merge(value)).or_insert(value);
                }
            }
        }
        Ok(overlay)
    }

    /// Number of rules in both lists.
    pub fn len(&self) -> usize {
        self.block.len() + self.allow.len()
    }

    /// Returns whether both lists are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Returns the form a rule is stored in: a bare name becomes `||name^`,
/// anything else stays as written, without surrounding blanks.
pub fn stored_form(rule: &str) -> String {
    let rule = rule.trim();
    let bare = !rule.is_empty()
        && !rule.starts_with('*')
        && !rule.starts_with('.')
        && rule.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
        && lists::name::normalize(rule).is_ok();
    if bare {
        let name = lists::name::normalize(rule).map(|name| name.into_owned()).unwrap_or_else(|_| rule.to_owned());
        format!("||{name}^")
    } else {
        rule.to_owned()
    }
}

/// Runs one rule through the list loader, as a one-line list file in
/// `scratch_dir`, and returns its kernel entries.
fn compile_rule(rule: &str, list: RuleList, scratch_dir: &Path) -> Result<Vec<(u64, RuleValue)>, CustomRuleError> {
    let invalid = |reason: String| CustomRuleError::Invalid { rule: rule.to_owned(), reason };
    if rule.contains('\n') || rule.contains('\r') {
        return Err(invalid("a rule is a single line".into()));
    }
    std::fs::create_dir_all(scratch_dir)
        .map_err(|source| CustomRuleError::Io { action: "creating", path: scratch_dir.to_owned(), source })?;
    let path = scratch_dir.join(format!("custom-rule-{}.txt", std::process::id()));
    std::fs::write(&path, format!("{rule}\n"))
        .map_err(|source| CustomRuleError::Io { action: "writing", path: path.clone(), source })?;
    let spec = SourceSpec::new(path.to_string_lossy(), ListFormat::Auto, list.role());
    let compiled = lists::load_and_compile(&[spec], &Budget::default());
    let _ = std::fs::remove_file(&path);
    // The scratch file and the advice about list files mean nothing to
    // someone who typed one rule, so only the line's own problem is given.
    let compiled = compiled.map_err(|error| match error {
        lists::ListError::NoValidRules { first_reason, .. } => invalid(first_reason),
        other => invalid(other.to_string()),
    })?;
    let report = compiled.reports.first().ok_or_else(|| invalid("the list loader returned no report".into()))?;
    if let Some(issue) = report.invalid.examples.first().or(report.unsupported.examples.first()) {
        return Err(invalid(issue.reason.clone()));
    }
    if report.user_space_rules > 0 {
        return Err(CustomRuleError::NeedsUserSpace { rule: rule.to_owned() });
    }
    if compiled.kernel_entries.is_empty() {
        return Err(invalid(format!("no rule found in it (read as {} syntax)", report.format)));
    }
    Ok(compiled.kernel_entries)
}

#[cfg(test)]
mod tests {
    use dnsgate_common::rules::{ACTION_ALLOW, ACTION_BLOCK};

    use super::*;

    #[test]
    fn invalid_rule_error_names_only_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = CustomRules::default();
        let message = rules.add(RuleList::Block, "bad..name", dir.path()).unwrap_err().to_string();
        assert!(message.starts_with("invalid rule \"bad..name\""), "{message}");
        assert!(!message.contains("custom-rule"), "no scratch file: {message}");
        assert!(!message.contains("FORMAT:PATH"), "no list-file advice: {message}");
    }

    #[test]
    fn bare_name_covers_subtree() {
        assert_eq!(stored_form(" Ads.Example "), "||ads.example^");
        assert_eq!(stored_form("0.0.0.0 ads.example"), "0.0.0.0 ads.example");
        let dir = tempfile::tempdir().unwrap();
        let mut rules = CustomRules::default();
        rules.add(RuleList::Block, "ads.example", dir.path()).unwrap();
        let overlay = rules.overlay(dir.path()).unwrap();
        let value = overlay[&lists::name::key("ads.example")];
        assert_eq!(value.subtree(), ACTION_BLOCK);
    }

    #[test]
    fn other_syntaxes_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = CustomRules::default();
        rules.add(RuleList::Block, "0.0.0.0 exact.example", dir.path()).unwrap();
        rules.add(RuleList::Allow, "address=/good.example/", dir.path()).unwrap();
        let overlay = rules.overlay(dir.path()).unwrap();
        let exact = overlay[&lists::name::key("exact.example")];
        assert_eq!(exact.exact(), ACTION_BLOCK);
        assert_eq!(exact.subtree(), 0);
        assert_eq!(overlay[&lists::name::key("good.example")].subtree(), ACTION_ALLOW);
    }

    #[test]
    fn invalid_and_regex_rules_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = CustomRules::default();
        let error = rules.add(RuleList::Block, "/^ad[0-9]+\\./", dir.path()).unwrap_err();
        assert!(matches!(error, CustomRuleError::NeedsUserSpace { .. }), "{error}");
        let error = rules.add(RuleList::Block, "bad..name..", dir.path()).unwrap_err();
        assert!(matches!(error, CustomRuleError::Invalid { .. }), "{error}");
        assert!(rules.is_empty());
    }

    #[test]
    fn rules_persist_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = CustomRules::default();
        rules.add(RuleList::Block, "ads.example", dir.path()).unwrap();
        rules.add(RuleList::Block, "ads.example", dir.path()).unwrap();
        assert_eq!(rules.block.len(), 1, "adding twice keeps one rule");
        rules.save(dir.path()).unwrap();
        let mut loaded = CustomRules::load(dir.path()).unwrap();
        assert_eq!(loaded, rules);
        assert_eq!(loaded.remove(RuleList::Block, "ads.example").unwrap(), "||ads.example^");
        assert!(matches!(loaded.remove(RuleList::Block, "ads.example"), Err(CustomRuleError::NotFound { .. })));
    }
}
