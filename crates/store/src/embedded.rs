//! The embedded backend as one [`Store`](crate::Store): the control plane in SQLite, events
//! in the columnar event store, each concern answered by the part that keeps it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::columnar::{ColumnarEventStore, ColumnarOptions};
use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, DroppedEvents, EnrollmentOutcome, EnrollmentTokenRecord, EventFields,
    EventPage, EventQuery, EventStats, NewEnrollmentToken, NewEvent, NodeCredential, NodeRecord,
    NodeRegistrationRecord, NodeState, PotRecord, RetentionRule, StatsQuery,
};
use crate::sqlite::{LegacyEvent, SqliteOptions, SqliteStore};
use crate::store::{AccessStore, EventStore, FleetStore};

/// SQLite for nodes, pots and access; the columnar store for events.
pub struct EmbeddedStore {
    pub control: Arc<SqliteStore>,
    pub events: Arc<ColumnarEventStore>,
}

/// Events moved per batch from an earlier release's events table.
const MIGRATION_BATCH_EVENTS: usize = 10_000;

impl EmbeddedStore {
    /// Opens both parts. Events an earlier release kept in the SQLite database are moved
    /// into the event store first, with their ids, each given the well-known fields
    /// `fields_of` finds in its payload; then the old table is dropped. A move stopped
    /// half-way (a crash) resumes after the newest id the event store holds.
    pub fn open(
        control: &SqliteOptions,
        events: ColumnarOptions,
        fields_of: &(dyn Fn(&str) -> EventFields + Sync),
    ) -> Result<Self, StoreError> {
        let control = Arc::new(SqliteStore::open(control)?);
        let events = Arc::new(ColumnarEventStore::open(events)?);
        if let Some(total) = control.legacy_event_count()? {
            move_legacy_events(&control, &events, total, fields_of)?;
        }
        Ok(EmbeddedStore { control, events })
    }
}

fn move_legacy_events(
    control: &SqliteStore,
    events: &ColumnarEventStore,
    total: u64,
    fields_of: &(dyn Fn(&str) -> EventFields + Sync),
) -> Result<(), StoreError> {
    if total > 0 {
        tracing::info!(
            events = total,
            "moving events from the SQLite database into the event store"
        );
    }
    let started = std::time::Instant::now();
    let mut last_report = started;
    let mut after = events.next_id().saturating_sub(1);
    let mut moved = 0u64;
    loop {
        let batch = control.legacy_events_after(after, MIGRATION_BATCH_EVENTS)?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        let numbered: Vec<(u64, NewEvent)> = batch
            .into_iter()
            .map(|LegacyEvent { id, mut event }| {
                event.fields = fields_of(&event.data_json);
                (id, event)
            })
            .collect();
        moved += numbered.len() as u64;
        events.insert_with_ids(&numbered)?;
        if last_report.elapsed() >= std::time::Duration::from_secs(5) {
            last_report = std::time::Instant::now();
            tracing::info!(moved, of = total, "moving events into the event store");
        }
    }
    // Sealed before the old table goes: the move ends with every event in a partition
    // file, not in one giant log replayed at every start until it is sealed.
    events.seal_now()?;
    control.drop_legacy_events()?;
    if total > 0 {
        tracing::info!(
            moved,
            seconds = started.elapsed().as_secs_f64(),
            "moved the events into the event store and dropped the old events table"
        );
    }
    Ok(())
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError> {
        self.events.insert_events(batch).await
    }

    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        self.events.last_event_seq(node_id).await
    }

    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.events.query_events(query).await
    }

    async fn event_stats(&self, query: StatsQuery) -> Result<EventStats, StoreError> {
        self.events.event_stats(query).await
    }

    async fn drop_events(&self, rule: RetentionRule) -> Result<DroppedEvents, StoreError> {
        self.events.drop_events(rule).await
    }
}

#[async_trait]
impl FleetStore for EmbeddedStore {
    async fn register_node(&self, registration: NodeRegistrationRecord) -> Result<(), StoreError> {
        self.control.register_node(registration).await
    }

    async fn update_node_state(
        &self,
        node_id: u64,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.control.update_node_state(node_id, state, at).await
    }

    async fn touch_node(&self, node_id: u64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.control.touch_node(node_id, at).await
    }

    async fn disconnect_node(
        &self,
        node_id: u64,
        session_id: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.control.disconnect_node(node_id, session_id, at).await
    }

    async fn disconnect_all_nodes(&self) -> Result<(), StoreError> {
        self.control.disconnect_all_nodes().await
    }

    async fn upsert_pot(&self, pot: PotRecord) -> Result<(), StoreError> {
        self.control.upsert_pot(pot).await
    }

    async fn delete_pot(&self, node_id: u64, pot_id: String) -> Result<(), StoreError> {
        self.control.delete_pot(node_id, pot_id).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.control.list_nodes().await
    }

    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError> {
        self.control.get_node(node_id).await
    }

    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError> {
        self.control.list_pots(node_id).await
    }
}

#[async_trait]
impl AccessStore for EmbeddedStore {
    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError> {
        self.control.create_api_token(token).await
    }

    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError> {
        self.control.api_token_role(token_hash).await
    }

    async fn count_api_tokens(&self) -> Result<u64, StoreError> {
        self.control.count_api_tokens().await
    }

    async fn create_enrollment_token(&self, token: NewEnrollmentToken) -> Result<u64, StoreError> {
        self.control.create_enrollment_token(token).await
    }

    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        self.control.list_enrollment_tokens().await
    }

    async fn revoke_enrollment_token(
        &self,
        id: u64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.control.revoke_enrollment_token(id, at).await
    }

    async fn enroll_node(
        &self,
        node_id: u64,
        totp_secret: String,
        token_hash: Option<String>,
        at: DateTime<Utc>,
        open_reissue_window: std::time::Duration,
    ) -> Result<EnrollmentOutcome, StoreError> {
        self.control
            .enroll_node(node_id, totp_secret, token_hash, at, open_reissue_window)
            .await
    }

    async fn confirm_node_credential(
        &self,
        node_id: u64,
        totp_secret: String,
    ) -> Result<(), StoreError> {
        self.control
            .confirm_node_credential(node_id, totp_secret)
            .await
    }

    async fn node_credential(&self, node_id: u64) -> Result<Option<NodeCredential>, StoreError> {
        self.control.node_credential(node_id).await
    }

    async fn use_totp_step(&self, node_id: u64, step: u64) -> Result<bool, StoreError> {
        self.control.use_totp_step(node_id, step).await
    }

    async fn revoke_node(
        &self,
        node_id: u64,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.control.revoke_node(node_id, at).await
    }
}
