//! How many connections the Core holds open, in all and per address, for the node port
//! and the REST API alike: one host must not be able to take every slot (and the memory
//! and file descriptors behind them) before it has proved anything.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The unit a per-address cap counts: one IPv4 address, or one IPv6 /64 (the smallest
/// network a site is usually given, so an attacker holding one cannot multiply its share
/// by using more of its addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressGroup {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressGroup {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => AddressGroup::V4(v4),
            // An IPv4 client reaching a dual-stack socket counts as its IPv4 address.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressGroup::V4(v4),
                None => AddressGroup::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for AddressGroup {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressGroup::V4(v4) => write!(formatter, "{v4}"),
            AddressGroup::V6Prefix(prefix) => {
                let network = std::net::Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(formatter, "{network}/64")
            }
        }
    }
}

/// The slots of one listener: `max_total` connections in all, `max_per_address` from one
/// [`AddressGroup`].
pub(crate) struct ConnectionLimiter {
    slots: Arc<Semaphore>,
    max_per_address: usize,
    per_address: Mutex<HashMap<AddressGroup, usize>>,
}

/// One admitted connection's slot; dropping it (when the connection ends) frees the slot.
pub(crate) struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    group: AddressGroup,
    _slot: OwnedSemaphorePermit,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            slots: Arc::new(Semaphore::new(max_total)),
            max_per_address,
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// Waits until fewer than `max_total` connections are open. The listener takes a slot
    /// before it accepts, so while the Core is full new connections wait in the kernel's
    /// backlog instead of being accepted and dropped.
    pub async fn free_slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    /// Admits a connection from `address` into `slot`, or `None` when its address group
    /// already holds `max_per_address` connections (the slot is freed again).
    pub fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        address: IpAddr,
    ) -> Option<ConnectionPermit> {
        let group = AddressGroup::of(address);
        let mut per_address = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let open = per_address.entry(group).or_insert(0);
        if *open >= self.max_per_address {
            return None;
        }
        *open += 1;
        Some(ConnectionPermit {
            limiter: self.clone(),
            group,
            _slot: slot,
        })
    }

    /// Connections open from `address`'s group.
    #[cfg(test)]
    fn open_from(&self, address: IpAddr) -> usize {
        let per_address = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        per_address
            .get(&AddressGroup::of(address))
            .copied()
            .unwrap_or(0)
    }
}

impl ConnectionPermit {
    pub fn address_group(&self) -> AddressGroup {
        self.group
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_address = self
            .limiter
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(open) = per_address.get_mut(&self.group) {
            *open -= 1;
            // No entry outlives its last connection, so the map is bounded by the slots.
            if *open == 0 {
                per_address.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_group_cannot_take_more_than_its_share() {
        let limiter = ConnectionLimiter::new(10, 2);
        let attacker: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let attacker_neighbour: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        let first = limiter.admit(limiter.free_slot().await, attacker).unwrap();
        let _second = limiter
            .admit(limiter.free_slot().await, attacker_neighbour)
            .unwrap();
        assert!(limiter.admit(limiter.free_slot().await, attacker).is_none());
        assert!(limiter.admit(limiter.free_slot().await, other).is_some());
        drop(first);
        assert_eq!(limiter.open_from(attacker), 1);
        assert!(limiter.admit(limiter.free_slot().await, attacker).is_some());
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_groups_print_readably() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            AddressGroup::of(mapped),
            AddressGroup::of("192.0.2.1".parse().unwrap())
        );
        let v6 = AddressGroup::of("2001:db8::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8::/64");
    }

    #[tokio::test]
    async fn the_last_connection_of_a_group_leaves_no_entry() {
        let limiter = ConnectionLimiter::new(1, 1);
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        drop(limiter.admit(limiter.free_slot().await, address).unwrap());
        assert!(limiter.per_address.lock().unwrap().is_empty());
        // And the global slot came back.
        assert!(limiter.admit(limiter.free_slot().await, address).is_some());
    }
}
