//! Text forms of the daemon's JSON replies.

use serde_json::Value;

use crate::{lists::ListRole, querylog::QueryEntry};

/// `block` or `allow`.
pub fn role_name(role: ListRole) -> &'static str {
    match role {
        ListRole::Block => "block",
        ListRole::Allow => "allow",
    }
}

/// Formats milliseconds since the Unix epoch as UTC `YYYY-MM-DD hh:mm:ss.mmm`.
pub fn format_time_ms(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}", rest / 3600, rest / 60 % 60, rest % 60, ms % 1000)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date, by
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints `status`.
pub fn print_status(value: &Value) {
    println!("dnsgate {} (up {} s)", show(&value["version"]), show(&value["uptime_seconds"]));
    let dataplane = &value["dataplane"];
    if dataplane["attached"].as_bool() == Some(true) {
        let interfaces: Vec<String> = dataplane["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|interface| format!("{} ({})", show(&interface["name"]), show(&interface["mode"])))
            .collect();
        println!(
            "dataplane:  attached to {}; program id {}, active rule set {}",
            interfaces.join(", "),
            show(&dataplane["program_id"]),
            show(&dataplane["active_set"])
        );
        let fallback = &dataplane["fallback"];
        if fallback.is_object() {
            println!(
                "fallback:   allowed plain queries go to port {} when this controller has been silent for {} s",
                show(&fallback["port"]),
                show(&fallback["after_seconds"])
            );
        } else {
            println!("fallback:   off (while the controller is down, only blocked names are answered)");
        }
    } else {
        println!("dataplane:  not attached (user space judges every query)");
    }
    if let Some(until) = value["paused_until_ms"].as_u64() {
        println!("blocking:   paused until {}", format_time_ms(until));
    } else {
        println!("blocking:   on");
    }
    let listeners = &value["listeners"];
    for (key, name) in [("udp", "DNS/UDP"), ("tcp", "DNS/TCP"), ("tls", "DoT"), ("quic", "DoQ"), ("https", "DoH")] {
        let addresses: Vec<String> = listeners[key].as_array().into_iter().flatten().map(show).collect();
        if !addresses.is_empty() {
            println!("listening:  {name:<8} {}", addresses.join(", "));
        }
    }
    let rules = &value["rules"];
    println!(
        "rules:      {} in the kernel table, {} custom block, {} custom allow",
        show(&rules["kernel"]),
        show(&rules["custom_block"]),
        show(&rules["custom_allow"])
    );
    for list in value["lists"].as_array().into_iter().flatten() {
        println!(
            "  list {} ({}): {} kernel + {} user-space rules, {} invalid lines, updated {} s ago",
            show(&list["source"]),
            show(&list["role"]),
            show(&list["kernel_rules"]),
            show(&list["user_space_rules"]),
            show(&list["invalid"]),
            show(&list["age_seconds"])
        );
    }
    let upstreams = match value["upstream_status"].as_str() {
        Some("not_configured") => "none configured (allowed names that are not local get SERVFAIL)",
        Some("untested") => "not used yet",
        Some("healthy") => "healthy",
        Some("degraded") => "degraded (some are resting after failures)",
        Some("down") => "down (all are resting after failures; answers come from the cache or are SERVFAIL)",
        _ => "-",
    };
    println!("upstreams:  {upstreams}");
    for upstream in value["upstreams"].as_array().into_iter().flatten() {
        let rtt = upstream["rtt_ms"].as_f64().map_or_else(|| "-".to_owned(), |rtt| format!("{rtt:.1} ms"));
        let health = match (upstream["healthy"].as_bool(), upstream["queries"].as_u64()) {
            (Some(true), Some(0)) => "not used yet",
            (Some(true), _) => "healthy",
            _ => "resting",
        };
        println!("  {} {health}, rtt {rtt}", show(&upstream["url"]));
    }
    let certificate = &value["certificate"];
    match certificate["not_after_unix"].as_i64() {
        Some(expiry) => println!(
            "certificate: {} ({}), expires {}",
            show(&certificate["mode"]),
            show(&certificate["path"]),
            format_time_ms(expiry.max(0) as u64 * 1000)
        ),
        None => println!("certificate: {} ({}): {}", show(&certificate["mode"]), show(&certificate["path"]), show(&certificate["error"])),
    }
    for entry in certificate["discovery"].as_array().into_iter().flatten() {
        println!("  DDR at {}: {}", show(&entry["address"]), show(&entry["explanation"]));
    }
    println!("metrics:    {}", show(&value["metrics"]));
}

/// Prints `stats`.
pub fn print_stats(value: &Value) {
    println!("controller: running");
    if let Some(dataplane) = value["dataplane"].as_object() {
        print_kernel_counters(dataplane);
    } else {
        println!("dataplane:  not loaded");
    }
    let resolver = &value["resolver"];
    let queries = &resolver["queries"];
    println!("resolver:");
    println!(
        "  queries            udp {} tcp {} tls {} quic {} https {}",
        show(&queries["udp"]),
        show(&queries["tcp"]),
        show(&queries["tls"]),
        show(&queries["quic"]),
        show(&queries["https"])
    );
    println!("  cache hits         {}", show(&resolver["cache"]["hits"]));
    println!("  blocked            {}", show(&resolver["blocked"]));
    println!("  blocked by CNAME   {}", show(&resolver["blocked_cname"]));
    println!("  upstream errors    {}", show(&resolver["upstream_errors"]));
    println!("  servfail           {}", show(&resolver["servfail"]));
}

/// Prints the kernel counters of `stats`, each with what it counts.
pub fn print_kernel_counters(counters: &serde_json::Map<String, Value>) {
    println!("dataplane:");
    for (name, count) in counters {
        println!("  {name:<22} {:>12}  {}", show(count), counter_meaning(name));
    }
}

/// Says in a few words what a kernel counter of `stats` counts.
fn counter_meaning(name: &str) -> &'static str {
    match name {
        "seen" => "DNS queries to the router that the filter read",
        "blocked" => "answered in the kernel as blocked",
        "allowed" => "allowed, passed on to dnsgate",
        "passed" => "frames that are not DNS queries for the router (all other traffic)",
        "malformed" => "port-53 frames that could not be parsed, passed on",
        "tx_failed" => "blocked, but passed on: no room to build the answer",
        "intercepted" => "queries to other resolvers handled as if sent to the router",
        "redirected" => "intercepted queries sent on to dnsgate",
        "replies_restored" => "replies given back the address the client asked",
        "dot_refused" => "DoT connections to other resolvers refused",
        "doq_dropped" => "DoQ datagrams to other resolvers dropped",
        "events_lost" => "kernel answers missing from the query log (ring full)",
        "events_skipped" => "kernel answers left out of the query log (over its rate)",
        "rate_limited" => "queries dropped by the per-client rate limit",
        "fallback" => "queries sent to the fallback resolver while dnsgate was down",
        "fallback_port_dropped" => "datagrams sent straight to the fallback port, dropped",
        "fallback_replies" => "fallback replies given source port 53",
        _ => "",
    }
}

