//! User-space side of the interception of DNS sent to other resolvers:
//! its settings and exemptions, the TC egress program that restores reply
//! source addresses, and the per-client counts `dnsgate stats` prints.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    maps::{HashMap, LpmTrie, Map, lpm_trie::Key},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError},
    },
};
use dnsgate_common::maps::{
    ClientIntercepts, FlowKey, INTERCEPT_DNS, INTERCEPT_DROP_DOQ, INTERCEPT_REFUSE_DOT, InterceptConfig, IpKey,
    MAP_INTERCEPT_CLIENTS, MAP_INTERCEPT_CONFIG, MAP_INTERCEPT_EXEMPT, MAP_INTERCEPT_FLOWS,
};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::{
    Dataplane, DataplaneError, ip_key,
    loader::{map_error, open_pinned},
};

/// Name of the TC egress program in the object file.
pub const RESTORE_PROGRAM_NAME: &str = "restore_source";

/// Settings of the kernel's interception of DNS that LAN clients send to
/// other resolvers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptOptions {
    /// Handle plain DNS (UDP/53) to other resolvers as if sent to the router.
    pub dns: bool,
    /// Answer TCP SYNs to port 853 of other resolvers (DoT) with a RST.
    pub refuse_dot: bool,
    /// Drop UDP to port 853 of other resolvers (DoQ).
    pub drop_doq: bool,
    /// The router's IPv4 address that redirected queries go to. Without one,
    /// nothing sent over IPv4 is intercepted.
    pub router_v4: Option<Ipv4Addr>,
    /// The router's IPv6 address that redirected queries go to. Without one,
    /// nothing sent over IPv6 is intercepted.
    pub router_v6: Option<Ipv6Addr>,
    /// Clients and subnets left alone, as (network, prefix length).
    pub exempt: Vec<(IpAddr, u8)>,
}

/// A client's interception counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClientInterceptCount {
    /// The client.
    pub client: IpAddr,
    /// Plain DNS queries it sent to other resolvers.
    pub queries: u64,
    /// DoT connections refused and DoQ datagrams dropped.
    pub encrypted: u64,
}

/// The TC egress program attached to one interface.
#[derive(Debug)]
pub struct RestoreAttachment {
    /// Interface name.
    pub interface: String,
    link: SchedClassifierLinkId,
}

impl Dataplane {
    /// Writes the interception settings and replaces the exemptions.
    pub fn set_intercept(&mut self, options: &InterceptOptions) -> Result<(), DataplaneError> {
        let mut exempt: LpmTrie<_, IpKey, u32> = self.map_mut(MAP_INTERCEPT_EXEMPT)?;
        // Only what changed is touched, so a program adopted from an earlier
        // controller never sees a still-exempt client unexempted.
        let wanted: Vec<Key<IpKey>> =
            options.exempt.iter().map(|&(network, prefix_len)| exempt_key(network, prefix_len)).collect::<Result<_, _>>()?;
        let same = |a: &Key<IpKey>, b: &Key<IpKey>| a.prefix_len() == b.prefix_len() && a.data() == b.data();
        let present: Vec<Key<IpKey>> = exempt.keys().filter_map(Result::ok).collect();
        for key in present.iter().filter(|key| !wanted.iter().any(|wanted| same(key, wanted))) {
            exempt.remove(key).map_err(|source| map_error(MAP_INTERCEPT_EXEMPT, "removing an exemption", source))?;
        }
        for key in &wanted {
            exempt.insert(key, 0, 0).map_err(|source| map_error(MAP_INTERCEPT_EXEMPT, "adding an exemption", source))?;
        }

        let mut flags = 0;
        for (on, flag) in
            [(options.dns, INTERCEPT_DNS), (options.refuse_dot, INTERCEPT_REFUSE_DOT), (options.drop_doq, INTERCEPT_DROP_DOQ)]
        {
            if on {
                flags |= flag;
            }
        }
        let config = InterceptConfig {
            flags,
            router_v4: options.router_v4.map_or([0; 4], |address| address.octets()),
            router_v6: options.router_v6.map_or([0; 16], |address| address.octets()),
        };
        let mut map: aya::maps::Array<_, InterceptConfig> = self.map_mut(MAP_INTERCEPT_CONFIG)?;
        map.set(0, config, 0).map_err(|source| map_error(MAP_INTERCEPT_CONFIG, "writing the configuration", source))?;
        debug!(?options, "interception settings written");
        Ok(())
    }

