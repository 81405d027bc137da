//! The `dnsgate` command: the daemon and the tools that talk to it.

use std::process::ExitCode;

use clap::Parser as _;
use dnsgate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        restore_sigpipe();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rustls warns at every handshake whose SNI is an IP
                // address, which kdig and other clients send when given
                // one; that is normal for a resolver known by address.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match &cli.command {
        Command::Run(args) => dnsgate::daemon::run(&cli, args),
        _ => dnsgate::commands::dispatch(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dnsgate: {}", dnsgate::cli::error_report(&error));
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed pipe end the command quietly, as it ends `cat` or `ls`:
/// `dnsgate log | head` would otherwise panic on its next line of output.
/// The Rust runtime ignores SIGPIPE, so that writes fail with an error
/// instead. The daemon keeps that: a client closing its connection must not
/// stop it.
fn restore_sigpipe() {
    // SAFETY: called before any thread is started; SIG_DFL is a valid
    // disposition for SIGPIPE and no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
