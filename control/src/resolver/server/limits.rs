//! Admission control: a cap on concurrent connections (or UDP queries) in
//! total and per client address, handed out as permits that release their
//! slot when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts live permits in total and per client address.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_total: usize,
    max_per_client: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The cap that refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitReached {
    Total,
    PerClient,
}

impl Limiter {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            state: Mutex::default(),
        })
    }

    /// Takes one slot for `client`, checking the per-client cap first so a
    /// client at its own cap is refused even when the total has room.
    pub(crate) fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Result<Permit, LimitReached> {
        let client = canonical(client);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let client_permits = state.per_client.get(&client).copied().unwrap_or(0);
        if client_permits >= self.max_per_client {
            return Err(LimitReached::PerClient);
        }
        if state.total >= self.max_total {
            return Err(LimitReached::Total);
        }
        state.total += 1;
        state.per_client.insert(client, client_permits + 1);
        Ok(Permit {
            limiter: Arc::clone(self),
            client,
        })
    }

    #[cfg(test)]
    fn permits_of(&self, client: IpAddr) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .per_client
            .get(&canonical(client))
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, client: IpAddr) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(client_permits) = state.per_client.get_mut(&client) {
            *client_permits -= 1;
            if *client_permits == 0 {
                state.per_client.remove(&client);
            }
        }
    }
}

/// One slot of a [`Limiter`], released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release(self.client);
    }
}

/// Maps an IPv4-mapped IPv6 address to IPv4, so a dual-stack socket counts
/// a client once whichever form the kernel reports.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn per_client_cap_refuses_flooder_only() {
        let limiter = Limiter::new(4, 2);
        let _a1 = limiter.try_acquire(A).unwrap();
        let _a2 = limiter.try_acquire(A).unwrap();
        assert_eq!(limiter.try_acquire(A).unwrap_err(), LimitReached::PerClient);
        assert!(limiter.try_acquire(B).is_ok());
    }

    #[test]
    fn total_cap_applies_across_clients() {
        let limiter = Limiter::new(2, 2);
        let _a = limiter.try_acquire(A).unwrap();
        let _b = limiter.try_acquire(B).unwrap();
        assert_eq!(limiter.try_acquire(B).unwrap_err(), LimitReached::Total);
    }

    #[test]
    fn dropped_permit_frees_slot() {
        let limiter = Limiter::new(1, 1);
        let permit = limiter.try_acquire(A).unwrap();
        assert_eq!(limiter.permits_of(A), 1);
        drop(permit);
        assert_eq!(limiter.permits_of(A), 0);
        assert!(limiter.try_acquire(B).is_ok());
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let limiter = Limiter::new(4, 1);
        let _a = limiter.try_acquire(A).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            limiter.try_acquire(mapped).unwrap_err(),
            LimitReached::PerClient
        );
    }
}
