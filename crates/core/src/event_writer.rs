//! The single task that moves events from the node connections into the store, in batches.
//!
//! Connections push into a bounded queue; this task takes everything waiting (up to
//! `batch_max_events`) and commits it in one transaction. Under load batches grow by
//! themselves; when idle, an event is written as soon as it arrives. When the store fails,
//! the same batch is retried with backoff and the queue fills, which stops the
//! connections from reading: backpressure instead of memory growth or loss. After a commit,
//! the sessions whose events it held learn how far they are stored (acknowledged delivery).
//! The events' shares of the queue's byte budget are given back only after their batch is
//! committed (or given up), so the budget bounds the batch in flight as well as the queue.

use std::sync::Arc;
use std::time::Duration;

use honeybee_store::{EventStore, NewEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::{stored_positions, QueuedEvent};
use crate::metrics::CoreMetrics;

const RETRY_DELAY_START: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// After shutdown is requested, a failing store gets this many more attempts per batch.
const ATTEMPTS_AFTER_SHUTDOWN: u32 = 3;

/// Runs until every sender of `queue` is gone and the queue is drained, so events accepted
/// before shutdown are still written.
pub(crate) async fn run_event_writer(
    store: Arc<dyn EventStore>,
    mut queue: mpsc::Receiver<QueuedEvent>,
    batch_max_events: usize,
    metrics: Arc<CoreMetrics>,
    shutdown: CancellationToken,
) {
    let mut pending = Vec::with_capacity(batch_max_events);
    while queue.recv_many(&mut pending, batch_max_events).await > 0 {
        metrics.event_queue_depth.set(queue.len() as i64);
        let positions = stored_positions(&pending);
        let mut permits = Vec::with_capacity(pending.len());
        let batch: Arc<[NewEvent]> = pending
            .drain(..)
            .map(|queued| {
                permits.push(queued.bytes);
                queued.event
            })
            .collect();
        if write_with_retry(store.as_ref(), batch, &metrics, &shutdown).await {
            for (progress, seq) in positions {
                progress.record_stored(seq);
            }
        }
        drop(permits);
    }
    tracing::debug!("event writer finished: queue closed and drained");
}

/// Commits `batch`, retrying; returns whether it was stored.
async fn write_with_retry(
    store: &dyn EventStore,
    batch: Arc<[NewEvent]>,
    metrics: &CoreMetrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = RETRY_DELAY_START;
    let mut attempts_after_shutdown = 0;
    loop {
        match store.insert_events(batch.clone()).await {
            Ok(inserted) => {
                metrics.events_stored.add(inserted);
                metrics.events_duplicate.add(batch.len() as u64 - inserted);
                metrics.event_batches_stored.increment();
                return true;
            }
            Err(error) => {
                metrics.store_write_failures.increment();
                if shutdown.is_cancelled() {
                    attempts_after_shutdown += 1;
                    if attempts_after_shutdown >= ATTEMPTS_AFTER_SHUTDOWN {
                        tracing::error!(
                            %error,
                            events = batch.len(),
                            "giving up on an event batch during shutdown: the store keeps failing (nodes with acknowledged delivery send it again)"
                        );
                        return false;
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

#[cfg(test)]
mod tests;
