//! `cargo xtask`: the project tasks cargo cannot do alone.

mod bench;
mod build;
mod demo;
mod package;
mod prereq;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "dnsgate project tasks", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain if missing, build the eBPF object and the
    /// release `dnsgate` binary with the object embedded.
    Build(build::Args),
    /// Install what the tests need and run every test suite.
    Test(test::Args),
    /// Show the whole product on one machine: client, router and upstream
    /// network namespaces, real clients over every transport.
    Demo(demo::Args),
    /// Boot every Debian kernel of the test matrix in QEMU and run the
    /// dataplane tests inside each.
    VmTest(vm::Args),
    /// Measure dnsgate against dnsmasq, unbound, dnsdist and hickory-dns
    /// and write BENCHMARKS.md and benchmarks.json.
    Bench(bench::Args),
    /// Build installable packages: `package openwrt` writes .ipk (and .apk)
    /// files and prints the binary size per architecture.
    Package(package::Args),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Build(args) => build::run(args),
        Command::Test(args) => test::run(args),
        Command::Demo(args) => demo::run(args),
        Command::VmTest(args) => vm::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Package(args) => package::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, without the backtrace anyhow would add
            // under RUST_BACKTRACE: the last lines of a CI log must say
            // what failed, not where in xtask the error was returned.
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
