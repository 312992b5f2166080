//! How many connections a listener holds open, in all and per address group: one host (or
//! one pot's user) must not be able to take every slot (and the memory and file
//! descriptors behind them) before it has proved anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AddressGroup;

/// The slots of one listener: `max_total` connections in all, `max_per_address` from one
/// [`AddressGroup`].
pub struct ConnectionLimiter {
    slots: Arc<Semaphore>,
    max_per_address: usize,
    per_address: Mutex<HashMap<AddressGroup, usize>>,
}

/// One admitted connection's slot; dropping it (when the connection ends) frees the slot.
pub struct ConnectionPermit {
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

    /// The share of one [`AddressGroup`].
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A free slot if there is one now (shutdown takes what waits in the backlog only
    /// within the limit).
    pub(crate) fn try_free_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Admits a connection from `group` into `slot`, or `None` when the group already
    /// holds `max_per_address` connections (the slot is freed again).
    pub fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        group: AddressGroup,
    ) -> Option<ConnectionPermit> {
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

    /// Connections open from `group`.
    #[cfg(test)]
    pub(crate) fn open_from(&self, group: AddressGroup) -> usize {
        let per_address = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        per_address.get(&group).copied().unwrap_or(0)
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
        let group = |text: &str| AddressGroup::of(text.parse().unwrap());
        let attacker = group("2001:db8:1:2::5");
        let attacker_neighbour = group("2001:db8:1:2:ffff::9");
        let other = group("2001:db8:1:3::5");
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

    #[tokio::test]
    async fn the_last_connection_of_a_group_leaves_no_entry() {
        let limiter = ConnectionLimiter::new(1, 1);
        let address = AddressGroup::of("192.0.2.1".parse().unwrap());
        drop(limiter.admit(limiter.free_slot().await, address).unwrap());
        assert!(limiter.per_address.lock().unwrap().is_empty());
        // And the global slot came back.
        assert!(limiter.admit(limiter.free_slot().await, address).is_some());
    }
}
