//! The parsed form of one list rule, shared by every format's parser.
//!
//! A parser turns a line into zero or more [`ParsedRule`]s and a
//! [`LineOutcome`] that tells how the line counts in the source's report.
//! Parsers know nothing about keys, the kernel table or roles: the loader
//! applies the source's role and compiles the rules.

use std::borrow::Cow;
use std::net::IpAddr;

/// Extent of the names a name rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The name itself only (hosts lines, plain domain lists, `|name^`).
    Exact,
    /// The name and every name below it (`||name^`, `*.name` lines,
    /// dnsmasq `address=/name/`).
    Subtree,
    /// Names strictly below the name, not the name itself (`||*.name^`,
    /// RPZ `*.name` owners, `.name^`).
    StrictSubtree,
}

impl Scope {
    /// Checks whether a rule of this scope applies to the suffix that starts
    /// at label `label` of the query name (0: the whole name).
    pub fn applies_at(self, label: usize) -> bool {
        match self {
            Scope::Exact => label == 0,
            Scope::Subtree => true,
            Scope::StrictSubtree => label > 0,
        }
    }
}

/// Action of a rule on the names it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Answer with the blocked response.
    Block,
    /// Let the query through, whatever blocks it elsewhere.
    Allow,
    /// Answer A/AAAA queries with this address (a hosts line or dnsmasq
    /// `address=` with a real address, an RPZ or unbound A/AAAA record).
    Rewrite(IpAddr),
}

/// The query types a `$dnstype` or Pi-hole `;querytype=` modifier admits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QtypeFilter {
    /// Record type numbers listed in the modifier.
    pub types: Vec<u16>,
    /// `true` when the list names the types the rule does *not* apply to
    /// (`$dnstype=~A|~AAAA`).
    pub excluded: bool,
}

impl QtypeFilter {
    /// Checks whether a query of type `qtype` is subject to the rule.
    pub fn admits(&self, qtype: u16) -> bool {
        self.types.contains(&qtype) != self.excluded
    }

    /// Parses a list of type names separated by `separator`, each optionally
    /// prefixed with `negation`. As AdGuard documents, a list that mixes
    /// positive and negated types means its positive types only.
    pub fn parse(text: &str, separator: char, negation: char) -> Result<Self, String> {
        let mut included = Vec::new();
        let mut excluded = Vec::new();
        for item in text.split(separator) {
            let item = item.trim();
            let (negated, name) = match item.strip_prefix(negation) {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let Some(qtype) = qtype_from_name(name) else {
                return Err(format!("unknown DNS record type {name:?}"));
            };
            if negated {
                excluded.push(qtype);
            } else {
                included.push(qtype);
            }
        }
        if !included.is_empty() {
            Ok(Self {
                types: included,
                excluded: false,
            })
        } else if !excluded.is_empty() {
            Ok(Self {
                types: excluded,
                excluded: true,
            })
        } else {
            Err("the record type list is empty".to_owned())
        }
    }
}

/// Record type number of a mnemonic (`AAAA`, `https`) or of the RFC 3597
/// generic form `TYPE65`.
pub fn qtype_from_name(name: &str) -> Option<u16> {
    const TYPES: &[(&str, u16)] = &[
        ("A", 1),
        ("NS", 2),
        ("CNAME", 5),
        ("SOA", 6),
        ("PTR", 12),
        ("HINFO", 13),
        ("MX", 15),
        ("TXT", 16),
        ("RP", 17),
        ("AFSDB", 18),
        ("SIG", 24),
        ("KEY", 25),
        ("AAAA", 28),
        ("LOC", 29),
        ("SRV", 33),
        ("NAPTR", 35),
        ("KX", 36),
        ("CERT", 37),
        ("DNAME", 39),
        ("OPT", 41),
        ("APL", 42),
        ("DS", 43),
        ("SSHFP", 44),
        ("IPSECKEY", 45),
        ("RRSIG", 46),
        ("NSEC", 47),
        ("DNSKEY", 48),
        ("DHCID", 49),
        ("NSEC3", 50),
        ("NSEC3PARAM", 51),
        ("TLSA", 52),
        ("SMIMEA", 53),
        ("HIP", 55),
        ("CDS", 59),
        ("CDNSKEY", 60),
        ("OPENPGPKEY", 61),
        ("CSYNC", 62),
        ("ZONEMD", 63),
        ("SVCB", 64),
        ("HTTPS", 65),
        ("SPF", 99),
        ("TKEY", 249),
        ("TSIG", 250),
        ("IXFR", 251),
        ("AXFR", 252),
        ("ANY", 255),
        ("URI", 256),
        ("CAA", 257),
    ];
    if let Some(&(_, qtype)) = TYPES
        .iter()
        .find(|(mnemonic, _)| mnemonic.eq_ignore_ascii_case(name))
    {
        return Some(qtype);
    }
    let number = name
        .get(..4)
        .filter(|prefix| prefix.eq_ignore_ascii_case("TYPE"))
        .map(|_| &name[4..])?;
    number.parse().ok()
}

/// Pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// A normalised name (lowercase, punycode, no trailing dot) and the
    /// names around it that the rule covers.
    Name { name: Cow<'a, str>, scope: Scope },
    /// A regular expression matched against the whole query name in
    /// lowercase presentation form without the trailing dot.
    Regex {
        /// Expression text in `regex` crate syntax.
        expression: String,
        /// Pi-hole `;invert`: the rule applies to names the expression does
        /// *not* match.
        inverted: bool,
    },
}

/// One rule as a parser read it, before the source's role is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRule<'a> {
    /// Names the rule matches.
    pub pattern: Pattern<'a>,
    /// The rule's action.
    pub action: Action,
    /// Adblock `$important`: beats exceptions that are not important.
    pub important: bool,
    /// Adblock `$dnstype`, Pi-hole `;querytype=`.
    pub qtypes: Option<QtypeFilter>,
    /// Adblock `$badfilter`: this rule disables the rule it names instead of
    /// matching anything.
    pub badfilter: bool,
}

