//! Hosts files: `ADDRESS NAME [NAME …] [# comment]`, as `/etc/hosts`
//! (hosts(5)) and the blocklists built on it write them.
//!
//! Each name is blocked exactly, not with its subdomains. A null or loopback
//! address (`0.0.0.0`, `127.0.0.1`, `::`, `::1`) means "block"; any other
//! address is a local rewrite that becomes the A/AAAA answer for the name.
//! Names every hosts file carries for the machine itself (`localhost`,
//! `broadcasthost`, `ip6-allnodes`, …) and names written as addresses
//! (`0.0.0.0 0.0.0.0`) are ignored.

use std::net::IpAddr;

use super::name::{is_address_literal, normalize};
use super::rule::{
    Action, LineOutcome, LineParser, ParsedRule, Scope, is_sink_address, parse_host_address,
};

/// Names of the host itself that hosts files map to local addresses; they
/// are never filtered.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

/// Parser for hosts files.
#[derive(Debug, Default)]
pub struct HostsParser;

impl LineParser for HostsParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = strip_comment(line);
        let mut tokens = line.split_ascii_whitespace();
        let Some(first) = tokens.next() else {
            return LineOutcome::Skipped;
        };
        let Some(address) = parse_host_address(first) else {
            return LineOutcome::Invalid(format!("{first:?} is not an IP address"));
        };
        parse_names(address, tokens, emit)
    }
}

/// Emits a rule for each name after the address of a hosts line.
pub fn parse_names<'a>(
    address: IpAddr,
    names: impl Iterator<Item = &'a str>,
    emit: &mut dyn FnMut(ParsedRule<'a>),
) -> LineOutcome {
    let action = if is_sink_address(address) {
        Action::Block
    } else {
        Action::Rewrite(address)
    };
    let mut emitted = 0;
    let mut ignored = 0;
    let mut invalid = None;
    for raw in names {
        if LOCAL_NAMES
            .iter()
            .any(|local| local.eq_ignore_ascii_case(raw))
            || is_address_literal(raw)
        {
            ignored += 1;
            continue;
        }
        match normalize(raw) {
            Ok(name) => {
                emit(ParsedRule::name(name, Scope::Exact, action));
                emitted += 1;
            }
            Err(reason) => {
                invalid.get_or_insert(reason);
            }
        }
    }
    match invalid {
        Some(reason) => LineOutcome::Invalid(reason),
        None if emitted > 0 => LineOutcome::Rules,
        None if ignored > 0 => LineOutcome::Ignored,
        None => LineOutcome::Invalid("the line has an address but no name".to_owned()),
    }
}

/// Cuts a `#` comment off a line. hosts(5) starts a comment at any `#`.
fn strip_comment(line: &str) -> &str {
    line.split_once('#')
        .map_or(line, |(before, _comment)| before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = HostsParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    #[test]
    fn several_names_with_comment() {
        let (outcome, rules) = parse("0.0.0.0 a.example\tB.example # c.example");
        assert_eq!(outcome, LineOutcome::Rules);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1],
            ParsedRule::name("b.example".into(), Scope::Exact, Action::Block)
        );
    }

    #[test]
    fn real_address_is_rewrite() {
        let (_, rules) = parse("192.0.2.7 nas.example");
        assert_eq!(
            rules[0].action,
            Action::Rewrite("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn local_names_are_ignored() {
        assert_eq!(parse("127.0.0.1 localhost").0, LineOutcome::Ignored);
        assert_eq!(parse("fe80::1%lo0 localhost").0, LineOutcome::Ignored);
        assert_eq!(parse("0.0.0.0 0.0.0.0").0, LineOutcome::Ignored);
        assert_eq!(
            parse("255.255.255.255 broadcasthost").0,
            LineOutcome::Ignored
        );
    }

    #[test]
    fn bad_lines_are_invalid() {
        assert!(matches!(parse("example.com").0, LineOutcome::Invalid(_)));
        assert!(matches!(parse("0.0.0.0").0, LineOutcome::Invalid(_)));
        let (outcome, rules) = parse("0.0.0.0 good.example bad..example");
        assert!(matches!(outcome, LineOutcome::Invalid(_)));
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn comment_only_line_is_skipped() {
        assert_eq!(parse("   # 0.0.0.0 x.example").0, LineOutcome::Skipped);
    }
}
