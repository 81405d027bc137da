//! The running daemon's state and what each admin request does to it:
//! custom rules, pause, reload, and the reports `status`, `stats`, `query`,
//! `lists show` and `log` print.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use dnsgate_common::{
    maps::CONFIG_BLOCKING,
    rules::{RuleValue, DEFAULT_CLIENT_GROUPS},
};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};
use tracing::{info, warn};

use super::gate::PausablePolicy;
use crate::{
    admin::{CustomRules, Handler, Request, Response, RuleList, MAX_PAUSE_SECS},
    certs::{CertInfo, CertMode},
    cli::RunArgs,
    config::Config,
    dataplane::{AttachMode, Dataplane},
    lists::{load_and_compile_with, load_names, HttpFetcher, ListError},
    metrics::{self, Latencies},
    policy::Policy,
    querylog::{epoch_millis, QueryEntry, QueryLog},
    resolver::{
        server::{Listeners, Request as DnsRequest, TlsMaterial, Transport},
        DohBypassNames, Resolver,
    },
    shared_policy::SharedPolicy,
};

/// Top-level configuration keys a reload applies; a change anywhere else
/// takes effect at the next start.
const RELOADABLE_KEYS: [&str; 2] = ["lists", "budget"];

/// Keys of `[intercept]` a reload applies.
const RELOADABLE_INTERCEPT_KEYS: [&str; 1] = ["doh_resolver_lists"];

/// Keys of `[dataplane]` a reload applies.
const RELOADABLE_DATAPLANE_KEYS: [&str; 8] = [
    "block_mode",
    "block_ttl",
    "sinkhole_v4",
    "sinkhole_v6",
    "detach_on_stop",
    "rate_limit_qps",
    "rate_limit_burst",
    "fallback_after_secs",
];

/// The origin of the daemon's configuration, so a reload reads it the same
/// way as the start did.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The configuration file.
    pub path: PathBuf,
    /// The file was named on the command line, so it must exist.
    pub explicit: bool,
    /// The `run` options layered over the file.
    pub overrides: RunArgs,
}

impl ConfigSource {
    /// Reads the file and applies the `run` options.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut config = Config::load(&self.path, self.explicit)?;
        super::merge_arguments(&mut config, &self.overrides);
        // The options get the same checks as the file's values.
        config.validate()?;
        Ok(config)
    }
}

/// Pause bookkeeping: when blocking resumes, and a generation number so a
/// stale resume timer does nothing.
#[derive(Debug, Default)]
struct PauseState {
    until: Option<SystemTime>,
    generation: u64,
}

/// The daemon state that admin requests read and change.
pub struct Controller {
    source: ConfigSource,
    config: Mutex<Config>,
    /// The configuration the daemon started with: keys a reload cannot
    /// apply keep its values until the next start.
    started_config: Config,
    dataplane: Mutex<Option<Dataplane>>,
    attachments: Vec<(String, AttachMode)>,
    shared: Arc<SharedPolicy>,
    gate: Arc<PausablePolicy>,
    resolver: Arc<Resolver>,
    listeners: Mutex<Option<Listeners>>,
    query_log: Arc<QueryLog>,
    latencies: Arc<Latencies>,
    custom: Mutex<CustomRules>,
    rebuild: Mutex<()>,
    pause: Mutex<PauseState>,
    started: Instant,
    stop: Notify,
    detach: std::sync::atomic::AtomicBool,
    socket: PathBuf,
    metrics_address: Mutex<Option<SocketAddr>>,
}

/// The pieces the daemon hands to the controller once they run.
pub struct Parts {
    /// How to re-read the configuration.
    pub source: ConfigSource,
    /// The configuration in force.
    pub config: Config,
    /// The loaded program, when the XDP filter is in use.
    pub dataplane: Option<Dataplane>,
    /// Interfaces and modes the program is attached to.
    pub attachments: Vec<(String, AttachMode)>,
    /// The policy the resolver reads.
    pub shared: Arc<SharedPolicy>,
    /// The pause switch in front of it.
    pub gate: Arc<PausablePolicy>,
    /// The resolver.
    pub resolver: Arc<Resolver>,
    /// The query log.
    pub query_log: Arc<QueryLog>,
    /// Latency histograms.
    pub latencies: Arc<Latencies>,
    /// The custom rules loaded at start.
    pub custom: CustomRules,
    /// The admin socket path.
    pub socket: PathBuf,
}

