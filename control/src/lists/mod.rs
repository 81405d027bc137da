//! Block and allow lists: parsers for every supported format, and their
//! compilation into the kernel's rule table plus the rules only user space
//! can apply.
//!
//! [`load_and_compile`] reads each [`SourceSpec`] with the parser of its
//! format ([`ListFormat::Auto`] detects it from the first lines) and applies
//! its [`ListRole`]. It merges all sources into a [`Compiled`] set: the
//! kernel entries (one merged [`RuleValue`] per name key), the rules user
//! space applies, compact provenance for `explain`, and a [`SourceReport`]
//! per source. [`crate::policy::Policy`] turns a compiled
//! set into the table the kernel reads and the matcher user space runs.
//!
//! # Matching
//!
//! A rule covers either exactly its name, or its name and the subtree below
//! it, or only the names strictly below it. Hosts lines and plain domain
//! lists cover exactly the name given. `*.name` lines in wildcard lists,
//! `||name^`, dnsmasq `address=/name/` and unbound local zones cover the
//! subtree. `||*.name^`, `.name^` and RPZ `*.name` owners cover the names
//! strictly below: the kernel blocks the subtree and passes the apex to user
//! space when no other rule decides it, or RPZ's `name` + `*.name` pair
//! compiles to one subtree rule. An allow anywhere on the query name's path
//! beats a block, as the kernel's fold does.
//!
//! # Where rules live
//!
//! The kernel looks up each suffix of the query name in a hash table, so it
//! applies exact and subtree rules. Rules it cannot judge are applied by the
//! controller to the queries the kernel passes on, with the same answers:
//! regex rules and globs (the kernel passes every query it does not block),
//! `$dnstype` rules, rewrites, and `$important` rules that meet an
//! exception (their keys carry the "decide in user space" action, so the
//! kernel passes the query). Each [`SourceReport`] counts its rules in the
//! kernel table and in user space. Rules that nothing in dnsgate can honour
//! are counted as unsupported with their first examples: cosmetic rules,
//! URL rules, modifiers without DNS meaning, regexes the `regex` crate
//! cannot compile (look-around, back-references), and rules on answer
//! addresses. None of them is widened into a name rule.
//!
//! # Readings where publishers disagree
//!
//! - **`#` lines in adblock files** are comments, as AdGuard's DNS syntax
//!   defines them, unless they start with a cosmetic marker followed by a
//!   selector (`##.ad`), which is counted as an unsupported cosmetic rule.
//!   Either way nothing is blocked.
//! - **A bare name in an adblock file** (`example.org`) blocks that name
//!   only, as AdGuard's "domains-only syntax" says; browser blockers would
//!   match it as a substring of URLs, which is broader than intended.
//! - **`||name` without `^`** matches `name` at a label start followed by
//!   anything (`name.evil`, `names.example`), as AdGuard matches it; it is
//!   a regex rule in user space.
//! - **RPZ owner names** are trigger names. Relative names are taken as
//!   written; absolute names lose the `$ORIGIN` when they end in it and are
//!   otherwise taken as written. DNSBunker writes every trigger as an
//!   absolute name without an `$ORIGIN`; strict loaders (BIND, unbound)
//!   would drop those records as out of zone, which would make the list
//!   block nothing, so dnsgate takes the names as the publisher meant them.
//! - **Regex allow rules against kernel blocks.** The kernel cannot run
//!   regexes. When an allow regex matches the name of a block rule the
//!   kernel would apply, that block moves to user space, where the allow
//!   wins. Names *below* a subtree block that only the regex matches stay
//!   blocked by the kernel: a regex's matches under a subtree cannot be
//!   enumerated, and sending every subtree to user space would take all
//!   blocking out of the kernel. User space decides such names the same
//!   way, so every transport gives the same answer.
//! - **A rewrite against a block** on the same name: the rewrite wins, as
//!   AdGuard gives `$dnsrewrite` priority; an allow beats both.
//! - **`$dnstype`** is compared with the query type only, not with the
//!   types of answer records.

mod adblock;
mod compile;
mod detect;
mod dnsmasq;
mod domains;
pub mod fetch;
mod hosts;
mod load;
pub mod name;
mod pihole;
pub mod provenance;
mod regex_rule;
mod rpz;
pub mod rule;
mod unbound;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use dnsgate_common::rules::RuleValue;
use serde::{Deserialize, Serialize};

