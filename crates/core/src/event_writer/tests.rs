//! The event writer against a store that fails on purpose: a real SQLite store whose
//! `insert_events` fails a chosen number of times first (or always), so the retry and the
//! give-up-at-shutdown paths run for real.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use honeybee_store::{
    ApiRole, ApiTokenRecord, EnrollmentOutcome, EnrollmentTokenRecord, EventPage, EventQuery,
    NewEnrollmentToken, NewEvent, NodeCredential, NodeRecord, NodeRegistrationRecord, NodeState,
    PotRecord, SqliteOptions, SqliteStore, SqliteSynchronous, Store, StoreError,
};
use honeybee_telemetry::MetricsRegistry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use honeybee_byte_budget::{ByteBudget, ByteBudgetMetrics};

use super::run_event_writer;
use crate::delivery::{DeliveryProgress, QueuedEvent};
use crate::metrics::CoreMetrics;

/// Fails `insert_events` while `failures_left` is above zero (`u32::MAX`: always), and
/// hands everything else to a real store.
struct FailingStore {
    inner: SqliteStore,
    failures_left: AtomicU32,
    insert_attempts: AtomicU32,
}

#[async_trait]
impl Store for FailingStore {
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError> {
        self.insert_attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u32::MAX => Some(u32::MAX),
                left => Some(left - 1),
            })
            .is_ok();
        if failing {
            return Err(StoreError::Worker(
                "the disk is on fire (on purpose)".into(),
            ));
        }
        self.inner.insert_events(batch).await
    }

    async fn register_node(&self, registration: NodeRegistrationRecord) -> Result<(), StoreError> {
        self.inner.register_node(registration).await
    }
    async fn update_node_state(
        &self,
        node_id: u64,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.update_node_state(node_id, state, at).await
    }
    async fn touch_node(&self, node_id: u64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.touch_node(node_id, at).await
    }
    async fn disconnect_node(
        &self,
        node_id: u64,
        session_id: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.disconnect_node(node_id, session_id, at).await
    }
    async fn disconnect_all_nodes(&self) -> Result<(), StoreError> {
        self.inner.disconnect_all_nodes().await
    }
    async fn upsert_pot(&self, pot: PotRecord) -> Result<(), StoreError> {
        self.inner.upsert_pot(pot).await
    }
    async fn delete_pot(&self, node_id: u64, pot_id: String) -> Result<(), StoreError> {
        self.inner.delete_pot(node_id, pot_id).await
    }
    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        self.inner.last_event_seq(node_id).await
    }
    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError> {
        self.inner.create_api_token(token).await
    }
    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError> {
        self.inner.api_token_role(token_hash).await
    }
    async fn count_api_tokens(&self) -> Result<u64, StoreError> {
        self.inner.count_api_tokens().await
    }
    async fn create_enrollment_token(&self, token: NewEnrollmentToken) -> Result<u64, StoreError> {
        self.inner.create_enrollment_token(token).await
    }
    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        self.inner.list_enrollment_tokens().await
    }
    async fn revoke_enrollment_token(
        &self,
        id: u64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.revoke_enrollment_token(id, at).await
    }
    async fn enroll_node(
        &self,
        node_id: u64,
        totp_secret: String,
        token_hash: Option<String>,
        at: DateTime<Utc>,
        open_reissue_window: std::time::Duration,
    ) -> Result<EnrollmentOutcome, StoreError> {
        self.inner
            .enroll_node(node_id, totp_secret, token_hash, at, open_reissue_window)
            .await
    }
    async fn confirm_node_credential(
        &self,
        node_id: u64,
        totp_secret: String,
    ) -> Result<(), StoreError> {
        self.inner
            .confirm_node_credential(node_id, totp_secret)
            .await
    }
    async fn node_credential(&self, node_id: u64) -> Result<Option<NodeCredential>, StoreError> {
        self.inner.node_credential(node_id).await
    }
    async fn use_totp_step(&self, node_id: u64, step: u64) -> Result<bool, StoreError> {
        self.inner.use_totp_step(node_id, step).await
    }
    async fn revoke_node(
        &self,
        node_id: u64,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.inner.revoke_node(node_id, at).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.inner.list_nodes().await
    }
    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError> {
        self.inner.get_node(node_id).await
    }
    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError> {
        self.inner.list_pots(node_id).await
    }
    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.inner.query_events(query).await
    }
}

fn failing_store(dir: &tempfile::TempDir, failures: u32) -> Arc<FailingStore> {
    let inner = SqliteStore::open(&SqliteOptions::new(
        SqliteStore::path_in(dir.path()),
        SqliteSynchronous::Normal,
    ))
    .unwrap();
    Arc::new(FailingStore {
        inner,
        failures_left: AtomicU32::new(failures),
        insert_attempts: AtomicU32::new(0),
    })
}

