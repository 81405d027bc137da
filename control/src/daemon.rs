//! `dnsgate run`: the daemon. It loads the lists and the XDP program,
//! serves DNS, and answers the other subcommands on the admin socket
//! ([`controller`]); SIGHUP reloads the configuration, SIGINT and SIGTERM
//! stop it.
//!
//! Fail-open: the XDP program, its links and maps are pinned under
//! `--pin-dir`, so they keep filtering when the daemon exits or dies. A
//! restarted daemon adopts them without a gap. Only `dnsgate stop --detach`
//! or `dataplane.detach_on_stop = true` detaches the program at exit.

mod controller;
mod gate;
mod kernel_log;
mod lock;

use std::{net::IpAddr, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use self::{
    controller::{AdminHandler, ConfigSource, Controller, Parts},
    gate::{LoggedResolver, PausablePolicy},
};
use crate::{
    certs::CertManager,
    admin::{AdminServer, CustomRules},
    cli::{Cli, RunArgs},
    metrics::Latencies,
    querylog::QueryLog,
    config::Config,
    dataplane::{expand_interface, Attachment, Dataplane, InterceptOptions, LoadOptions, RestoreAttachment},
    policy::Policy,
    resolver::{
        server::{spawn_listeners, ListenAddrs},
        Resolver, UpstreamConfig,
    },
    shared_policy::SharedPolicy,
};

/// Detaches the XDP filter that a daemon which is no longer running left
/// pinned under `pin_dir`, by removing its pins. Returns whether anything
/// was pinned there. Fails while a running daemon has the pin directory
/// locked.
pub fn detach_left_filter(pin_dir: &std::path::Path) -> Result<bool> {
    if !pin_dir.is_dir() {
        return Ok(false);
    }
    let _lock = lock::PinLock::acquire(pin_dir)
        .context("the pin directory is locked by a running daemon; stop it with `dnsgate stop --detach` through its socket")?;
    // NOTE: the TC egress program is attached through netlink, not a pinned
    // link, so it stays on the LAN ports until the next `dnsgate run`
    // replaces it. Without the XDP program it still gives replies from the
    // fallback port, if one was set, source port 53.
    Ok(crate::dataplane::remove_pins(pin_dir))
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let source = ConfigSource {
        path: cli.config.clone(),
        explicit: cli.config.as_os_str() != crate::config::DEFAULT_CONFIG_PATH,
        overrides: args.clone(),
    };
    let config = source.load()?;
    // Before anything is bound or loaded, so a typo costs nothing.
    for name in &config.dataplane.lan_interfaces {
        if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
            return Err(crate::dataplane::DataplaneError::UnknownInterface { name: name.clone() }.into());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime failed")?;
    runtime.block_on(run_async(cli, source, config))
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

async fn run_async(cli: &Cli, source: ConfigSource, config: Config) -> Result<()> {
    // Bound first, so a second daemon fails before it touches the XDP
    // program of the first.
    let admin = Arc::new(AdminServer::bind(&cli.socket)?);
    let fetcher = crate::lists::HttpFetcher::new(config.state_dir().join("lists"));
    let compiled = crate::lists::load_and_compile_with(&config.lists, &config.budget, &fetcher)
        .context("loading the lists failed")?;
    for report in &compiled.reports {
        info!(source = %report.name, format = %report.format, accepted = report.accepted, invalid = report.invalid.count, "list loaded");
    }
    let mut policy = Policy::new(compiled).context("compiling the lists failed")?;
    let custom = CustomRules::load(&config.state_dir())?;
    let overlay = custom.overlay(&config.state_dir())?;
    if !custom.is_empty() {
        info!(block = custom.block.len(), allow = custom.allow.len(), "custom rules loaded");
    }
    policy.set_overlay(overlay.clone());
    let style = config.dataplane.block_style();

    let lan_addresses = interface_addresses(&config.dataplane.lan_interfaces)?;
    // One daemon per pin directory; a dead one's lock is gone with it.
    let mut _pin_lock = None;
    let mut dataplane = None;
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut restores: Vec<RestoreAttachment> = Vec::new();
    let mut event_buffers = Vec::new();
    if config.dataplane.xdp && !config.dataplane.lan_interfaces.is_empty() {
        let options = LoadOptions {
            rule_buckets: config.dataplane.rule_buckets.max(policy.table().buckets.len() as u32),
            ignore_kernel_btf: config.dataplane.ignore_kernel_btf,
            pin_dir: Some(cli.pin_dir.clone()),
            object: None,
        };
        crate::dataplane::prepare_pin_dir(&cli.pin_dir).context("preparing the pin directory failed")?;
        _pin_lock = Some(lock::PinLock::acquire(&cli.pin_dir)?);
        let mut loaded = Dataplane::load(&options).context("loading the XDP program failed")?;
        let mut dataplane_config = style.dataplane_config();
        // Adopted maps may hold custom rules a running program reads: keep
        // their flag until the overlay below is rewritten.
        dataplane_config.flags |= loaded.config().flags & dnsgate_common::maps::CONFIG_HAS_OVERLAY;
        loaded.set_config(dataplane_config).context("writing the dataplane configuration failed")?;
        loaded.publish(policy.table()).context("publishing the rule set failed")?;
        let overlay: Vec<_> = overlay.into_iter().collect();
        loaded.set_overlay(&overlay).context("writing the custom rules failed")?;
        loaded.set_router_addresses(&lan_addresses).context("writing the router addresses failed")?;
        let (rate, burst) = config.dataplane.rate_limit().unwrap_or((0, 0));
        loaded.set_rate_limit(rate, burst).context("writing the rate limit failed")?;
        if rate != 0 {
            info!(rate, burst, "rate limiting plain DNS queries per client");
        }
        let (fallback_port, fallback_after) = config.dataplane.fallback().unwrap_or((0, 1));
        loaded
            .set_fallback(fallback_port, std::time::Duration::from_secs(u64::from(fallback_after)))
            .context("writing the fallback settings failed")?;
        if fallback_port != 0 {
            info!(
                port = fallback_port,
                after_secs = fallback_after,
                "while this controller is down, allowed plain queries go to the fallback resolver"
            );
        }
        if config.querylog.kernel_answers {
            // The query log matters less than DNS: without the buffers the
            // daemon runs on and the kernel answers go unlogged.
            match loaded.open_events(kernel_log::EVENT_PAGES, config.querylog.kernel_answers_per_second) {
                Ok(buffers) => event_buffers = buffers,
                Err(error) => warn!(%error, "the queries answered in the kernel are not logged"),
            }
        }
        if let Err(error) = attach_all(&mut loaded, &config.dataplane.lan_interfaces, &mut attachments) {
            undo_attach(&mut loaded, attachments);
            return Err(error);
        }
        loaded.remove_stale_links(&attachments);
        if let Err(error) = start_intercept(&mut loaded, &config, &lan_addresses, &mut restores) {
            stop_intercept(&mut loaded, restores);
            undo_attach(&mut loaded, attachments);
            return Err(error);
        }
        if attachments.iter().any(|attachment| attachment.adopted) {
            info!("took over the XDP filter left attached by a previous controller; it kept filtering meanwhile");
        }
        dataplane = Some(loaded);
    } else {
        if config.dataplane.lan_interfaces.is_empty() {
            warn!("no LAN interface configured: the XDP filter is not attached and user space judges every query");
        }
        if let Some((port, _)) = config.dataplane.fallback() {
            warn!(
                port,
                "dataplane.fallback_port is set but the XDP program is not attached (--no-xdp, xdp = false or no LAN \
                 interface), so nothing sends queries to the fallback while dnsgate is down"
            );
        }
        // A filter left attached by an earlier run would keep applying old
        // rules: without XDP nothing may filter in the kernel.
        if cli.pin_dir.is_dir() {
            match lock::PinLock::acquire(&cli.pin_dir) {
                Ok(lock) => {
                    if crate::dataplane::remove_pins(&cli.pin_dir) {
                        info!(pin_dir = %cli.pin_dir.display(), "XDP is off: detached the filter an earlier run left attached");
                    }
                    _pin_lock = Some(lock);
                }
                Err(error) => warn!(%error, "leaving the pinned XDP filter alone"),
            }
        }
    }

    let shared = Arc::new(SharedPolicy::new(policy, style));
    let gate = Arc::new(PausablePolicy::new(shared.clone()));
    let designated = crate::ddr::designated_from_config(&config)?;
    let resolver_config = if config.ddr.follow_upstream_redirections {
        crate::redirect::follow_redirections(&config.resolver).await.0
    } else {
        config.resolver.clone()
    };
    let resolver = Arc::new(
        Resolver::with_designated_resolvers(&resolver_config, gate.clone(), designated)
            .context("configuring the resolver failed")?,
    );
    resolver.set_doh_bypass(
        controller::load_doh_bypass(&config).context("loading the lists of intercept.doh_resolver_lists failed")?,
    );
    let query_log = Arc::new(QueryLog::new(config.querylog.capacity, config.querylog.client_privacy));
    let event_readers = kernel_log::spawn(event_buffers, query_log.clone());
    let latencies = Arc::new(Latencies::default());
    let handler = Arc::new(LoggedResolver::new(resolver.clone(), query_log.clone(), latencies.clone()));
    if config.resolver.upstreams.is_empty() {
        warn!("no upstream resolver configured: blocking works, but allowed names get SERVFAIL until one is set with --upstream or [[resolver.upstreams]] in the configuration");
    }

    let mut serve_ips: Vec<IpAddr> = lan_addresses.iter().copied().filter(|ip| servable(ip)).collect();
    serve_ips.extend(config.tls.listen.iter().copied());
    serve_ips.sort();
    serve_ips.dedup();
    let certificates = Arc::new(
        CertManager::load(&config.tls, &config.state_dir(), &serve_ips).context("preparing the TLS certificate failed")?,
    );
    crate::ddr::log_discovery(&serve_ips, &certificates.info());
    let _certificate_watcher = (config.tls.reload_interval_secs > 0).then(|| {
        certificates.clone().spawn_watcher(std::time::Duration::from_secs(config.tls.reload_interval_secs))
    });
    let tls = certificates.server_tls();
    let addresses = ListenAddrs::on_ips(&config.server, &serve_ips);
    let listeners = spawn_listeners(config.server.clone(), addresses, Some(tls), handler)
        .await
        .context("starting the DNS listeners failed")?;
    let metrics = config.metrics.clone();
    let heartbeat_task = match dataplane.as_ref().map(Dataplane::heartbeat).transpose() {
        Ok(heartbeat) => heartbeat.map(spawn_heartbeat),
        // Without the heartbeat the fallback would take over while this
        // controller serves.
        Err(error) if config.dataplane.fallback().is_some() => {
            return Err(error).context("opening the heartbeat of the fallback failed");
        }
        Err(_) => None,
    };
    let controller = Arc::new(Controller::new(Parts {
        source,
        config,
        dataplane,
        attachments: attachments.iter().map(|attachment| (attachment.interface.clone(), attachment.mode)).collect(),
        shared,
        gate,
        resolver,
        query_log,
        latencies,
        custom,
        socket: admin.path().to_owned(),
    }));
    controller.set_listeners(listeners);
    let admin_task = {
        let handler = Arc::new(AdminHandler(controller.clone()));
        let admin = admin.clone();
        tokio::spawn(async move { admin.serve(handler).await })
    };
    let metrics_task = start_metrics(&metrics, &controller).await;
    info!(
        addresses = ?serve_ips,
        interfaces = ?attachments.iter().map(|a| (&a.interface, a.mode)).collect::<Vec<_>>(),
        "dnsgate is running"
    );

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler failed")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler failed")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler failed")?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => { info!("SIGINT received, stopping"); break; }
            _ = terminate.recv() => { info!("SIGTERM received, stopping"); break; }
            _ = controller.stopped() => break,
            _ = hangup.recv() => {
                info!("SIGHUP received, reloading the configuration");
                let reloading = controller.clone();
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => warn!(%error, "reload on SIGHUP failed"),
                    Err(error) => warn!(%error, "reload on SIGHUP failed"),
                }
            }
        }
    }
    admin_task.abort();
    if let Some(task) = heartbeat_task {
        task.abort();
    }
    for task in event_readers {
        task.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(listeners) = controller.take_listeners() {
        listeners.shutdown().await;
    }
    let detach = controller.detach_requested() || controller.config().dataplane.detach_on_stop;
    if let Some(mut dataplane) = controller.take_dataplane() {
        if detach {
            stop_intercept(&mut dataplane, restores);
            detach_all(&mut dataplane, attachments);
            dataplane.unpin();
        } else {
            for attachment in restores {
                dataplane.release_restore(attachment);
            }
            for attachment in attachments {
                dataplane.release(attachment);
            }
            info!(
                pin_dir = %cli.pin_dir.display(),
                "the XDP filter stays attached (fail-open); `dnsgate stop --detach` removes it"
            );
        }
    }
    // The socket file goes last: `dnsgate stop` waits for it to vanish.
    drop(admin);
    Ok(())
}

