//! The subcommands other than `run`.

use anyhow::Result;

use crate::{
    cli::{Cli, StatsArgs},
    dataplane::read_pinned_counters,
};

/// `dnsgate stats`: the kernel counters.
pub fn stats(cli: &Cli, args: &StatsArgs) -> Result<()> {
    let dataplane = read_pinned_counters(&cli.pin_dir)?;
    if args.json {
        println!("{}", serde_json::json!({ "dataplane": dataplane }));
    } else {
        println!("dataplane:");
        println!("  seen       {}", dataplane.seen);
        println!("  blocked    {}", dataplane.blocked);
        println!("  allowed    {}", dataplane.allowed);
        println!("  passed     {}", dataplane.passed);
        println!("  malformed  {}", dataplane.malformed);
        println!("  tx_failed  {}", dataplane.tx_failed);
    }
    Ok(())
}
