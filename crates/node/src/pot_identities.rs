//! Which pot each pot user belongs to: filled by the pot manager as it creates and removes
//! pot users, read by ingest to stamp a connection's events with the pot that really sent
//! them, whatever the lines claim.

use std::collections::HashMap;
use std::sync::RwLock;

/// The pot a unix user runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PotIdentity {
    pub pot_id: String,
    pub pot_type: String,
}

/// uid → pot, for the pots this node started under users of their own.
#[derive(Debug, Default)]
pub(crate) struct PotIdentities {
    by_uid: RwLock<HashMap<u32, PotIdentity>>,
}

impl PotIdentities {
    pub fn insert(&self, uid: u32, identity: PotIdentity) {
        self.by_uid
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, identity);
    }

    pub fn remove(&self, uid: u32) {
        self.by_uid
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
    }

    /// Whether `pot_id` is a pot this node runs under a user of its own.
    pub fn runs_pot(&self, pot_id: &str) -> bool {
        self.by_uid
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|identity| identity.pot_id == pot_id)
    }

    pub fn get(&self, uid: u32) -> Option<PotIdentity> {
        self.by_uid
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .cloned()
    }
}
