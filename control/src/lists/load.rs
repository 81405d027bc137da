//! Reading sources: line splitting and decoding, format detection, the
//! per-line parse, role application and the first step of compilation
//! (keys, records, user-space details).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::adblock::AdblockParser;
use super::detect::{self, SAMPLE_LINES};
use super::dnsmasq::DnsmasqParser;
use super::domains::DomainsParser;
use super::fetch::ListFetcher;
use super::hosts::HostsParser;
use super::name;
use super::pihole::PiholeRegexParser;
use super::provenance::{Record, SourceOrigin};
use super::regex_rule::{compile, non_name_reason};
use super::rpz::RpzParser;
use super::rule::{Action, LineOutcome, LineParser, ParsedRule, Pattern, QtypeFilter, Scope};
use super::unbound::UnboundParser;
use super::{ListError, ListFormat, ListRole, RegexRule, RuleOrigin, SourceReport, SourceSpec};

/// The modifiers of a name rule that the record's bits cannot hold.
#[derive(Debug, Clone)]
pub struct Detail {
    pub key: u64,
    pub source: u16,
    pub line: u32,
    pub qtypes: Option<QtypeFilter>,
    pub rewrite: Option<IpAddr>,
}

/// Identity of the rules a `$badfilter` rule disables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadfilterTarget {
    Name {
        key: u64,
        scope: Scope,
        action: Action,
        important: bool,
        qtypes: Option<QtypeFilter>,
    },
    Regex {
        expression: String,
        inverted: bool,
        action: Action,
        important: bool,
        qtypes: Option<QtypeFilter>,
    },
}

/// Every rule of every source, before merging.
#[derive(Debug, Default)]
pub struct RawSet {
    /// Name rules in source and line order.
    pub records: Vec<Record>,
    /// The names of `records`, in the same order, each followed by `\n`.
    pub names: String,
    pub details: Vec<Detail>,
    pub regexes: Vec<(RegexRule, String)>,
    pub badfilters: Vec<BadfilterTarget>,
    pub reports: Vec<SourceReport>,
    pub sources: Vec<SourceOrigin>,
}

/// Reads and parses every source.
pub fn load_sources(specs: &[SourceSpec], fetcher: &dyn ListFetcher) -> Result<RawSet, ListError> {
    if specs.len() > u16::MAX as usize {
        return Err(ListError::TooManySources {
            count: specs.len(),
            max: u16::MAX as usize,
        });
    }
    let mut raw = RawSet::default();
    for (index, spec) in specs.iter().enumerate() {
        let (path, fetched_at) = local_path(spec, fetcher)?;
        let read_error = |source| ListError::Read { location: spec.location.clone(), path: path.clone(), source };
        if is_binary(&path).map_err(read_error)? {
            return Err(ListError::Binary { location: spec.location.clone(), path });
        }
        let report =
            load_source(index as u16, spec, &path, &mut raw).map_err(|source| ListError::Read {
                location: spec.location.clone(),
                path: path.clone(),
                source,
            })?;
        let report = SourceReport {
            last_update: fetched_at.or(report.last_update),
            ..report
        };
        if report.accepted == 0 && report.invalid.count > 0 {
            let first = report.invalid.examples.first();
            return Err(ListError::NoValidRules {
                location: spec.location.clone(),
                invalid: report.invalid.count,
                first_line: first.map_or(0, |issue| issue.line),
                first_reason: first.map_or_else(String::new, |issue| issue.reason.clone()),
            });
        }
        tracing::debug!(
            source = %spec.location,
            format = %report.format,
            accepted = report.accepted,
            invalid = report.invalid.count,
            unsupported = report.unsupported.count,
            "list source parsed"
        );
        raw.reports.push(report);
        raw.sources.push(SourceOrigin {
            location: spec.location.clone(),
            path,
        });
    }
    Ok(raw)
}

fn local_path(
    spec: &SourceSpec,
    fetcher: &dyn ListFetcher,
) -> Result<(PathBuf, Option<u64>), ListError> {
    let location = spec.location.as_str();
    if location.starts_with("http://") || location.starts_with("https://") {
        let fetched = fetcher.fetch(location).map_err(|source| ListError::Fetch {
            location: location.to_owned(),
            source,
        })?;
        return Ok((fetched.path, fetched.last_update));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if let Some((scheme, _)) = path.split_once("://")
        && !scheme.is_empty()
        && scheme.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"+-.".contains(&byte))
    {
        return Err(ListError::UnsupportedScheme { location: location.to_owned(), scheme: scheme.to_owned() });
    }
    Ok((PathBuf::from(path), None))
}

/// Returns whether the first block of the file has a NUL byte, which no
/// text list has.
fn is_binary(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut block = Vec::with_capacity(8192);
    File::open(path)?.take(8192).read_to_end(&mut block)?;
    Ok(block.contains(&0))
}