impl<'a> ParsedRule<'a> {
    /// Creates a rule without modifiers on a name.
    pub fn name(name: Cow<'a, str>, scope: Scope, action: Action) -> Self {
        Self {
            pattern: Pattern::Name { name, scope },
            action,
            important: false,
            qtypes: None,
            badfilter: false,
        }
    }
}

/// Outcome of parsing a line, as its source's report counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// A blank line, a comment, a header or a directive with no rule in it.
    Skipped,
    /// The line produced its rules.
    Rules,
    /// The line holds only names that are never filtered (`localhost`,
    /// `broadcasthost`, the zone's own SOA and NS records).
    Ignored,
    /// The line is malformed; the reason names the offending part. Rules the
    /// line produced before the problem are kept.
    Invalid(String),
    /// The line is well-formed, but no part of dnsgate can honour it
    /// (cosmetic rules, URL paths, modifiers without meaning for DNS, rules
    /// on answer addresses, regexes the `regex` crate cannot compile).
    Unsupported(String),
}

/// A parser for one list format. Parsers keep state across lines where the
/// format needs it (RPZ `$ORIGIN` and multi-line records).
pub trait LineParser {
    /// Parses one line (without its line terminator) and passes each rule
    /// it contains to `emit`.
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome;
}

/// Checks whether `address` is a sink, which is how hosts files and dnsmasq
/// write "block": the unspecified or a loopback address.
pub fn is_sink_address(address: IpAddr) -> bool {
    address.is_unspecified() || address.is_loopback()
}

/// Parses an address the way hosts files write it, with an optional IPv6
/// zone (`fe80::1%lo0`) that is dropped.
pub fn parse_host_address(text: &str) -> Option<IpAddr> {
    let text = text
        .split_once('%')
        .map_or(text, |(address, _zone)| address);
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtype_names_and_generic_form() {
        assert_eq!(qtype_from_name("AAAA"), Some(28));
        assert_eq!(qtype_from_name("https"), Some(65));
        assert_eq!(qtype_from_name("TYPE64"), Some(64));
        assert_eq!(qtype_from_name("BOGUS"), None);
        assert_eq!(qtype_from_name("TYPE"), None);
    }

    #[test]
    fn qtype_filter_mixed_list_keeps_positives() {
        let filter = QtypeFilter::parse("~A|AAAA", '|', '~').unwrap();
        assert!(filter.admits(28));
        assert!(!filter.admits(1));
        assert!(!filter.admits(16));
    }

    #[test]
    fn qtype_filter_negated_list() {
        let filter = QtypeFilter::parse("~A|~CNAME", '|', '~').unwrap();
        assert!(!filter.admits(1));
        assert!(!filter.admits(5));
        assert!(filter.admits(28));
    }

    #[test]
    fn qtype_filter_rejects_unknown_type() {
        assert!(QtypeFilter::parse("A|WAT", '|', '~').is_err());
    }

    #[test]
    fn sink_addresses() {
        for sink in ["0.0.0.0", "127.0.0.1", "127.1.2.3", "::", "::1"] {
            assert!(is_sink_address(sink.parse().unwrap()), "{sink}");
        }
        for real in ["10.0.0.1", "255.255.255.255", "fe80::1"] {
            assert!(!is_sink_address(real.parse().unwrap()), "{real}");
        }
    }

    #[test]
    fn host_address_drops_zone() {
        assert_eq!(
            parse_host_address("fe80::1%lo0"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(parse_host_address("localhost"), None);
    }
}