/// Loads the names of `[intercept] doh_resolver_lists`, fetching URL
/// sources into the list cache of the state directory.
pub fn load_doh_bypass(config: &Config) -> Result<DohBypassNames, ListError> {
    let sources = config.intercept.doh_resolver_sources();
    if sources.is_empty() {
        return Ok(DohBypassNames::default());
    }
    let fetcher = HttpFetcher::new(config.state_dir().join("lists"));
    let loaded = load_names(&sources, &fetcher)?;
    for report in &loaded.reports {
        info!(source = %report.name, format = %report.format, accepted = report.accepted, invalid = report.invalid.count, "DoH resolver list loaded");
    }
    let names = DohBypassNames::new(loaded.names.iter());
    info!(names = names.len(), "DoH resolver names answered NXDOMAIN");
    Ok(names)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Controller {
    /// Takes over the running pieces.
    pub fn new(parts: Parts) -> Self {
        Self {
            source: parts.source,
            started_config: parts.config.clone(),
            config: Mutex::new(parts.config),
            dataplane: Mutex::new(parts.dataplane),
            attachments: parts.attachments,
            shared: parts.shared,
            gate: parts.gate,
            resolver: parts.resolver,
            listeners: Mutex::new(None),
            query_log: parts.query_log,
            latencies: parts.latencies,
            custom: Mutex::new(parts.custom),
            rebuild: Mutex::new(()),
            pause: Mutex::new(PauseState::default()),
            started: Instant::now(),
            stop: Notify::new(),
            detach: std::sync::atomic::AtomicBool::new(false),
            socket: parts.socket,
            metrics_address: Mutex::new(None),
        }
    }

    /// Keeps the running listeners, for their counters.
    pub fn set_listeners(&self, listeners: Listeners) {
        *lock(&self.listeners) = Some(listeners);
    }

    /// Hands the listeners back for shutdown.
    pub fn take_listeners(&self) -> Option<Listeners> {
        lock(&self.listeners).take()
    }

    /// Records the address the metrics endpoint is bound to.
    pub fn set_metrics_address(&self, address: SocketAddr) {
        *lock(&self.metrics_address) = Some(address);
    }

    /// Resolves when a `stop` request arrives.
    pub async fn stopped(&self) {
        self.stop.notified().await;
    }

    /// A stop request asked to detach the XDP program.
    pub fn detach_requested(&self) -> bool {
        self.detach.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        lock(&self.config).clone()
    }

    /// Hands the loaded program back for detaching at shutdown.
    pub fn take_dataplane(&self) -> Option<Dataplane> {
        lock(&self.dataplane).take()
    }

    fn state_dir(&self) -> PathBuf {
        lock(&self.config).state_dir()
    }

    /// Compiles the custom rules and writes them into the kernel's overlay.
    pub fn apply_overlay(&self, custom: &CustomRules) -> Result<HashMap<u64, RuleValue>, String> {
        let overlay = custom.overlay(&self.state_dir()).map_err(|error| error.to_string())?;
        if let Some(dataplane) = lock(&self.dataplane).as_mut() {
            let entries: Vec<(u64, RuleValue)> = overlay.iter().map(|(key, value)| (*key, *value)).collect();
            dataplane.set_overlay(&entries).map_err(|error| format!("writing the custom rules to the kernel failed: {error}"))?;
        }
        Ok(overlay)
    }

    /// Loads and compiles the lists of `config`, adds the custom rules,
    /// publishes the kernel table and swaps the user-space policy. On any
    /// failure the rule set in force stays.
    pub fn rebuild(&self, config: &Config) -> Result<Value, String> {
        let _serial = lock(&self.rebuild);
        let started = Instant::now();
        let fetcher = HttpFetcher::new(config.state_dir().join("lists"));
        let compiled = load_and_compile_with(&config.lists, &config.budget, &fetcher)
            .map_err(|error| format!("loading the lists failed: {error}"))?;
        let mut policy = Policy::new(compiled).map_err(|error| format!("compiling the lists failed: {error}"))?;
        let custom = lock(&self.custom).clone();
        let overlay = custom.overlay(&config.state_dir()).map_err(|error| error.to_string())?;
        policy.set_overlay(overlay.clone());
        if let Some(dataplane) = lock(&self.dataplane).as_mut() {
            dataplane.publish(policy.table()).map_err(|error| format!("publishing the rule set failed: {error}"))?;
            let entries: Vec<(u64, RuleValue)> = overlay.into_iter().collect();
            dataplane.set_overlay(&entries).map_err(|error| format!("writing the custom rules failed: {error}"))?;
        }
        let rules = policy.table().rules;
        let sources = policy.reports().len();
        self.shared.replace(policy);
        info!(rules, sources, elapsed_ms = started.elapsed().as_millis() as u64, "rule set rebuilt");
        Ok(json!({ "kernel_rules": rules, "sources": sources }))
    }

    /// Rebuilds the user-space policy in the background after a custom
    /// rule change; the kernel already has the rule through the overlay.
    fn rebuild_in_background(self: &Arc<Self>) {
        let controller = self.clone();
        tokio::task::spawn_blocking(move || {
            let config = lock(&controller.config).clone();
            if let Err(error) = controller.rebuild(&config) {
                warn!(%error, "rebuilding the user-space policy after a custom rule change failed; it applies at the next reload");
            }
        });
    }

    fn custom_rule(self: &Arc<Self>, list: RuleList, rule: &str, add: bool) -> Result<Value, String> {
        let state_dir = self.state_dir();
        let mut custom = lock(&self.custom).clone();
        let before = custom.rules(list).len();
        let stored = if add {
            custom.add(list, rule, &state_dir).map_err(|error| error.to_string())?
        } else {
            custom.remove(list, rule).map_err(|error| error.to_string())?
        };
        let overlay = self.apply_overlay(&custom)?;
        custom.save(&state_dir).map_err(|error| error.to_string())?;
        *lock(&self.custom) = custom;
        info!(?list, rule = %stored, added = add, "custom rule changed");
        self.rebuild_in_background();
        // Adding a rule that is already there changes nothing.
        let changed = lock(&self.custom).rules(list).len() != before;
        Ok(json!({
            "rule": stored,
            "list": list,
            "changed": changed,
            "overlay_keys": overlay.len(),
            "kernel": lock(&self.dataplane).is_some(),
        }))
    }

    fn set_blocking(&self, on: bool) -> Result<(), String> {
        self.gate.set_paused(!on);
        if let Some(dataplane) = lock(&self.dataplane).as_mut() {
            let mut config = dataplane.config();
            if on {
                config.flags |= CONFIG_BLOCKING;
            } else {
                config.flags &= !CONFIG_BLOCKING;
            }
            dataplane.set_config(config).map_err(|error| format!("writing the pause flag failed: {error}"))?;
        }
        Ok(())
    }

    fn pause(self: &Arc<Self>, seconds: u64) -> Result<Value, String> {
        if seconds == 0 || seconds > MAX_PAUSE_SECS {
            return Err(format!(
                "a pause lasts from 1 second to {} days; to turn blocking off for longer, remove the lists from the configuration",
                MAX_PAUSE_SECS / 86_400
            ));
        }
        self.set_blocking(false)?;
        let until = SystemTime::now() + Duration::from_secs(seconds);
        let generation = {
            let mut pause = lock(&self.pause);
            pause.until = Some(until);
            pause.generation += 1;
            pause.generation
        };
        info!(seconds, "blocking paused");
        let controller = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let current = lock(&controller.pause).generation == generation;
            if current {
                match controller.resume() {
                    Ok(_) => info!("pause over, blocking resumed"),
                    Err(error) => warn!(%error, "resuming blocking after the pause failed"),
                }
            }
        });
        Ok(json!({ "paused_until_ms": epoch_millis(until) }))
    }

    fn resume(&self) -> Result<Value, String> {
        self.set_blocking(true)?;
        let mut pause = lock(&self.pause);
        let was_paused = pause.until.take().is_some();
        pause.generation += 1;
        info!("blocking resumed");
        Ok(json!({ "was_paused": was_paused }))
    }

    /// Re-reads the configuration and applies what can change at run time.
    pub fn reload(&self) -> Result<Value, String> {
        let config = self
            .source
            .load()
            .map_err(|error| format!("reload failed, the running configuration stays: {error}"))?;
        let doh_bypass = load_doh_bypass(&config).map_err(|error| {
            format!("reload failed, the running configuration stays: loading intercept.doh_resolver_lists failed: {error}")
        })?;
        self.rebuild(&config).map_err(|error| format!("reload failed, the running configuration stays: {error}"))?;
        self.resolver.set_doh_bypass(doh_bypass);
        let style = config.dataplane.block_style();
        self.shared.set_style(style);
        if let Some(dataplane) = lock(&self.dataplane).as_mut() {
            let wanted = style.dataplane_config();
            let mut current = dataplane.config();
            current.block_mode = wanted.block_mode;
            current.block_ttl = wanted.block_ttl;
            current.sinkhole_v4 = wanted.sinkhole_v4;
            current.sinkhole_v6 = wanted.sinkhole_v6;
            dataplane.set_config(current).map_err(|error| format!("writing the block mode failed: {error}"))?;
            let (rate, burst) = config.dataplane.rate_limit().unwrap_or((0, 0));
            dataplane.set_rate_limit(rate, burst).map_err(|error| format!("writing the rate limit failed: {error}"))?;
            // The port takes effect at restart (the egress program is
            // attached then); the delay now.
            let port = dataplane.fallback().port;
            if port != 0 {
                dataplane
                    .set_fallback(port, Duration::from_secs(u64::from(config.dataplane.fallback_after_secs)))
                    .map_err(|error| format!("writing the fallback failed: {error}"))?;
            }
        }
        // Against the start, not the last reload: a key changed by one
        // reload still needs the restart after the next, and one changed
        // back needs none.
        let restart_needed = changed_keys_needing_restart(&self.started_config, &config);
        *lock(&self.config) = config;
        if !restart_needed.is_empty() {
            warn!(?restart_needed, "configuration keys changed that take effect only after a restart");
        }
        info!("configuration reloaded");
        Ok(json!({ "reloaded": true, "restart_needed": restart_needed }))
    }

    fn stats(&self) -> Result<Value, String> {
        let dataplane = lock(&self.dataplane);
        let (counters, intercepted) = match dataplane.as_ref() {
            Some(dataplane) => (
                Some(dataplane.counters().map_err(|error| error.to_string())?),
                Some(dataplane.intercept_clients().map_err(|error| error.to_string())?),
            ),
            None => (None, None),
        };
        drop(dataplane);
        let listeners = lock(&self.listeners).as_ref().map(Listeners::stats);
        Ok(json!({
            "controller": "running",
            "dataplane": counters,
            "intercepted_clients": intercepted,
            "resolver": self.resolver.stats(),
            "listeners": listeners,
            "paused": self.gate.is_paused(),
        }))
    }

    /// Renders the Prometheus text for one scrape.
    pub fn metrics_text(&self) -> String {
        let counters = lock(&self.dataplane).as_ref().and_then(|dataplane| dataplane.counters().ok());
        let resolver = self.resolver.stats();
        let custom_rules = lock(&self.custom).len();
        metrics::render(&metrics::Snapshot {
            dataplane: counters,
            resolver: &resolver,
            latencies: &self.latencies,
            paused: self.gate.is_paused(),
            custom_rules,
        })
    }

    fn status(&self) -> Result<Value, String> {
        let config = lock(&self.config).clone();
        let policy = self.shared.current();
        let dataplane = {
            let dataplane = lock(&self.dataplane);
            match dataplane.as_ref() {
                Some(dataplane) => {
                    let program_id = dataplane.program_id();
                    let fallback = dataplane.fallback();
                    let fallback = (fallback.port != 0).then(|| {
                        json!({ "port": fallback.port, "after_seconds": fallback.stale_after_ns / 1_000_000_000 })
                    });
                    json!({
                        "loaded": true,
                        "attached": !self.attachments.is_empty(),
                        "interfaces": self.attachments.iter().map(|(name, mode)| json!({ "name": name, "mode": mode })).collect::<Vec<_>>(),
                        "program_id": program_id,
                        "active_set": dataplane.active_set(),
                        "rule_capacity_buckets": dataplane.rule_capacity(),
                        "blocking": dataplane.config().flags & CONFIG_BLOCKING != 0,
                        "fallback": fallback,
                    })
                }
                None => json!({ "loaded": false, "attached": false, "interfaces": [] }),
            }
        };
        let custom = lock(&self.custom).clone();
        let now = SystemTime::now();
        let lists: Vec<Value> = policy.reports().iter().map(|report| {
            let age = report.last_update.and_then(|modified| epoch_seconds(now).checked_sub(modified));
            json!({
                "source": report.name,
                "role": report.role,
                "format": report.format,
                "kernel_rules": report.kernel_rules,
                "user_space_rules": report.user_space_rules,
                "invalid": report.invalid.count,
                "last_update": report.last_update,
                "age_seconds": age,
            })
        }).collect();
        let upstreams = self.resolver.stats().upstreams;
        let pause = lock(&self.pause).until.map(epoch_millis);
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "paused_until_ms": pause,
            "dataplane": dataplane,
            "rules": {
                "kernel": policy.table().rules,
                "custom_block": custom.block.len(),
                "custom_allow": custom.allow.len(),
                "overlay_keys": policy.overlay().len(),
            },
            "lists": lists,
            "listeners": lock(&self.listeners).as_ref().map(|listeners| listeners.local_addrs().clone()),
            "upstream_status": self.resolver.upstream_status(),
            "upstreams": upstreams,
            "certificate": certificate_status(&config),
            "metrics": lock(&self.metrics_address).map(|address| address.to_string()),
            "socket": self.socket.display().to_string(),
        }))
    }

    async fn query(&self, name: String, qtype: u16) -> Result<Value, String> {
        if let Err(error) = hickory_proto::rr::Name::from_ascii(&name) {
            return Err(format!("{name:?} is not a valid domain name ({error}); give a name such as ads.example.com"));
        }
        let explanation = self.shared.current().explain(&name, qtype, DEFAULT_CLIENT_GROUPS);
        let answer = self.answer(&name, qtype).await;
        let kernel_filter = lock(&self.dataplane).is_some();
        Ok(json!({ "paused": self.gate.is_paused(), "kernel_filter": kernel_filter, "explanation": explanation, "answer": answer }))
    }

    /// Resolves `name` through the resolver as a UDP query from the router
    /// itself, so the answer is what a client would get. The query counts in
    /// the resolver's UDP counter but is not in the query log.
    async fn answer(&self, name: &str, qtype: u16) -> Value {
        use hickory_proto::{
            op::{Message, Query},
            rr::{Name, RecordType},
        };
        let Ok(parsed) = Name::from_ascii(name) else {
            return json!({ "error": format!("invalid name {name:?}") });
        };
        let mut message = Message::new();
        message.set_id(rand::random());
        message.set_recursion_desired(true);
        message.add_query(Query::query(parsed, RecordType::from(qtype)));
        let Ok(bytes) = message.to_vec() else {
            return json!({ "error": "encoding the query failed" });
        };
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        let request = DnsRequest { message: bytes, client: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), local, transport: Transport::Udp };
        let Some(response) = self.resolver.resolve(request).await else {
            return json!({ "error": "the resolver sent no answer" });
        };
        match Message::from_vec(&response) {
            Ok(response) => json!({
                "rcode": super::gate::rcode_name(u16::from(response.response_code())),
                "records": response.answers().iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            Err(error) => json!({ "error": format!("the answer could not be parsed: {error}") }),
        }
    }

    fn lists_show(&self) -> Value {
        json!({ "lists": self.shared.current().reports() })
    }

    async fn run_blocking<F>(self: &Arc<Self>, work: F) -> Response
    where
        F: FnOnce(&Arc<Self>) -> Result<Value, String> + Send + 'static,
    {
        let controller = self.clone();
        match tokio::task::spawn_blocking(move || work(&controller)).await {
            Ok(result) => respond(result),
            Err(error) => Response::error(format!("the request failed inside the daemon: {error}")),
        }
    }

    async fn dispatch(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Status => respond(self.status()),
            Request::Stats => respond(self.stats()),
            Request::Query { name, qtype } => respond(self.query(name, qtype).await),
            Request::RuleAdd { list, rule } => self.run_blocking(move |controller| controller.custom_rule(list, &rule, true)).await,
            Request::RuleRemove { list, rule } => self.run_blocking(move |controller| controller.custom_rule(list, &rule, false)).await,
            Request::RuleList { list } => Response::ok(json!({ "list": list, "rules": lock(&self.custom).rules(list) })),
            Request::Pause { seconds } => respond(self.pause(seconds)),
            Request::Resume => respond(self.resume()),
            Request::Reload => self.run_blocking(|controller| controller.reload()).await,
            Request::ListsUpdate => {
                self.run_blocking(|controller| {
                    let config = lock(&controller.config).clone();
                    controller.rebuild(&config)
                })
                .await
            }
            Request::ListsShow => Response::ok(self.lists_show()),
            Request::Log { limit, .. } => Response::ok(json!(self.query_log.recent(limit))),
            Request::Stop { detach } => {
                info!(detach, "stop requested over the admin socket");
                if detach {
                    self.detach.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                self.stop.notify_one();
                let attached = lock(&self.dataplane).is_some();
                Response::ok(json!({ "stopping": true, "filter_attached": attached }))
            }
        }
    }
}

