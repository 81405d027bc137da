//! Shell completions and man pages, generated from the clap definitions.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "dnsgate", &mut std::io::stdout());
}

/// Writes `dnsgate.1` and one page per subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} failed", dir.display()))?;
    let command = Cli::command();
    write_page(dir, "dnsgate", command.clone())?;
    for sub in command.get_subcommands() {
        let name = format!("dnsgate-{}", sub.get_name());
        write_page(dir, &name, sub.clone().display_name(name.clone()))?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page).with_context(|| format!("rendering the man page {name} failed"))?;
    std::fs::write(&path, page).with_context(|| format!("writing {} failed", path.display()))
}
