//! Hand-made fixtures with one line per tricky rule kind of every format,
//! loaded together, with the exact decision expected for each name and
//! the exact counts of invalid, unsupported and ignored lines.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use dnsgate::lists::{Budget, ListError, ListFormat, ListRole, SourceReport, SourceSpec, load_and_compile};
use dnsgate::policy::{Decision, Policy, RulePlace, RuleStatus};
use dnsgate_common::name::name_key;
use dnsgate_common::rules::{
    ACTION_ALLOW, ACTION_BLOCK, ACTION_NONE, ALL_GROUPS, DEFAULT_CLIENT_GROUPS, RuleValue,
};

const A: u16 = 1;
const AAAA: u16 = 28;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lists")
        .join(name)
}

fn specs(dir: &Path) -> Vec<SourceSpec> {
    let sources = [
        ("hosts.txt", ListFormat::Hosts, ListRole::Block),
        ("domains.txt", ListFormat::Domains, ListRole::Block),
        ("wildcard.txt", ListFormat::Wildcard, ListRole::Block),
        ("adblock.txt", ListFormat::Adblock, ListRole::Block),
        ("pihole.txt", ListFormat::Regex, ListRole::Block),
        ("dnsmasq.txt", ListFormat::Dnsmasq, ListRole::Block),
        ("rpz.txt", ListFormat::Rpz, ListRole::Block),
        ("unbound.txt", ListFormat::Unbound, ListRole::Block),
        ("allow-domains.txt", ListFormat::Domains, ListRole::Allow),
        ("allow-adblock.txt", ListFormat::Adblock, ListRole::Allow),
    ];
    sources
        .iter()
        .map(|(file, format, role)| {
            SourceSpec::new(dir.join(file).to_str().unwrap(), *format, *role)
        })
        .collect()
}

fn policy_from(dir: &Path) -> Policy {
    let compiled = match load_and_compile(&specs(dir), &Budget::default()) {
        Ok(compiled) => compiled,
        Err(error) => panic!("fixtures do not load: {error}"),
    };
    Policy::new(compiled).expect("table builds")
}

fn block() -> Decision {
    Decision::Block { rule_label: 0 }
}

fn block_at(rule_label: usize) -> Decision {
    Decision::Block { rule_label }
}

fn rewrite(v4: &[&str], v6: &[&str]) -> Decision {
    Decision::Rewrite {
        v4: v4
            .iter()
            .map(|address| address.parse::<Ipv4Addr>().unwrap())
            .collect(),
        v6: v6
            .iter()
            .map(|address| address.parse::<Ipv6Addr>().unwrap())
            .collect(),
    }
}