/// A handle that serves admin requests with the controller.
pub struct AdminHandler(pub Arc<Controller>);

impl Handler for AdminHandler {
    fn handle(&self, request: Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send + '_>> {
        Box::pin(self.0.clone().dispatch(request))
    }

    fn follow_log(&self) -> broadcast::Receiver<QueryEntry> {
        self.0.query_log.subscribe()
    }
}

fn respond(result: Result<Value, String>) -> Response {
    match result {
        Ok(value) => Response::ok(value),
        Err(message) => Response::error(message),
    }
}

fn epoch_seconds(time: SystemTime) -> u64 {
    epoch_millis(time) / 1000
}

/// Reads the certificate's mode, file and expiry from the file in use.
fn certificate_status(config: &Config) -> Value {
    let (mode, cert, key) = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => (CertMode::Supplied, cert.clone(), key.clone()),
        _ => {
            let dir = config.state_dir().join("tls");
            (CertMode::Generated, dir.join("cert.pem"), dir.join("key.pem"))
        }
    };
    let info = TlsMaterial::from_pem_files(&cert, &key)
        .map_err(|error| error.to_string())
        .and_then(|material| {
            let der = material.chain().first().ok_or_else(|| "the file contains no certificate".to_owned())?.as_ref().to_vec();
            CertInfo::from_der(mode, &der, &cert).map_err(|error| error.to_string())
        });
    match info {
        Ok(info) => json!({
            "mode": mode,
            "path": cert.display().to_string(),
            "not_after_unix": info.not_after_unix,
            "expiry_warning": info.expiry_warning(SystemTime::now()),
            "dns_names": info.dns_names,
            "ips": info.ips,
            "discovery": crate::ddr::served_discovery(config, &info),
        }),
        Err(error) => json!({ "mode": mode, "path": cert.display().to_string(), "error": error }),
    }
}

