//! Format auto-detection from a sample of a source's lines.
//!
//! Each non-blank line of the sample votes for the format whose syntax it
//! shows most plainly; the format with most votes wins. Comment lines vote
//! only where the comment character belongs to one format (`!` for adblock,
//! `;` for RPZ), and those votes count for less than rule lines do. A source
//! whose sample decides nothing is read as a plain domain list.

use super::ListFormat;
use super::name::normalize;
use super::rule::parse_host_address;

/// Lines of a source the detector looks at.
pub const SAMPLE_LINES: usize = 400;

/// Guesses the format of a source from its first lines.
pub fn detect<'a>(lines: impl IntoIterator<Item = &'a str>) -> ListFormat {
    const FORMATS: [ListFormat; 8] = [
        ListFormat::Hosts,
        ListFormat::Domains,
        ListFormat::Wildcard,
        ListFormat::Adblock,
        ListFormat::Regex,
        ListFormat::Dnsmasq,
        ListFormat::Rpz,
        ListFormat::Unbound,
    ];
    let mut votes = [0u32; FORMATS.len()];
    for line in lines.into_iter().take(SAMPLE_LINES) {
        if let Some((format, weight)) = classify(line.trim()) {
            let index = FORMATS
                .iter()
                .position(|candidate| *candidate == format)
                .unwrap_or(1);
            votes[index] += weight;
        }
    }
    let mut best = (ListFormat::Domains, 0);
    for (format, count) in FORMATS.into_iter().zip(votes) {
        if count > best.1 {
            best = (format, count);
        }
    }
    best.0
}

/// Returns the format one line points to, with the weight of its vote.
fn classify(line: &str) -> Option<(ListFormat, u32)> {
    const RULE: u32 = 4;
    const HINT: u32 = 1;
    if line.is_empty() {
        return None;
    }
    if line.starts_with('!') || line.starts_with("[Adblock") {
        return Some((ListFormat::Adblock, HINT));
    }
    if line.starts_with(';') || line.starts_with("$TTL") || line.starts_with("$ORIGIN") {
        return Some((ListFormat::Rpz, HINT));
    }
    if line.starts_with('#') {
        return None;
    }
    if line.starts_with("address=/") || line.starts_with("local=/") || line.starts_with("server=/")
    {
        return Some((ListFormat::Dnsmasq, RULE));
    }
    if line.starts_with("local-zone:") || line.starts_with("local-data:") || line == "server:" {
        return Some((ListFormat::Unbound, RULE));
    }
    let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    if tokens.len() >= 2 && parse_host_address(tokens[0]).is_some() {
        return Some((ListFormat::Hosts, RULE));
    }
    if tokens.iter().any(|token| {
        ["CNAME", "SOA", "NS", "A", "AAAA"].contains(&token.to_ascii_uppercase().as_str())
    }) && tokens.len() >= 3
    {
        return Some((ListFormat::Rpz, RULE));
    }
    if line.starts_with("||")
        || line.starts_with("@@")
        || line.starts_with('|')
        || line.ends_with('^')
        || line.ends_with("^|")
    {
        return Some((ListFormat::Adblock, RULE));
    }
    if line.len() > 2 && line.starts_with('/') && line.ends_with('/') {
        return Some((ListFormat::Adblock, RULE));
    }
    if line.starts_with("*.") && !line[2..].contains('*') {
        return Some((ListFormat::Wildcard, RULE));
    }
    if tokens.len() == 1 && normalize(line).is_ok() {
        return Some((ListFormat::Domains, RULE));
    }
    if line.contains(['^', '$', '(', '[', '\\', '+', '?', '{']) {
        return Some((ListFormat::Regex, RULE));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format() {
        let cases: &[(&str, ListFormat)] = &[
            (
                "# c\n0.0.0.0 ads.example\n127.0.0.1 b.example",
                ListFormat::Hosts,
            ),
            ("# c\nads.example\nb.example", ListFormat::Domains),
            ("# c\n*.ads.example\n*.b.example", ListFormat::Wildcard),
            ("! c\n||ads.example^\n@@||b.example^", ListFormat::Adblock),
            (
                "# c\n^ad[sx]?[_.-]\n^(.+[_.-])?telemetry[_.-]",
                ListFormat::Regex,
            ),
            (
                "# c\naddress=/ads.example/#\nlocal=/b.example/",
                ListFormat::Dnsmasq,
            ),
            (
                "$TTL 300\n@ SOA a. b. 1 2 3 4 5\nads.example CNAME .",
                ListFormat::Rpz,
            ),
            (
                "server:\nlocal-zone: \"ads.example.\" always_null",
                ListFormat::Unbound,
            ),
            ("! Title\n/^ads?\\./\n/tracker/", ListFormat::Adblock),
        ];
        for (text, expected) in cases {
            assert_eq!(detect(text.lines()), *expected, "{text}");
        }
    }

    #[test]
    fn empty_source_is_domains() {
        assert_eq!(detect("# only comments\n".lines()), ListFormat::Domains);
    }
}
