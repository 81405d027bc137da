//! The address of an upstream: its literal IP address, or the addresses its
//! host name resolves to through plain-DNS bootstrap servers. The machine's
//! own resolver is never asked, since on a router that is usually dnsgate
//! itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::spec::{Host, Protocol, UpstreamSpec};
use super::{UpstreamConfigError, UpstreamError, stream, udp};
use crate::resolver::config::UpstreamConfig;

/// Time one bootstrap lookup may take per server and record type.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds on how long resolved addresses are kept, whatever their TTL.
const MIN_ADDRESS_TTL: u32 = 30;
const MAX_ADDRESS_TTL: u32 = 3600;

/// The address of one upstream.
pub(crate) struct Endpoint {
    /// The upstream's URL, for logs and errors.
    pub(crate) label: String,
    /// The parsed URL.
    pub(crate) spec: UpstreamSpec,
    bootstrap: Vec<UpstreamSpec>,
    resolved: Mutex<Option<(Vec<SocketAddr>, Instant)>>,
}

impl Endpoint {
    pub(crate) fn new(
        config: &UpstreamConfig,
        default_bootstrap: &[UpstreamSpec],
    ) -> Result<Self, UpstreamConfigError> {
        let label = config.url.to_string();
        let bootstrap = if config.bootstrap.is_empty() {
            default_bootstrap
        } else {
            &config.bootstrap
        };
        for server in bootstrap {
            if server.socket_addr().is_none()
                || !matches!(server.protocol, Protocol::Udp | Protocol::Tcp)
            {
                return Err(UpstreamConfigError::InvalidBootstrap {
                    upstream: label,
                    bootstrap: server.to_string(),
                });
            }
        }
        if let Host::Name(host) = &config.url.host
            && bootstrap.is_empty()
        {
            return Err(UpstreamConfigError::NoBootstrap {
                upstream: label,
                host: host.clone(),
            });
        }
        Ok(Self {
            label,
            spec: config.url.clone(),
            bootstrap: bootstrap.to_vec(),
            resolved: Mutex::new(None),
        })
    }

    /// Returns the socket addresses to connect to, IPv4 first.
    pub(crate) async fn addrs(&self) -> Result<Vec<SocketAddr>, UpstreamError> {
        let host = match &self.spec.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.spec.port)]),
            Host::Name(host) => host,
        };
        if let Some((addrs, expires)) = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && Instant::now() < *expires
        {
            return Ok(addrs.clone());
        }
        let failed = || UpstreamError::Bootstrap {
            upstream: self.label.clone(),
            host: host.clone(),
        };
        let name = Name::from_ascii(format!("{host}.")).map_err(|_| failed())?;
        for server in &self.bootstrap {
            let (ips, ttl) = lookup(server, &name).await;
            if ips.is_empty() {
                continue;
            }
            let addrs: Vec<SocketAddr> = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.spec.port))
                .collect();
            let ttl = ttl.clamp(MIN_ADDRESS_TTL, MAX_ADDRESS_TTL);
            let expires = Instant::now() + Duration::from_secs(u64::from(ttl));
            tracing::debug!(upstream = %self.label, ?addrs, bootstrap = %server, "resolved upstream host");
            *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((addrs.clone(), expires));
            return Ok(addrs);
        }
        tracing::warn!(upstream = %self.label, host, "no bootstrap server resolved the upstream's host");
        Err(failed())
    }

    /// Returns the name a certificate is checked against when no `tls_name`
    /// is set.
    pub(crate) fn default_tls_name(&self) -> String {
        match &self.spec.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }
}

/// Asks one bootstrap server for A and AAAA records of `name`; returns the
/// addresses (IPv4 first) and the smallest TTL.
async fn lookup(server: &UpstreamSpec, name: &Name) -> (Vec<IpAddr>, u32) {
    let addr = server
        .socket_addr()
        .expect("bootstrap servers are checked to have an IP address");
    let mut ips = Vec::new();
    let mut min_ttl = u32::MAX;
    for qtype in [RecordType::A, RecordType::AAAA] {
        let question = Query::query(name.clone(), qtype);
        let mut message = Message::new();
        message
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        message.add_query(question.clone());
        let Ok(bytes) = message.to_vec() else {
            continue;
        };
        let exchange = async {
            match server.protocol {
                Protocol::Tcp => stream::exchange_once(addr, bytes).await,
                _ => udp::exchange_once(addr, bytes).await,
            }
        };
        let response = match tokio::time::timeout(BOOTSTRAP_TIMEOUT, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(bootstrap = %server, %error, "bootstrap lookup failed");
                continue;
            }
            Err(_) => {
                tracing::debug!(bootstrap = %server, "bootstrap lookup timed out");
                continue;
            }
        };
        let Ok(response) = Message::from_vec(&response) else {
            continue;
        };
        for record in response.answers() {
            let ip = match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            min_ttl = min_ttl.min(record.ttl());
            ips.push(ip);
        }
    }
    (ips, min_ttl)
}
