//! Command-line definitions of the `dnsgate` binary: `run` is the daemon,
//! and every other subcommand talks to it over the admin socket.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::lists::{ListFormat, ListRole, SourceSpec};

/// Default bpffs directory for pinned maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/dnsgate";

/// DNS filtering and encrypted-DNS gateway for home routers.
#[derive(Debug, Parser)]
#[command(name = "dnsgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Directory in bpffs where the daemon pins its maps.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,

    /// Admin socket of the daemon (created by `run` with mode 0600).
    #[arg(long, global = true, default_value = crate::admin::DEFAULT_SOCKET_PATH, value_name = "PATH")]
    pub socket: PathBuf,

    /// Configuration file (TOML). A missing file at the default path means
    /// all defaults.
    #[arg(long, global = true, value_name = "PATH", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the XDP filter to the LAN interfaces, load the
    /// lists and serve DNS.
    #[command(
        after_help = "Example:\n  dnsgate run --lan-iface br-lan --blocklist /etc/dnsgate/ads.txt --upstream tls://192.0.2.53:853"
    )]
    Run(RunArgs),
    /// Show whether the filter is attached, the rule set in force, list
    /// freshness, upstream health, the certificate, uptime and version.
    #[command(after_help = "Example:\n  dnsgate status --json")]
    Status,
    /// Print the kernel and resolver counters. Without a daemon, print the
    /// kernel counters from the pinned maps.
    #[command(after_help = "Example:\n  dnsgate stats --json")]
    Stats,
    /// Show how a name would be answered and which rule decides it.
    #[command(after_help = "Example:\n  dnsgate query ads.example AAAA")]
    Query(QueryArgs),
    /// Manage custom block rules (applied at once, kept across restarts).
    #[command(
        subcommand,
        after_help = "Examples:\n  dnsgate block add ads.example\n  dnsgate block add '0.0.0.0 exact.example'\n  dnsgate block rm ads.example\n  dnsgate block list"
    )]
    Block(RuleCommand),
    /// Manage custom allow rules, which beat every block.
    #[command(
        subcommand,
        after_help = "Examples:\n  dnsgate allow add cdn.example\n  dnsgate allow rm cdn.example\n  dnsgate allow list"
    )]
    Allow(RuleCommand),
    /// Turn blocking off for DURATION (e.g. 30s, 5m, 1h); it resumes by
    /// itself.
    #[command(after_help = "Example:\n  dnsgate pause 5m")]
    Pause(PauseArgs),
    /// Turn blocking back on.
    #[command(after_help = "Example:\n  dnsgate resume")]
    Resume,
    /// Check the configuration file and its lists without a daemon.
    #[command(after_help = "Example:\n  dnsgate --config /etc/dnsgate/dnsgate.toml check-config")]
    CheckConfig,
    /// Stop the daemon.
    #[command(after_help = "Examples:\n  dnsgate stop\n  dnsgate stop --detach")]
    Stop(StopArgs),
    /// Reload or show the block and allow lists.
    #[command(subcommand, after_help = "Examples:\n  dnsgate lists update\n  dnsgate lists show --json")]
    Lists(ListsCommand),
    /// Print recent queries: time, client, name, type, transport, decision,
    /// latency.
    #[command(after_help = "Examples:\n  dnsgate log --limit 20\n  dnsgate log --follow")]
    Log(LogArgs),
    /// Re-read the configuration file and lists (as on SIGHUP). A bad file
    /// keeps the running configuration.
    #[command(after_help = "Example:\n  dnsgate reload")]
    Reload,
    /// Print the version.
    #[command(after_help = "Example:\n  dnsgate version")]
    Version,
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  dnsgate completions bash > /etc/bash_completion.d/dnsgate")]
    Completions(CompletionsArgs),
    /// Write man pages for dnsgate and every subcommand.
    #[command(after_help = "Example:\n  dnsgate man --out-dir /usr/share/man/man1")]
    Man(ManArgs),
    /// Print the DHCP options that announce the encrypted listeners (DNR,
    /// RFC 9463): DHCPv4 option 162 and DHCPv6 option 144 as hex, with
    /// dnsmasq and odhcpd lines.
    #[command(after_help = "Example:\n  dnsgate dnr --address 192.168.1.1 --address fd00::1")]
    Dnr(DnrArgs),
}

