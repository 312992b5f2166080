//! Logging about untrusted peers: lines are rate-limited per peer (a registered node by
//! its id, anything else by its address group), so a hostile peer flooding the Core only
//! silences itself, and peer-supplied text is cut to a bounded length.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use honeybee_telemetry::{truncate_for_log, PeerLogRateLimiter, MAX_LOGGED_PEER_TEXT_BYTES};

use honeybee_accept::AddressGroup;

use crate::metrics::CoreMetrics;

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
    pub fn of(node_id: Option<u64>, group: AddressGroup) -> Self {
        match node_id {
            Some(node_id) => PeerKey::Node(node_id),
            None => PeerKey::Address(group),
        }
    }

    /// Whom a line about an API request counts against: its connection's group, which the
    /// API server puts into every request's extensions.
    pub fn of_request(extensions: &axum::http::Extensions) -> Self {
        match extensions.get::<ConnectionGroup>() {
            Some(ConnectionGroup(group)) => PeerKey::Address(*group),
            // Not served by the API server (a router test): one shared key.
            None => PeerKey::Address(AddressGroup::Loopback),
        }
    }
}

/// The [`AddressGroup`] of the connection an API request came on (a request extension):
/// the layers that log about a request count the line against it, so a local user gets one
/// budget whichever loopback addresses it uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionGroup(pub AddressGroup);

/// The Core's limiter of lines about peers.
pub(crate) type PeerLogLimiter = PeerLogRateLimiter<PeerKey>;

/// What the Core's listeners do with a connection refused for its group's share (see
/// `honeybee_accept::AcceptSettings::on_refused`): count it by port and log it at the
/// group's rate.
pub(crate) fn report_refused_connection(
    port_name: &'static str,
    max_per_address: usize,
    metrics: Arc<CoreMetrics>,
    log_limiter: Arc<PeerLogLimiter>,
) -> Box<dyn Fn(SocketAddr, AddressGroup) + Send + Sync> {
    Box::new(move |remote, group| {
        metrics.connection_refused(port_name, "per_address_limit");
        if let Some(suppressed) = log_limiter.allow(&PeerKey::Address(group)) {
            tracing::warn!(
                port = port_name,
                %remote,
                address_group = %group,
                limit = max_per_address,
                suppressed,
                "refused a connection: this address already holds its share of connections"
            );
        }
    })
}

/// Peer-supplied text as it may appear in a log line.
pub(crate) fn peer_text(text: &str) -> Cow<'_, str> {
    truncate_for_log(text, MAX_LOGGED_PEER_TEXT_BYTES)
}
