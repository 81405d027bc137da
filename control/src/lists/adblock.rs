//! Adblock-style DNS rules as AdGuard Home and AdGuard DNS read them:
//! `["@@"] pattern ["$" modifiers]`, `/regex/`, hosts lines and `!`/`#`
//! comments.
//!
//! Patterns map to rules as follows, where `name` contains no `*`:
//!
//! | pattern                  | rule                                        |
//! |--------------------------|---------------------------------------------|
//! | `\|\|name^`, `\|\|name^\|` | `name` and its subtree                    |
//! | `\|\|*.name^`, `.name^`  | names strictly below `name`                 |
//! | `\|name^`, `name`        | `name` exactly                              |
//! | `/expr/`                 | regex `expr`                                |
//! | anything else with `*`, or without `^` at the end | a regex equal to the glob (`\|\|` anchors at a label start, `^` and `\|` at an end) |
//!
//! Rules that would mean something only to a browser are skipped and
//! counted: cosmetic rules (`##`, `#@#`, …), URL paths and schemes, and
//! rules with a modifier that has no DNS meaning (`$script`,
//! `$third-party`, …). AdGuard documents that a rule with an unknown
//! modifier must be ignored as a whole, which keeps a browser rule from
//! blocking a whole host. Rules on bare IP addresses (`1.2.3.4^`,
//! `||10.0.0.`) match addresses in responses, not names, and are skipped as
//! unsupported.

use super::hosts;
use super::name::normalize;
use super::regex_rule::glob_to_regex;
use super::rule::{
    Action, LineOutcome, LineParser, ParsedRule, Pattern, QtypeFilter, Scope, parse_host_address,
};

/// Parser for adblock-style lists.
#[derive(Debug, Default)]
pub struct AdblockParser;

/// Markers of cosmetic and HTML-filtering rules.
const COSMETIC_MARKERS: &[&str] = &[
    "##", "#@#", "#?#", "#@?#", "#$#", "#@$#", "#%#", "#@%#", "$$", "$@$",
];

impl LineParser for AdblockParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('!')
            || (line.starts_with('[') && line.ends_with(']'))
        {
            return LineOutcome::Skipped;
        }
        if let Some(marker) = cosmetic_marker(line) {
            return LineOutcome::Unsupported(format!(
                "cosmetic rule ({marker}) acts on page content, not on names"
            ));
        }
        if line.starts_with('#') {
            return LineOutcome::Skipped;
        }
        if let Some((first, rest)) = line.split_once(|ch: char| ch.is_ascii_whitespace())
            && let Some(address) = parse_host_address(first)
        {
            let names = rest.split_once('#').map_or(rest, |(names, _comment)| names);
            return hosts::parse_names(address, names.split_ascii_whitespace(), emit);
        }

        let (allow, body) = match line.strip_prefix("@@") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (pattern, modifiers) = match split_modifiers(body) {
            Ok(parts) => parts,
            Err(outcome) => return outcome,
        };
        let modifiers = match modifiers.map(parse_modifiers).transpose() {
            Ok(modifiers) => modifiers.unwrap_or_default(),
            Err(outcome) => return outcome,
        };
        let pattern = match pattern {
            RawPattern::Regex(expression) => Pattern::Regex {
                expression: expression.to_owned(),
                inverted: false,
            },
            RawPattern::Glob(glob) => match parse_glob(glob) {
                Ok(pattern) => pattern,
                Err(outcome) => return outcome,
            },
        };
        let action = match (allow, modifiers.rewrite) {
            (true, _) => Action::Allow,
            (false, Some(address)) => Action::Rewrite(address),
            (false, None) => Action::Block,
        };
        emit(ParsedRule {
            pattern,
            action,
            important: modifiers.important,
            qtypes: modifiers.qtypes,
            badfilter: modifiers.badfilter,
        });
        LineOutcome::Rules
    }
}

