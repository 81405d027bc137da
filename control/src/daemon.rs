//! `dnsgate run`: the daemon.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    cli::{Cli, RunArgs},
    dataplane::{expand_interface, Attachment, Dataplane, LoadOptions},
    lists::{load_and_compile, Budget},
    policy::Policy,
};

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime failed")?;
    runtime.block_on(run_async(cli, args))
}

async fn run_async(cli: &Cli, args: &RunArgs) -> Result<()> {
    let mut sources = args.blocklists.clone();
    sources.extend(args.allowlists.iter().cloned());
    let compiled = load_and_compile(&sources, &Budget::default()).context("loading the lists failed")?;
    for report in &compiled.reports {
        info!(source = %report.name, format = %report.format, accepted = report.accepted, invalid = report.invalid.count, "list loaded");
    }
    let policy = Policy::new(compiled).context("compiling the lists failed")?;

    let options = LoadOptions {
        rule_buckets: args.rule_buckets.max(policy.table().buckets.len() as u32),
        ignore_kernel_btf: args.ignore_kernel_btf,
        pin_dir: Some(cli.pin_dir.clone()),
        object: None,
    };
    let mut dataplane = Dataplane::load(&options).context("loading the XDP program failed")?;
    dataplane.publish(policy.table()).context("publishing the rule set failed")?;
    dataplane
        .set_router_addresses(&interface_addresses(&args.lan_interfaces)?)
        .context("writing the router addresses failed")?;

    let mut attachments: Vec<Attachment> = Vec::new();
    let attached = attach_all(&mut dataplane, &args.lan_interfaces, &mut attachments);
    if let Err(error) = attached {
        detach_all(&mut dataplane, attachments);
        return Err(error);
    }
    info!(interfaces = ?attachments.iter().map(|a| (&a.interface, a.mode)).collect::<Vec<_>>(), "dnsgate is running");

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler failed")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler failed")?;
    tokio::select! {
        _ = interrupt.recv() => info!("SIGINT received, stopping"),
        _ = terminate.recv() => info!("SIGTERM received, stopping"),
    }
    detach_all(&mut dataplane, attachments);
    Ok(())
}

fn attach_all(dataplane: &mut Dataplane, interfaces: &[String], attachments: &mut Vec<Attachment>) -> Result<()> {
    for interface in interfaces {
        let ports = expand_interface(interface)?;
        if ports.is_empty() {
            warn!(interface, "the bridge has no member ports yet; nothing to attach to");
        }
        for port in ports {
            attachments.push(dataplane.attach(&port)?);
        }
    }
    Ok(())
}

fn detach_all(dataplane: &mut Dataplane, attachments: Vec<Attachment>) {
    for attachment in attachments {
        let interface = attachment.interface.clone();
        if let Err(error) = dataplane.detach(attachment) {
            warn!(interface, %error, "detaching failed");
        }
    }
}

/// The addresses of the LAN interfaces (for a bridge, the bridge's own),
/// which are the addresses the kernel filter answers for.
fn interface_addresses(interfaces: &[String]) -> Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    let all = nix::ifaddrs::getifaddrs().context("listing interface addresses failed")?;
    for entry in all {
        if !interfaces.contains(&entry.interface_name) {
            continue;
        }
        let Some(address) = entry.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(addresses)
}
