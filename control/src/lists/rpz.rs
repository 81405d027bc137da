//! Response Policy Zone files (draft-vixie-dnsop-dns-rpz, zone-file syntax
//! of RFC 1035 §5.1) with QNAME triggers.
//!
//! | record                       | rule                                      |
//! |------------------------------|-------------------------------------------|
//! | `name CNAME .`               | block (RPZ: NXDOMAIN)                     |
//! | `name CNAME *.`              | block (RPZ: NODATA)                       |
//! | `name CNAME rpz-drop.`       | block                                     |
//! | `name CNAME rpz-passthru.`   | allow                                     |
//! | `name A 192.0.2.1`, `AAAA`   | rewrite to that address                   |
//! | `*.name …`                   | the same, for names strictly below `name` |
//!
//! Both NXDOMAIN and NODATA triggers block with the answer dnsgate is
//! configured to give. As in RPZ, a `*.name` owner does not cover `name`
//! itself; publishers list both, and the pair compiles to one subtree rule.
//! Owner names are the trigger names: relative names as written (relative to
//! the policy zone's apex), absolute names with the `$ORIGIN` removed when
//! they end in it, and other absolute names as written, because lists such
//! as DNSBunker's write every trigger as an absolute name without an
//! `$ORIGIN`, which strict zone loaders would drop as out of zone.
//! `$TTL`, SOA and NS records (also the multi-line SOA in parentheses) are
//! zone housekeeping and ignored; IP, NSDNAME and NSIP triggers and CNAMEs
//! to other names are reported as unsupported.

use std::borrow::Cow;

use super::name::normalize;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Scope};

/// Parser for RPZ zone files. It keeps `$ORIGIN`, the owner of the last
/// record (for records that omit it) and the open-parenthesis depth.
#[derive(Debug, Default)]
pub struct RpzParser {
    origin: Option<String>,
    last_owner: String,
    open_parentheses: usize,
}

/// Labels that mark triggers on addresses and name servers.
const NON_QNAME_TRIGGERS: &[&str] = &["rpz-ip", "rpz-nsip", "rpz-nsdname", "rpz-client-ip"];

impl LineParser for RpzParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let content = strip_comment(line);
        let was_open = self.open_parentheses > 0;
        self.track_parentheses(content);
        if was_open {
            return LineOutcome::Skipped;
        }
        let mut tokens = content
            .split_ascii_whitespace()
            .filter(|token| *token != "(" && *token != ")");
        let Some(first) = tokens.next() else {
            return LineOutcome::Skipped;
        };
        if first.starts_with('$') {
            return self.directive(first, tokens.next());
        }

        let owner_given = !line.starts_with([' ', '\t']);
        let mut record_type = if owner_given {
            tokens.next()
        } else {
            Some(first)
        };
        while record_type.is_some_and(|token| is_ttl(token) || is_class(token)) {
            record_type = tokens.next();
        }
        let Some(record_type) = record_type else {
            return LineOutcome::Invalid(format!("{content:?} has no record type"));
        };
        let owner: Cow<'a, str> = if owner_given {
            self.last_owner.clear();
            self.last_owner.push_str(first);
            Cow::Borrowed(first)
        } else if self.last_owner.is_empty() {
            return LineOutcome::Invalid("the first record has no owner name".to_owned());
        } else {
            Cow::Owned(self.last_owner.clone())
        };

        let record_type = record_type.to_ascii_uppercase();
        if matches!(record_type.as_str(), "SOA" | "NS") {
            return LineOutcome::Ignored;
        }
        let action = match record_type.as_str() {
            "CNAME" => match cname_action(tokens.next()) {
                Ok(action) => action,
                Err(outcome) => return outcome,
            },
            "A" | "AAAA" => match tokens.next().map(str::parse) {
                Some(Ok(address)) => Action::Rewrite(address),
                _ => {
                    return LineOutcome::Invalid(format!(
                        "{record_type} record without a valid address"
                    ));
                }
            },
            other => {
                return LineOutcome::Unsupported(format!(
                    "RPZ record type {other} is not supported"
                ));
            }
        };
        match self.trigger(owner) {
            Ok((name, scope)) => {
                emit(ParsedRule::name(name, scope, action));
                LineOutcome::Rules
            }
            Err(outcome) => outcome,
        }
    }
}