    /// Attaches the egress program that restores reply source addresses to
    /// `interface`, through a clsact qdisc and netlink, which every kernel
    /// from 4.5 supports (tcx links need 6.6).
    pub fn attach_restore(&mut self, interface: &str) -> Result<RestoreAttachment, DataplaneError> {
        match tc::qdisc_add_clsact(interface) {
            Ok(()) => {}
            // Left by another program or an earlier run: it is shared.
            Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(error) => {
                return Err(DataplaneError::AttachRestore { interface: interface.to_owned(), source: error.into() });
            }
        }
        // A netlink filter outlives the process that attached it, so one left
        // by a daemon that did not stop cleanly is removed first.
        match tc::qdisc_detach_program(interface, TcAttachType::Egress, RESTORE_PROGRAM_NAME) {
            Ok(()) => warn!(interface, "removed a TC egress program left by an earlier run"),
            Err(TcError::IoError(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => warn!(interface, %error, "removing a TC egress program left by an earlier run failed"),
        }
        let program = self.restore_program_mut()?;
        let link = program
            .attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::Netlink(NlOptions::default()))
            .map_err(|source| DataplaneError::AttachRestore { interface: interface.to_owned(), source })?;
        info!(interface, "TC egress program attached");
        Ok(RestoreAttachment { interface: interface.to_owned(), link })
    }

    /// Detaches the egress program from one interface. The clsact qdisc is
    /// left in place because other programs may use it.
    pub fn detach_restore(&mut self, attachment: RestoreAttachment) -> Result<(), DataplaneError> {
        let interface = attachment.interface;
        self.restore_program_mut()?
            .detach(attachment.link)
            .map_err(|source| DataplaneError::AttachRestore { interface: interface.clone(), source })?;
        info!(interface, "TC egress program detached");
        Ok(())
    }

    /// Lets go of the egress program on one interface and leaves it
    /// attached (fail-open), like the XDP links. The next controller
    /// replaces it by name.
    pub fn release_restore(&mut self, attachment: RestoreAttachment) {
        match self.restore_program_mut().and_then(|program| {
            program
                .take_link(attachment.link)
                .map_err(|source| DataplaneError::AttachRestore { interface: attachment.interface.clone(), source })
        }) {
            // A netlink filter is not tied to a file descriptor: not running
            // the link's drop, which would delete the filter, leaves it in place.
            Ok(link) => std::mem::forget(link),
            Err(error) => warn!(interface = attachment.interface, %error, "keeping the TC egress program attached failed"),
        }
    }

    /// Number of redirected queries whose reply has not left yet (or whose
    /// entry has not been evicted yet).
    pub fn intercept_flow_count(&self) -> Result<usize, DataplaneError> {
        let flows: HashMap<_, FlowKey, IpKey> = self.map(MAP_INTERCEPT_FLOWS)?;
        Ok(flows.keys().filter(Result::is_ok).count())
    }

    /// The per-client interception counts, most queries first.
    pub fn intercept_clients(&self) -> Result<Vec<ClientInterceptCount>, DataplaneError> {
        let map: HashMap<_, IpKey, ClientIntercepts> = self.map(MAP_INTERCEPT_CLIENTS)?;
        Ok(collect_clients(&map))
    }

    /// The loaded egress program, for test runs.
    pub fn restore_program(&self) -> Result<&SchedClassifier, DataplaneError> {
        let name = RESTORE_PROGRAM_NAME;
        self.ebpf
            .program(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DataplaneError::Verify { program: name, source })
    }

    fn restore_program_mut(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        let name = RESTORE_PROGRAM_NAME;
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DataplaneError::Verify { program: name, source })
    }
}

/// Reads the per-client counts a running daemon pinned under `pin_dir`.
pub fn read_pinned_intercept_clients(pin_dir: &Path) -> Result<Vec<ClientInterceptCount>, DataplaneError> {
    let data = open_pinned(&super::layout_dir(pin_dir).join(MAP_INTERCEPT_CLIENTS))?;
    let map: HashMap<_, IpKey, ClientIntercepts> = HashMap::try_from(Map::LruHashMap(data))
        .map_err(|source| map_error(MAP_INTERCEPT_CLIENTS, "opening", source))?;
    Ok(collect_clients(&map))
}

fn collect_clients<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &HashMap<T, IpKey, ClientIntercepts>,
) -> Vec<ClientInterceptCount> {
    let mut clients: Vec<ClientInterceptCount> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(key, value)| ClientInterceptCount {
            client: key_address(key),
            queries: value.queries,
            encrypted: value.encrypted,
        })
        .collect();
    clients.sort_by(|a, b| (b.queries + b.encrypted).cmp(&(a.queries + a.encrypted)).then(a.client.cmp(&b.client)));
    clients
}

/// The trie key of a network; IPv4 prefixes are moved past the 96 bits of
/// the mapped-address prefix.
fn exempt_key(network: IpAddr, prefix_len: u8) -> Result<Key<IpKey>, DataplaneError> {
    let (max, offset) = if network.is_ipv4() { (32, 96) } else { (128, 0) };
    if prefix_len > max {
        return Err(DataplaneError::InvalidPrefix { network, prefix_len });
    }
    Ok(Key::new(offset + u32::from(prefix_len), ip_key(network)))
}

/// The address of a map key, IPv4 for mapped addresses.
fn key_address(key: IpKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key.0);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exempt_key_maps_ipv4_prefix() {
        let key = exempt_key("192.0.2.0".parse().unwrap(), 24).unwrap();
        assert_eq!(key.prefix_len(), 120);
        assert_eq!(key.data(), IpKey::from_v4([192, 0, 2, 0]));
    }

    #[test]
    fn exempt_key_rejects_long_prefix() {
        assert!(exempt_key("192.0.2.0".parse().unwrap(), 33).is_err());
        assert!(exempt_key("fd00::".parse().unwrap(), 128).is_ok());
        assert!(exempt_key("fd00::".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn key_address_unmaps_ipv4() {
        assert_eq!(key_address(IpKey::from_v4([198, 18, 0, 1])), "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(key_address(IpKey("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets())), "fd00::1".parse::<IpAddr>().unwrap());
    }
}