/// Keys that differ between `old` and `new` and need a restart to apply,
/// as dotted paths (`server`, `dataplane.lan_interfaces`).
fn changed_keys_needing_restart(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (key, new_value) in &new {
        if RELOADABLE_KEYS.contains(&key.as_str()) || old.get(key) == Some(new_value) {
            continue;
        }
        match (key.as_str(), old.get(key), new_value) {
            ("dataplane", Some(Value::Object(old_table)), Value::Object(new_table)) => {
                for (field, value) in new_table {
                    if !RELOADABLE_DATAPLANE_KEYS.contains(&field.as_str()) && old_table.get(field) != Some(value) {
                        changed.push(format!("dataplane.{field}"));
                    }
                }
            }
            ("intercept", Some(Value::Object(old_table)), Value::Object(new_table)) => {
                for (field, value) in new_table {
                    if !RELOADABLE_INTERCEPT_KEYS.contains(&field.as_str()) && old_table.get(field) != Some(value) {
                        changed.push(format!("intercept.{field}"));
                    }
                }
            }
            _ => changed.push(key.clone()),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_skip_reloadable_ones() {
        let old = Config::default();
        let mut new = Config::default();
        new.dataplane.block_ttl = 99;
        new.dataplane.lan_interfaces.push("br-lan".into());
        new.server.dns_port = 5353;
        new.intercept.doh_resolver_lists.push("/etc/dnsgate/doh.txt".into());
        let changed = changed_keys_needing_restart(&old, &new);
        assert_eq!(changed, ["dataplane.lan_interfaces", "server"]);
    }
}
