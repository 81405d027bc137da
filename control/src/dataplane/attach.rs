//! Attaching the program to the LAN interfaces.
//!
//! On OpenWrt the LAN is a bridge (`br-lan`) over switch ports and Wi-Fi.
//! XDP on a bridge device sees only frames addressed to the bridge itself
//! after the bridge has handled them, so dnsgate attaches to the bridge's
//! member ports instead: natively where the driver supports it, in generic
//! (skb) mode otherwise (most Wi-Fi drivers).

use std::path::{Path, PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    XdpMode,
};
use serde::Serialize;
use tracing::{debug, info, warn};

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

impl AttachMode {
    fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// Mode it runs in.
    pub mode: AttachMode,
    /// The attachment was made by an earlier controller and taken over.
    pub adopted: bool,
    link: AttachLink,
}

/// The handle that keeps an attachment.
#[derive(Debug)]
enum AttachLink {
    /// Owned by the loaded program: detached when the program is dropped.
    Owned(XdpLinkId),
    /// A bpf link pinned in bpffs: it stays attached after the controller
    /// exits or dies, until the pin is removed.
    Pinned(PinnedLink),
}

/// Builds the pin path of the link of `interface` in mode `mode` under `dir`. The mode
/// is part of the name because the kernel does not report it for a link.
fn link_path(dir: &Path, interface: &str, mode: AttachMode) -> PathBuf {
    dir.join(format!("link-{}-{interface}", mode.name()))
}

/// Finds the link pinned for `interface` under `dir`, with its mode.
fn find_link(dir: &Path, interface: &str) -> Option<(PathBuf, AttachMode)> {
    [AttachMode::Native, AttachMode::Generic]
        .into_iter()
        .map(|mode| (link_path(dir, interface, mode), mode))
        .find(|(path, _)| path.exists())
}

/// Links pinned under the pin directory by a controller with another map
/// layout: `(path, interface, mode)`.
fn foreign_links(pin_dir: &Path, own: &Path) -> Vec<(PathBuf, String, AttachMode)> {
    let mut links = Vec::new();
    let Ok(entries) = std::fs::read_dir(pin_dir) else { return links };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        if dir == own || !dir.is_dir() {
            continue;
        }
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for file in files.filter_map(Result::ok) {
            let name = file.file_name().to_string_lossy().into_owned();
            for mode in [AttachMode::Native, AttachMode::Generic] {
                if let Some(interface) = name.strip_prefix(&format!("link-{}-", mode.name())) {
                    links.push((file.path(), interface.to_owned(), mode));
                }
            }
        }
    }
    links
}

