//! Dispatch of the subcommands that talk to the daemon, and the local
//! ones (`check-config`, `version`, `completions`, `man`).

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{docs, text};
use crate::{
    admin::{self, Request, RuleList},
    cli::{Cli, Command, ListsCommand, RuleCommand},
    config::Config,
    lists::{load_and_compile_with, HttpFetcher},
};

/// How long `stop` waits for the daemon to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every subcommand except `run`.
pub fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Run(_) => unreachable!("`run` is dispatched by main"),
        Command::Stats => super::stats(cli),
        Command::Status => call_and_print(cli, &Request::Status, text::print_status),
        Command::Query(args) => {
            let request = Request::Query { name: args.name.clone(), qtype: args.qtype };
            call_and_print(cli, &request, text::print_query)
        }
        Command::Block(action) => rule_command(cli, RuleList::Block, action),
        Command::Allow(action) => rule_command(cli, RuleList::Allow, action),
        Command::Pause(args) => {
            call_and_print(cli, &Request::Pause { seconds: args.duration.as_secs() }, |value| {
                println!("blocking paused until {}", text::format_time_ms(value["paused_until_ms"].as_u64().unwrap_or(0)));
            })
        }
        Command::Resume => call_and_print(cli, &Request::Resume, |value| {
            if value["was_paused"].as_bool() == Some(true) {
                println!("blocking resumed");
            } else {
                println!("blocking was not paused");
            }
        }),
        Command::CheckConfig => check_config(cli),
        Command::Stop(args) => stop(cli, args),
        Command::Lists(ListsCommand::Update) => call_and_print(cli, &Request::ListsUpdate, |value| {
            println!("lists reloaded: {} sources, {} kernel rules", value["sources"], value["kernel_rules"]);
        }),
        Command::Lists(ListsCommand::Show) => call_and_print(cli, &Request::ListsShow, text::print_lists),
        Command::Log(args) if args.follow => {
            let json = cli.json;
            admin::follow_log(&cli.socket, args.limit, |entry| {
                text::print_log_entry(entry, json);
                true
            })?;
            Ok(())
        }
        Command::Log(args) => call_and_print(cli, &Request::Log { limit: args.limit, follow: false }, |value| {
            let entries: Vec<crate::querylog::QueryEntry> = serde_json::from_value(value.clone()).unwrap_or_default();
            for entry in &entries {
                text::print_log_entry(entry, false);
            }
        }),
        Command::Reload => call_and_print(cli, &Request::Reload, |value| {
            println!("configuration reloaded");
            if let Some(keys) = value["restart_needed"].as_array().filter(|keys| !keys.is_empty()) {
                let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
                println!("changed keys that take effect after a restart: {}", keys.join(", "));
            }
        }),
        Command::Version => {
            if cli.json {
                println!("{}", serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }));
            } else {
                println!("dnsgate {}", env!("CARGO_PKG_VERSION"));
            }
            Ok(())
        }
        Command::Completions(args) => {
            docs::completions(args.shell);
            Ok(())
        }
        Command::Man(args) => docs::man_pages(&args.out_dir),
        Command::Dnr(args) => super::dnr(cli, args),
    }
}

/// Sends `request` and prints the JSON result or its text form.
fn call_and_print(cli: &Cli, request: &Request, print: impl FnOnce(&Value)) -> Result<()> {
    let value = admin::call(&cli.socket, request)?;
    if cli.json {
        println!("{value}");
    } else {
        print(&value);
    }
    Ok(())
}