/// (name, query type, expected decision) for every rule kind of the
/// fixtures.
fn expectations() -> Vec<(&'static str, u16, Decision)> {
    vec![
        // hosts: exact names, several per line, tab, IPv6 sinks, case, IDN, underscore.
        ("hosts-a.example", A, Decision::Allow),
        ("hosts-b.example", A, block()),
        ("sub.hosts-b.example", A, Decision::NoMatch),
        ("hosts-tab.example", A, block()),
        ("hosts-v6null.example", AAAA, block()),
        ("hosts-v6loop.example", A, block()),
        ("hosts-upper.example", A, block()),
        ("HOSTS-UPPER.example.", A, block()),
        ("xn--bcher-hosts-thb.example", A, block()),
        ("_under_score.example", A, block()),
        (
            "nas.hosts.example",
            A,
            rewrite(&["192.0.2.10"], &["2001:db8::10"]),
        ),
        ("localhost", A, Decision::NoMatch),
        ("broadcasthost", A, Decision::NoMatch),
        ("hosts-c.example", A, Decision::NoMatch),
        // plain domains: exact names.
        ("domain-a.example", A, block()),
        ("www.domain-a.example", A, Decision::NoMatch),
        ("domain-b.example", A, block()),
        ("domain-c.example", A, Decision::Allow),
        // wildcard: `*.x` covers x and below; other stars are globs.
        ("wild-a.example", A, block()),
        ("deep.x.wild-a.example", A, block_at(2)),
        ("wild-exact.example", A, block()),
        ("x.wild-exact.example", A, Decision::NoMatch),
        ("ads.wild-glob.example", A, block()),
        ("ads7.wild-glob.example", A, block()),
        ("xads.wild-glob.example", A, Decision::NoMatch),
        ("cdn.xn--mnchen-wild-thb.example", A, block_at(1)),
        // adblock.
        ("ab-sub.example", A, block()),
        ("www.ab-sub.example", A, block_at(1)),
        ("ok.ab-sub.example", A, Decision::Allow),
        ("x.ok.ab-sub.example", A, Decision::Allow),
        ("good.ab-sub.example", A, block_at(1)),
        ("good2.ab-sub2.example", A, Decision::Allow),
        ("ab-exact.example", A, block()),
        ("sub.ab-exact.example", A, Decision::NoMatch),
        ("ab-bare.example", A, block()),
        ("sub.ab-bare.example", A, Decision::NoMatch),
        ("ab-strict.example", A, Decision::NoMatch),
        ("x.ab-strict.example", A, block_at(1)),
        ("ab-important.example", A, block()),
        ("sub.ab-important.example", A, block_at(1)),
        ("ab-plain.example", A, Decision::Allow),
        ("ab-type.example", AAAA, block()),
        ("ab-type.example", A, Decision::NoMatch),
        ("ab-bad.example", A, Decision::NoMatch),
        ("ab-regex12.example", A, block()),
        ("ab-regex.example", A, Decision::NoMatch),
        ("ab-prefix.example", A, block()),
        ("ab-prefix.example.evil", A, block()),
        ("xab-prefix.example", A, Decision::NoMatch),
        ("example.com", A, Decision::NoMatch),
        ("ab-script.example", A, Decision::NoMatch),
        ("ab-path.example", A, Decision::NoMatch),
        ("ab-glob.example", A, block()),
        ("ab-glob1.example", A, block()),
        ("xab-glob.example", A, Decision::NoMatch),
        ("ab-rw.example", A, rewrite(&["192.0.2.77"], &[])),
        ("sub.ab-rw.example", AAAA, rewrite(&["192.0.2.77"], &[])),
        ("ab-trailing.example", A, Decision::Allow),
        // Pi-hole regexes, one limited to AAAA.
        ("px-12.cdn.example", A, block()),
        ("xn--abc.example", AAAA, block()),
        ("xn--abc.example", A, Decision::NoMatch),
        // dnsmasq: subtrees.
        ("dm-null.example", A, block()),
        ("a.dm-zero.example", A, block_at(1)),
        ("dm-nx.example", A, block()),
        ("a.dm-local.example", A, block_at(1)),
        ("dm-server.example", A, block()),
        ("ok.dm-server.example", A, Decision::Allow),
        ("x.ok.dm-server.example", A, Decision::Allow),
        ("www.dm-rw.example", A, rewrite(&["192.0.2.55"], &[])),
        ("dm-multi1.example", A, block()),
        ("dm-multi2.example", A, block()),
        ("dm-fwd.example", A, Decision::NoMatch),
        // RPZ.
        ("rpz-apex.example", A, block()),
        ("a.rpz-apex.example", A, block_at(1)),
        ("ok.rpz-apex.example", A, Decision::Allow),
        ("rpz-only-sub.example", A, Decision::NoMatch),
        ("x.rpz-only-sub.example", A, block_at(1)),
        ("rpz-abs.example", A, block()),
        ("sub.rpz-abs.example", A, Decision::NoMatch),
        ("rpz-nodata.example", A, block()),
        ("rpz-rw.example", A, rewrite(&["192.0.2.66"], &[])),
        // unbound.
        ("ub-null.example", A, block()),
        ("x.ub-nx.example", A, block_at(1)),
        ("ub-static.example", A, block()),
        ("ub-refuse.example", A, block()),
        ("ok.ub-null.example", A, Decision::Allow),
        ("ub-rw.example", A, rewrite(&["192.0.2.88"], &[])),
        ("unlisted.example", A, Decision::NoMatch),
    ]
}