impl RpzParser {
    fn directive(&mut self, directive: &str, argument: Option<&str>) -> LineOutcome {
        match directive.to_ascii_uppercase().as_str() {
            "$TTL" => LineOutcome::Skipped,
            "$ORIGIN" => match argument.map(normalize) {
                Some(Ok(origin)) => {
                    self.origin = Some(origin.into_owned());
                    LineOutcome::Skipped
                }
                Some(Err(reason)) => LineOutcome::Invalid(format!("$ORIGIN {reason}")),
                None => LineOutcome::Invalid("$ORIGIN without a name".to_owned()),
            },
            "$INCLUDE" => LineOutcome::Unsupported("$INCLUDE is not supported".to_owned()),
            other => LineOutcome::Invalid(format!("unknown directive {other}")),
        }
    }

    fn track_parentheses(&mut self, content: &str) {
        for byte in content.bytes() {
            match byte {
                b'(' => self.open_parentheses += 1,
                b')' => self.open_parentheses = self.open_parentheses.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Returns the trigger name and scope of an owner name.
    fn trigger<'a>(&self, owner: Cow<'a, str>) -> Result<(Cow<'a, str>, Scope), LineOutcome> {
        if owner == "@" {
            return Err(LineOutcome::Unsupported(
                "a policy on the zone apex matches no name".to_owned(),
            ));
        }
        let absolute = owner.ends_with('.');
        let mut name = match owner {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim_end_matches('.')),
            Cow::Owned(text) => Cow::Owned(text.trim_end_matches('.').to_owned()),
        };
        if absolute
            && let Some(origin) = &self.origin
            && let Some(relative) = strip_origin(&name, origin)
        {
            name = Cow::Owned(relative.to_owned());
        }
        if name.split('.').any(|label| {
            NON_QNAME_TRIGGERS
                .iter()
                .any(|marker| label.eq_ignore_ascii_case(marker))
        }) {
            return Err(LineOutcome::Unsupported(format!(
                "{name:?} is an IP, NSIP or NSDNAME trigger, which is not supported"
            )));
        }
        let (raw, scope) = match &name {
            Cow::Borrowed(text) => match text.strip_prefix("*.") {
                Some(parent) => (Cow::Borrowed(parent), Scope::StrictSubtree),
                None => (Cow::Borrowed(*text), Scope::Exact),
            },
            Cow::Owned(text) => match text.strip_prefix("*.") {
                Some(parent) => (Cow::Owned(parent.to_owned()), Scope::StrictSubtree),
                None => (Cow::Owned(text.clone()), Scope::Exact),
            },
        };
        if raw == "*" {
            return Err(LineOutcome::Unsupported(
                "a wildcard on the zone apex matches every name".to_owned(),
            ));
        }
        let normalized = match raw {
            Cow::Borrowed(text) => normalize(text).map_err(LineOutcome::Invalid)?,
            Cow::Owned(text) => {
                Cow::Owned(normalize(&text).map_err(LineOutcome::Invalid)?.into_owned())
            }
        };
        Ok((normalized, scope))
    }
}

fn strip_origin<'n>(name: &'n str, origin: &str) -> Option<&'n str> {
    let head = name.len().checked_sub(origin.len())?;
    if !name[head..].eq_ignore_ascii_case(origin) {
        return None;
    }
    name[..head]
        .strip_suffix('.')
        .filter(|relative| !relative.is_empty())
}

