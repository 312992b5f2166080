//! The event writer against a store that fails on purpose: a real event store whose
//! `insert_events` fails a chosen number of times first (or always), so the retry and the
//! give-up-at-shutdown paths run for real. The writer asks only for the events concern, so
//! that is all the double implements.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use honeybee_store::{
    ColumnarEventStore, ColumnarOptions, DroppedEvents, EventPage, EventQuery, EventStats,
    EventStore, NewEvent, RetentionRule, StatsQuery, StoreError,
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
    inner: ColumnarEventStore,
    failures_left: AtomicU32,
    insert_attempts: AtomicU32,
}

#[async_trait]
impl EventStore for FailingStore {
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

    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        self.inner.last_event_seq(node_id).await
    }

    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.inner.query_events(query).await
    }

    async fn event_stats(&self, query: StatsQuery) -> Result<EventStats, StoreError> {
        self.inner.event_stats(query).await
    }

    async fn drop_events(&self, rule: RetentionRule) -> Result<DroppedEvents, StoreError> {
        self.inner.drop_events(rule).await
    }
}

fn failing_store(dir: &tempfile::TempDir, failures: u32) -> Arc<FailingStore> {
    let inner = ColumnarEventStore::open(ColumnarOptions {
        sync_each_batch: false,
        ..ColumnarOptions::new(ColumnarOptions::directory_in(dir.path()))
    })
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
            fields: Default::default(),
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
