//! Regex rules: translation of adblock and wildcard globs into regexes,
//! the check that a regex is about names at all, and compilation.
//!
//! Expressions are compiled by the `regex` crate, whose finite automata
//! run in time linear in the name and never backtrack. Expressions it
//! cannot compile (look-around, back-references) are reported as
//! unsupported, never rewritten into something that matches more.

use regex::{Regex, RegexBuilder};

/// Upper bound on the compiled size of one expression, in bytes. Real list
/// regexes compile to a few kilobytes; the bound stops a hostile list from
/// taking the router's memory.
pub const MAX_COMPILED_SIZE: usize = 1 << 20;

/// Translates a glob in which `*` stands for any run of characters into a
/// regex between `start` and `end` (anchors or group openers). Returns
/// `None` when the glob contains a character that cannot be in a name.
pub fn glob_to_regex(glob: &str, start: &str, end: &str) -> Option<String> {
    let mut expression = String::with_capacity(start.len() + glob.len() * 2 + end.len());
    expression.push_str(start);
    for ch in glob.chars() {
        match ch {
            '*' => expression.push_str(".*"),
            '.' => expression.push_str(r"\."),
            'a'..='z' | '0'..='9' | '-' | '_' => expression.push(ch),
            'A'..='Z' => expression.push(ch.to_ascii_lowercase()),
            _ => return None,
        }
    }
    expression.push_str(end);
    Some(expression)
}

/// Says why an expression cannot be about query names, if it is not.
///
/// Two kinds of regex rule in published lists match something else:
/// expressions that need a `:` or `/` match URLs or IPv6 addresses, and
/// expressions built only from digits, dots and digit classes match IPv4
/// addresses. AdGuard applies both to the addresses in answers, which
/// dnsgate does not filter.
pub fn non_name_reason(expression: &str) -> Option<&'static str> {
    // `(?:` opens a non-capturing group and `[:space:]` names a POSIX
    // class; any other `:` is a literal.
    let literal_text = without_posix_classes(&expression.replace("(?:", "("));
    if literal_text.contains(':') || literal_text.contains('/') {
        return Some("the regex matches URLs or IPv6 addresses, not names");
    }
    let without_digit_classes = expression.replace(r"\d", "");
    let has_letters = without_digit_classes
        .bytes()
        .any(|byte| byte.is_ascii_alphabetic());
    let has_dotted_digits =
        expression.contains(r"\.") && expression.bytes().any(|byte| byte.is_ascii_digit());
    if !has_letters && has_dotted_digits {
        return Some("the regex matches IPv4 addresses in answers, not names");
    }
    None
}

/// Removes POSIX bracket-class names (`[:space:]`, `[:alnum:]`).
fn without_posix_classes(expression: &str) -> String {
    let mut text = String::with_capacity(expression.len());
    let mut rest = expression;
    while let Some(start) = rest.find("[:") {
        let after = &rest[start + 2..];
        let letters = after.bytes().take_while(u8::is_ascii_lowercase).count();
        text.push_str(&rest[..start]);
        if letters > 0 && after[letters..].starts_with(":]") {
            rest = &after[letters + 2..];
        } else {
            text.push_str("[:");
            rest = after;
        }
    }
    text.push_str(rest);
    text
}

/// Compiles an expression for matching lowercase names.
pub fn compile(expression: &str) -> Result<Regex, String> {
    RegexBuilder::new(expression)
        .case_insensitive(true)
        .size_limit(MAX_COMPILED_SIZE)
        .dfa_size_limit(MAX_COMPILED_SIZE)
        .build()
        .map_err(|error| match error {
            regex::Error::Syntax(message) => {
                let summary = message
                    .lines()
                    .rev()
                    .find(|line| line.starts_with("error:"))
                    .unwrap_or("syntax error");
                format!("the regex crate cannot compile /{expression}/: {summary}")
            }
            other => format!("the regex crate cannot compile /{expression}/: {other}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_translation() {
        assert_eq!(
            glob_to_regex("ads*.Example.com", "(?:^|\\.)", "$").unwrap(),
            r"(?:^|\.)ads.*\.example\.com$"
        );
        assert_eq!(glob_to_regex("a/b", "^", "$"), None);
    }

    #[test]
    fn address_regexes_are_recognised() {
        assert!(non_name_reason(r"^10\.(?:\d{1,3})\.(?:\d{1,3})\.(?:\d{1,3})$").is_some());
        assert!(non_name_reason(r"^103\.218\.242\.[0-9]+$").is_some());
        assert!(non_name_reason(r"^f[cd][0-9a-f]{2}:").is_some());
        assert!(non_name_reason(r"^::1$").is_some());
        assert!(non_name_reason(r"(https?:\/\/)213\.32\.115\..{100,}").is_some());
        assert!(non_name_reason(r"^a\.[0-9a-f]{56}\.com$").is_none());
        assert!(non_name_reason(r"^ad([sxv]?[0-9]*|system)[_.-]").is_none());
        assert!(non_name_reason(r"(?:^|\.)ads.*\.example\.com$").is_none());
        assert!(non_name_reason(r"^ad[_.-]([^.[:space:]]+\.){1,}").is_none());
        assert!(non_name_reason(r"^a[:]b").is_some());
    }

    #[test]
    fn look_ahead_is_rejected() {
        let error = compile(r"(^|\.)(?=[0-9a-f]*[a-f])[0-9a-f]{10,64}\.[a-z]{2,}$").unwrap_err();
        assert!(error.contains("cannot compile"), "{error}");
    }

    #[test]
    fn posix_classes_compile() {
        let regex = compile(r"^ad([sxv]?[0-9]*|system)[_.-]([^.[:space:]]+\.){1,}").unwrap();
        assert!(regex.is_match("ads.tracker.example"));
        assert!(!regex.is_match("adobe.com"));
    }
}
