//! Logging about untrusted peers: lines are rate-limited per peer (a registered node by
//! its id, anything else by its address group), so a hostile peer flooding the Core only
//! silences itself, and peer-supplied text is cut to a bounded length.

use std::borrow::Cow;

use honeybee_telemetry::{truncate_for_log, PeerLogRateLimiter, MAX_LOGGED_PEER_TEXT_BYTES};

use crate::connection_limits::AddressGroup;

/// Whom a log line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// A registered node: it proved its id, so its lines are its own whatever its address
    /// (several nodes behind one NAT keep separate budgets).
    Node(u64),
    /// Any connection before registration, counted by its address group.
    Address(AddressGroup),
}

impl PeerKey {
    pub fn of(node_id: Option<u64>, address: std::net::IpAddr) -> Self {
        match node_id {
            Some(node_id) => PeerKey::Node(node_id),
            None => PeerKey::Address(AddressGroup::of(address)),
        }
    }
}

/// The Core's limiter of lines about peers.
pub(crate) type PeerLogLimiter = PeerLogRateLimiter<PeerKey>;

/// Peer-supplied text as it may appear in a log line.
pub(crate) fn peer_text(text: &str) -> Cow<'_, str> {
    truncate_for_log(text, MAX_LOGGED_PEER_TEXT_BYTES)
}
