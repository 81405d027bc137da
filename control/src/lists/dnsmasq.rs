//! dnsmasq configuration lines that block or rewrite names, as dnsmasq(8)
//! defines them. Every form covers the named domain and its subdomains:
//!
//! | line                          | rule                                   |
//! |-------------------------------|----------------------------------------|
//! | `address=/d/` (no address)    | block (dnsmasq returns NXDOMAIN)       |
//! | `address=/d/#`                | block (null addresses)                 |
//! | `address=/d/0.0.0.0`, `/::`, loopback | block                          |
//! | `address=/d/192.0.2.1`        | rewrite to that address                |
//! | `local=/d/`, `server=/d/`     | block (answered from local data only)  |
//! | `server=/d/#`                 | allow (forward to the usual upstreams) |
//! | `server=/d/192.0.2.53`        | unsupported (forwarding to a server)   |
//!
//! Several domains may share a line (`address=/a/b/#`). Lines starting
//! with `#` are comments; `#` elsewhere is a value.

use super::name::normalize;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Scope, is_sink_address};

/// Parser for dnsmasq lines.
#[derive(Debug, Default)]
pub struct DnsmasqParser;

impl LineParser for DnsmasqParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return LineOutcome::Skipped;
        }
        let Some((option, value)) = line.split_once('=') else {
            return LineOutcome::Unsupported(format!(
                "dnsmasq option {line:?} does not filter names"
            ));
        };
        let option = option.trim();
        if !matches!(option, "address" | "local" | "server") {
            return LineOutcome::Unsupported(format!(
                "dnsmasq option {option:?} does not filter names"
            ));
        }
        let Some(value) = value.trim().strip_prefix('/') else {
            return LineOutcome::Unsupported(format!(
                "{option}={value} applies to every name, not to a domain"
            ));
        };
        let Some((domains, target)) = value.rsplit_once('/') else {
            return LineOutcome::Invalid(format!(
                "{line:?} lacks the closing '/' after the domain"
            ));
        };
        let action = match action_of(option, target.trim()) {
            Ok(action) => action,
            Err(outcome) => return outcome,
        };
        let mut emitted = 0;
        for domain in domains.split('/') {
            let (raw, scope) = match domain.strip_prefix("*.") {
                Some(parent) => (parent, Scope::StrictSubtree),
                None => (domain.strip_prefix('.').unwrap_or(domain), Scope::Subtree),
            };
            if raw == "#" || raw.is_empty() {
                return LineOutcome::Unsupported(format!("{line:?} applies to every name"));
            }
            match normalize(raw) {
                Ok(name) => {
                    emit(ParsedRule::name(name, scope, action));
                    emitted += 1;
                }
                Err(reason) => return LineOutcome::Invalid(reason),
            }
        }
        if emitted == 0 {
            return LineOutcome::Invalid(format!("{line:?} names no domain"));
        }
        LineOutcome::Rules
    }
}

fn action_of(option: &str, target: &str) -> Result<Action, LineOutcome> {
    match (option, target) {
        ("address", "" | "#") | ("local" | "server", "") => Ok(Action::Block),
        ("local" | "server", "#") => Ok(Action::Allow),
        ("address", address) => match address.parse() {
            Ok(address) if is_sink_address(address) => Ok(Action::Block),
            Ok(address) => Ok(Action::Rewrite(address)),
            Err(_) => Err(LineOutcome::Invalid(format!(
                "{address:?} is not an IP address"
            ))),
        },
        (_, upstream) => Err(LineOutcome::Unsupported(format!(
            "{option}=/…/{upstream} forwards to another server, which is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = DnsmasqParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    #[test]
    fn block_forms() {
        for line in [
            "address=/example.com/",
            "address=/example.com/#",
            "address=/example.com/0.0.0.0",
            "address=/example.com/::",
            "address=/example.com/127.0.0.1",
            "local=/example.com/",
            "server=/example.com/",
        ] {
            let (outcome, rules) = parse(line);
            assert_eq!(outcome, LineOutcome::Rules, "{line}");
            assert_eq!(
                rules,
                vec![ParsedRule::name(
                    "example.com".into(),
                    Scope::Subtree,
                    Action::Block
                )],
                "{line}"
            );
        }
    }

    #[test]
    fn rewrite_and_allow() {
        let (_, rules) = parse("address=/nas.example/192.0.2.5");
        assert_eq!(
            rules[0].action,
            Action::Rewrite("192.0.2.5".parse().unwrap())
        );
        let (_, rules) = parse("server=/good.example/#");
        assert_eq!(rules[0].action, Action::Allow);
    }

    #[test]
    fn several_domains() {
        let (_, rules) = parse("address=/a.example/b.example/#");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn unsupported_and_invalid() {
        assert!(matches!(
            parse("server=/example.com/192.0.2.53").0,
            LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("address=/#/0.0.0.0").0,
            LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("cache-size=1000").0,
            LineOutcome::Unsupported(_)
        ));
        assert!(matches!(
            parse("address=/example.com").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(
            parse("address=/bad..name/#").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(
            parse("address=/example.com/not-an-ip").0,
            LineOutcome::Invalid(_)
        ));
    }
}
