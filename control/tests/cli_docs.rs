//! Shell completions and man pages generated from the clap definitions,
//! and the CLI's behaviour without a daemon.

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
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let output = dnsgate().arg("man").arg("--out-dir").arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let main = std::fs::read_to_string(dir.path().join("dnsgate.1")).unwrap();
    assert!(main.contains(".TH dnsgate"), "{main}");
    let block = std::fs::read_to_string(dir.path().join("dnsgate-block.1")).unwrap();
    assert!(block.contains("dnsgate block add ads.example"), "the example is in the page");
    assert!(dir.path().join("dnsgate-pause.1").exists());
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