/// Program id, tag and sorted map ids of a loaded program.
fn program_identity(id: u32) -> Option<(u64, Vec<u32>)> {
    let info = aya::programs::loaded_programs().filter_map(Result::ok).find(|info| info.id() == id)?;
    let mut maps = info.map_ids().ok().flatten().unwrap_or_default();
    maps.sort_unstable();
    Some((info.tag(), maps))
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
    ///
    /// With a pin directory the attachment is a pinned bpf link that
    /// outlives the controller. A link an earlier controller pinned for the
    /// interface is adopted: kept as it is when it runs the same code on the
    /// same maps, otherwise pointed at the newly loaded program in one
    /// atomic step. Either way the interface is never without the filter.
    pub fn attach(&mut self, interface: &str) -> Result<Attachment, DataplaneError> {
        let Some(dir) = self.pin.clone() else {
            return self.attach_program(PROGRAM_NAME, interface);
        };
        // XDP links, which can be pinned, came with Linux 5.9; before that
        // the attachment cannot outlive the controller.
        if aya::util::KernelVersion::current().is_ok_and(|version| version < aya::util::KernelVersion::new(5, 9, 0)) {
            warn!(interface, "Linux before 5.9 has no XDP links: the filter is detached when dnsgate exits (no fail-open)");
            return self.attach_program(PROGRAM_NAME, interface);
        }
        if let Some((path, mode)) = find_link(&dir, interface)
            && let Some(attachment) = self.adopt_link(&path, interface, mode)?
        {
            return Ok(attachment);
        }
        let parent = dir.parent().unwrap_or(&dir).to_owned();
        for (path, name, mode) in foreign_links(&parent, &dir) {
            if name != interface {
                continue;
            }
            // Another map layout: the running program is replaced, never read.
            if let Some(attachment) = self.adopt_link(&path, interface, mode)? {
                let new_path = link_path(&dir, interface, mode);
                let Attachment { link: AttachLink::Pinned(pinned), .. } = attachment else {
                    unreachable!("adopted links are pinned")
                };
                let link: FdLink = pinned.into();
                let pinned = link.pin(&new_path).map_err(|source| pin_error(interface, source))?;
                let _ = std::fs::remove_file(&path);
                return Ok(Attachment { link: AttachLink::Pinned(pinned), ..attachment });
            }
        }
        let attachment = self.attach_program(PROGRAM_NAME, interface)?;
        let AttachLink::Owned(id) = attachment.link else { return Ok(attachment) };
        let program = self.program_mut(PROGRAM_NAME)?;
        let link = program.take_link(id).map_err(|source| DataplaneError::Attach { interface: interface.to_owned(), source })?;
        match FdLink::try_from(link) {
            Ok(link) => {
                let pinned = link.pin(link_path(&dir, interface, attachment.mode)).map_err(|source| pin_error(interface, source))?;
                Ok(Attachment { link: AttachLink::Pinned(pinned), ..attachment })
            }
            Err(error) => {
                // Kernels before 5.9 attach XDP through netlink only: such an
                // attachment cannot be pinned or adopted.
                Err(DataplaneError::AdoptLink { interface: interface.to_owned(), reason: format!("the kernel offers no XDP link to pin ({error}); dnsgate needs Linux 5.9 or later") })
            }
        }
    }

    /// Takes over the link pinned at `path`. `Ok(None)`: the pin is not a
    /// usable link (it is removed).
    fn adopt_link(&mut self, path: &Path, interface: &str, mode: AttachMode) -> Result<Option<Attachment>, DataplaneError> {
        let pinned = match PinnedLink::from_pin(path) {
            Ok(pinned) => pinned,
            Err(error) => {
                warn!(path = %path.display(), %error, "removing a pin that is not a usable link");
                let _ = std::fs::remove_file(path);
                return Ok(None);
            }
        };
        let link: FdLink = pinned.into();
        let info = link.info().ok();
        // A link whose interface was deleted (or recreated with a new
        // index) is defunct: it filters nothing, so it is not adopted.
        let live = match info.as_ref().and_then(|info| own_link_ifindex(info.id())) {
            Some(index) => Some(index) == interface_index(interface),
            None => true,
        };
        if !live {
            drop(link);
            warn!(path = %path.display(), interface, "removing a pinned link that no longer filters this interface");
            let _ = std::fs::remove_file(path);
            return Ok(None);
        }
        let running = info.map(|info| info.program_id());
        let ours = self.program(PROGRAM_NAME)?.info().ok().map(|info| info.id());
        let same = match (running, ours) {
            (Some(running), Some(ours)) => {
                let running = program_identity(running);
                running.is_some() && running == program_identity(ours)
            }
            _ => false,
        };
        drop(link);
        let reopen = |path: &Path| {
            PinnedLink::from_pin(path).map_err(|error| DataplaneError::AdoptLink {
                interface: interface.to_owned(),
                reason: format!("opening the pinned link {} failed: {error}", path.display()),
            })
        };
        if same {
            info!(interface, program = ?running, "adopted the XDP program a previous controller attached");
            if running != ours {
                self.running = running;
            }
            return Ok(Some(Attachment { interface: interface.to_owned(), mode, adopted: true, link: AttachLink::Pinned(reopen(path)?) }));
        }
        // Other code or other maps: swap the program inside the link.
        let link: FdLink = reopen(path)?.into();
        let link = XdpLink::try_from(link).map_err(|error| DataplaneError::AdoptLink {
            interface: interface.to_owned(),
            reason: format!("{} is not an XDP link: {error}", path.display()),
        })?;
        let program = self.program_mut(PROGRAM_NAME)?;
        let id = program.attach_to_link(link).map_err(|source| DataplaneError::Attach { interface: interface.to_owned(), source })?;
        // The link object is the one pinned at `path`; this handle can go.
        drop(program.take_link(id));
        info!(interface, previous = ?running, "replaced the XDP program of a previous controller in place");
        Ok(Some(Attachment { interface: interface.to_owned(), mode, adopted: true, link: AttachLink::Pinned(reopen(path)?) }))
    }

    /// Removes the pinned links under the pin directory that are not in
    /// `keep` (interfaces no longer configured, other map layouts), which
    /// detaches them, and the directories of other map layouts.
    pub fn remove_stale_links(&mut self, keep: &[Attachment]) {
        let Some(dir) = self.pin.clone() else { return };
        let wanted: Vec<PathBuf> = keep.iter().map(|attachment| link_path(&dir, &attachment.interface, attachment.mode)).collect();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("link-") && !wanted.contains(&path) {
                    info!(path = %path.display(), "detaching an interface that is no longer configured");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let Some(parent) = dir.parent() else { return };
        let Ok(entries) = std::fs::read_dir(parent) else { return };
        for entry in entries.filter_map(Result::ok) {
            let other = entry.path();
            if other == dir || !other.is_dir() {
                continue;
            }
            info!(dir = %other.display(), "removing objects pinned with another map layout");
            if let Ok(files) = std::fs::read_dir(&other) {
                for file in files.filter_map(Result::ok) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
            let _ = std::fs::remove_dir(&other);
        }
    }

    /// Attaches program `name` to `interface` as [`Dataplane::attach`] does,
    /// held by the program (detached when it is dropped).
    pub fn attach_program(&mut self, name: &'static str, interface: &str) -> Result<Attachment, DataplaneError> {
        let program = self.program_mut(name)?;
        match program.attach(interface, XdpMode::Driver) {
            Ok(link) => {
                info!(interface, mode = "native", "XDP program attached");
                return Ok(Attachment { interface: interface.to_owned(), mode: AttachMode::Native, adopted: false, link: AttachLink::Owned(link) });
            }
            Err(error) => {
                classify(interface, &error)?;
                warn!(interface, %error, "native XDP is not available; falling back to generic mode");
            }
        }
        match program.attach(interface, XdpMode::Skb) {
            Ok(link) => {
                info!(interface, mode = "generic", "XDP program attached");
                Ok(Attachment { interface: interface.to_owned(), mode: AttachMode::Generic, adopted: false, link: AttachLink::Owned(link) })
            }
            Err(error) => {
                classify(interface, &error)?;
                Err(DataplaneError::Attach { interface: interface.to_owned(), source: error })
            }
        }
    }

    /// Detaches the filter from one interface (removing its pin).
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), DataplaneError> {
        let interface = attachment.interface;
        match attachment.link {
            AttachLink::Owned(link) => {
                let program = self.program_mut(PROGRAM_NAME)?;
                program
                    .detach(link)
                    .map_err(|source| DataplaneError::Attach { interface: interface.clone(), source })?;
            }
            AttachLink::Pinned(pinned) => {
                let link = pinned.unpin().map_err(|source| DataplaneError::System {
                    action: "removing the pinned link",
                    path: PathBuf::from(&interface),
                    source,
                })?;
                drop(link);
            }
        }
        info!(interface, "XDP program detached");
        Ok(())
    }

    /// Lets go of one attachment and leaves the program attached (fail-open):
    /// a pinned link stays in bpffs for the next controller to adopt.
    pub fn release(&mut self, attachment: Attachment) {
        match attachment.link {
            AttachLink::Pinned(pinned) => {
                debug!(interface = attachment.interface, "XDP program left attached");
                drop(pinned);
            }
            AttachLink::Owned(_) => {
                warn!(interface = attachment.interface, "the XDP program is not pinned and is detached at exit");
            }
        }
    }
}

fn pin_error(interface: &str, source: aya::pin::PinError) -> DataplaneError {
    DataplaneError::PinLink { interface: interface.to_owned(), source }
}

/// Turns the errors that retrying in another mode cannot fix into their own
/// variants.
fn classify(interface: &str, error: &aya::programs::ProgramError) -> Result<(), DataplaneError> {
    use aya::programs::ProgramError;
    match error {
        ProgramError::UnknownInterface { .. } => Err(DataplaneError::UnknownInterface { name: interface.to_owned() }),
        ProgramError::SyscallError(syscall) if syscall.io_error.raw_os_error() == Some(libc::EBUSY) => {
            Err(DataplaneError::InterfaceBusy { interface: interface.to_owned(), holder: link_holder(interface) })
        }
        _ => Ok(()),
    }
}

/// The process, other than this one, that holds the XDP link of
/// `interface` in this network namespace, found through the `ifindex` the
/// kernel (from 5.9) shows in the fdinfo of XDP link descriptors.
fn link_holder(interface: &str) -> Option<u32> {
    let index = interface_index(interface)?.to_string();
    let index = index.as_str();
    let own = std::process::id();
    let namespace = std::fs::read_link("/proc/self/ns/net").ok()?;
    for process in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = process.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if pid == own || std::fs::read_link(process.path().join("ns/net")).ok().as_ref() != Some(&namespace) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link") {
                let info = std::fs::read_to_string(process.path().join("fdinfo").join(fd.file_name())).unwrap_or_default();
                if fdinfo_is_xdp_link_on(&info, index) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Reads the index of `interface` from sysfs.
fn interface_index(interface: &str) -> Option<u32> {
    let text = std::fs::read_to_string(Path::new("/sys/class/net").join(interface).join("ifindex")).ok()?;
    text.trim().parse().ok()
}

/// Looks up the interface index of XDP link `link_id` in the fdinfo of this
/// process's descriptors: 0 for a defunct link. The kernel shows it from
/// Linux 5.9, the first version with XDP links.
fn own_link_ifindex(link_id: u32) -> Option<u32> {
    let id = link_id.to_string();
    for fd in std::fs::read_dir("/proc/self/fdinfo").ok()?.filter_map(Result::ok) {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        if fdinfo_field(&info, "link_id").as_deref() == Some(id.as_str()) {
            return fdinfo_field(&info, "ifindex")?.parse().ok();
        }
    }
    None
}

/// Returns the value of `name` in fdinfo text.
fn fdinfo_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_owned())
    })
}

/// True when the fdinfo text describes an XDP link on interface `index`.
fn fdinfo_is_xdp_link_on(info: &str, index: &str) -> bool {
    fdinfo_field(info, "link_type").as_deref() == Some("xdp") && fdinfo_field(info, "ifindex").as_deref() == Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_an_xdp_link_names_its_interface() {
        let info = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\txdp\nlink_id:\t4\nprog_tag:\t1a2b\nprog_id:\t31\nifindex:\t7\n";
        assert!(fdinfo_is_xdp_link_on(info, "7"));
        assert!(!fdinfo_is_xdp_link_on(info, "8"));
        assert!(!fdinfo_is_xdp_link_on(&info.replace("xdp", "tcx"), "7"));
    }

    #[test]
    fn link_pins_carry_the_mode() {
        let dir = Path::new("/sys/fs/bpf/dnsgate/v2");
        assert_eq!(link_path(dir, "lan1", AttachMode::Native), dir.join("link-native-lan1"));
        assert_eq!(link_path(dir, "wlan0", AttachMode::Generic), dir.join("link-generic-wlan0"));
    }
}
