//! The layers between the listeners and the resolver: the pause switch in
//! front of the policy, and the wrapper that times each query for the query
//! log and the latency histograms.

use std::{
    cell::Cell,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Instant, SystemTime},
};

use hickory_proto::{op::Message, rr::Name};

use crate::{
    metrics::Latencies,
    querylog::{epoch_millis, QueryEntry, QueryLog},
    resolver::{
        server::{DnsHandler, Request, Transport},
        PolicyAction, QueryPolicy, Resolver,
    },
    shared_policy::SharedPolicy,
};

tokio::task_local! {
    /// The policy decision taken while resolving the current query.
    static DECISION: Cell<Option<&'static str>>;
}

/// The shared policy with a pause switch: while paused every name passes.
#[derive(Debug)]
pub struct PausablePolicy {
    inner: Arc<SharedPolicy>,
    paused: AtomicBool,
}

impl PausablePolicy {
    /// Wraps `inner`, not paused.
    pub fn new(inner: Arc<SharedPolicy>) -> Self {
        Self { inner, paused: AtomicBool::new(false) }
    }

    /// Turns blocking off (`true`) or on.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Returns whether blocking is off.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

impl QueryPolicy for PausablePolicy {
    fn check(&self, name: &Name, qtype: u16, client: IpAddr) -> PolicyAction {
        let (action, decision) = if self.is_paused() {
            (PolicyAction::Pass, "paused")
        } else {
            let action = self.inner.check(name, qtype, client);
            let decision = match &action {
                PolicyAction::Block { .. } => "blocked",
                PolicyAction::Rewrite { .. } => "rewritten",
                PolicyAction::Allow => "allowed",
                PolicyAction::Pass => "resolved",
            };
            (action, decision)
        };
        // The resolver checks the query name first and then each CNAME
        // target. The first decision is kept unless a later one blocks.
        let _ = DECISION.try_with(|cell| {
            if cell.get().is_none() || decision == "blocked" {
                cell.set(Some(decision));
            }
        });
        action
    }
}

/// The resolver, timed and logged.
pub struct LoggedResolver {
    resolver: Arc<Resolver>,
    log: Arc<QueryLog>,
    latencies: Arc<Latencies>,
}

impl LoggedResolver {
    /// Wraps `resolver`, recording into `log` and `latencies`.
    pub fn new(resolver: Arc<Resolver>, log: Arc<QueryLog>, latencies: Arc<Latencies>) -> Self {
        Self { resolver, log, latencies }
    }

    async fn resolve(&self, request: Request) -> Option<Vec<u8>> {
        let started = Instant::now();
        let time_ms = epoch_millis(SystemTime::now());
        let client = self.log.client_text(request.client.ip());
        let transport = transport_name(request.transport);
        let question = Message::from_vec(&request.message)
            .ok()
            .and_then(|message| message.queries().first().map(|query| (query.name().to_lowercase().to_ascii(), query.query_type().to_string())));
        let (response, decision) = DECISION
            .scope(Cell::new(None), async {
                let response = self.resolver.resolve(request).await;
                (response, DECISION.with(Cell::get))
            })
            .await;
        let latency = started.elapsed();
        self.latencies.observe(transport, latency);
        let (name, qtype) = question.unwrap_or_else(|| (String::new(), String::new()));
        let rcode = response.as_deref().filter(|bytes| bytes.len() >= 4).map(|bytes| rcode_name(u16::from(bytes[3] & 0x0f)));
        let decision = match (&response, decision) {
            (None, _) => "dropped",
            (Some(_), Some(decision)) => decision,
            // Rejected before the policy ran (FORMERR, REFUSED, NOTIMP).
            (Some(_), None) => "rejected",
        };
        self.log.record(QueryEntry {
            time_ms,
            client,
            name,
            qtype,
            transport: transport.to_owned(),
            decision: decision.to_owned(),
            rcode,
            latency_us: latency.as_micros() as u64,
            kernel: false,
        });
        response
    }
}

impl DnsHandler for LoggedResolver {
    fn handle(&self, request: Request) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>> {
        Box::pin(self.resolve(request))
    }
}

/// Returns the transport's name in the query log and the metrics.
pub fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
        Transport::Quic => "quic",
        Transport::Https => "https",
    }
}

/// Returns the mnemonic of an RCODE as the IANA DNS parameters registry lists it
/// (RFC 1035 section 4.1.1, RFC 2136 section 2.2, RFC 6891 section 9).
pub fn rcode_name(rcode: u16) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        other => return format!("RCODE{other}"),
    };
    name.to_owned()
}
