//! Command-line definitions of the `dnsgate` binary.

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
    /// Print the counters of the running daemon's kernel filter.
    #[command(after_help = "Example:\n  dnsgate stats --json")]
    Stats(StatsArgs),
}

/// Options of `dnsgate run`. Options given here add to, or override, the
/// configuration file's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML). A missing file at the default path means
    /// all defaults.
    #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
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
    /// Number of rule-table buckets in each rule set (eight rules each).
    #[arg(long, value_name = "N")]
    pub rule_buckets: Option<u32>,
}

/// Options of `dnsgate stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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