pub use self::fetch::{FetchError, Fetched, HttpFetcher, ListFetcher, NoFetcher};
pub use self::provenance::{Provenance, Record, RuleKind, SourceOrigin};
pub use self::rule::{Action, QtypeFilter, Scope};

/// Syntax of a list source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    /// Detect the format from the source's first lines.
    #[default]
    Auto,
    /// `/etc/hosts` lines: an address, then names.
    Hosts,
    /// One name a line.
    Domains,
    /// `*.name` lines (and plain names).
    Wildcard,
    /// Adblock-style rules as AdGuard Home reads them.
    Adblock,
    /// Pi-hole regex lists.
    Regex,
    /// dnsmasq `address=`, `local=`, `server=` lines.
    Dnsmasq,
    /// Response Policy Zone files.
    Rpz,
    /// unbound `local-zone:` and `local-data:` lines.
    Unbound,
}

impl ListFormat {
    /// Every format name that [`FromStr`] accepts.
    pub const NAMES: [&'static str; 9] = [
        "auto", "hosts", "domains", "wildcard", "adblock", "regex", "dnsmasq", "rpz", "unbound",
    ];

    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for ListFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ListFormat {
    type Err = ListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORMATS: [ListFormat; 9] = [
            ListFormat::Auto,
            ListFormat::Hosts,
            ListFormat::Domains,
            ListFormat::Wildcard,
            ListFormat::Adblock,
            ListFormat::Regex,
            ListFormat::Dnsmasq,
            ListFormat::Rpz,
            ListFormat::Unbound,
        ];
        FORMATS
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| ListError::UnknownFormat {
                value: text.to_owned(),
            })
    }
}

/// Role of a source: whether its rules block or allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListRole {
    /// Rules block, or rewrite where the format defines rewrites. Exceptions
    /// such as `@@` and `rpz-passthru` still allow.
    #[default]
    Block,
    /// Every rule allows the names it matches, whatever its syntax means.
    Allow,
}

/// One list to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file path, or an `http://` / `https://` URL fetched through a
    /// [`ListFetcher`].
    pub location: String,
    /// The source's syntax.
    #[serde(default)]
    pub format: ListFormat,
    /// Whether the source blocks or allows.
    #[serde(default)]
    pub role: ListRole,
}

impl SourceSpec {
    /// Creates a source at `location` with `format` and `role`.
    pub fn new(location: impl Into<String>, format: ListFormat, role: ListRole) -> Self {
        Self {
            location: location.into(),
            format,
            role,
        }
    }
}

/// Limits a compiled set must stay within before it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Maximum size of one kernel rule set, in bytes. The kernel keeps two
    /// sets (active and inactive) of this size.
    pub max_kernel_table_bytes: usize,
    /// Maximum number of rules user space applies itself (regexes, rewrites,
    /// `$dnstype` rules, rules moved there by conflicts).
    pub max_user_space_rules: usize,
}

impl Default for Budget {
    /// 32 MiB per kernel set (about 3.7 million rules at 90 % load) and
    /// 100,000 user-space rules: both sets plus the controller fit in
    /// a 256 MB router beside its other services.
    fn default() -> Self {
        Self {
            max_kernel_table_bytes: 32 << 20,
            max_user_space_rules: 100_000,
        }
    }
}

/// Examples kept per kind of problem in a [`SourceReport`].
pub const MAX_EXAMPLES: usize = 10;

/// One problem line of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineIssue {
    /// Line number, counted from 1.
    pub line: u32,
    /// The problem with the line, or the reason it cannot be honoured.
    pub reason: String,
}

/// Lines of one kind of problem: how many, and the first few.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IssueSummary {
    /// Number of lines.
    pub count: u64,
    /// The first [`MAX_EXAMPLES`] lines, in file order.
    pub examples: Vec<LineIssue>,
}

impl IssueSummary {
    fn record(&mut self, line: u32, reason: String) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(LineIssue { line, reason });
        }
    }
}

