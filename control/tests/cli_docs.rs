//! Shell completions and man pages generated from the clap definitions,
//! the CLI's behaviour without a daemon, and the configuration docs.

use std::process::Command;

fn dnsgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dnsgate"))
}

#[test]
fn bash_completion_lists_subcommands() {
    let output = dnsgate().args(["completions", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    for subcommand in ["status", "stats", "query", "block", "allow", "pause", "resume", "check-config", "stop", "lists", "log", "reload", "version"] {
        assert!(script.contains(subcommand), "completion lacks {subcommand}");
    }
    assert!(script.contains("--socket"), "completion lacks the global --socket flag");
}

#[test]
fn closed_pipe_ends_command_quietly() {
    use std::os::unix::process::ExitStatusExt as _;

    // A pipe whose reader is gone, as after `dnsgate completions bash | true`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = dnsgate().args(["completions", "bash"]).stdout(writer).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", output.status);
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let output = dnsgate().arg("man").arg("--out-dir").arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let main = std::fs::read_to_string(dir.path().join("dnsgate.1")).unwrap();
    assert!(main.contains(".TH dnsgate"), "{main}");
    let block = std::fs::read_to_string(dir.path().join("dnsgate-block.1")).unwrap();
    assert!(block.contains("dnsgate block add ads.example"), "the example is in the page");
    assert!(dir.path().join("dnsgate-pause.1").exists());

    // Every page another page refers to exists, nested subcommands too.
    let mut referenced = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (start, _) in text.match_indices("dnsgate\\-") {
            let rest = &text[start..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '\\' || *c == '-').collect();
            if rest[name.len()..].starts_with("(1)") {
                referenced.push(name.replace("\\-", "-"));
            }
        }
    }
    assert!(referenced.iter().any(|name| name == "dnsgate-block-add"), "{referenced:?}");
    for name in referenced {
        assert!(dir.path().join(format!("{name}.1")).exists(), "a page names {name}(1), which was not written");
    }
    let add = std::fs::read_to_string(dir.path().join("dnsgate-block-add.1")).unwrap();
    assert!(add.contains("dnsgate block add"), "the synopsis names the full command: {add}");
}

#[test]
fn no_daemon_is_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    for args in [&["status"][..], &["block", "list"], &["pause", "5m"], &["log"]] {
        let output = dnsgate().arg("--socket").arg(&socket).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} must fail without a daemon");
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
        assert!(message.contains("not running"), "{args:?}: {message}");
    }
}

#[test]
fn check_config_names_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsgate.toml");
    std::fs::write(&config, "[dataplane]\nblock_mode = \"sinkhole\"\n").unwrap();
    let output = dnsgate().arg("--config").arg(&config).arg("check-config").output().unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("block_mode"), "{message}");

    let list = dir.path().join("list.txt");
    std::fs::write(&list, "ads.example\nbad..name\n").unwrap();
    std::fs::write(&config, format!("[[lists]]\nlocation = \"{}\"\nformat = \"domains\"\n", list.display())).unwrap();
    let output = dnsgate().arg("--config").arg(&config).args(["--json", "check-config"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["invalid_lines"], 1);
    assert_eq!(report["lists"][0]["invalid"]["examples"][0]["line"], 2);
}

#[test]
fn check_config_rejects_what_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsgate.toml");
    for (text, expected) in [
        ("[resolver]\nbootstrap = [\"tls://192.0.2.1\"]\n[[resolver.upstreams]]\nurl = \"tls://dns.example\"\n", "bootstrap server"),
        ("[[resolver.upstreams]]\nurl = \"udp://dns.example\"\n", "no bootstrap server"),
        ("[resolver.local]\nserver = \"https://dns.example/\"\n", "local name server"),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = dnsgate().arg("--config").arg(&config).arg("check-config").output().unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(message.contains(expected), "{text}: {message}");
    }

    // No file at all is reported as such, with the missing upstream.
    let output = dnsgate().arg("--config").arg(dir.path().join("absent.toml")).arg("check-config").output().unwrap();
    assert!(!output.status.success(), "a missing file named with --config is an error");
    std::fs::write(&config, "").unwrap();
    let output = dnsgate().arg("--config").arg(&config).arg("check-config").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("no upstream resolver is set"), "{text}");
}

