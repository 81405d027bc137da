//! The subcommands other than `run`. Each sends one request over the admin
//! socket and prints the result, as text or, with `--json`, as the JSON
//! the daemon returned.

mod client;
mod docs;
mod text;

use anyhow::Result;

use crate::{
    admin::{self, AdminError, Request},
    cli::Cli,
    dataplane::{read_pinned_counters, read_pinned_intercept_clients},
};

pub use self::client::dispatch;

/// `dnsgate stats`: the daemon's counters, or, when it is down, the kernel
/// counters from the pinned maps.
pub fn stats(cli: &Cli) -> Result<()> {
    match admin::call(&cli.socket, &Request::Stats) {
        Ok(value) => {
            if cli.json {
                println!("{value}");
            } else {
                text::print_stats(&value);
            }
            return Ok(());
        }
        Err(AdminError::NotRunning { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let dataplane = read_pinned_counters(&cli.pin_dir)?;
    let intercepted = read_pinned_intercept_clients(&cli.pin_dir)?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "controller": "down", "dataplane": dataplane, "intercepted_clients": intercepted })
        );
    } else {
        println!("controller: down (kernel counters read from the pinned maps in {})", cli.pin_dir.display());
        if let serde_json::Value::Object(counters) = serde_json::json!(dataplane) {
            text::print_kernel_counters(&counters);
        }
        if !intercepted.is_empty() {
            println!("clients that sent DNS to other resolvers (plain queries, encrypted attempts):");
            for client in &intercepted {
                println!("  {:<40} {:>8} {:>8}", client.client, client.queries, client.encrypted);
            }
        }
    }
    Ok(())
}

/// `dnsgate dnr`: the DHCP options of RFC 9463 for the configured
/// listeners, printed without a daemon.
pub fn dnr(cli: &Cli, args: &crate::cli::DnrArgs) -> Result<()> {
    use std::net::IpAddr;

    use anyhow::Context as _;

    use crate::{ddr, dnr};

    let explicit = cli.config.as_os_str() != crate::config::DEFAULT_CONFIG_PATH;
    let config = crate::config::Config::load(&cli.config, explicit)?;
    let mut addresses = args.addresses.clone();
    if addresses.is_empty() {
        let mut interfaces = config.dataplane.lan_interfaces.clone();
        interfaces.extend(args.lan_interfaces.iter().cloned());
        addresses = ddr::addresses::addresses_of(&interfaces);
        addresses.extend(config.tls.listen.iter().copied());
    }
    let v4: Vec<_> = addresses
        .iter()
        .filter_map(|address| match address {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let v6: Vec<_> = addresses
        .iter()
        .filter_map(|address| match address {
            IpAddr::V6(v6) if ddr::addresses::advertisable_v6(v6) => Some(*v6),
            _ => None,
        })
        .collect();
    let name = config.tls.resolver_name();
    let endpoints = ddr::endpoints(&config.server);
    let payloads = dnr::build_payloads(&name, &endpoints, &v4, &v6).context("building the DNR options failed")?;

    let dnsmasq_v4 = payloads.v4.as_deref().map(dnr::dnsmasq_v4_line).transpose()?;
    let dnsmasq_v6: Vec<String> = payloads.v6.iter().map(|payload| dnr::dnsmasq_v6_line(payload)).collect();
    let address_texts: Vec<String> = v4.iter().map(ToString::to_string).chain(v6.iter().map(ToString::to_string)).collect();
    let odhcpd: Vec<String> = endpoints
        .iter()
        .zip(1u16..)
        .map(|(endpoint, priority)| dnr::odhcpd_line(&args.uci_section, priority, &name, &address_texts, endpoint))
        .collect();
    if cli.json {
        let json = serde_json::json!({
            "resolver_name": name,
            "endpoints": endpoints,
            "dhcpv4_option_162": payloads.v4.as_deref().map(|payload| dnr::hex(payload, "")),
            "dhcpv6_option_144": payloads.v6.iter().map(|payload| dnr::hex(payload, "")).collect::<Vec<_>>(),
            "dnsmasq": dnsmasq_v4.iter().chain(dnsmasq_v6.iter()).collect::<Vec<_>>(),
            "odhcpd": odhcpd,
        });
        println!("{json}");
        return Ok(());
    }
    println!("# resolver name {name}, addresses {}", address_texts.join(" "));
    if let Some(payload) = &payloads.v4 {
        println!("# DHCPv4 option 162 ({} bytes)", payload.len());
        println!("{}", dnr::hex(payload, ""));
    }
    for (payload, endpoint) in payloads.v6.iter().zip(&endpoints) {
        println!("# DHCPv6 option 144, {} on port {} ({} bytes)", endpoint.protocol.alpn(), endpoint.port, payload.len());
        println!("{}", dnr::hex(payload, ""));
    }
    println!("# dnsmasq");
    for line in dnsmasq_v4.iter().chain(dnsmasq_v6.iter()) {
        println!("{line}");
    }
    println!("# odhcpd (versions with the dnr option)");
    for line in &odhcpd {
        println!("{line}");
    }
    Ok(())
}