/// Result of loading one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// The source's location as configured.
    pub name: String,
    /// The source's role.
    pub role: ListRole,
    /// The format read: the configured one, or the detected one for
    /// [`ListFormat::Auto`].
    pub format: ListFormat,
    /// Lines in the source.
    pub lines: u64,
    /// Rules read (a hosts line with three names gives three), badfilter
    /// directives included.
    pub accepted: u64,
    /// Rules that repeat an earlier rule on the same name.
    pub duplicates: u64,
    /// Block rules dropped because a block on a parent name covers them.
    pub covered_by_parent: u64,
    /// Rules disabled by a `$badfilter` rule.
    pub disabled_by_badfilter: u64,
    /// Lines holding only names never filtered (`localhost`, zone SOA/NS).
    pub ignored: u64,
    /// Malformed lines.
    pub invalid: IssueSummary,
    /// Well-formed lines no part of dnsgate can honour.
    pub unsupported: IssueSummary,
    /// Rules the kernel applies.
    pub kernel_rules: u64,
    /// Rules the controller applies to queries the kernel passes on.
    pub user_space_rules: u64,
    /// Modification time of the file read, in seconds since the Unix epoch.
    pub last_update: Option<u64>,
}

/// Source and line of a user-space rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOrigin {
    /// Index of the source.
    pub source: u16,
    /// Line in the source, counted from 1.
    pub line: u32,
}

/// A name rule that user space applies, on a key whose kernel value is
/// "decide in user space".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRule {
    /// Names around the key the rule covers.
    pub scope: Scope,
    /// The rule's action.
    pub action: Action,
    /// `$important`.
    pub important: bool,
    /// Query types the rule applies to; `None`: all.
    pub qtypes: Option<QtypeFilter>,
    /// Source and line.
    pub origin: RuleOrigin,
}

/// A regex rule, matched against the whole lowercase query name.
#[derive(Debug, Clone)]
pub struct RegexRule {
    /// The compiled expression.
    pub regex: regex::Regex,
    /// The rule applies to names the expression does not match.
    pub inverted: bool,
    /// The rule's action.
    pub action: Action,
    /// `$important`.
    pub important: bool,
    /// Query types the rule applies to; `None`: all.
    pub qtypes: Option<QtypeFilter>,
    /// Source and line.
    pub origin: RuleOrigin,
}

impl RegexRule {
    /// Checks whether the rule applies to `name` (lowercase, no trailing dot).
    pub fn applies_to(&self, name: &str) -> bool {
        self.regex.is_match(name) != self.inverted
    }
}

/// Rules only user space can apply.
#[derive(Debug, Clone, Default)]
pub struct UserSpaceRules {
    /// Every rule on each key whose kernel value includes the user-space
    /// action, so user space can judge those keys completely.
    pub keyed: HashMap<u64, Vec<KeyedRule>>,
    /// Regex and glob rules, in source order.
    pub regexes: Vec<RegexRule>,
}

/// A compiled rule set.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// One merged value per key, sorted by key, for the kernel table.
    pub kernel_entries: Vec<(u64, RuleValue)>,
    /// One report per source, in the order given.
    pub reports: Vec<SourceReport>,
    /// Rules user space applies.
    pub user_space: UserSpaceRules,
    /// Source and line of every name rule.
    pub provenance: Provenance,
}