#[test]
fn check_config_text_names_unsupported_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsgate.toml");
    let list = dir.path().join("list.txt");
    // The regex crate has no look-ahead.
    std::fs::write(&list, "||ads.example^\n/^ads(?=\\.)/\n").unwrap();
    std::fs::write(&config, format!("[[lists]]\nlocation = \"{}\"\n", list.display())).unwrap();
    let output = dnsgate().arg("--config").arg(&config).arg("check-config").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("1 rules, 0 invalid lines, 1 unsupported rules"), "{text}");
    assert!(text.contains("line 2: the regex crate cannot compile"), "{text}");
}

/// The documented example must parse with the daemon's own parser, and
/// every table and key it sets must be described in the reference, so
/// neither can drift from the code.
#[test]
fn example_config_parses_and_is_documented() {
    use dnsgate::config::{ClientPrivacy, Config};
    use dnsgate::lists::{ListFormat, ListRole};
    use dnsgate::resolver::Protocol;

    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let example_path = docs.join("dnsgate.example.toml");
    let example = std::fs::read_to_string(&example_path).unwrap();
    let config = Config::parse(&example, &example_path).unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(config.dataplane.lan_interfaces, ["br-lan"]);
    assert_eq!(config.lists.len(), 2);
    assert_eq!(config.lists[0].format, ListFormat::Hosts);
    assert_eq!(config.lists[0].role, ListRole::Block);
    assert_eq!(config.lists[1].format, ListFormat::Adblock);
    assert_eq!(config.lists[1].role, ListRole::Block, "role defaults to block");

    let upstreams = &config.resolver.upstreams;
    assert_eq!(upstreams.len(), 2);
    for upstream in upstreams {
        assert_eq!(upstream.url.protocol, Protocol::Tls, "{}", upstream.url);
        let address = upstream.url.socket_addr().expect("example upstreams use IP addresses").ip();
        let is_documentation_address = match address {
            std::net::IpAddr::V4(v4) => v4.octets()[..3] == [192, 0, 2],
            std::net::IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
        };
        assert!(is_documentation_address, "{address} is not in 192.0.2.0/24 or 2001:db8::/32");
    }

    assert!(config.ddr.enabled);
    assert!(config.intercept.enabled);
    let exempt = config.intercept.exempt_networks().unwrap();
    assert_eq!(exempt, [("192.168.1.240".parse().unwrap(), 28)]);
    assert_eq!(config.server.doh_port, 8443);
    assert_eq!(config.querylog.client_privacy, ClientPrivacy::Truncate);

    let reference = std::fs::read_to_string(docs.join("configuration.md")).unwrap();
    let headings: Vec<&str> = reference.lines().filter(|line| line.starts_with('#')).collect();
    let table: toml::Table = example.parse().unwrap();
    for (name, value) in &table {
        let keys: Vec<(String, &toml::Value)> = match value {
            toml::Value::Table(inner) => inner.iter().map(|(key, value)| (key.clone(), value)).collect(),
            toml::Value::Array(items) => items
                .iter()
                .filter_map(toml::Value::as_table)
                .flat_map(|inner| inner.iter().map(|(key, value)| (key.clone(), value)))
                .collect(),
            _ => {
                assert!(reference.contains(&format!("`{name}`")), "top-level key {name} is not documented");
                continue;
            }
        };
        let heading = format!("[{name}]");
        assert!(
            headings.iter().any(|line| line.contains(&heading)),
            "docs/configuration.md has no heading for the {heading} table"
        );
        for (key, value) in keys {
            let is_array_of_tables = match value.as_array() {
                Some(items) => !items.is_empty() && items.iter().all(toml::Value::is_table),
                None => false,
            };
            if value.is_table() || is_array_of_tables {
                let nested = format!("[{name}.{key}]");
                assert!(
                    headings.iter().any(|line| line.contains(&nested)),
                    "docs/configuration.md has no heading for the {nested} table"
                );
            } else {
                assert!(reference.contains(&format!("`{key}`")), "key {name}.{key} is not documented");
            }
        }
    }
}
