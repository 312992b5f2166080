//! The single task that moves events from the node connections into the store, in batches.
//!
//! Connections push into a bounded queue; this task takes everything waiting (up to
//! `batch_max_events`) and commits it in one transaction. Under load batches grow by
//! themselves; when idle, an event is written as soon as it arrives. When the store fails,
//! the same batch is retried with backoff and the queue fills, which stops the
//! connections from reading: backpressure instead of memory growth or loss.

use std::sync::Arc;
use std::time::Duration;

use honeybee_store::{NewEvent, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::CoreMetrics;

const RETRY_DELAY_START: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// After shutdown is requested, a failing store gets this many more attempts per batch.
const ATTEMPTS_AFTER_SHUTDOWN: u32 = 3;

/// Runs until every sender of `queue` is gone and the queue is drained, so events accepted
/// before shutdown are still written.
pub(crate) async fn run_event_writer(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<NewEvent>,
    batch_max_events: usize,
    metrics: Arc<CoreMetrics>,
    shutdown: CancellationToken,
) {
    let mut pending = Vec::with_capacity(batch_max_events);
    while queue.recv_many(&mut pending, batch_max_events).await > 0 {
        metrics.event_queue_depth.set(queue.len() as i64);
        let batch: Arc<[NewEvent]> = pending.drain(..).collect();
        write_with_retry(store.as_ref(), batch, &metrics, &shutdown).await;
    }
    tracing::debug!("event writer finished: queue closed and drained");
}

async fn write_with_retry(
    store: &dyn Store,
    batch: Arc<[NewEvent]>,
    metrics: &CoreMetrics,
    shutdown: &CancellationToken,
) {
    let mut delay = RETRY_DELAY_START;
    let mut attempts_after_shutdown = 0;
    loop {
        match store.insert_events(batch.clone()).await {
            Ok(()) => {
                metrics.events_stored.add(batch.len() as u64);
                metrics.event_batches_stored.increment();
                return;
            }
            Err(error) => {
                metrics.store_write_failures.increment();
                if shutdown.is_cancelled() {
                    attempts_after_shutdown += 1;
                    if attempts_after_shutdown >= ATTEMPTS_AFTER_SHUTDOWN {
                        tracing::error!(
                            %error,
                            events = batch.len(),
                            "giving up on an event batch during shutdown: the store keeps failing"
                        );
                        return;
                    }
                }
                tracing::warn!(%error, events = batch.len(), retry_in_ms = delay.as_millis() as u64, "storing an event batch failed; retrying");
                // Once shutdown is requested the remaining attempts come quickly.
                let wait = if shutdown.is_cancelled() {
                    RETRY_DELAY_START
                } else {
                    delay
                };
                tokio::select! {
                    _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
        }
    }
}
