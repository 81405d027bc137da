//! The `summary` object of `benchmarks.json` and the tables of
//! `BENCHMARKS.md`, both computed from the collected figures only.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::load::round;

/// Rows of `results[key]`, or none.
fn rows<'a>(results: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    results.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// Service rows of one scenario, transport and list size.
fn service<'a>(results: &'a Map<String, Value>, scenario: &str, transport: &str, names: u64) -> Vec<&'a Value> {
    rows(results, "service")
        .iter()
        .filter(|row| {
            row["scenario"] == scenario && row["transport"] == transport && row["list_names"].as_u64() == Some(names)
        })
        .collect()
}

/// dnsgate's rate divided by the best peer's, or null when either is
/// missing.
fn ratio_vs_best_peer(rows: &[&Value]) -> Value {
    let dnsgate = rows.iter().find(|row| row["server"] == "dnsgate").and_then(|row| row["qps"].as_f64());
    let best_peer = rows
        .iter()
        .filter(|row| row["server"] != "dnsgate")
        .filter_map(|row| row["qps"].as_f64())
        .fold(None, |best: Option<f64>, qps| Some(best.map_or(qps, |best| best.max(qps))));
    match (dnsgate, best_peer) {
        (Some(dnsgate), Some(peer)) if peer > 0.0 => json!(round(dnsgate / peer, 3)),
        _ => Value::Null,
    }
}

fn largest_list(results: &Map<String, Value>, scenario: &str) -> u64 {
    rows(results, "service")
        .iter()
        .filter(|row| row["scenario"] == scenario)
        .filter_map(|row| row["list_names"].as_u64())
        .max()
        .unwrap_or(0)
}

fn xdp_at(results: &Map<String, Value>, rules: u64) -> Option<&Value> {
    rows(results, "xdp").iter().find(|row| row["rules"].as_u64() == Some(rules))
}

fn dnsgate_memory_at(results: &Map<String, Value>, names: u64) -> Option<&Value> {
    rows(results, "memory").iter().find(|row| row["server"] == "dnsgate" && row["names"].as_u64() == Some(names))
}

/// The headline figures. Ratios use the largest block list measured.
pub fn summary(results: &Map<String, Value>) -> Value {
    let blocked_list = largest_list(results, "blocked");
    let allowed_list = largest_list(results, "allowed");
    let xdp_1m = xdp_at(results, 1_000_000);
    let memory_1m = dnsgate_memory_at(results, 1_000_000);
    let compile_and_push = match (results.get("compile"), xdp_1m) {
        (Some(compile), Some(xdp)) if compile["names"].as_u64() == Some(1_000_000) => compile
            ["compile_and_table_seconds"]
            .as_f64()
            .zip(xdp["publish_seconds"].as_f64())
            .map(|(compile, publish)| json!(round(compile + publish, 3)))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    };
    json!({
        "blocked_qps_ratio_vs_best_peer": ratio_vs_best_peer(&service(results, "blocked", "udp", blocked_list)),
        "blocked_list_names": blocked_list,
        "allowed_qps_ratio_vs_best_peer": ratio_vs_best_peer(&service(results, "allowed", "udp", allowed_list)),
        "dot_qps_ratio_vs_best_peer": ratio_vs_best_peer(&service(results, "allowed", "dot", allowed_list)),
        "doh_qps_ratio_vs_best_peer": ratio_vs_best_peer(&service(results, "allowed", "doh", allowed_list)),
        "doq_qps_ratio_vs_best_peer": ratio_vs_best_peer(&service(results, "allowed", "doq", allowed_list)),
        "xdp_ns_per_blocked_packet_1m_rules": xdp_1m.map_or(Value::Null, |row| row["blocked_a_ns"].clone()),
        "kernel_bytes_per_rule_1m": xdp_1m.map_or(Value::Null, |row| row["kernel_bytes_per_rule"].clone()),
        "compile_and_push_seconds_1m": compile_and_push,
        "controller_rss_mb_1m": memory_1m
            .and_then(|row| row["rss_bytes"].as_f64())
            .map_or(Value::Null, |bytes| json!(round(bytes / 1_048_576.0, 1))),
        "startup_seconds_1m": memory_1m.map_or(Value::Null, |row| row["startup_seconds"].clone()),
        "binary_bytes": results.get("binary").map_or(Value::Null, |binary| binary["stripped_bytes"].clone()),
    })
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => other.to_string(),
    }
}

fn ratio_cell(dnsgate: Option<f64>, peer: Option<f64>) -> String {
    match (dnsgate, peer) {
        (Some(dnsgate), Some(peer)) if peer > 0.0 => format!("{:.2}", dnsgate / peer),
        _ => "–".into(),
    }
}