fn check_decisions(policy: &Policy) {
    let mut wrong = Vec::new();
    for (name, qtype, expected) in expectations() {
        let decision = policy.decide(name, qtype, DEFAULT_CLIENT_GROUPS);
        if decision != expected {
            wrong.push(format!(
                "{name} type {qtype}: expected {expected:?}, got {decision:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
}

#[test]
fn fixtures_decide_every_rule_kind() {
    check_decisions(&policy_from(&fixture("")));
}

#[test]
fn bom_and_crlf_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for spec in specs(&fixture("")) {
        let source = Path::new(&spec.location);
        let text = std::fs::read_to_string(source).unwrap();
        let converted = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        std::fs::write(dir.path().join(source.file_name().unwrap()), converted).unwrap();
    }
    check_decisions(&policy_from(dir.path()));
}

fn report_of<'a>(reports: &'a [SourceReport], file: &str) -> &'a SourceReport {
    reports
        .iter()
        .find(|report| report.name.ends_with(file))
        .unwrap()
}

fn lines_of(summary: &dnsgate::lists::IssueSummary) -> Vec<u32> {
    summary.examples.iter().map(|issue| issue.line).collect()
}

#[test]
fn fixture_reports_count_bad_lines() {
    let compiled = load_and_compile(&specs(&fixture("")), &Budget::default()).unwrap();
    let reports = &compiled.reports;

    let hosts = report_of(reports, "hosts.txt");
    assert_eq!(hosts.lines, 17);
    assert_eq!(hosts.ignored, 5);
    assert_eq!(lines_of(&hosts.invalid), vec![16, 17]);
    assert_eq!(hosts.accepted, 10);
    assert_eq!(hosts.user_space_rules, 2, "the two rewrites");

    let domains = report_of(reports, "domains.txt");
    assert_eq!(lines_of(&domains.invalid), vec![6]);
    assert_eq!(domains.accepted, 3);

    let adblock = report_of(reports, "adblock.txt");
    assert_eq!(lines_of(&adblock.unsupported), vec![21, 22, 23, 24, 25]);
    assert_eq!(lines_of(&adblock.invalid), vec![28]);
    assert_eq!(adblock.disabled_by_badfilter, 1);
    assert!(
        adblock.unsupported.examples[0].reason.contains("cosmetic"),
        "{:?}",
        adblock.unsupported
    );

    let pihole = report_of(reports, "pihole.txt");
    assert_eq!(lines_of(&pihole.unsupported), vec![4]);
    assert_eq!(pihole.user_space_rules, 2);

    let dnsmasq = report_of(reports, "dnsmasq.txt");
    assert_eq!(lines_of(&dnsmasq.unsupported), vec![10]);
    assert_eq!(dnsmasq.accepted, 9);

    let rpz = report_of(reports, "rpz.txt");
    assert_eq!(rpz.ignored, 2, "SOA and NS");
    assert_eq!(lines_of(&rpz.unsupported), vec![15]);
    assert_eq!(rpz.invalid.count, 0);

    let unbound = report_of(reports, "unbound.txt");
    assert_eq!(unbound.accepted, 6);
    assert_eq!(unbound.invalid.count + unbound.unsupported.count, 0);
}

#[test]
fn overlay_rules_apply_at_once() {
    let mut policy = policy_from(&fixture(""));
    let overlay = [
        (
            name_key("overlay-block.example").unwrap(),
            RuleValue::new(ACTION_BLOCK, ACTION_BLOCK, ALL_GROUPS),
        ),
        (
            name_key("hosts-b.example").unwrap(),
            RuleValue::new(ACTION_ALLOW, ACTION_NONE, ALL_GROUPS),
        ),
        (
            name_key("group-two.example").unwrap(),
            RuleValue::new(ACTION_BLOCK, ACTION_NONE, 0x02),
        ),
    ];
    policy.set_overlay(overlay.into_iter().collect());
    assert_eq!(
        policy.decide("x.overlay-block.example", A, DEFAULT_CLIENT_GROUPS),
        block_at(1)
    );
    assert_eq!(
        policy.decide("hosts-b.example", A, DEFAULT_CLIENT_GROUPS),
        Decision::Allow
    );
    assert_eq!(
        policy.decide("group-two.example", A, DEFAULT_CLIENT_GROUPS),
        Decision::NoMatch
    );
    assert_eq!(policy.decide("group-two.example", A, 0x02), block());
}

#[test]
fn explain_names_rule_source_and_line() {
    let policy = policy_from(&fixture(""));

    let explanation = policy.explain("sub.ab-important.example", A, DEFAULT_CLIENT_GROUPS);
    assert_eq!(explanation.decision, block_at(1));
    let decisive: Vec<_> = explanation
        .rules
        .iter()
        .filter(|rule| rule.decisive)
        .collect();
    assert_eq!(decisive.len(), 1, "{explanation:#?}");
    assert_eq!(
        decisive[0].text.as_deref(),
        Some("||ab-important.example^$important")
    );
    assert_eq!(decisive[0].line, Some(9));
    assert!(decisive[0].source.ends_with("adblock.txt"));
    assert_eq!(
        decisive[0].place,
        RulePlace::UserSpace,
        "the exception moved the key to user space"
    );
    let exception = explanation
        .rules
        .iter()
        .find(|rule| rule.line == Some(10))
        .expect("the exception is listed");
    assert!(!exception.decisive);

    let explanation = policy.explain("ab-bad.example", A, DEFAULT_CLIENT_GROUPS);
    assert_eq!(explanation.decision, Decision::NoMatch);
    assert_eq!(explanation.rules.len(), 1, "{explanation:#?}");
    assert_eq!(explanation.rules[0].status, RuleStatus::DisabledByBadfilter);

    let explanation = policy.explain("ab-regex3.example", A, DEFAULT_CLIENT_GROUPS);
    let regex = explanation
        .rules
        .iter()
        .find(|rule| rule.decisive)
        .expect("a decisive regex rule");
    assert_eq!(regex.text.as_deref(), Some(r"/^ab-regex[0-9]+\.example$/"));
    assert_eq!(regex.place, RulePlace::UserSpace);
    assert_eq!(explanation.kernel_verdict, "no_match");

    let explanation = policy.explain("ab-type.example", A, DEFAULT_CLIENT_GROUPS);
    assert_eq!(explanation.rules[0].status, RuleStatus::OtherQueryType);
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["decision"]["action"], "no_match");
}

