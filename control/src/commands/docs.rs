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

/// Writes `dnsgate.1` and one page per subcommand, nested ones included
/// (`dnsgate-block-add.1`), into `dir`, so that every page a SEE ALSO or
/// SUBCOMMANDS section names exists.
pub fn man_pages(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{} exists and is not a directory; give a directory for the man pages", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} failed", dir.display()))?;
    // `dnsgate help …` repeats the pages of the commands themselves, so the
    // pages leave it out rather than each get a twin.
    let mut command = without_help_subcommand(Cli::command());
    command.build();
    write_pages(dir, command, "dnsgate", "dnsgate")
}

fn without_help_subcommand(command: clap::Command) -> clap::Command {
    command.disable_help_subcommand(true).mut_subcommands(without_help_subcommand)
}

/// Writes the page of `command` as `page.1`, then those of its subcommands.
/// `invocation` is how the command is typed (`dnsgate block add`).
fn write_pages(dir: &Path, command: clap::Command, page: &str, invocation: &str) -> Result<()> {
    let mut command = command.display_name(page.to_owned()).bin_name(invocation.to_owned());
    if command.get_version().is_none() {
        // For the page footer only: subcommands take no --version.
        command = command.version(env!("CARGO_PKG_VERSION")).disable_version_flag(true);
    }
    write_page(dir, page, command.clone())?;
    for sub in command.get_subcommands() {
        let name = sub.get_name();
        write_pages(dir, sub.clone(), &format!("{page}-{name}"), &format!("{invocation} {name}"))?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page).with_context(|| format!("rendering the man page {name} failed"))?;
    std::fs::write(&path, page).with_context(|| format!("writing {} failed", path.display()))
}