/// Options of `dnsgate dnr`.
#[derive(Debug, Clone, Args)]
pub struct DnrArgs {
    /// Address to announce (repeatable). Without it, the addresses of the
    /// configured LAN interfaces and `[tls] listen` are used.
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<std::net::IpAddr>,
    /// LAN interface whose addresses to announce (repeatable), added to the
    /// configured ones.
    #[arg(long = "lan-iface", value_name = "IF")]
    pub lan_interfaces: Vec<String>,
    /// Name of the OpenWrt `dhcp` section the odhcpd lines refer to.
    #[arg(long, value_name = "SECTION", default_value = "lan")]
    pub uci_section: String,
}

/// Options of `dnsgate run`. Options given here add to, or override, the
/// configuration file's.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// LAN interface to filter and serve (repeatable). A bridge is expanded
    /// to its member ports.
    #[arg(long = "lan-iface", value_name = "IF")]
    pub lan_interfaces: Vec<String>,
    /// Upstream resolver URL (repeatable): udp://, tcp://, tls://, quic://
    /// or https://, e.g. tls://192.0.2.53:853 or https://dns.example/dns-query.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<crate::resolver::UpstreamSpec>,
    /// Extra address to serve DNS on besides the LAN interfaces' own
    /// (repeatable).
    #[arg(long = "listen", value_name = "IP")]
    pub listen: Vec<std::net::IpAddr>,
    /// Directory for the generated certificate, list caches and custom
    /// rules (default /var/lib/dnsgate).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not attach the XDP program: user space judges every query.
    #[arg(long)]
    pub no_xdp: bool,
    /// Block list file (repeatable). The format is detected; force one with
    /// FORMAT:PATH, e.g. hosts:/etc/hosts.block.
    #[arg(long = "blocklist", value_name = "[FORMAT:]PATH", value_parser = parse_blocklist)]
    pub blocklists: Vec<SourceSpec>,
    /// Allow list file (repeatable), in any supported format.
    #[arg(long = "allowlist", value_name = "[FORMAT:]PATH", value_parser = parse_allowlist)]
    pub allowlists: Vec<SourceSpec>,
    /// Load the XDP program without the kernel's BTF, as on OpenWrt kernels
    /// built without it.
    #[arg(long)]
    pub ignore_kernel_btf: bool,
    /// Number of rule-table buckets in each rule set (eight rules each), at
    /// least 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rule_buckets: Option<u32>,
}

/// Options of `dnsgate query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The name to look up, e.g. ads.example.
    pub name: String,
    /// Query type: a mnemonic (A, AAAA, HTTPS) or a number.
    #[arg(default_value = "A", value_parser = parse_qtype)]
    pub qtype: u16,
}

/// `block` and `allow` actions.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Add a rule: a bare name covers the name and its subdomains; any line
    /// of a supported list syntax is accepted.
    #[command(after_help = "Examples:\n  dnsgate block add ads.example\n  dnsgate block add 0.0.0.0 exact.example\n  dnsgate allow add 'address=/cdn.example/'")]
    Add {
        /// The rule; several words are joined with spaces, so a hosts line
        /// needs no quotes.
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// Remove a rule, as given to `add` or as `list` prints it.
    #[command(after_help = "Examples:\n  dnsgate block rm ads.example\n  dnsgate allow rm '||cdn.example^'")]
    Rm {
        /// The rule.
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// List the rules.
    #[command(after_help = "Examples:\n  dnsgate block list\n  dnsgate --json allow list")]
    List,
}

/// `lists` actions.
#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Reload every list now (URL sources are downloaded again).
    #[command(after_help = "Example:\n  dnsgate lists update")]
    Update,
    /// Show each list's rule counts, problems and age.
    #[command(after_help = "Example:\n  dnsgate lists show --json")]
    Show,
}

/// Options of `dnsgate pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Duration of the pause: a number with s, m, h or d (plain numbers are
    /// seconds), at most 30 days.
    #[arg(value_parser = parse_pause)]
    pub duration: std::time::Duration,
}

/// Options of `dnsgate stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Also detach the XDP program and remove its pinned maps, also when
    /// the daemon has already died. Without it the program stays attached
    /// and keeps answering blocked names (fail-open) until the next
    /// `dnsgate run` adopts it.
    #[arg(long)]
    pub detach: bool,
    /// Return once the daemon has accepted the request, without waiting for
    /// it to exit.
    #[arg(long)]
    pub no_wait: bool,
}

/// Options of `dnsgate log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Keep printing new queries until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Number of recent queries to print first.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
}

