//! The storage interfaces the Core programs against, one per concern, so that each part
//! of the Core asks for what it uses (the event writer only [`EventStore`]) and a second
//! backend implements them concern by concern.
//!
//! Commands are not here: the Core keeps them (and their answers) in memory for as long as
//! a caller waits; nothing about them outlives a restart yet.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, DroppedEvents, EnrollmentOutcome, EnrollmentTokenRecord, EventPage,
    EventQuery, EventStats, NewEnrollmentToken, NewEvent, NodeCredential, NodeRecord,
    NodeRegistrationRecord, NodeState, PotRecord, RetentionRule, StatsQuery,
};

/// Events: appended in batches, read in pages. Implementations must be safe to call from
/// many tasks at once; a batch is atomic (all events of `insert_events` or none).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores a batch of events in one transaction; an event whose `seq` is not above the
    /// highest stored for its node is a resend and is skipped (a node's numbered events
    /// arrive in `seq` order). Returns how many events were new.
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError>;

    /// The highest `seq` stored for the node, if any.
    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError>;

    /// Events matching `query`, in the query's order.
    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError>;

    /// Exact statistics of the events `query` selects.
    async fn event_stats(&self, query: StatsQuery) -> Result<EventStats, StoreError>;

    /// Drops the whole partitions `rule` selects. Ingest and queries go on meanwhile: a
    /// query that started before the drop still reads what it saw.
    async fn drop_events(&self, rule: RetentionRule) -> Result<DroppedEvents, StoreError>;
}

/// The fleet: nodes as they registered and reported, and their pots.
#[async_trait]
pub trait FleetStore: Send + Sync + 'static {
    /// Records an accepted registration: creates the node or refreshes a known one, and
    /// marks it connected. `first_seen` of a known node is kept.
    async fn register_node(&self, registration: NodeRegistrationRecord) -> Result<(), StoreError>;

    /// Stores a status the node reported, and refreshes `last_seen`.
    async fn update_node_state(
        &self,
        node_id: u64,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Refreshes `last_seen` (any sign of life).
    async fn touch_node(&self, node_id: u64, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Marks the node's connection gone if `session_id` is still the session that last
    /// registered it (a newer registration wins whatever the order of the two writes).
    /// The node itself is kept.
    async fn disconnect_node(
        &self,
        node_id: u64,
        session_id: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks every node disconnected: used when a Core starts and holds no connection yet.
    async fn disconnect_all_nodes(&self) -> Result<(), StoreError>;

    async fn upsert_pot(&self, pot: PotRecord) -> Result<(), StoreError>;

    /// Forgets an uninstalled pot (its events are kept).
    async fn delete_pot(&self, node_id: u64, pot_id: String) -> Result<(), StoreError>;

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError>;

    /// Pots of one node, or of all nodes when `node_id` is `None`.
    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError>;
}

/// Access: API tokens, enrollment tokens, node credentials, TOTP steps, revocations.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Stores a new API token (its hash only).
    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError>;

    /// The role of the token with this hash, if it exists.
    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError>;

    async fn count_api_tokens(&self) -> Result<u64, StoreError>;

    /// Stores a new enrollment token; returns its id.
    async fn create_enrollment_token(&self, token: NewEnrollmentToken) -> Result<u64, StoreError>;

    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError>;

    /// Revokes an enrollment token; `false` if no token has this id.
    async fn revoke_enrollment_token(&self, id: u64, at: DateTime<Utc>)
        -> Result<bool, StoreError>;

    /// Enrolls a node in one transaction. With `token_hash`, one use of that valid token is
    /// consumed, always. A node id whose credential was never confirmed (see
    /// [`AccessStore::confirm_node_credential`]; the ack carrying its secret may have been lost) may
    /// be given a new secret again: with a token, at the price of another use; without one
    /// (open enrollment), only while its enrollment is younger than `open_reissue_window`.
    /// A confirmed or revoked id is never enrolled again.
    async fn enroll_node(
        &self,
        node_id: u64,
        totp_secret: String,
        token_hash: Option<String>,
        at: DateTime<Utc>,
        open_reissue_window: std::time::Duration,
    ) -> Result<EnrollmentOutcome, StoreError>;

    /// Marks the node's credential as delivered: the session it enrolled on went on talking
    /// after the ack that carried the secret. From then on only a TOTP code registers it.
    /// Only `totp_secret` is confirmed: if the id was given a newer secret meanwhile, that one
    /// stays unconfirmed.
    async fn confirm_node_credential(
        &self,
        node_id: u64,
        totp_secret: String,
    ) -> Result<(), StoreError>;

    async fn node_credential(&self, node_id: u64) -> Result<Option<NodeCredential>, StoreError>;

    /// Records that the node used the code of `step` (which confirms its credential), only
    /// if that step is newer than every step it used before and the node is not revoked;
    /// returns whether it was. Atomic, so
    /// two connections replaying one code cannot both succeed.
    async fn use_totp_step(&self, node_id: u64, step: u64) -> Result<bool, StoreError>;

    /// Revokes a node for good (a node id never registered before is revoked too, so it can
    /// never enroll); returns the instant of the (first) revocation.
    async fn revoke_node(
        &self,
        node_id: u64,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError>;
}

/// Everything the Core persists, for the parts that use several concerns (a node's session,
/// the API). Every type implementing the three concerns is one.
pub trait Store: EventStore + FleetStore + AccessStore {}

impl<Backend: EventStore + FleetStore + AccessStore> Store for Backend {}