/// Error returned when a set of lists cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// A list file could not be read.
    #[error(
        "failed to read list {location:?}{}; check that it is a file that exists and is readable",
        read_from(location, path)
    )]
    Read {
        /// The source as configured.
        location: String,
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A list file with NUL bytes in its first block, which no list format
    /// has: a program, an archive or a compressed download.
    #[error(
        "list {location:?}{} is a binary file, not a list; check the location (a compressed or archived list must be unpacked first)",
        read_from(location, path)
    )]
    Binary {
        /// The source as configured.
        location: String,
        /// The file that was read.
        path: PathBuf,
    },
    /// A location whose scheme is neither a file path nor HTTP(S).
    #[error("list location {location:?} has the unsupported scheme {scheme}://; give a file path, http:// or https://")]
    UnsupportedScheme {
        /// The source as configured.
        location: String,
        /// The scheme found.
        scheme: String,
    },
    /// A list whose every rule line is invalid: an error page saved in
    /// place of the list, a binary file, or a format dnsgate does not read.
    /// Loading it would silently drop every rule it used to give.
    #[error(
        "list {location:?} has no valid rule: {invalid} invalid lines, the first at line {first_line} ({first_reason}); \
         check that it is a block list (an HTTP error page or a binary file is not), or force its format with FORMAT:PATH"
    )]
    NoValidRules {
        /// The source as configured.
        location: String,
        /// Invalid lines.
        invalid: u64,
        /// Line number of the first invalid line.
        first_line: u32,
        /// Why the first invalid line was rejected.
        first_reason: String,
    },
    /// A URL source could not be fetched and no cached copy exists.
    #[error("failed to fetch list {location:?}: {source}")]
    Fetch {
        /// The source as configured.
        location: String,
        /// The fetch error.
        #[source]
        source: FetchError,
    },
    /// A format name is not one of [`ListFormat::NAMES`].
    #[error(
        "unknown list format {value:?}; use one of: auto, hosts, domains, wildcard, adblock, regex, dnsmasq, rpz, unbound"
    )]
    UnknownFormat {
        /// The name given.
        value: String,
    },
    /// More sources than a record can index.
    #[error("{count} list sources given, at most {max} are supported; merge some lists")]
    TooManySources {
        /// Sources given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The compiled set exceeds a [`Budget`] limit; the previous set stays
    /// in force.
    #[error(
        "the compiled lists need {needed} {unit} but the budget allows {limit}; remove lists or raise [budget] {key}"
    )]
    OverBudget {
        /// Unit of the measure ("bytes of kernel table", "user-space rules").
        unit: &'static str,
        /// The `[budget]` key that sets the limit.
        key: &'static str,
        /// Amount the set needs.
        needed: usize,
        /// Amount allowed.
        limit: usize,
    },
}

/// Names the file read for a list when it is not the location itself (a
/// cached download).
fn read_from(location: &str, path: &std::path::Path) -> String {
    if std::path::Path::new(location) == path {
        String::new()
    } else {
        format!(" from {}", path.display())
    }
}

/// Detects the format of a local list file from its first lines.
pub fn detect_format(path: &std::path::Path) -> std::io::Result<ListFormat> {
    load::detect_format(path)
}

/// Loads and compiles `sources` from local files. URL sources fail with
/// [`ListError::Fetch`]; use [`load_and_compile_with`] to fetch them.
pub fn load_and_compile(sources: &[SourceSpec], budget: &Budget) -> Result<Compiled, ListError> {
    load_and_compile_with(sources, budget, &NoFetcher)
}

/// Loads and compiles `sources`, fetching URL sources through `fetcher`.
pub fn load_and_compile_with(
    sources: &[SourceSpec],
    budget: &Budget,
    fetcher: &dyn ListFetcher,
) -> Result<Compiled, ListError> {
    let raw = load::load_sources(sources, fetcher)?;
    compile::compile(raw, budget)
}

/// The names a set of name lists covers, for lists whose every entry
/// stands for a name and its subdomains (such as a list of DoH resolvers).
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    /// Normalised names: ASCII lowercase, no trailing dot.
    pub names: std::collections::HashSet<Box<str>>,
    /// One report per source, in the order given.
    pub reports: Vec<SourceReport>,
}

/// Loads the block name rules of `sources`, fetching URL sources through
/// `fetcher`, in whatever format each source is written. Allow, rewrite and
/// regex rules are left out. The scope of a rule is dropped too, because
/// the caller covers each name with its subdomains.
pub fn load_names(sources: &[SourceSpec], fetcher: &dyn ListFetcher) -> Result<NameSet, ListError> {
    let raw = load::load_sources(sources, fetcher)?;
    let names = raw
        .records
        .iter()
        .zip(raw.names.lines())
        .filter(|(record, _)| record.kind() == RuleKind::Block)
        .map(|(_, name)| Box::from(name))
        .collect();
    Ok(NameSet { names, reports: raw.reports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for name in ListFormat::NAMES {
            let format: ListFormat = name.parse().unwrap();
            assert_eq!(format.to_string(), name);
        }
        assert_eq!("HOSTS".parse::<ListFormat>().unwrap(), ListFormat::Hosts);
        assert!("csv".parse::<ListFormat>().is_err());
    }

    #[test]
    fn serde_names_are_lowercase() {
        let spec: SourceSpec =
            serde_json::from_str(r#"{"location":"a","format":"rpz","role":"allow"}"#).unwrap();
        assert_eq!(spec, SourceSpec::new("a", ListFormat::Rpz, ListRole::Allow));
        assert_eq!(
            serde_json::to_string(&ListFormat::Dnsmasq).unwrap(),
            "\"dnsmasq\""
        );
    }
}
