//! Dataplane figures from the helper programs: per-packet time of the XDP
//! program (`xdp-bench`), list compile time and peak memory
//! (`compile_bench`), and the stripped binary's size.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

/// Runs `program ARGS` and parses its `key: value` lines into JSON, numbers
/// where they parse as numbers.
pub fn key_values(program: &Path, args: &[String]) -> Result<Map<String, Value>> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {}", program.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A verifier rejection prints thousands of lines: keep the end.
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        bail!("{} {} failed with {}:\n{tail}", program.display(), args.join(" "), output.status);
    }
    let mut values = Map::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let parsed = value
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| value.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::from(value));
        values.insert(key.trim().to_owned(), parsed);
    }
    Ok(values)
}

/// Per-packet times and map memory with `rules` rules loaded.
pub fn xdp_run(xdp_bench: &Path, rules: usize, repeat: u32) -> Result<Value> {
    let mut values = key_values(xdp_bench, &[rules.to_string(), repeat.to_string()])?;
    let memlock = values.get("map_memlock_bytes").and_then(Value::as_u64).context("xdp-bench printed no memlock")?;
    values.insert("kernel_bytes_per_rule".into(), Value::from(super::load::round(memlock as f64 / rules as f64, 2)));
    Ok(Value::Object(values))
}

/// Time and peak memory to compile `names` synthetic names.
pub fn compile_run(compile_bench: &Path, names: usize) -> Result<Value> {
    Ok(Value::Object(key_values(compile_bench, &[names.to_string(), "domains".into()])?))
}

/// Size in bytes of `binary` before and after `strip`.
pub fn binary_sizes(binary: &Path, work: &Path) -> Result<(u64, u64)> {
    let unstripped = std::fs::metadata(binary).with_context(|| format!("{} not found", binary.display()))?.len();
    let copy = work.join("dnsgate.stripped");
    std::fs::copy(binary, &copy)?;
    crate::prereq::run_checked(Command::new("strip").arg(&copy))?;
    let stripped = std::fs::metadata(&copy)?.len();
    Ok((unstripped, stripped))
}
