//! Loads every real block list of the shared test data in the role its
//! provenance table gives it, and checks the per-source counts against an
//! independent Python counter (`fixtures/lists/count_rules.py`), written
//! from the format descriptions rather than from this crate's parsers.
//!
//! The lists are read from `DNSGATE_BLOCKLIST_DIR`, by default from
//! `shared/data/blocklists` beside the repository's top directory. When the
//! directory is missing the test is skipped with a message, unless
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use dnsgate::lists::{
    Budget, ListFormat, ListRole, SourceReport, SourceSpec, detect_format, load_and_compile,
};
use dnsgate::policy::{Decision, Policy};

fn blocklist_dir() -> Option<PathBuf> {
    let beside_repository =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/blocklists");
    let dir = std::env::var_os("DNSGATE_BLOCKLIST_DIR").map_or(beside_repository, PathBuf::from);
    if dir.is_dir() {
        return Some(dir);
    }
    let message = format!(
        "block list directory {} is missing; set DNSGATE_BLOCKLIST_DIR",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

/// Format and role of a file, from the prefix of its name, which names the
/// format and, for allowlists and exclusion lists, the role.
fn classify(file_name: &str) -> Option<(ListFormat, ListRole)> {
    let prefix = file_name.split('_').next()?;
    let role = if prefix.contains("allowlist") || prefix.contains("exclusions") {
        ListRole::Allow
    } else {
        ListRole::Block
    };
    let format = match prefix.split('-').next()? {
        "hosts" => ListFormat::Hosts,
        "domains" => ListFormat::Domains,
        "wildcard" => ListFormat::Wildcard,
        "adblock" | "adguard" => ListFormat::Adblock,
        "pihole" => ListFormat::Regex,
        "dnsmasq" => ListFormat::Dnsmasq,
        "rpz" => ListFormat::Rpz,
        "unbound" => ListFormat::Unbound,
        _ => return None,
    };
    Some((format, role))
}

fn list_files(dir: &Path) -> Vec<(PathBuf, ListFormat, ListRole)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read block list directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let (format, role) = classify(&name)?;
            Some((path, format, role))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// The counts the Python counter prints for one file, in its column order.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    lines: u64,
    accepted: u64,
    invalid: u64,
    unsupported: u64,
    ignored: u64,
    duplicates: u64,
    covered: u64,
}

impl Counts {
    fn of(report: &SourceReport) -> Self {
        Self {
            lines: report.lines,
            accepted: report.accepted,
            invalid: report.invalid.count,
            unsupported: report.unsupported.count,
            ignored: report.ignored,
            duplicates: report.duplicates,
            covered: report.covered_by_parent,
        }
    }
}

fn python_counts(path: &Path, format: ListFormat, role: ListRole) -> Counts {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lists/count_rules.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(format.to_string())
        .arg(if role == ListRole::Allow {
            "allow"
        } else {
            "block"
        })
        .arg(path)
        .output()
        .expect("run python3 (needed by this test)");
    assert!(
        output.status.success(),
        "count_rules.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    let numbers: Vec<u64> = text
        .split_ascii_whitespace()
        .map(|field| field.parse().expect("a count"))
        .collect();
    assert_eq!(numbers.len(), 7, "unexpected counter output {text:?}");
    Counts {
        lines: numbers[0],
        accepted: numbers[1],
        invalid: numbers[2],
        unsupported: numbers[3],
        ignored: numbers[4],
        duplicates: numbers[5],
        covered: numbers[6],
    }
}

#[test]
fn real_lists_match_independent_counts() {
    let Some(dir) = blocklist_dir() else {
        return;
    };
    let files = list_files(&dir);
    assert!(
        files.len() >= 20,
        "expected the full set of real lists in {}, found {}",
        dir.display(),
        files.len()
    );

    let mut mismatches = Vec::new();
    println!(
        "{:<62} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>7} {:>7} {:>8} {:>6}",
        "file",
        "format",
        "lines",
        "accepted",
        "invalid",
        "unsup",
        "ignored",
        "dups",
        "covered",
        "kernel",
        "user"
    );
    for (path, format, role) in &files {
        let spec = SourceSpec::new(path.to_str().expect("UTF-8 path"), *format, *role);
        let compiled = load_and_compile(&[spec], &Budget::default()).expect("list loads");
        let report = &compiled.reports[0];
        let file_name = path.file_name().unwrap().to_string_lossy();
        println!(
            "{:<62} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>7} {:>7} {:>8} {:>6}",
            file_name,
            report.format,
            report.lines,
            report.accepted,
            report.invalid.count,
            report.unsupported.count,
            report.ignored,
            report.duplicates,
            report.covered_by_parent,
            report.kernel_rules,
            report.user_space_rules
        );

        let expected = python_counts(path, *format, *role);
        let actual = Counts::of(report);
        if actual != expected {
            mismatches.push(format!(
                "{file_name}: dnsgate {actual:?}, counter {expected:?}\n  invalid: {:?}\n  unsupported: {:?}",
                report.invalid.examples, report.unsupported.examples
            ));
        }
        let placed = report.kernel_rules
            + report.user_space_rules
            + report.duplicates
            + report.covered_by_parent
            + report.disabled_by_badfilter;
        let badfilters = report.accepted - placed;
        assert!(
            placed <= report.accepted,
            "{file_name}: {placed} rules placed, more than the {} accepted",
            report.accepted
        );
        assert!(
            badfilters <= 10,
            "{file_name}: {badfilters} accepted rules are neither placed nor badfilters"
        );
        assert!(
            report.invalid.examples.len() as u64 == report.invalid.count.min(10),
            "{file_name}: invalid examples missing"
        );
    }
    assert!(
        mismatches.is_empty(),
        "counts differ:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn auto_detection_matches_file_format() {
    let Some(dir) = blocklist_dir() else {
        return;
    };
    for (path, format, _role) in list_files(&dir) {
        let detected = detect_format(&path).expect("list is readable");
        // Wildcard and domain lists share one parser; a wildcard list has
        // only `*.` lines, so detection names it exactly.
        assert_eq!(detected, format, "{}", path.display());
    }
}

#[test]
fn all_lists_together_decide_known_names() {
    let Some(dir) = blocklist_dir() else {
        return;
    };
    // A subset that meets every cross-source case below keeps this test
    // quick in debug builds; the test above loads every file.
    let wanted = [
        "adblock_hagezi-pro",
        "adblock-allowlist_hagezi",
        "pihole-regex",
        "hosts_stevenblack",
    ];
    let specs: Vec<SourceSpec> = list_files(&dir)
        .into_iter()
        .filter(|(path, _, _)| {
            let name = path.file_name().unwrap().to_string_lossy();
            wanted.iter().any(|prefix| name.starts_with(prefix))
        })
        .map(|(path, format, role)| SourceSpec::new(path.to_str().unwrap(), format, role))
        .collect();
    assert_eq!(specs.len(), 5, "expected the five lists {wanted:?}");
    let compiled = match load_and_compile(&specs, &Budget::default()) {
        Ok(compiled) => compiled,
        Err(error) => panic!("lists do not load: {error}"),
    };
    let policy = Policy::new(compiled).expect("table builds");

    // `||0.beer^` in HaGeZi Pro: the name and its subtree.
    assert!(matches!(
        policy.decide("0.beer", 1, 1),
        Decision::Block { .. }
    ));
    assert!(matches!(
        policy.decide("www.deep.0.beer", 1, 1),
        Decision::Block { .. }
    ));
    // An exception in HaGeZi's referral allowlist beats the blocks.
    assert_eq!(policy.decide("1aurl.io", 1, 1), Decision::Allow);
    // A Pi-hole regex (`^(www[0-9]*\.)?xn--`) blocks punycode names in user space.
    assert!(matches!(
        policy.decide("xn--80ak6aa92e.com", 1, 1),
        Decision::Block { rule_label: 0 }
    ));
    // Names no list mentions pass.
    assert_eq!(
        policy.decide("dnsgate-test-unlisted.example", 1, 1),
        Decision::NoMatch
    );

    let explanation = policy.explain("www.deep.0.beer", 1, 1);
    let decisive: Vec<_> = explanation
        .rules
        .iter()
        .filter(|rule| rule.decisive)
        .collect();
    assert!(!decisive.is_empty(), "{explanation:?}");
    assert!(
        decisive
            .iter()
            .any(|rule| rule.text.as_deref() == Some("||0.beer^")),
        "{explanation:#?}"
    );
}