fn cosmetic_marker(line: &str) -> Option<&'static str> {
    COSMETIC_MARKERS
        .iter()
        .copied()
        .find(|marker| match line.find(marker) {
            // A line that starts with `## ` or `#@# ` is a comment in AdGuard's
            // reading, since every `#` line is one there.
            Some(0) => line[marker.len()..]
                .chars()
                .next()
                .is_some_and(|next| !next.is_whitespace()),
            Some(_) => true,
            None => false,
        })
}

enum RawPattern<'a> {
    Regex(&'a str),
    Glob(&'a str),
}

/// Splits a rule body into its pattern and the text after `$`.
fn split_modifiers(body: &str) -> Result<(RawPattern<'_>, Option<&str>), LineOutcome> {
    if let Some(rest) = body.strip_prefix('/') {
        let Some(end) = rest.rfind('/') else {
            return Err(LineOutcome::Unsupported(format!(
                "{body:?} is a URL path rule"
            )));
        };
        let (expression, tail) = (&rest[..end], &rest[end + 1..]);
        if expression.is_empty() {
            return Err(LineOutcome::Invalid("the regex is empty".to_owned()));
        }
        return match tail.strip_prefix('$') {
            Some(modifiers) => Ok((RawPattern::Regex(expression), Some(modifiers))),
            None if tail.is_empty() => Ok((RawPattern::Regex(expression), None)),
            None => Err(LineOutcome::Unsupported(format!(
                "{body:?} is a URL path rule"
            ))),
        };
    }
    Ok(match body.split_once('$') {
        Some((pattern, modifiers)) => (RawPattern::Glob(pattern), Some(modifiers)),
        None => (RawPattern::Glob(body), None),
    })
}

#[derive(Debug, Default)]
struct Modifiers {
    important: bool,
    badfilter: bool,
    qtypes: Option<QtypeFilter>,
    rewrite: Option<std::net::IpAddr>,
}

fn parse_modifiers(text: &str) -> Result<Modifiers, LineOutcome> {
    let mut modifiers = Modifiers::default();
    if text.trim().is_empty() {
        return Err(LineOutcome::Invalid(
            "the modifier list after '$' is empty".to_owned(),
        ));
    }
    for item in text.split(',') {
        let item = item.trim();
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        match name.to_ascii_lowercase().as_str() {
            "important" => modifiers.important = true,
            "badfilter" => modifiers.badfilter = true,
            "dnstype" => {
                let filter = QtypeFilter::parse(value, '|', '~').map_err(|reason| {
                    LineOutcome::Invalid(format!("$dnstype={value}: {reason}"))
                })?;
                modifiers.qtypes = Some(filter);
            }
            "dnsrewrite" => modifiers.rewrite = Some(parse_rewrite(value)?),
            "client" | "ctag" | "denyallow" | "match-case" => {
                return Err(LineOutcome::Unsupported(format!(
                    "modifier ${name} is not supported"
                )));
            }
            _ => {
                return Err(LineOutcome::Unsupported(format!(
                    "modifier ${name} has no meaning for DNS"
                )));
            }
        }
    }
    Ok(modifiers)
}

/// Reads the address forms of `$dnsrewrite` (`1.2.3.4`,
/// `NOERROR;A;1.2.3.4`, `NOERROR;AAAA;::1`).
fn parse_rewrite(value: &str) -> Result<std::net::IpAddr, LineOutcome> {
    let address = match value.split(';').collect::<Vec<_>>().as_slice() {
        [address] => *address,
        ["NOERROR", "A" | "AAAA", address] => *address,
        _ => {
            return Err(LineOutcome::Unsupported(format!(
                "$dnsrewrite={value} is not supported: only A and AAAA addresses are"
            )));
        }
    };
    address.parse().map_err(|_| {
        LineOutcome::Unsupported(format!(
            "$dnsrewrite={value} is not supported: only addresses are"
        ))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// `||`: the start of any label.
    Label,
    /// `|`: the start of the name.
    Name,
    /// No anchor: anywhere.
    Anywhere,
}

fn parse_glob(glob: &str) -> Result<Pattern<'_>, LineOutcome> {
    let (start, rest) = if let Some(rest) = glob.strip_prefix("||") {
        (Start::Label, rest)
    } else if let Some(rest) = glob.strip_prefix('|') {
        (Start::Name, rest)
    } else {
        (Start::Anywhere, glob)
    };
    let (anchored_end, core) = match rest.strip_suffix("^|").or_else(|| rest.strip_suffix('^')) {
        Some(core) => (true, core),
        None => match rest.strip_suffix('|') {
            Some(core) => (true, core),
            None => (false, rest),
        },
    };

    if core.is_empty() || core.bytes().all(|byte| byte == b'*' || byte == b'.') {
        return Err(LineOutcome::Unsupported(format!(
            "{glob:?} would match every name"
        )));
    }
    if core.contains(['^', '/', ':', '?', '=', '&', '|']) {
        return Err(LineOutcome::Unsupported(format!(
            "{glob:?} matches a URL, not a name"
        )));
    }
    let address_like = core
        .bytes()
        .all(|byte| byte.is_ascii_digit() || byte == b'.' || byte == b'*');
    if address_like && core.contains('.') && core.bytes().any(|byte| byte.is_ascii_digit()) {
        return Err(LineOutcome::Unsupported(format!(
            "{glob:?} matches IP addresses in answers, not names"
        )));
    }

    if let Some(pattern) = keyed_pattern(start, anchored_end, core)? {
        return Ok(pattern);
    }
    let start_expression = match start {
        Start::Label => r"(?:^|\.)",
        Start::Name => "^",
        Start::Anywhere => "",
    };
    let end_expression = if anchored_end { "$" } else { "" };
    match glob_to_regex(core, start_expression, end_expression) {
        Some(expression) => Ok(Pattern::Regex {
            expression,
            inverted: false,
        }),
        None => Err(LineOutcome::Invalid(format!(
            "{glob:?} contains characters that cannot be in a name"
        ))),
    }
}

/// Returns the name rule equal to a glob, when there is one.
fn keyed_pattern(
    start: Start,
    anchored_end: bool,
    core: &str,
) -> Result<Option<Pattern<'_>>, LineOutcome> {
    let (raw, scope) = if !core.contains('*') {
        match (start, anchored_end) {
            (Start::Label, true) => (core, Scope::Subtree),
            (Start::Name, true) | (Start::Anywhere, false) => (core, Scope::Exact),
            (Start::Anywhere, true) => match core.strip_prefix('.') {
                Some(parent) => (parent, Scope::StrictSubtree),
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    } else {
        // `*.name^` matches any name that ends in `.name`, whichever anchor
        // precedes the star.
        match core.strip_prefix("*.") {
            Some(parent) if anchored_end && !parent.contains('*') => (parent, Scope::StrictSubtree),
            _ => return Ok(None),
        }
    };
    match normalize(raw) {
        Ok(name) => Ok(Some(Pattern::Name { name, scope })),
        Err(reason) => Err(LineOutcome::Invalid(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = AdblockParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    fn one(line: &str) -> ParsedRule<'_> {
        let (outcome, mut rules) = parse(line);
        assert_eq!(outcome, LineOutcome::Rules, "{line}");
        assert_eq!(rules.len(), 1, "{line}");
        rules.remove(0)
    }

    fn name_of<'a>(rule: &'a ParsedRule<'_>) -> (&'a str, Scope) {
        match &rule.pattern {
            Pattern::Name { name, scope } => (name, *scope),
            other => panic!("expected a name rule, got {other:?}"),
        }
    }

    fn regex_of<'a>(rule: &'a ParsedRule<'_>) -> &'a str {
        match &rule.pattern {
            Pattern::Regex { expression, .. } => expression,
            other => panic!("expected a regex rule, got {other:?}"),
        }
    }

    #[test]
    fn anchored_forms() {
        assert_eq!(
            name_of(&one("||Example.com^")),
            ("example.com", Scope::Subtree)
        );
        assert_eq!(
            name_of(&one("||example.com^|")),
            ("example.com", Scope::Subtree)
        );
        assert_eq!(
            name_of(&one("|example.com^")),
            ("example.com", Scope::Exact)
        );
        assert_eq!(
            name_of(&one("|example.com|")),
            ("example.com", Scope::Exact)
        );
        assert_eq!(name_of(&one("example.com")), ("example.com", Scope::Exact));
        assert_eq!(
            name_of(&one("||*.example.com^")),
            ("example.com", Scope::StrictSubtree)
        );
        assert_eq!(
            name_of(&one(".example.com^")),
            ("example.com", Scope::StrictSubtree)
        );
    }

    #[test]
    fn exceptions_allow() {
        let rule = one("@@||example.com^|");
        assert_eq!(rule.action, Action::Allow);
        assert_eq!(name_of(&rule), ("example.com", Scope::Subtree));
    }

    #[test]
    fn globs_become_regexes() {
        assert_eq!(
            regex_of(&one("||ads*.example.com^")),
            r"(?:^|\.)ads.*\.example\.com$"
        );
        assert_eq!(
            regex_of(&one("||mobileanalytics.*.amazonaws.com^")),
            r"(?:^|\.)mobileanalytics\..*\.amazonaws\.com$"
        );
        assert_eq!(regex_of(&one("||example.com")), r"(?:^|\.)example\.com");
        assert_eq!(
            regex_of(&one("||adservice.google.")),
            r"(?:^|\.)adservice\.google\."
        );
        assert_eq!(regex_of(&one("example.com^")), r"example\.com$");
        assert_eq!(
            regex_of(&one("-adx-*.rayjump.com^")),
            r"-adx-.*\.rayjump\.com$"
        );
        assert_eq!(regex_of(&one("|*app1e*^")), r"^.*app1e.*$");
    }

    #[test]
    fn modifiers() {
        let rule = one("||example.com^$important");
        assert!(rule.important);
        let rule = one("||example.com^$dnstype=AAAA|HTTPS");
        assert_eq!(
            rule.qtypes,
            Some(QtypeFilter {
                types: vec![28, 65],
                excluded: false
            })
        );
        let rule = one("||example.com^$badfilter");
        assert!(rule.badfilter);
        let rule = one("||nas.example^$dnsrewrite=NOERROR;A;192.0.2.1");
        assert_eq!(rule.action, Action::Rewrite("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn regex_rules() {
        assert_eq!(
            regex_of(&one(r"/^ads?\.example\.com$/")),
            r"^ads?\.example\.com$"
        );
        let rule = one(r"@@/^good\./$important");
        assert_eq!(rule.action, Action::Allow);
        assert!(rule.important);
    }

    #[test]
    fn browser_rules_are_unsupported() {
        for line in [
            "example.com##.banner",
            "##.ad-slot",
            "example.com#@#.banner",
            "||example.com^$third-party",
            "||example.com^$script,image",
            "||host.example/log",
            "/banner.jpg",
            "://o0e.ru^",
            "188.72.219.36^",
            "||23.109.82.",
            "||35.",
            "||example.com^$client=192.0.2.1",
            "*$denyallow=com|net",
        ] {
            assert!(
                matches!(parse(line).0, LineOutcome::Unsupported(_)),
                "{line}"
            );
            assert!(parse(line).1.is_empty(), "{line}");
        }
    }

    #[test]
    fn comments_and_headers() {
        for line in [
            "! comment",
            "# comment",
            "## heading",
            "[Adblock Plus 2.0]",
            "   ",
        ] {
            assert_eq!(parse(line).0, LineOutcome::Skipped, "{line}");
        }
    }

    #[test]
    fn hosts_lines_inside_adblock() {
        let rule = one("0.0.0.0 tracker.example");
        assert_eq!(name_of(&rule), ("tracker.example", Scope::Exact));
    }

    #[test]
    fn invalid_lines() {
        assert!(matches!(
            parse("||exa mple.com^").0,
            LineOutcome::Invalid(_) | LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("||example.com^$").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(
            parse("||example.com^$dnstype=BOGUS").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(parse("||a..b^").0, LineOutcome::Invalid(_)));
    }
}
