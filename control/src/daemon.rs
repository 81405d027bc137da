//! `dnsgate run`: the daemon.

use std::{net::IpAddr, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    cli::{Cli, RunArgs},
    config::Config,
    dataplane::{expand_interface, Attachment, Dataplane, LoadOptions},
    lists::load_and_compile,
    policy::Policy,
    resolver::{
        server::{generate_self_signed, spawn_listeners, ListenAddrs, ServerTls, TlsMaterial},
        Resolver, UpstreamConfig,
    },
    shared_policy::SharedPolicy,
};

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let explicit = args.config.as_os_str() != crate::config::DEFAULT_CONFIG_PATH;
    let mut config = Config::load(&args.config, explicit)?;
    merge_arguments(&mut config, args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime failed")?;
    runtime.block_on(run_async(cli, config))
}

/// Command-line options add to or override the file's settings.
fn merge_arguments(config: &mut Config, args: &RunArgs) {
    config.dataplane.lan_interfaces.extend(args.lan_interfaces.iter().cloned());
    config.lists.extend(args.blocklists.iter().cloned());
    config.lists.extend(args.allowlists.iter().cloned());
    config.resolver.upstreams.extend(args.upstreams.iter().cloned().map(UpstreamConfig::new));
    config.tls.listen.extend(args.listen.iter().copied());
    if let Some(dir) = &args.state_dir {
        config.state_dir = Some(dir.clone());
    }
    if args.no_xdp {
        config.dataplane.xdp = false;
    }
    if args.ignore_kernel_btf {
        config.dataplane.ignore_kernel_btf = true;
    }
    if let Some(buckets) = args.rule_buckets {
        config.dataplane.rule_buckets = buckets;
    }
}

async fn run_async(cli: &Cli, config: Config) -> Result<()> {
    let compiled = load_and_compile(&config.lists, &config.budget).context("loading the lists failed")?;
    for report in &compiled.reports {
        info!(source = %report.name, format = %report.format, accepted = report.accepted, invalid = report.invalid.count, "list loaded");
    }
    let policy = Policy::new(compiled).context("compiling the lists failed")?;
    let style = config.dataplane.block_style();

    let lan_addresses = interface_addresses(&config.dataplane.lan_interfaces)?;
    let mut dataplane = None;
    let mut attachments: Vec<Attachment> = Vec::new();
    if config.dataplane.xdp && !config.dataplane.lan_interfaces.is_empty() {
        let options = LoadOptions {
            rule_buckets: config.dataplane.rule_buckets.max(policy.table().buckets.len() as u32),
            ignore_kernel_btf: config.dataplane.ignore_kernel_btf,
            pin_dir: Some(cli.pin_dir.clone()),
            object: None,
        };
        let mut loaded = Dataplane::load(&options).context("loading the XDP program failed")?;
        loaded.set_config(style.dataplane_config()).context("writing the dataplane configuration failed")?;
        loaded.publish(policy.table()).context("publishing the rule set failed")?;
        loaded.set_router_addresses(&lan_addresses).context("writing the router addresses failed")?;
        if let Err(error) = attach_all(&mut loaded, &config.dataplane.lan_interfaces, &mut attachments) {
            detach_all(&mut loaded, attachments);
            return Err(error);
        }
        dataplane = Some(loaded);
    } else if config.dataplane.lan_interfaces.is_empty() {
        warn!("no LAN interface configured: the XDP filter is not attached and user space judges every query");
    }

    let shared = Arc::new(SharedPolicy::new(policy, style));
    let resolver = Arc::new(Resolver::new(&config.resolver, shared.clone()).context("configuring the resolver failed")?);
    if config.resolver.upstreams.is_empty() {
        warn!("no upstream resolver configured: blocking works, allowed names get SERVFAIL until one is set with --upstream");
    }

    let mut serve_ips: Vec<IpAddr> = lan_addresses.iter().copied().filter(|ip| servable(ip)).collect();
    serve_ips.extend(config.tls.listen.iter().copied());
    serve_ips.sort();
    serve_ips.dedup();
    let tls = ServerTls::new(load_tls_material(&config, &serve_ips)?).context("configuring TLS failed")?;
    let addresses = ListenAddrs::on_ips(&config.server, &serve_ips);
    let listeners = spawn_listeners(config.server.clone(), addresses, Some(tls), resolver.clone())
        .await
        .context("starting the DNS listeners failed")?;
    info!(
        addresses = ?serve_ips,
        interfaces = ?attachments.iter().map(|a| (&a.interface, a.mode)).collect::<Vec<_>>(),
        "dnsgate is running"
    );

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler failed")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler failed")?;
    tokio::select! {
        _ = interrupt.recv() => info!("SIGINT received, stopping"),
        _ = terminate.recv() => info!("SIGTERM received, stopping"),
    }
    listeners.shutdown().await;
    if let Some(mut dataplane) = dataplane {
        detach_all(&mut dataplane, attachments);
    }
    Ok(())
}

/// Addresses a listener can bind without a scope: link-local IPv6
/// addresses need one and are never advertised.
fn servable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The configured certificate, or the generated one kept in the state
/// directory (created on first start, with mode 0600).
fn load_tls_material(config: &Config, ips: &[IpAddr]) -> Result<TlsMaterial> {
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        return TlsMaterial::from_pem_files(cert, key)
            .with_context(|| format!("loading the certificate {} failed", cert.display()));
    }
    let dir = config.state_dir().join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return TlsMaterial::from_pem_files(&cert_path, &key_path)
            .with_context(|| format!("loading the generated certificate {} failed", cert_path.display()));
    }
    let name = config.tls.resolver_name.clone().unwrap_or_else(|| "dnsgate.lan".to_owned());
    let (cert_pem, key_pem) = generate_self_signed(&[name], ips).context("generating a certificate failed")?;
    write_private(&dir, &cert_path, &cert_pem)?;
    write_private(&dir, &key_path, &key_pem)?;
    info!(path = %cert_path.display(), "generated a self-signed certificate");
    TlsMaterial::from_pem(&cert_pem, &key_pem).context("loading the generated certificate failed")
}

fn write_private(dir: &Path, path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {} failed", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {} failed", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).with_context(|| format!("writing {} failed", path.display()))
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