fn service_table(out: &mut String, rows: &[&Value]) {
    let dnsgate = rows.iter().find(|row| row["server"] == "dnsgate").and_then(|row| row["qps"].as_f64());
    out.push_str("| server | answered qps | dnsgate ÷ server | p50 ms | p99 ms | loss % | start-up s |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for row in rows {
        if let Some(error) = row.get("error") {
            let _ = writeln!(out, "| {} | failed: {} | | | | | |", cell(&row["server"]), cell(error).replace('\n', " "));
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            cell(&row["server"]),
            row["qps"].as_f64().unwrap_or(0.0),
            ratio_cell(dnsgate, row["qps"].as_f64()),
            cell(&row["p50_ms"]),
            cell(&row["p99_ms"]),
            cell(&row["loss_percent"]),
            cell(&row["startup_seconds"]),
        );
    }
    out.push('\n');
}

/// The whole BENCHMARKS.md.
pub fn markdown(results: &Value) -> String {
    let empty = Map::new();
    let map = results.as_object().unwrap_or(&empty);
    let mut out = String::new();
    let _ = writeln!(out, "# dnsgate benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{}` on {}; do not edit by hand. Every figure is also in `benchmarks.json`.\n",
        cell(&results["generated_by"]),
        cell(&results["date"])
    );

    let machine = &results["machine"];
    let conditions = &results["conditions"];
    out.push_str("## Machine and conditions\n\n");
    let _ = writeln!(
        out,
        "- Machine: {}, {} cores, {} MiB, {}, kernel {}.",
        cell(&machine["cpu"]),
        cell(&machine["cores"]),
        cell(&machine["memory_mib"]),
        cell(&machine["os"]),
        cell(&machine["kernel"])
    );
    let _ = writeln!(out, "- Load: {}.", cell(&conditions["generator"]));
    let _ = writeln!(out, "- Cores: {}.", cell(&conditions["cores"]));
    let _ = writeln!(
        out,
        "- Each run offers {} qps (plain DNS) or {} qps (DoT, DoH, DoQ) for {} s from {} sockets or connections, \
         at most {} queries outstanding, {} s query timeout; every server runs alone with the same list.",
        cell(&conditions["plain_offered_qps"]),
        cell(&conditions["encrypted_offered_qps"]),
        cell(&conditions["seconds_per_run"]),
        cell(&conditions["clients_per_run"]),
        cell(&conditions["max_outstanding"]),
        cell(&conditions["query_timeout_seconds"]),
    );
    let _ = writeln!(
        out,
        "- Blocked names come from 1Hosts Pro and Xtra (368k names), filled up with synthetic names beyond that; \
         allowed names are {} names under a zone the upstream (dnsmasq on the router's loopback) answers, \
         asked once before each measured run so every cache is warm.",
        cell(&conditions["allowed_names"])
    );
    let versions = results["versions"].as_object().cloned().unwrap_or_default();
    let listed: Vec<String> = versions.iter().map(|(name, version)| format!("{name}: {}", cell(version))).collect();
    let _ = writeln!(out, "- Versions: {}.\n", listed.join("; "));

    out.push_str("## Summary\n\n| figure | value |\n| --- | ---: |\n");
    if let Some(summary) = results["summary"].as_object() {
        for (key, value) in summary {
            let _ = writeln!(out, "| `{key}` | {} |", cell(value));
        }
    }
    out.push('\n');

    let mut sizes: Vec<u64> = rows(map, "service")
        .iter()
        .filter(|row| row["scenario"] == "blocked")
        .filter_map(|row| row["list_names"].as_u64())
        .collect();
    sizes.dedup();
    for size in sizes {
        let _ = writeln!(out, "## Blocked names, {size}-name list, UDP\n");
        service_table(&mut out, &service(map, "blocked", "udp", size));
    }
    let allowed_list = largest_list(map, "allowed");
    for (transport, title) in
        [("udp", "UDP"), ("dot", "DNS over TLS"), ("doh", "DNS over HTTPS"), ("doq", "DNS over QUIC")]
    {
        let rows = service(map, "allowed", transport, allowed_list);
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## Allowed names, warm cache, {title}\n");
        service_table(&mut out, &rows);
    }

    out.push_str("## XDP program per packet (BPF_PROG_TEST_RUN)\n\n");
    let _ = writeln!(out, "Average of {} runs per frame; times in ns.\n", cell(&conditions["xdp_test_run_repeat"]));
    out.push_str("| rules | blocked A | allowed | non-DNS | map memory bytes | bytes per rule | publish s |\n");
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for row in rows(map, "xdp") {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&row["rules"]),
            cell(&row["blocked_a_ns"]),
            cell(&row["allowed_ns"]),
            cell(&row["non_dns_ns"]),
            cell(&row["map_memlock_bytes"]),
            cell(&row["kernel_bytes_per_rule"]),
            cell(&row["publish_seconds"]),
        );
    }
    out.push('\n');

    let compile = &results["compile"];
    let _ = writeln!(
        out,
        "List compilation (`compile_bench`, {} names): {} s to compile, {} s with the rule table, peak RSS {} bytes.\n",
        cell(&compile["names"]),
        cell(&compile["compile_seconds"]),
        cell(&compile["compile_and_table_seconds"]),
        cell(&compile["peak_rss_bytes"]),
    );

    out.push_str("## Memory and start-up\n\n");
    out.push_str("Start-up is the time from starting the process to its first answer for a listed name; ");
    out.push_str("resident memory is `VmRSS` then. Kernel memory is the `memlock` of dnsgate's BPF maps.\n\n");
    out.push_str("| names | server | start-up s | resident MiB | kernel bytes | kernel bytes per rule |\n");
    out.push_str("| ---: | --- | ---: | ---: | ---: | ---: |\n");
    for row in rows(map, "memory") {
        if let Some(error) = row.get("error") {
            let _ = writeln!(out, "| {} | {} | failed: {} | | | |", cell(&row["names"]), cell(&row["server"]), cell(error).replace('\n', " "));
            continue;
        }
        let rss = row["rss_bytes"].as_f64().map_or("–".into(), |bytes| format!("{:.1}", bytes / 1_048_576.0));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {rss} | {} | {} |",
            cell(&row["names"]),
            cell(&row["server"]),
            cell(&row["startup_seconds"]),
            cell(&row["kernel_bytes"]),
            cell(&row["kernel_bytes_per_rule"]),
        );
    }
    out.push('\n');

    let binary = &results["binary"];
    let _ = writeln!(
        out,
        "## Binary size\n\nRelease `dnsgate`: {} bytes, {} bytes stripped.\n",
        cell(&binary["bytes"]),
        cell(&binary["stripped_bytes"])
    );
    if let Some(openwrt) = binary["openwrt"].as_array() {
        out.push_str("Static musl builds in the OpenWrt packages (stripped; the aim is under 6 MiB):\n\n");
        out.push_str("| architecture | bytes | MiB |\n| --- | ---: | ---: |\n");
        for row in openwrt {
            let bytes = row["stripped_bytes"].as_u64().unwrap_or(0);
            let _ = writeln!(out, "| {} | {bytes} | {:.2} |", cell(&row["arch"]), bytes as f64 / (1024.0 * 1024.0));
        }
        out.push('\n');
    }

    out.push_str("## Not compared\n\n");
    let mut any = false;
    for row in rows(map, "peers_unavailable") {
        any = true;
        let _ = writeln!(out, "- {}: {}", cell(&row["server"]), cell(&row["reason"]));
    }
    for row in rows(map, "not_measured") {
        any = true;
        let _ = writeln!(out, "- {}: {}", cell(&row["what"]), cell(&row["reason"]));
    }
    if !any {
        out.push_str("Every peer was installed and measured.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, server: &str, qps: f64) -> Value {
        json!({ "scenario": scenario, "server": server, "transport": "udp", "list_names": 1000, "qps": qps })
    }

    #[test]
    fn ratio_divides_by_best_peer() {
        let rows = [row("blocked", "dnsgate", 300.0), row("blocked", "dnsmasq", 100.0), row("blocked", "unbound", 150.0)];
        let refs: Vec<&Value> = rows.iter().collect();
        assert_eq!(ratio_vs_best_peer(&refs), json!(2.0));
    }

    #[test]
    fn ratio_is_null_without_peers() {
        let rows = [row("blocked", "dnsgate", 300.0)];
        let refs: Vec<&Value> = rows.iter().collect();
        assert_eq!(ratio_vs_best_peer(&refs), Value::Null);
    }

    #[test]
    fn ratio_skips_failed_peers() {
        let failed = json!({ "scenario": "blocked", "server": "unbound", "error": "did not start" });
        let rows = [row("blocked", "dnsgate", 300.0), failed, row("blocked", "dnsmasq", 200.0)];
        let refs: Vec<&Value> = rows.iter().collect();
        assert_eq!(ratio_vs_best_peer(&refs), json!(1.5));
    }
}
