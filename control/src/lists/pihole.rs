//! Pi-hole regex lists: one extended regular expression a line, matched
//! anywhere in the lowercase query name, with Pi-hole FTL's optional
//! suffixes `;querytype=TYPE[,TYPE]` (or `;querytype=!TYPE`) and
//! `;invert`. `#` starts a comment line.
//!
//! The expressions are POSIX ERE. The `regex` crate accepts the ERE forms
//! these lists use (bracket classes such as `[[:space:]]`, intervals,
//! alternation). A rule only tests whether a name matches, so the
//! leftmost-longest rule of POSIX and the leftmost-first rule of `regex`
//! give the same result.

use super::regex_rule::glob_to_regex;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Pattern, QtypeFilter};

/// Parser for Pi-hole regex lists.
#[derive(Debug, Default)]
pub struct PiholeRegexParser;

impl LineParser for PiholeRegexParser {
    fn parse_line<'a>(
        &mut self,
        line: &'a str,
        emit: &mut dyn FnMut(ParsedRule<'a>),
    ) -> LineOutcome {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return LineOutcome::Skipped;
        }
        let mut expression = line;
        let mut qtypes = None;
        let mut inverted = false;
        // FTL options follow the expression, each introduced by `;`.
        while let Some((head, option)) = expression.rsplit_once(';') {
            if let Some(list) = option.strip_prefix("querytype=") {
                match QtypeFilter::parse(list, ',', '!') {
                    Ok(filter) => qtypes = Some(filter),
                    Err(reason) => {
                        return LineOutcome::Invalid(format!(";querytype={list}: {reason}"));
                    }
                }
            } else if option == "invert" {
                inverted = true;
            } else if option.starts_with("reply=") {
                return LineOutcome::Unsupported(format!(
                    ";{option} is not supported: dnsgate answers blocked names one way"
                ));
            } else {
                break;
            }
            expression = head;
        }
        let expression = match expression.strip_prefix('*') {
            // A leading `*` is not an ERE; some lists mean a glob by it.
            Some(_) => match glob_to_regex(expression, "", "$") {
                Some(expression) => expression,
                None => {
                    return LineOutcome::Invalid(format!("{expression:?} is not a valid regex"));
                }
            },
            None => expression.to_owned(),
        };
        emit(ParsedRule {
            pattern: Pattern::Regex {
                expression,
                inverted,
            },
            action: Action::Block,
            important: false,
            qtypes,
            badfilter: false,
        });
        LineOutcome::Rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (LineOutcome, Vec<ParsedRule<'_>>) {
        let mut rules = Vec::new();
        let outcome = PiholeRegexParser.parse_line(line, &mut |rule| rules.push(rule));
        (outcome, rules)
    }

    #[test]
    fn plain_expression() {
        let (outcome, rules) = parse("^(www[0-9]*\\.)?xn--");
        assert_eq!(outcome, LineOutcome::Rules);
        assert_eq!(
            rules[0].pattern,
            Pattern::Regex {
                expression: "^(www[0-9]*\\.)?xn--".to_owned(),
                inverted: false
            }
        );
    }

    #[test]
    fn querytype_and_invert() {
        let (_, rules) = parse("^ads\\.;querytype=AAAA,HTTPS;invert");
        assert_eq!(
            rules[0].qtypes,
            Some(QtypeFilter {
                types: vec![28, 65],
                excluded: false
            })
        );
        assert_eq!(
            rules[0].pattern,
            Pattern::Regex {
                expression: "^ads\\.".to_owned(),
                inverted: true
            }
        );
        let (_, rules) = parse("^ads\\.;querytype=!A");
        assert_eq!(
            rules[0].qtypes,
            Some(QtypeFilter {
                types: vec![1],
                excluded: true
            })
        );
    }

    #[test]
    fn reply_option_is_unsupported() {
        assert!(matches!(
            parse("^ads\\.;reply=nxdomain").0,
            LineOutcome::Unsupported(_)
        ));
    }

    #[test]
    fn comments() {
        assert_eq!(parse("# Regular Expressions:").0, LineOutcome::Skipped);
    }
}
