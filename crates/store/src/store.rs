//! The storage interface the Core programs against.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, EventPage, EventQuery, NewEvent, NodeRecord, NodeRegistrationRecord,
    NodeState, PotRecord,
};

/// Everything the Core persists. Implementations must be safe to call from many tasks at
/// once; writes of one batch are atomic (all events of `insert_events` or none).
#[async_trait]
pub trait Store: Send + Sync + 'static {
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

    /// Stores a batch of events in one transaction.
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<(), StoreError>;

    /// Stores a new API token (its hash only).
    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError>;

    /// The role of the token with this hash, if it exists.
    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError>;

    async fn count_api_tokens(&self) -> Result<u64, StoreError>;

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError>;

    /// Pots of one node, or of all nodes when `node_id` is `None`.
    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError>;

    /// Events matching `query`, newest first (by event timestamp, then id).
    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError>;
}
