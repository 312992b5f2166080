//! The retention task: every `[retention] check_interval` it asks the store to drop the
//! partitions past `max_age` or beyond `max_disk_bytes`. Drops run beside ingest (the
//! store unlinks whole sealed files), so a check never slows the event writer.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use honeybee_store::{DroppedEvents, EventStore, RetentionRule};
use tokio_util::sync::CancellationToken;

use crate::metrics::CoreMetrics;

/// What retention enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetentionPolicy {
    pub max_age: Option<Duration>,
    pub max_disk_bytes: Option<u64>,
    pub check_interval: Duration,
}

/// Runs until `shutdown`: a check at start, then one per interval.
pub(crate) async fn run_retention(
    store: Arc<dyn EventStore>,
    policy: RetentionPolicy,
    metrics: Arc<CoreMetrics>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(policy.check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let rule = RetentionRule {
            arrived_through: policy.max_age.and_then(|age| {
                chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|age| Utc::now().checked_sub_signed(age))
            }),
            max_disk_bytes: policy.max_disk_bytes,
            include_hot: false,
        };
        match store.drop_events(rule).await {
            Ok(dropped) => record_drop(&metrics, &dropped, "retention"),
            Err(error) => {
                metrics.retention_failures.increment();
                tracing::error!(%error, "retention check failed; the next check tries again");
            }
        }
    }
}

/// Counts a drop (retention or purge) and logs it when it removed anything.
pub(crate) fn record_drop(metrics: &CoreMetrics, dropped: &DroppedEvents, cause: &'static str) {
    metrics
        .event_store_bytes
        .set(dropped.remaining_bytes as i64);
    if dropped.partitions == 0 {
        return;
    }
    metrics.events_dropped.add(dropped.events);
    metrics.partitions_dropped.add(dropped.partitions as u64);
    tracing::info!(
        cause,
        events = dropped.events,
        partitions = dropped.partitions,
        bytes = dropped.bytes,
        remaining_bytes = dropped.remaining_bytes,
        oldest_id = ?dropped.oldest_id,
        "dropped old events"
    );
}