#[test]
fn budget_rejects_oversized_set() {
    let budget = Budget {
        max_kernel_table_bytes: 64,
        max_user_space_rules: 100,
    };
    let error = load_and_compile(&specs(&fixture("")), &budget).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("bytes of kernel table"), "{message}");
    assert!(message.contains("[budget] max_kernel_table_bytes"), "the key to raise: {message}");

    let budget = Budget {
        max_kernel_table_bytes: 1 << 20,
        max_user_space_rules: 3,
    };
    let message = load_and_compile(&specs(&fixture("")), &budget)
        .unwrap_err()
        .to_string();
    assert!(message.contains("user-space rules"), "{message}");
    assert!(message.contains("[budget] max_user_space_rules"), "the key to raise: {message}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let spec = SourceSpec::new(
        "/nonexistent/dnsgate-list.txt",
        ListFormat::Auto,
        ListRole::Block,
    );
    let message = load_and_compile(&[spec], &Budget::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("/nonexistent/dnsgate-list.txt"),
        "{message}"
    );
}

/// An error page or a binary file saved in place of a list must not load
/// as an empty list, which would silently turn its blocking off.
#[test]
fn list_without_valid_rules_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("error-page.txt");
    std::fs::write(&path, "<html>\n<head><title>503 Service Unavailable</title></head>\n<body>try later</body>\n</html>\n")
        .unwrap();
    let spec = SourceSpec::new(path.to_str().unwrap(), ListFormat::Auto, ListRole::Block);
    let message = load_and_compile(&[spec], &Budget::default()).unwrap_err().to_string();
    assert!(message.contains("has no valid rule"), "{message}");
    assert!(message.contains(path.to_str().unwrap()), "{message}");

    // A program has lines that pass for regex rules, so it is recognised by
    // its NUL bytes, whatever the format given.
    let mut program = b"\x7fELF\x02\x01\x01\x00\n".to_vec();
    program.extend(std::iter::repeat_n(b"ads[0-9]+\\.example\n".as_slice(), 50).flatten());
    let path = dir.path().join("binary.txt");
    std::fs::write(&path, &program).unwrap();
    for format in [ListFormat::Auto, ListFormat::Regex] {
        let spec = SourceSpec::new(path.to_str().unwrap(), format, ListRole::Block);
        let error = load_and_compile(&[spec], &Budget::default()).unwrap_err();
        assert!(matches!(error, ListError::Binary { .. }), "{format}: {error}");
        let message = error.to_string();
        assert!(message.contains("is a binary file"), "{message}");
        assert_eq!(message.matches(path.to_str().unwrap()).count(), 1, "the path once: {message}");
    }

    // FTP and other schemes are not read as file paths.
    let spec = SourceSpec::new("ftp://lists.example/ads.txt", ListFormat::Auto, ListRole::Block);
    let error = load_and_compile(&[spec], &Budget::default()).unwrap_err();
    assert!(matches!(&error, ListError::UnsupportedScheme { scheme, .. } if scheme == "ftp"), "{error}");

    // A list of comments only is empty, not broken.
    let path = dir.path().join("comments.txt");
    std::fs::write(&path, "# nothing listed yet\n\n").unwrap();
    let spec = SourceSpec::new(path.to_str().unwrap(), ListFormat::Auto, ListRole::Block);
    assert!(load_and_compile(&[spec], &Budget::default()).is_ok());
}
