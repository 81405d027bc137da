//! unbound `local-zone:` and `local-data:` lines, as unbound.conf(5)
//! defines them.
//!
//! A local zone covers its name and every name below it. The zone types
//! that answer without resolving (`always_null`, `always_nxdomain`,
//! `always_nodata`, `always_refuse`, `always_deny`, `deny`, `refuse`,
//! `static`, `redirect`, `inform_deny`) block with the answer dnsgate is
//! configured to give. The types that resolve normally (`transparent`,
//! `typetransparent`, `always_transparent`, `inform`) exempt their subtree
//! from a larger blocked zone, as a more specific zone does in unbound,
//! so they are allow rules. `local-data:` A and AAAA records are rewrites
//! of exactly their owner name. `server:` and `#` comments are skipped.

use super::name::normalize;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Scope};

/// Parser for unbound configuration lines.
#[derive(Debug, Default)]
pub struct UnboundParser;

impl LineParser for UnboundParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = strip_comment(line).trim();
        if line.is_empty() || line == "server:" {
            return LineOutcome::Skipped;
        }
        let Some((option, value)) = line.split_once(':') else {
            return LineOutcome::Invalid(format!("{line:?} is not an unbound option"));
        };
        match option.trim() {
            "local-zone" => local_zone(value.trim(), emit),
            "local-data" => local_data(value.trim(), emit),
            other => {
                LineOutcome::Unsupported(format!("unbound option {other:?} does not filter names"))
            }
        }
    }
}

fn local_zone<'a>(value: &'a str, emit: &mut dyn FnMut(ParsedRule<'a>)) -> LineOutcome {
    let (zone, zone_type) = match split_quoted(value) {
        Some(parts) => parts,
        None => {
            return LineOutcome::Invalid(format!("local-zone {value:?} needs a name and a type"));
        }
    };
    let action = match zone_type.trim() {
        "always_null" | "always_nxdomain" | "always_nodata" | "always_refuse" | "always_deny"
        | "deny" | "refuse" | "static" | "redirect" | "inform_deny" => Action::Block,
        "transparent" | "typetransparent" | "always_transparent" | "inform" => Action::Allow,
        other => {
            return LineOutcome::Unsupported(format!("local-zone type {other:?} is not supported"));
        }
    };
    if zone == "." {
        return LineOutcome::Unsupported("a local zone on the root covers every name".to_owned());
    }
    match normalize(zone) {
        Ok(name) => {
            emit(ParsedRule::name(name, Scope::Subtree, action));
            LineOutcome::Rules
        }
        Err(reason) => LineOutcome::Invalid(reason),
    }
}

fn local_data<'a>(value: &'a str, emit: &mut dyn FnMut(ParsedRule<'a>)) -> LineOutcome {
    let record = value.trim().trim_matches(['"', '\'']);
    let mut tokens = record.split_ascii_whitespace();
    let Some(owner) = tokens.next() else {
        return LineOutcome::Invalid("local-data without a record".to_owned());
    };
    let mut record_type = tokens.next();
    while record_type.is_some_and(|token| {
        token.bytes().all(|byte| byte.is_ascii_digit()) || token.eq_ignore_ascii_case("IN")
    }) {
        record_type = tokens.next();
    }
    let address = match record_type.map(str::to_ascii_uppercase).as_deref() {
        Some("A" | "AAAA") => match tokens.next().map(str::parse) {
            Some(Ok(address)) => address,
            _ => {
                return LineOutcome::Invalid(format!("local-data {record:?} has no valid address"));
            }
        },
        Some(other) => {
            return LineOutcome::Unsupported(format!(
                "local-data of type {other} is not supported"
            ));
        }
        None => return LineOutcome::Invalid(format!("local-data {record:?} has no record type")),
    };
    match normalize(owner) {
        Ok(name) => {
            emit(ParsedRule::name(
                name,
                Scope::Exact,
                Action::Rewrite(address),
            ));
            LineOutcome::Rules
        }
        Err(reason) => LineOutcome::Invalid(reason),
    }
}

/// Splits `"name." type` (quotes optional) into the name and the rest.
fn split_quoted(value: &str) -> Option<(&str, &str)> {
    if let Some(rest) = value.strip_prefix('"') {
        let (name, rest) = rest.split_once('"')?;
        return Some((name, rest)).filter(|(_, rest)| !rest.trim().is_empty());
    }
    value.split_once(|ch: char| ch.is_ascii_whitespace())
}

/// Cuts a `#` comment off a line, leaving quoted text alone.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (index, byte) in line.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b'#' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = UnboundParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    #[test]
    fn blocking_zone_types() {
        for zone_type in [
            "always_null",
            "always_nxdomain",
            "static",
            "refuse",
            "always_refuse",
            "deny",
        ] {
            let line = format!("local-zone: \"ads.example.\" {zone_type}");
            let (outcome, rules) = parse(&line);
            assert_eq!(outcome, LineOutcome::Rules, "{line}");
            assert_eq!(
                rules[0],
                ParsedRule::name("ads.example".into(), Scope::Subtree, Action::Block)
            );
        }
    }

    #[test]
    fn transparent_is_allow() {
        let (_, rules) = parse("local-zone: good.example. transparent");
        assert_eq!(rules[0].action, Action::Allow);
    }

    #[test]
    fn local_data_address() {
        let (_, rules) = parse("local-data: \"nas.example. 300 IN A 192.0.2.4\"");
        assert_eq!(
            rules[0],
            ParsedRule::name(
                "nas.example".into(),
                Scope::Exact,
                Action::Rewrite("192.0.2.4".parse().unwrap())
            )
        );
    }

    #[test]
    fn other_lines() {
        assert_eq!(parse("server:").0, LineOutcome::Skipped);
        assert_eq!(parse("# Title: x").0, LineOutcome::Skipped);
        assert!(matches!(
            parse("local-zone: \"x.example.\" nodefault").0,
            LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("do-not-query-localhost: no").0,
            LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("local-zone: \"x.example.\"").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(
            parse("local-data: \"x.example. MX 10 mail.example.\"").0,
            LineOutcome::Unsupported(_)
        ));
    }
}
