//! Ingest connections open at once per sender (`ingest.max_connections_per_sender`).
//!
//! The listener's `ingest.max_connections` bounds all senders together. Without a share per
//! sender, one pot user could hold every slot (a byte every few minutes keeps a connection
//! past `ingest.idle_timeout`) and leave the other pots of the node no way to deliver. A
//! sender is the unix user owning the connecting socket — a pot of this node is its own
//! user — or, when the owner cannot be found (the socket is already gone), its address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ingest::IngestLogKey;

/// Connections open at once per sender, and how many each sender holds now.
pub(crate) struct SenderSlots {
    max_per_sender: usize,
    open: Mutex<HashMap<IngestLogKey, usize>>,
}

/// One open connection of a sender; its slot is given back on drop.
pub(crate) struct SenderSlot {
    slots: Arc<SenderSlots>,
    sender: IngestLogKey,
}

impl SenderSlots {
    pub(crate) fn new(max_per_sender: usize) -> Arc<Self> {
        Arc::new(SenderSlots {
            max_per_sender,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `sender`, `None` when it holds its share already.
    pub(crate) fn try_take(self: &Arc<Self>, sender: IngestLogKey) -> Option<SenderSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let held = open.entry(sender.clone()).or_insert(0);
        if *held >= self.max_per_sender {
            return None;
        }
        *held += 1;
        Some(SenderSlot {
            slots: self.clone(),
            sender,
        })
    }

    /// Connections `sender` holds now.
    #[cfg(test)]
    fn held_by(&self, sender: &IngestLogKey) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(sender).copied().unwrap_or(0)
    }
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = open.get_mut(&self.sender) {
            *held = held.saturating_sub(1);
            // Senders without connections are forgotten: the map stays as small as the set
            // of senders connected now (itself bounded by `ingest.max_connections`).
            if *held == 0 {
                open.remove(&self.sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_gets_its_share_and_no_more_and_others_are_not_affected() {
        let slots = SenderSlots::new(2);
        let pot = IngestLogKey::User(1001);
        let other = IngestLogKey::User(1002);
        let first = slots.try_take(pot.clone()).expect("first slot");
        let second = slots.try_take(pot.clone()).expect("second slot");
        assert!(slots.try_take(pot.clone()).is_none(), "over the share");
        let others = slots
            .try_take(other.clone())
            .expect("another sender's slot");
        drop(first);
        let again = slots
            .try_take(pot.clone())
            .expect("a slot given back is free");
        assert!(slots.try_take(pot.clone()).is_none());
        drop((second, again, others));
        assert_eq!(slots.held_by(&pot), 0);
        assert!(
            slots.open.lock().unwrap().is_empty(),
            "idle senders are forgotten"
        );
    }
}