fn numbered_event(seq: u64, progress: &Arc<DeliveryProgress>) -> QueuedEvent {
    numbered_event_in(seq, progress, &TEST_BUDGET)
}

fn numbered_event_in(
    seq: u64,
    progress: &Arc<DeliveryProgress>,
    budget: &ByteBudget,
) -> QueuedEvent {
    let now = Utc::now();
    QueuedEvent {
        event: NewEvent {
            node_id: 7,
            pot_id: "p".into(),
            pot_type: "t".into(),
            event_type: "e".into(),
            timestamp: now,
            received_at: now,
            data_json: "{}".into(),
            source_ip: None,
            seq: Some(seq),
        },
        progress: Some(progress.clone()),
        bytes: budget.try_acquire(64).expect("the test budget is ample"),
    }
}

/// Queue bytes for the tests' events; large enough that no test waits for it.
static TEST_BUDGET: std::sync::LazyLock<ByteBudget> =
    std::sync::LazyLock::new(|| ByteBudget::new(1 << 30, ByteBudgetMetrics::default()));

async fn stored_count(store: &FailingStore) -> usize {
    store
        .query_events(EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events
        .len()
}

/// The writer running against `store`, with fresh metrics and a queue of 64 events.
struct RunningWriter {
    metrics: Arc<CoreMetrics>,
    queue: mpsc::Sender<QueuedEvent>,
    task: tokio::task::JoinHandle<()>,
}

fn start_writer(store: &Arc<FailingStore>, shutdown: &CancellationToken) -> RunningWriter {
    let metrics = Arc::new(CoreMetrics::new(MetricsRegistry::new()));
    let (queue, receiver) = mpsc::channel(64);
    let task = tokio::spawn(run_event_writer(
        store.clone(),
        receiver,
        64,
        metrics.clone(),
        shutdown.clone(),
    ));
    RunningWriter {
        metrics,
        queue,
        task,
    }
}

#[tokio::test]
async fn a_failing_store_is_retried_until_the_batch_is_stored_and_then_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = failing_store(&dir, 3);
    let RunningWriter {
        metrics,
        queue,
        task: writer,
    } = start_writer(&store, &CancellationToken::new());
    let progress = Arc::new(DeliveryProgress::default());
    for seq in 1..=5 {
        queue.send(numbered_event(seq, &progress)).await.unwrap();
    }
    drop(queue);
    writer.await.unwrap();
    assert_eq!(metrics.store_write_failures.get(), 3);
    assert!(store.insert_attempts.load(Ordering::SeqCst) >= 4);
    assert_eq!(
        stored_count(&store).await,
        5,
        "stored once, after the failures"
    );
    assert_eq!(progress.stored_seq(), 5, "acknowledged only once stored");
}

#[tokio::test]
async fn queue_bytes_are_held_while_the_batch_is_retried_and_given_back_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = failing_store(&dir, 3);
    let RunningWriter {
        metrics,
        queue,
        task: writer,
    } = start_writer(&store, &CancellationToken::new());
    let budget = ByteBudget::new(1 << 20, metrics.event_queue_budget.clone());
    let progress = Arc::new(DeliveryProgress::default());
    for seq in 1..=5 {
        queue
            .send(numbered_event_in(seq, &progress, &budget))
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.store_write_failures.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt was made"
        );
        tokio::task::yield_now().await;
    }
    // Taken out of the queue but not committed: still memory, still counted.
    if progress.stored_seq() == 0 {
        assert_eq!(budget.bytes_held(), 5 * 64);
    }
    drop(queue);
    writer.await.unwrap();
    assert_eq!(progress.stored_seq(), 5);
    assert_eq!(budget.bytes_held(), 0);
    assert_eq!(metrics.event_queue_budget.bytes_held.get(), 0);
}

#[tokio::test]
async fn at_shutdown_a_store_that_keeps_failing_is_given_up_on_and_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = failing_store(&dir, u32::MAX);
    let shutdown = CancellationToken::new();
    let RunningWriter {
        metrics,
        queue,
        task: writer,
    } = start_writer(&store, &shutdown);
    let progress = Arc::new(DeliveryProgress::default());
    queue.send(numbered_event(1, &progress)).await.unwrap();
    // The writer is retrying before shutdown begins; then it gets its last few attempts.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.store_write_failures.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt was made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    drop(queue);
    tokio::time::timeout(std::time::Duration::from_secs(30), writer)
        .await
        .expect("the writer gives up and finishes")
        .unwrap();
    assert_eq!(stored_count(&store).await, 0);
    assert_eq!(
        progress.stored_seq(),
        0,
        "nothing was acknowledged: the node sends it again"
    );
}