fn cname_action(target: Option<&str>) -> Result<Action, LineOutcome> {
    let Some(target) = target else {
        return Err(LineOutcome::Invalid(
            "CNAME record without a target".to_owned(),
        ));
    };
    match target.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "" | "*" | "rpz-drop" => Ok(Action::Block),
        "rpz-passthru" => Ok(Action::Allow),
        "rpz-tcp-only" => Err(LineOutcome::Unsupported(
            "the rpz-tcp-only action is not supported".to_owned(),
        )),
        _ => Err(LineOutcome::Unsupported(format!(
            "CNAME {target} rewrites to another name, which is not supported"
        ))),
    }
}

fn is_ttl(token: &str) -> bool {
    let digits = token.trim_end_matches(['s', 'm', 'h', 'd', 'w', 'S', 'M', 'H', 'D', 'W']);
    !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
}

fn is_class(token: &str) -> bool {
    ["IN", "CH", "HS", "CS", "ANY"]
        .iter()
        .any(|class| class.eq_ignore_ascii_case(token))
}

/// Cuts a `;` comment off a line, leaving quoted text alone.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (index, byte) in line.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b';' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> (Vec<LineOutcome>, Vec<(String, Scope, Action)>) {
        let mut parser = RpzParser::default();
        let mut rules = Vec::new();
        let mut outcomes = Vec::new();
        for line in text.lines() {
            let outcome = parser.parse_line(line, &mut |rule| {
                if let super::super::rule::Pattern::Name { name, scope } = rule.pattern {
                    rules.push((name.into_owned(), scope, rule.action));
                }
            });
            outcomes.push(outcome);
        }
        (outcomes, rules)
    }

    #[test]
    fn hagezi_layout() {
        let (_, rules) = parse_all(
            "$TTL 3600\n@ SOA localhost. root.localhost. 1 14400 3600 86400 3600\n  NS  localhost.\n;\nads.example CNAME .\n*.ads.example CNAME .\n",
        );
        assert_eq!(
            rules,
            vec![
                ("ads.example".to_owned(), Scope::Exact, Action::Block),
                (
                    "ads.example".to_owned(),
                    Scope::StrictSubtree,
                    Action::Block
                ),
            ]
        );
    }

    #[test]
    fn dnsbunker_layout() {
        let text = "$TTL 300\n@ IN SOA localhost. admin.localhost. (\n    1787419808 ; serial\n    3600 ; refresh\n)\n    IN NS  localhost.\n\nbad.example.          CNAME  .\n*.bad.example.        CNAME  .\n";
        let (outcomes, rules) = parse_all(text);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            ("bad.example".to_owned(), Scope::Exact, Action::Block)
        );
        assert!(
            !outcomes
                .iter()
                .any(|outcome| matches!(outcome, LineOutcome::Invalid(_))),
            "{outcomes:?}"
        );
    }

    #[test]
    fn origin_is_removed_from_absolute_owners() {
        let (_, rules) = parse_all(
            "$ORIGIN rpz.local.\nads.example.rpz.local. CNAME .\nother.example CNAME .\n",
        );
        assert_eq!(rules[0].0, "ads.example");
        assert_eq!(rules[1].0, "other.example");
    }

    #[test]
    fn passthru_drop_and_addresses() {
        let (_, rules) = parse_all(
            "good.example CNAME rpz-passthru.\nbad.example CNAME rpz-drop.\nnas.example 300 IN A 192.0.2.9\nnodata.example CNAME *.\n",
        );
        assert_eq!(rules[0].2, Action::Allow);
        assert_eq!(rules[1].2, Action::Block);
        assert_eq!(rules[2].2, Action::Rewrite("192.0.2.9".parse().unwrap()));
        assert_eq!(rules[3].2, Action::Block);
    }

    #[test]
    fn unsupported_triggers() {
        let (outcomes, rules) = parse_all(
            "32.1.2.0.192.rpz-ip CNAME .\nns.example.rpz-nsdname CNAME .\nx.example CNAME other.example.\nx.example TXT \"hi\"\n",
        );
        assert!(rules.is_empty());
        assert!(
            outcomes
                .iter()
                .all(|outcome| matches!(outcome, LineOutcome::Unsupported(_))),
            "{outcomes:?}"
        );
    }
}