fn parser_for(format: ListFormat) -> Box<dyn LineParser> {
    match format {
        ListFormat::Hosts => Box::new(HostsParser),
        ListFormat::Auto | ListFormat::Domains | ListFormat::Wildcard => Box::new(DomainsParser),
        ListFormat::Adblock => Box::new(AdblockParser),
        ListFormat::Regex => Box::new(PiholeRegexParser),
        ListFormat::Dnsmasq => Box::new(DnsmasqParser),
        ListFormat::Rpz => Box::new(RpzParser::default()),
        ListFormat::Unbound => Box::new(UnboundParser),
    }
}

/// Calls `each` with every line of `path`: its number, and its text or the
/// reason it cannot be text. Line terminators (LF or CRLF) and a UTF-8 byte
/// order mark on the first line are removed.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(u32, Result<&str, String>) -> bool,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut buffer = Vec::with_capacity(256);
    let mut number = 0u32;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(());
        }
        number = number.saturating_add(1);
        let mut bytes = buffer.as_slice();
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if number == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|error| format!("the line is not valid UTF-8: {error}"));
        if !each(number, text) {
            return Ok(());
        }
    }
}

pub fn detect_format(path: &Path) -> std::io::Result<ListFormat> {
    let mut sample = Vec::with_capacity(SAMPLE_LINES);
    for_each_line(path, |_, text| {
        if let Ok(text) = text {
            sample.push(text.to_owned());
        }
        sample.len() < SAMPLE_LINES
    })?;
    Ok(detect::detect(sample.iter().map(String::as_str)))
}

fn load_source(
    index: u16,
    spec: &SourceSpec,
    path: &Path,
    raw: &mut RawSet,
) -> std::io::Result<SourceReport> {
    let format = match spec.format {
        ListFormat::Auto => detect_format(path)?,
        format => format,
    };
    let last_update = std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map(|age| age.as_secs());
    let mut report = SourceReport {
        name: spec.location.clone(),
        role: spec.role,
        format,
        last_update,
        ..SourceReport::default()
    };
    let mut parser = parser_for(format);

    for_each_line(path, |line, text| {
        report.lines += 1;
        let text = match text {
            Ok(text) => text,
            Err(reason) => {
                report.invalid.record(line, reason);
                return true;
            }
        };
        let mut late_issue = None;
        let outcome = parser.parse_line(text, &mut |rule| match add_rule(
            raw, rule, spec.role, index, line,
        ) {
            Ok(()) => report.accepted += 1,
            Err(reason) => {
                late_issue.get_or_insert(reason);
            }
        });
        match (outcome, late_issue) {
            (_, Some(reason)) | (LineOutcome::Unsupported(reason), None) => {
                report.unsupported.record(line, reason)
            }
            (LineOutcome::Invalid(reason), None) => report.invalid.record(line, reason),
            (LineOutcome::Ignored, None) => report.ignored += 1,
            (LineOutcome::Rules | LineOutcome::Skipped, None) => {}
        }
        true
    })?;
    Ok(report)
}

/// Applies the source's role to a rule and stores it. Returns why the rule
/// is unsupported when it cannot be stored.
fn add_rule(
    raw: &mut RawSet,
    rule: ParsedRule<'_>,
    role: ListRole,
    source: u16,
    line: u32,
) -> Result<(), String> {
    let action = match role {
        ListRole::Allow => Action::Allow,
        ListRole::Block => rule.action,
    };
    match rule.pattern {
        Pattern::Name { name, scope } => {
            let key = name::key(&name);
            if rule.badfilter {
                raw.badfilters.push(BadfilterTarget::Name {
                    key,
                    scope,
                    action,
                    important: rule.important,
                    qtypes: rule.qtypes,
                });
                return Ok(());
            }
            let rewrite = match action {
                Action::Rewrite(address) => Some(address),
                _ => None,
            };
            let detailed = rule.qtypes.is_some() || rewrite.is_some();
            raw.records.push(Record::new(
                key,
                source,
                line,
                scope,
                action,
                rule.important,
                detailed,
            ));
            raw.names.push_str(&name);
            raw.names.push('\n');
            if detailed {
                raw.details.push(Detail {
                    key,
                    source,
                    line,
                    qtypes: rule.qtypes,
                    rewrite,
                });
            }
            Ok(())
        }
        Pattern::Regex {
            expression,
            inverted,
        } => {
            if let Some(reason) = non_name_reason(&expression) {
                return Err(format!("/{expression}/: {reason}"));
            }
            if rule.badfilter {
                raw.badfilters.push(BadfilterTarget::Regex {
                    expression,
                    inverted,
                    action,
                    important: rule.important,
                    qtypes: rule.qtypes,
                });
                return Ok(());
            }
            let regex = compile(&expression)?;
            let origin = RuleOrigin { source, line };
            let rule = RegexRule {
                regex,
                inverted,
                action,
                important: rule.important,
                qtypes: rule.qtypes,
                origin,
            };
            raw.regexes.push((rule, expression));
            Ok(())
        }
    }
}
