//! The router's addresses on the interface a query arrived on, which DDR
//! puts in `ipv4hint` / `ipv6hint` and in the resolver name's A / AAAA
//! records.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a listing of the interface addresses is reused. Addresses
/// change rarely (a new delegated IPv6 prefix), and DDR queries are few.
const REFRESH_AFTER: Duration = Duration::from_secs(5);

/// `(interface name, address)` pairs, as `getifaddrs` lists them.
type Listing = Vec<(String, IpAddr)>;

/// Supplies the addresses that sit beside a local address.
pub trait AddressLookup: Send + Sync {
    /// Returns every address of the interface that owns `local`, `local`
    /// first. An address no interface owns is returned alone.
    fn addresses_beside(&self, local: IpAddr) -> Vec<IpAddr>;
}

/// Reads the system's interfaces with `getifaddrs`.
#[derive(Debug, Default)]
pub struct SystemInterfaces {
    cached: Mutex<Option<(Instant, Listing)>>,
}

impl SystemInterfaces {
    /// Creates a lookup that lists the interfaces on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn listing(&self) -> Listing {
        let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((taken, listing)) = cached.as_ref()
            && taken.elapsed() < REFRESH_AFTER
        {
            return listing.clone();
        }
        let listing = list_interface_addresses();
        *cached = Some((Instant::now(), listing.clone()));
        listing
    }
}

impl AddressLookup for SystemInterfaces {
    fn addresses_beside(&self, local: IpAddr) -> Vec<IpAddr> {
        group_beside(&self.listing(), local)
    }
}

/// A fixed list of `(interface, address)` pairs, for tests and for
/// callers that already know the addresses.
#[derive(Debug, Clone, Default)]
pub struct FixedAddresses(pub Vec<(String, IpAddr)>);

impl AddressLookup for FixedAddresses {
    fn addresses_beside(&self, local: IpAddr) -> Vec<IpAddr> {
        group_beside(&self.0, local)
    }
}

fn group_beside(listing: &[(String, IpAddr)], local: IpAddr) -> Vec<IpAddr> {
    let mut group = vec![local];
    let owners: Vec<&str> = listing
        .iter()
        .filter(|(_, address)| *address == local)
        .map(|(interface, _)| interface.as_str())
        .collect();
    for (interface, address) in listing {
        if owners.contains(&interface.as_str()) && !group.contains(address) {
            group.push(*address);
        }
    }
    group
}

/// Lists the addresses of the named interfaces, in the order the kernel
/// reports them.
pub fn addresses_of(interfaces: &[String]) -> Vec<IpAddr> {
    list_interface_addresses()
        .into_iter()
        .filter(|(name, _)| interfaces.contains(name))
        .map(|(_, address)| address)
        .collect()
}

fn list_interface_addresses() -> Listing {
    let entries = match nix::ifaddrs::getifaddrs() {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%error, "listing interface addresses failed; DDR hints carry only the query's local address");
            return Vec::new();
        }
    };
    let mut listing = Vec::new();
    for entry in entries {
        let Some(address) = entry.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            listing.push((entry.interface_name, IpAddr::V4(v4.ip())));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            listing.push((entry.interface_name, IpAddr::V6(v6.ip())));
        }
    }
    listing
}

/// Returns whether an IPv6 address may be advertised as a hint: not
/// link-local (fe80::/10 needs a zone that a hint cannot carry), multicast
/// or unspecified. Global, unique-local (fc00::/7) and loopback pass, and
/// loopback only ever appears when the query itself came over loopback.
pub fn advertisable_v6(address: &Ipv6Addr) -> bool {
    let link_local = (address.segments()[0] & 0xffc0) == 0xfe80;
    !(link_local || address.is_multicast() || address.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> FixedAddresses {
        let pairs = [
            ("br-lan", "192.168.1.1"),
            ("br-lan", "fd12::1"),
            ("br-lan", "fe80::1"),
            ("guest", "192.168.2.1"),
            ("guest", "2001:db8::1"),
        ];
        FixedAddresses(pairs.iter().map(|(name, ip)| ((*name).to_owned(), ip.parse().unwrap())).collect())
    }

    #[test]
    fn addresses_of_arrival_interface_only() {
        let group = fixed().addresses_beside("192.168.2.1".parse().unwrap());
        let expected: Vec<IpAddr> = vec!["192.168.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(group, expected);
    }

    #[test]
    fn unknown_local_address_alone() {
        let local: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(fixed().addresses_beside(local), [local]);
    }

    #[test]
    fn link_local_never_advertised() {
        assert!(!advertisable_v6(&"fe80::1".parse().unwrap()));
        assert!(!advertisable_v6(&"febf::1".parse().unwrap()));
        assert!(advertisable_v6(&"fd12::1".parse().unwrap()));
        assert!(advertisable_v6(&"2001:db8::1".parse().unwrap()));
        assert!(!advertisable_v6(&"ff02::1".parse().unwrap()));
    }
}
