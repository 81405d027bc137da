//! Compiles a synthetic block list and prints the time and peak memory it
//! took, for the benchmark harness.
//!
//! ```text
//! cargo run --release -p dnsgate --example compile_bench -- [NAMES] [domains|adblock|hosts]
//! ```
//!
//! The list (1,000,000 names by default) is written to a temporary file
//! first. Peak RSS is the kernel's `VmHWM`, reset through
//! `/proc/self/clear_refs` just before compilation, so it measures loading,
//! compiling and building the table, not writing the input.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dnsgate::lists::{Budget, ListFormat, ListRole, SourceSpec, load_and_compile};
use dnsgate::policy::Policy;

const TOP_LEVEL: [&str; 8] = ["com", "net", "org", "io", "info", "xyz", "de", "co.uk"];

/// Deterministic name number `index`: a hex label, sometimes under a
/// subdomain label, under one of a few top-level domains.
fn synthetic_name(index: u64) -> String {
    let mixed = dnsgate_common::name::mix64(index);
    let top = TOP_LEVEL[(mixed % TOP_LEVEL.len() as u64) as usize];
    if mixed & 0x30 == 0 {
        format!("ads{}.t{:x}.{top}", mixed >> 60, mixed >> 20)
    } else {
        format!("t{:x}-{}.{top}", mixed >> 24, index % 997)
    }
}

fn write_list(path: &std::path::Path, names: u64, format: ListFormat) -> Result<()> {
    let mut out = BufWriter::new(File::create(path).context("create the synthetic list")?);
    writeln!(out, "# synthetic list of {names} names")?;
    for index in 0..names {
        let name = synthetic_name(index);
        match format {
            ListFormat::Adblock => writeln!(out, "||{name}^")?,
            ListFormat::Hosts => writeln!(out, "0.0.0.0 {name}")?,
            _ => writeln!(out, "{name}")?,
        }
    }
    out.flush()?;
    Ok(())
}

/// Peak resident set size of this process so far, in bytes.
fn peak_rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .context("VmHWM missing")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value missing")?
        .parse()?;
    Ok(kib * 1024)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let names: u64 = match args.next() {
        Some(text) => text
            .parse()
            .with_context(|| format!("invalid name count {text:?}"))?,
        None => 1_000_000,
    };
    let format: ListFormat = match args.next() {
        Some(text) => text.parse()?,
        None => ListFormat::Domains,
    };
    if !matches!(
        format,
        ListFormat::Domains | ListFormat::Adblock | ListFormat::Hosts
    ) {
        bail!("the benchmark writes domains, adblock or hosts lists, not {format}");
    }

    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let path = dir.path().join("synthetic.txt");
    write_list(&path, names, format)?;
    let bytes = std::fs::metadata(&path)?.len();

    // Writing 5 resets VmHWM to the current RSS (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").context("reset the peak RSS counter")?;
    let start = Instant::now();
    let spec = SourceSpec::new(
        path.to_str().context("non-UTF-8 temporary path")?,
        format,
        ListRole::Block,
    );
    let compiled = load_and_compile(&[spec], &Budget::default())?;
    let compile_seconds = start.elapsed().as_secs_f64();
    let kernel_entries = compiled.kernel_entries.len();
    let policy = Policy::new(compiled)?;
    let total_seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes()?;

    println!("names: {names}");
    println!("format: {format}");
    println!("list_bytes: {bytes}");
    println!("kernel_entries: {kernel_entries}");
    println!("table_buckets: {}", policy.table().buckets.len());
    println!("compile_seconds: {compile_seconds:.3}");
    println!("compile_and_table_seconds: {total_seconds:.3}");
    println!("peak_rss_bytes: {peak}");
    Ok(())
}