/// Prints `query`.
pub fn print_query(value: &Value) {
    let explanation = &value["explanation"];
    let decision = &explanation["decision"];
    let mut line = format!("{}: {}", show(&explanation["name"]), show(&decision["action"]));
    if value["paused"].as_bool() == Some(true) {
        line.push_str(" (blocking is paused, so it is resolved)");
    }
    println!("{line}");
    if value["kernel_filter"].as_bool() == Some(false) {
        println!("  kernel verdict: - (no XDP filter is loaded; user space applies the same rules)");
    } else {
        println!("  kernel verdict: {}", show(&explanation["kernel_verdict"]));
    }
    for rule in explanation["rules"].as_array().into_iter().flatten() {
        let place = match rule["line"].as_u64() {
            Some(line) => format!("{}:{line}", show(&rule["source"])),
            None => show(&rule["source"]),
        };
        println!(
            "  rule {} ({}, {}, {})",
            show(&rule["text"]),
            place,
            show(&rule["kind"]),
            show(&rule["status"])
        );
    }
    let answer = &value["answer"];
    match answer["rcode"].as_str() {
        Some(rcode) => {
            println!("  answer: {rcode}");
            for record in answer["records"].as_array().into_iter().flatten() {
                println!("    {}", show(record));
            }
        }
        None => println!("  answer: {}", show(&answer["error"])),
    }
}

/// Prints `lists show`.
pub fn print_lists(value: &Value) {
    for list in value["lists"].as_array().into_iter().flatten() {
        println!("{} ({}, {})", show(&list["name"]), show(&list["role"]), show(&list["format"]));
        println!(
            "  {} lines, {} rules read, {} in the kernel, {} in user space, {} duplicates",
            show(&list["lines"]),
            show(&list["accepted"]),
            show(&list["kernel_rules"]),
            show(&list["user_space_rules"]),
            show(&list["duplicates"])
        );
        println!("  {} invalid, {} unsupported", show(&list["invalid"]["count"]), show(&list["unsupported"]["count"]));
        for issue in list["invalid"]["examples"].as_array().into_iter().flatten() {
            println!("    line {}: {}", show(&issue["line"]), show(&issue["reason"]));
        }
        if let Some(modified) = list["last_update"].as_u64() {
            println!("  file modified {}", format_time_ms(modified * 1000));
        }
    }
}

/// Prints one query-log entry, as a line of text or of JSON.
pub fn print_log_entry(entry: &QueryEntry, json: bool) {
    if json {
        println!("{}", serde_json::to_string(entry).expect("entries always serialize"));
        return;
    }
    // The kernel answers without a measurable latency; say who answered.
    let latency = if entry.kernel {
        "kernel".to_owned()
    } else {
        format!("{:.3} ms", entry.latency_us as f64 / 1000.0)
    };
    println!(
        "{} {:<39} {:<40} {:<6} {:<5} {:<9} {:<8} {latency}",
        format_time_ms(entry.time_ms),
        entry.client.as_deref().unwrap_or("-"),
        entry.name,
        entry.qtype,
        entry.transport,
        entry.decision,
        entry.rcode.as_deref().unwrap_or("-"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_times_format_as_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time_ms(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(format_time_ms(1_767_225_599_000), "2025-12-31 23:59:59.000");
    }
}
