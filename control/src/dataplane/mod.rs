//! The kernel side as user space sees it: loading the XDP program,
//! attaching it to the LAN interfaces and filling its maps.
//!
//! Map layouts live in `dnsgate_common::maps`; this module only moves
//! values in and out of them.

mod attach;
mod counters;
mod events;
mod intercept;
mod loader;
mod object;
mod rules;

pub use attach::{AttachMode, Attachment, expand_interface};
pub use counters::{CounterValues, read_pinned_counters};
pub use events::{EventBuffer, KernelAnswer, parse_event};
pub use intercept::{
    ClientInterceptCount, InterceptOptions, RESTORE_PROGRAM_NAME, RestoreAttachment, read_pinned_intercept_clients,
};
pub use loader::{Dataplane, Heartbeat, LoadOptions, PASS_PROGRAM_NAME, ip_key, layout_dir, prepare_layout_dir as prepare_pin_dir, remove_pins};
pub use dnsgate_common::maps::PROGRAM_NAME;
pub use object::object_bytes;

use std::path::PathBuf;

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The object embedded in the binary could not be loaded.
    #[error("loading the XDP object failed: {source}")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    /// The kernel rejected the program.
    #[error("the kernel rejected the XDP program {program}: {source}")]
    Verify {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A program is missing from the object.
    #[error("program {name} is missing from the XDP object")]
    MissingProgram { name: &'static str },
    /// A map the program needs is missing from the object.
    #[error("map {name} is missing from the XDP object")]
    MissingMap { name: &'static str },
    /// A map operation failed.
    #[error("{operation} on map {name} failed: {source}")]
    Map {
        name: &'static str,
        operation: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The interface does not exist.
    #[error("network interface {name} does not exist; `ip link` lists the interfaces, give the LAN bridge or port with --lan-iface or lan_interfaces")]
    UnknownInterface { name: String },
    /// Another XDP program is attached to the interface.
    #[error(
        "interface {interface} already has an XDP program attached{by}; dnsgate does not replace it: {what}",
        by = holder.map(|pid| format!(" by PID {pid}")).unwrap_or_default(),
        what = match holder {
            Some(_) => "stop that process (another dnsgate: `dnsgate stop` with its --socket) or leave this interface out".to_owned(),
            None => format!(
                "inspect it with `ip link show {interface}`, detach it with `ip link set {interface} xdp off` \
                 or by removing its pin in bpffs"
            ),
        }
    )]
    InterfaceBusy { interface: String, holder: Option<u32> },
    /// Attaching failed for another reason.
    #[error("attaching the XDP program to {interface} failed: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Attaching or detaching the TC egress program failed.
    #[error(
        "attaching the TC egress program to {interface} failed: {source}; replies to intercepted queries \
         need it (check that the kernel has clsact, or set `intercept.enabled = false`)"
    )]
    AttachRestore {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// An exemption's prefix length is longer than its address.
    #[error("exemption {network}/{prefix_len} has a prefix longer than the address; use at most /32 for IPv4 and /128 for IPv6")]
    InvalidPrefix { network: std::net::IpAddr, prefix_len: u8 },
    /// The rule table does not fit the map sized at load time.
    #[error("the rule table needs {needed} buckets but the rule maps hold {capacity}; raise `dataplane.rule_capacity` and restart")]
    TableTooLarge { needed: usize, capacity: u32 },
    /// Pinning an XDP link failed.
    #[error("pinning the XDP link of {interface} failed: {source}; check that the pin directory is on bpffs")]
    PinLink {
        interface: String,
        #[source]
        source: aya::pin::PinError,
    },
    /// A link left by an earlier controller could not be taken over.
    #[error("taking over the XDP attachment of {interface} failed: {reason}")]
    AdoptLink { interface: String, reason: String },
    /// A file system operation failed.
    #[error("{action} {path} failed: {source}")]
    System {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A perf buffer for the query log could not be opened.
    #[error(
        "opening the event buffer of CPU {cpu} failed: {source}; set `querylog.kernel_answers = false` \
         to run without logging the queries answered in the kernel"
    )]
    EventBuffer {
        cpu: u32,
        #[source]
        source: aya::maps::perf::PerfBufferError,
    },
    /// The pinned maps of a running dataplane were not found.
    #[error("no pinned dnsgate maps under {path}; is `dnsgate run` running with this --pin-dir?")]
    NotPinned { path: PathBuf },
}