/// Options of `dnsgate completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Options of `dnsgate man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `dnsgate.1` and `dnsgate-SUBCOMMAND.1` into.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

fn parse_source(value: &str, role: ListRole) -> Result<SourceSpec, String> {
    if let Some((format, path)) = value.split_once(':')
        && !format.contains('/')
        && !format.is_empty()
    {
        let format: ListFormat = format.parse().map_err(|error: crate::lists::ListError| error.to_string())?;
        return Ok(SourceSpec::new(path, format, role));
    }
    Ok(SourceSpec::new(value, ListFormat::Auto, role))
}

fn parse_blocklist(value: &str) -> Result<SourceSpec, String> {
    parse_source(value, ListRole::Block)
}

fn parse_allowlist(value: &str) -> Result<SourceSpec, String> {
    parse_source(value, ListRole::Allow)
}

/// Parses a query type mnemonic or number.
pub fn parse_qtype(value: &str) -> Result<u16, String> {
    if let Ok(number) = value.parse::<u16>() {
        return Ok(number);
    }
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("query type {value} is out of range; a type number is from 0 to 65535"));
    }
    value
        .to_ascii_uppercase()
        .parse::<hickory_proto::rr::RecordType>()
        .map(u16::from)
        .map_err(|_| format!("unknown query type {value:?}; use a mnemonic such as A or AAAA, or a number"))
}

/// Parses `90`, `90s`, `5m`, `2h` or `1d`.
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration {value:?}; use a number with s, m, h or d, such as 30s or 5m");
    let value = value.trim();
    let (number, unit) = match value.find(|character: char| !character.is_ascii_digit()) {
        Some(index) => value.split_at(index),
        None => (value, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    // A number too large for u64 seconds is still a duration, only too long.
    let total = number.parse::<u64>().ok().and_then(|number| number.checked_mul(seconds)).unwrap_or(u64::MAX);
    if total == 0 {
        return Err(format!("duration {value:?} is zero; give at least 1s"));
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Parses the duration of `dnsgate pause`, which the daemon limits to
/// [`MAX_PAUSE_SECS`](crate::admin::MAX_PAUSE_SECS).
fn parse_pause(value: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(value)?;
    let days = crate::admin::MAX_PAUSE_SECS / 86_400;
    if duration.as_secs() > crate::admin::MAX_PAUSE_SECS {
        return Err(format!("a pause lasts at most {days} days ({days}d); for longer, remove the lists from the configuration"));
    }
    Ok(duration)
}

/// Formats an error and its causes on one line. A cause whose text is
/// already in the report is left out, because most error types here include
/// their source in their own message.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if report.contains(&text) {
            continue;
        }
        if !report.is_empty() {
            report.push_str(": ");
        }
        report.push_str(&text);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_over_limit_rejected() {
        assert_eq!(parse_pause("30d").unwrap().as_secs(), crate::admin::MAX_PAUSE_SECS);
        let error = parse_pause("31d").unwrap_err();
        assert!(error.contains("at most 30 days"), "{error}");
        assert!(parse_pause("99999999999999d").unwrap_err().contains("at most 30 days"));
        assert!(parse_pause("99999999999999999999999").unwrap_err().contains("at most 30 days"));
    }

    #[test]
    fn error_report_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        #[derive(Debug, thiserror::Error)]
        #[error("binding port 53 failed: {source}")]
        struct Bind {
            source: std::io::Error,
        }
        let error = anyhow::Error::new(Bind { source: io }).context("starting the listeners failed");
        assert_eq!(
            error_report(&error),
            "starting the listeners failed: binding port 53 failed: address in use"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_report(&plain), "outer: inner");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert_eq!(parse_duration("99999999999999999999999").unwrap().as_secs(), u64::MAX);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn qtypes_parse_by_name_and_number() {
        assert_eq!(parse_qtype("aaaa").unwrap(), 28);
        assert_eq!(parse_qtype("65").unwrap(), 65);
        assert!(parse_qtype("nope").is_err());
        assert!(parse_qtype("70000").unwrap_err().contains("from 0 to 65535"));
    }

    #[test]
    fn every_subcommand_help_has_example() {
        use clap::CommandFactory as _;
        fn check(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub.get_after_help().map(|help| help.to_string()).unwrap_or_default();
                assert!(help.contains("dnsgate "), "`{path} --help` has no example");
                check(sub, &path);
            }
        }
        check(&Cli::command(), "dnsgate");
    }
}