fn rule_command(cli: &Cli, list: RuleList, action: &RuleCommand) -> Result<()> {
    let verb = match list {
        RuleList::Block => "block",
        RuleList::Allow => "allow",
    };
    match action {
        RuleCommand::Add { rule } => call_and_print(cli, &Request::RuleAdd { list, rule: rule.join(" ") }, |value| {
            let rule = value["rule"].as_str().unwrap_or_default();
            if value["changed"].as_bool() == Some(false) {
                println!("{verb} rule {rule} was already there");
            } else if value["kernel"].as_bool() == Some(true) {
                println!("added {verb} rule {rule} (in the kernel now)");
            } else {
                println!("added {verb} rule {rule}");
            }
        }),
        RuleCommand::Rm { rule } => call_and_print(cli, &Request::RuleRemove { list, rule: rule.join(" ") }, |value| {
            println!("removed {verb} rule {}", value["rule"].as_str().unwrap_or_default());
        }),
        RuleCommand::List => call_and_print(cli, &Request::RuleList { list }, |value| {
            for rule in value["rules"].as_array().into_iter().flatten() {
                println!("{}", rule.as_str().unwrap_or_default());
            }
        }),
    }
}

/// Checks the configuration file and loads its lists, as `run` would.
fn check_config(cli: &Cli) -> Result<()> {
    let explicit = cli.config.as_os_str() != crate::config::DEFAULT_CONFIG_PATH;
    let config = Config::load(&cli.config, explicit)?;
    crate::resolver::Resolver::check_config(&config.resolver).context("the resolver settings are unusable")?;
    let fetcher = HttpFetcher::new(config.state_dir().join("lists"));
    let compiled = load_and_compile_with(&config.lists, &config.budget, &fetcher).context("loading the lists failed")?;
    let invalid: u64 = compiled.reports.iter().map(|report| report.invalid.count).sum();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "valid": true, "path": cli.config.display().to_string(), "lists": compiled.reports, "invalid_lines": invalid })
        );
    } else {
        if cli.config.exists() {
            println!("{}: configuration is valid", cli.config.display());
        } else {
            println!("{}: no such file, so every setting has its default", cli.config.display());
        }
        if config.resolver.upstreams.is_empty() {
            println!("  no upstream resolver is set: allowed names that are not local would get SERVFAIL");
        }
        for report in &compiled.reports {
            println!(
                "  {} ({}, {}): {} rules, {} invalid lines, {} unsupported rules",
                report.name,
                text::role_name(report.role),
                report.format,
                report.accepted,
                report.invalid.count,
                report.unsupported.count
            );
            for issue in report.invalid.examples.iter().chain(&report.unsupported.examples) {
                println!("    line {}: {}", issue.line, issue.reason);
            }
        }
    }
    Ok(())
}

fn stop(cli: &Cli, args: &crate::cli::StopArgs) -> Result<()> {
    let reply = match admin::call(&cli.socket, &Request::Stop { detach: args.detach }) {
        Ok(reply) => reply,
        // A dead daemon leaves its filter attached (fail-open); --detach
        // still removes it.
        Err(admin::AdminError::NotRunning { .. }) if args.detach => return detach_left_filter(cli),
        Err(error) => return Err(error.into()),
    };
    // Daemons before this field existed always had the filter attached.
    let attached = reply["filter_attached"].as_bool().unwrap_or(true);
    if args.no_wait {
        println!("the daemon is stopping");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while cli.socket.exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the daemon accepted the stop request but still runs after {} s; check its log",
            STOP_TIMEOUT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if cli.json {
        println!("{}", serde_json::json!({ "stopped": true, "detached": args.detach && attached }));
    } else if !attached {
        println!("the daemon stopped (it ran without the XDP filter)");
    } else if args.detach {
        println!("the daemon stopped and detached the XDP filter");
    } else {
        println!("the daemon stopped; the XDP filter stays attached (fail-open), `dnsgate stop --detach` removes it");
    }
    Ok(())
}

/// `stop --detach` without a running daemon: removes the pins the last one
/// left, which detaches its XDP filter.
fn detach_left_filter(cli: &Cli) -> Result<()> {
    let detached = crate::daemon::detach_left_filter(&cli.pin_dir)?;
    if cli.json {
        println!("{}", serde_json::json!({ "stopped": false, "detached": detached }));
    } else if detached {
        println!("the daemon was not running; detached the XDP filter it left under {}", cli.pin_dir.display());
    } else {
        println!("the daemon was not running and no XDP filter was pinned under {}", cli.pin_dir.display());
    }
    Ok(())
}
