//! Plain domain lists (one name a line) and wildcard lists (`*.name`).
//!
//! A plain name is blocked exactly. `*.name` covers `name` and everything
//! below it: publishers of wildcard lists ship them as the subtree edition
//! of the same list (HaGeZi's wildcard and dnsmasq editions hold the same
//! entries). Any other `*` is a glob where `*` stands for any run of
//! characters, dots included; such lines become regex rules that user space
//! applies. Both formats share this parser; `#` starts a comment.

use super::name::normalize;
use super::regex_rule::glob_to_regex;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Pattern, Scope};

/// Parser for plain domain and wildcard lists.
#[derive(Debug, Default)]
pub struct DomainsParser;

impl LineParser for DomainsParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _comment)| before);
        let mut tokens = line.split_ascii_whitespace();
        let Some(entry) = tokens.next() else {
            return LineOutcome::Skipped;
        };
        if let Some(extra) = tokens.next() {
            return LineOutcome::Invalid(format!(
                "expected one name, found {extra:?} after {entry:?}"
            ));
        }
        parse_entry(entry, emit)
    }
}

fn parse_entry<'a>(entry: &'a str, emit: &mut dyn FnMut(ParsedRule<'a>)) -> LineOutcome {
    let (raw, scope) = match entry.strip_prefix("*.") {
        Some(rest) => (rest, Scope::Subtree),
        None => (entry, Scope::Exact),
    };
    if raw.contains('*') {
        let Some(expression) = glob_to_regex(entry, "^", "$") else {
            return LineOutcome::Invalid(format!(
                "{entry:?} contains characters that cannot be in a name"
            ));
        };
        let pattern = Pattern::Regex {
            expression,
            inverted: false,
        };
        emit(ParsedRule {
            pattern,
            action: Action::Block,
            important: false,
            qtypes: None,
            badfilter: false,
        });
        return LineOutcome::Rules;
    }
    match normalize(raw) {
        Ok(name) => {
            emit(ParsedRule::name(name, scope, Action::Block));
            LineOutcome::Rules
        }
        Err(reason) => LineOutcome::Invalid(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = DomainsParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    #[test]
    fn plain_name_is_exact() {
        let (outcome, rules) = parse("Ads.Example.com  # tracker");
        assert_eq!(outcome, LineOutcome::Rules);
        assert_eq!(
            rules,
            vec![ParsedRule::name(
                "ads.example.com".into(),
                Scope::Exact,
                Action::Block
            )]
        );
    }

    #[test]
    fn star_dot_is_subtree() {
        let (_, rules) = parse("*.example.com");
        assert_eq!(
            rules,
            vec![ParsedRule::name(
                "example.com".into(),
                Scope::Subtree,
                Action::Block
            )]
        );
    }

    #[test]
    fn other_star_is_regex() {
        let (_, rules) = parse("ads*.example.com");
        assert_eq!(
            rules[0].pattern,
            Pattern::Regex {
                expression: r"^ads.*\.example\.com$".to_owned(),
                inverted: false
            }
        );
    }

    #[test]
    fn two_names_are_invalid() {
        assert!(matches!(
            parse("a.example b.example").0,
            LineOutcome::Invalid(_)
        ));
        assert!(matches!(parse("a..example").0, LineOutcome::Invalid(_)));
    }
}