/// How often the controller tells the kernel it is alive; the fallback
/// waits at least a second (`dataplane.fallback_after_secs`).
const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Writes the heartbeat of the fallback until aborted.
fn spawn_heartbeat(mut heartbeat: crate::dataplane::Heartbeat) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match heartbeat.beat() {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    warn!(%error, "writing the heartbeat failed: the fallback resolver may take over queries while dnsgate runs");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}

/// Binds the Prometheus endpoint. A failure is logged and the daemon runs
/// on without it, because DNS matters more than its metrics.
async fn start_metrics(settings: &crate::config::MetricsSettings, controller: &Arc<Controller>) -> Option<tokio::task::JoinHandle<()>> {
    if !settings.enabled {
        return None;
    }
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(address = %settings.listen, %error, "binding the metrics endpoint failed; metrics are off until a restart");
            return None;
        }
    };
    let address = listener.local_addr().unwrap_or(settings.listen);
    controller.set_metrics_address(address);
    info!(%address, "metrics endpoint listening");
    let scraped = controller.clone();
    Some(tokio::spawn(crate::metrics::serve(listener, move || scraped.metrics_text())))
}

/// Addresses a listener can bind without a scope: link-local IPv6
/// addresses need one and are never advertised.
fn servable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
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

/// Writes the interception settings and, when plain DNS is intercepted or
/// the fallback is on, attaches the egress program that restores reply
/// sources to every LAN port. Redirected queries go to the first IPv4 address and the first
/// routable IPv6 address of the LAN interfaces.
fn start_intercept(
    dataplane: &mut Dataplane,
    config: &Config,
    lan_addresses: &[IpAddr],
    restores: &mut Vec<RestoreAttachment>,
) -> Result<()> {
    let settings = &config.intercept;
    let router_v4 = lan_addresses.iter().find_map(|address| match address {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    // Link-local addresses are left out because the listeners do not bind them.
    let router_v6 = lan_addresses.iter().find_map(|address| match address {
        IpAddr::V6(v6) if servable(address) => Some(*v6),
        _ => None,
    });
    if settings.enabled && router_v4.is_none() {
        warn!("the LAN interfaces have no IPv4 address: DNS sent to other resolvers over IPv4 is not intercepted");
    }
    if settings.enabled && router_v6.is_none() {
        warn!("the LAN interfaces have no routable IPv6 address: DNS sent to other resolvers over IPv6 is not intercepted");
    }
    let mut options = InterceptOptions {
        dns: settings.enabled,
        refuse_dot: settings.refuse_dot,
        drop_doq: settings.drop_doq,
        router_v4,
        router_v6,
        exempt: settings.exempt_networks()?,
    };
    // The TC program goes on before the XDP program starts redirecting:
    // without it, replies to redirected queries would leave with the
    // router's address and clients would drop them. The fallback needs it
    // as well, for replies leaving from the fallback port.
    let intercepting = settings.enabled && (router_v4.is_some() || router_v6.is_some());
    let fallback = config.dataplane.fallback().is_some();
    if intercepting || fallback {
        match attach_restores(dataplane, config, restores) {
            Ok(()) if intercepting => {
                info!(?router_v4, ?router_v6, exempt = ?options.exempt, "intercepting DNS sent to other resolvers")
            }
            Ok(()) => {}
            Err(error) => {
                for attachment in restores.drain(..) {
                    if let Err(error) = dataplane.detach_restore(attachment) {
                        warn!(error = %error, "detaching a TC egress program failed");
                    }
                }
                warn!(
                    error = format!("{error:#}"),
                    "DNS sent to other resolvers is not intercepted and the fallback is off because the TC egress \
                     program could not be attached; load the sch_ingress and cls_bpf kernel modules \
                     (kmod-sched-core and kmod-sched-bpf on OpenWrt) and restart dnsgate"
                );
                options.dns = false;
                dataplane
                    .set_fallback(0, std::time::Duration::from_secs(1))
                    .context("turning the fallback off failed")?;
            }
        }
    }
    dataplane.set_intercept(&options).context("writing the interception settings failed")?;
    Ok(())
}

/// Attaches the TC egress program that restores reply addresses to every
/// LAN port.
fn attach_restores(dataplane: &mut Dataplane, config: &Config, restores: &mut Vec<RestoreAttachment>) -> Result<()> {
    for interface in &config.dataplane.lan_interfaces {
        for port in expand_interface(interface)? {
            restores.push(dataplane.attach_restore(&port)?);
        }
    }
    Ok(())
}

fn stop_intercept(dataplane: &mut Dataplane, restores: Vec<RestoreAttachment>) {
    for attachment in restores {
        let interface = attachment.interface.clone();
        if let Err(error) = dataplane.detach_restore(attachment) {
            warn!(interface, %error, "detaching the TC egress program failed");
        }
    }
}

/// Undoes a failed start: detaches what this run attached and leaves what
/// it adopted from a previous controller attached, as it was. Maps this run
/// created are unpinned when nothing uses them.
fn undo_attach(dataplane: &mut Dataplane, attachments: Vec<Attachment>) {
    let adopted = dataplane.adopted() || attachments.iter().any(|attachment| attachment.adopted);
    if !adopted {
        detach_all(dataplane, attachments);
        dataplane.unpin();
        return;
    }
    for attachment in attachments {
        if attachment.adopted {
            dataplane.release(attachment);
        } else {
            let interface = attachment.interface.clone();
            if let Err(error) = dataplane.detach(attachment) {
                warn!(interface, %error, "detaching failed");
            }
        }
    }
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
