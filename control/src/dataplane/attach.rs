//! Attaching the program to the LAN interfaces.
//!
//! On OpenWrt the LAN is a bridge (`br-lan`) over switch ports and Wi-Fi.
//! XDP on a bridge device sees only frames addressed to the bridge itself
//! after the bridge has handled them, so dnsgate attaches to the bridge's
//! member ports instead: natively where the driver supports it, in generic
//! (skb) mode otherwise (most Wi-Fi drivers).

use std::path::Path;

use aya::programs::{xdp::XdpLinkId, XdpMode};
use serde::Serialize;
use tracing::{info, warn};

use super::{Dataplane, DataplaneError, PROGRAM_NAME};

/// The XDP mode an interface ended up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// Mode it runs in.
    pub mode: AttachMode,
    pub(super) link: XdpLinkId,
}

/// The interfaces to attach to for `name`: its member ports if it is a
/// bridge, otherwise the interface itself.
pub fn expand_interface(name: &str) -> Result<Vec<String>, DataplaneError> {
    let net = Path::new("/sys/class/net").join(name);
    if !net.exists() {
        return Err(DataplaneError::UnknownInterface { name: name.to_owned() });
    }
    let members = net.join("brif");
    if !members.is_dir() {
        return Ok(vec![name.to_owned()]);
    }
    let entries = std::fs::read_dir(&members).map_err(|source| DataplaneError::System { action: "listing bridge ports in", path: members.clone(), source })?;
    let mut ports: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    ports.sort();
    Ok(ports)
}

impl Dataplane {
    /// Attaches the filter to `interface`, natively if the driver allows
    /// and in generic mode otherwise (with a warning). An interface that
    /// already runs another XDP program is left alone and reported.
    pub fn attach(&mut self, interface: &str) -> Result<Attachment, DataplaneError> {
        self.attach_program(PROGRAM_NAME, interface)
    }

    /// Attaches program `name` to `interface` as [`Dataplane::attach`] does.
    pub fn attach_program(&mut self, name: &'static str, interface: &str) -> Result<Attachment, DataplaneError> {
        let program = self.program_mut(name)?;
        match program.attach(interface, XdpMode::Driver) {
            Ok(link) => {
                info!(interface, mode = "native", "XDP program attached");
                return Ok(Attachment { interface: interface.to_owned(), mode: AttachMode::Native, link });
            }
            Err(error) => {
                classify(interface, &error)?;
                warn!(interface, %error, "native XDP is not available; falling back to generic mode");
            }
        }
        match program.attach(interface, XdpMode::Skb) {
            Ok(link) => {
                info!(interface, mode = "generic", "XDP program attached");
                Ok(Attachment { interface: interface.to_owned(), mode: AttachMode::Generic, link })
            }
            Err(error) => {
                classify(interface, &error)?;
                Err(DataplaneError::Attach { interface: interface.to_owned(), source: error })
            }
        }
    }

    /// Detaches the filter from one interface.
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), DataplaneError> {
        let interface = attachment.interface;
        let program = self.program_mut(PROGRAM_NAME)?;
        program
            .detach(attachment.link)
            .map_err(|source| DataplaneError::Attach { interface: interface.clone(), source })?;
        info!(interface, "XDP program detached");
        Ok(())
    }
}

/// Turns the errors that retrying in another mode cannot fix into their own
/// variants.
fn classify(interface: &str, error: &aya::programs::ProgramError) -> Result<(), DataplaneError> {
    use aya::programs::ProgramError;
    match error {
        ProgramError::UnknownInterface { .. } => Err(DataplaneError::UnknownInterface { name: interface.to_owned() }),
        ProgramError::SyscallError(syscall) if syscall.io_error.raw_os_error() == Some(libc::EBUSY) => {
            Err(DataplaneError::InterfaceBusy { interface: interface.to_owned() })
        }
        _ => Ok(()),
    }
}
