//! The admin socket: how every `dnsgate` subcommand other than `run` talks
//! to the daemon.
//!
//! The protocol is JSON lines over a Unix stream socket. The client sends
//! one [`Request`] line and reads one [`Response`] line; `log --follow`
//! then keeps reading one [`crate::querylog::QueryEntry`] per line until
//! either side closes. The socket is created with mode 0600, so only its
//! owner (root, for the packaged daemon) can connect.

mod client;
pub mod custom;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{call, follow_log};
pub use custom::{CustomRuleError, CustomRules, RuleList};
pub use server::{AdminServer, Handler};

/// Default path of the admin socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/dnsgate/dnsgate.sock";

/// Maximum length of a request or response line, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Maximum pause in seconds. Blocking that stays off for longer belongs in
/// the configuration, where the setting survives a restart.
pub const MAX_PAUSE_SECS: u64 = 30 * 86_400;

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Dataplane, rules, lists, upstreams, certificate, uptime, version.
    Status,
    /// Kernel and resolver counters.
    Stats,
    /// The decision on a name and the rules behind it.
    Query {
        /// Query name.
        name: String,
        /// Query type number.
        qtype: u16,
    },
    /// Adds a custom rule.
    RuleAdd {
        /// Block or allow.
        list: RuleList,
        /// The rule as the user wrote it.
        rule: String,
    },
    /// Removes a custom rule.
    RuleRemove {
        /// Block or allow.
        list: RuleList,
        /// The rule as listed by `RuleList`.
        rule: String,
    },
    /// The custom rules of one list.
    RuleList {
        /// Block or allow.
        list: RuleList,
    },
    /// Turns blocking off for a while.
    Pause {
        /// Seconds until blocking resumes by itself, at most
        /// [`MAX_PAUSE_SECS`].
        seconds: u64,
    },
    /// Turns blocking back on.
    Resume,
    /// Re-reads the configuration file and the lists.
    Reload,
    /// Stops the daemon.
    Stop {
        /// Also detach the XDP program and remove its pins; without it the
        /// program stays attached (fail-open).
        #[serde(default)]
        detach: bool,
    },
    /// Reloads the lists (URL sources are downloaded again).
    ListsUpdate,
    /// Per-list reports of the rule set in force.
    ListsShow,
    /// Recent queries.
    Log {
        /// Newest entries to return.
        limit: usize,
        /// Keep the connection open and stream new entries.
        follow: bool,
    },
}

/// The daemon's reply: exactly one of the fields is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    /// What failed, on success `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A successful reply.
    pub fn ok(value: serde_json::Value) -> Self {
        Self { ok: Some(value), error: None }
    }

    /// A failed request.
    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: None, error: Some(message.into()) }
    }
}

/// Errors of the admin client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing listens on the socket.
    #[error("the dnsgate daemon is not running (no daemon listens on {path}); start it with `dnsgate run`")]
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket exists but this user may not connect.
    #[error("permission denied on the admin socket {path}; run this command as root")]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The connection failed midway.
    #[error("talking to the daemon on {path} failed: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon sent something that is not a response.
    #[error("the daemon on {path} sent an invalid response: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The daemon rejected the request.
    #[error("{0}")]
    Daemon(String),
}
