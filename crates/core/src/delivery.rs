//! Acknowledged delivery ([`honeybee_protocol::CAPABILITY_ACKED_DELIVERY`]) on the Core's
//! side: how far a session's events are durably stored, told by the event writer after
//! each commit and turned into `EventAck`s by the session.
//!
//! Cumulative acknowledgement is sound because one session queues its node's events in seq
//! order into the single FIFO event queue, and the writer commits that queue in order: when
//! the event with seq N is committed, every earlier event of the session is too (or was a
//! repeat of an already stored one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use honeybee_byte_budget::BytePermit;
use honeybee_store::NewEvent;
use tokio::sync::Notify;

/// The stored position of one session.
#[derive(Debug, Default)]
pub(crate) struct DeliveryProgress {
    stored_seq: AtomicU64,
    changed: Notify,
}

impl DeliveryProgress {
    /// Records that every event of the session up to `seq` is stored.
    pub fn record_stored(&self, seq: u64) {
        if self.stored_seq.fetch_max(seq, Ordering::AcqRel) < seq {
            self.changed.notify_one();
        }
    }

    pub fn stored_seq(&self) -> u64 {
        self.stored_seq.load(Ordering::Acquire)
    }

    /// Resolves after the next advance (at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// An event on its way to the store, with the progress to advance once it is committed and
/// its share of the queue's byte budget, given back only after the commit (or when the
/// writer gives the batch up): the batch being written is memory too.
pub(crate) struct QueuedEvent {
    pub event: NewEvent,
    pub progress: Option<Arc<DeliveryProgress>>,
    pub bytes: BytePermit,
}

/// What a queued event is charged against `[storage] queue_max_bytes`: its text, plus the
/// fixed part of the queue item (the strings' headers, the progress handle, the permit).
/// Allocator slack is not counted; the documented bound allows for it.
pub(crate) fn queued_event_bytes(event: &NewEvent) -> usize {
    std::mem::size_of::<QueuedEvent>()
        + event.data_json.len()
        + event.pot_id.len()
        + event.pot_type.len()
        + event.event_type.len()
        + event.fields.text_bytes()
}

/// The highest seq per session among `events`, in one pass: consecutive events of one
/// session share their progress, so this is usually a handful of entries per batch.
pub(crate) fn stored_positions(events: &[QueuedEvent]) -> Vec<(Arc<DeliveryProgress>, u64)> {
    let mut positions: Vec<(Arc<DeliveryProgress>, u64)> = Vec::new();
    for queued in events {
        let (Some(progress), Some(seq)) = (&queued.progress, queued.event.seq) else {
            continue;
        };
        match positions
            .iter_mut()
            .rev()
            .find(|(known, _)| Arc::ptr_eq(known, progress))
        {
            Some((_, highest)) => *highest = (*highest).max(seq),
            None => positions.push((progress.clone(), seq)),
        }
    }
    positions
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use honeybee_byte_budget::{ByteBudget, ByteBudgetMetrics};

    fn queued(progress: &Arc<DeliveryProgress>, seq: Option<u64>) -> QueuedEvent {
        let budget = ByteBudget::new(1 << 20, ByteBudgetMetrics::default());
        QueuedEvent {
            bytes: budget.try_acquire(1).unwrap(),
            event: NewEvent {
                node_id: 1,
                pot_id: "p".into(),
                pot_type: "t".into(),
                event_type: "e".into(),
                timestamp: Utc::now(),
                received_at: Utc::now(),
                data_json: "{}".into(),
                fields: Default::default(),
                seq,
            },
            progress: Some(progress.clone()),
        }
    }

    #[tokio::test]
    async fn each_session_advances_to_its_highest_committed_seq_and_is_woken() {
        let first = Arc::new(DeliveryProgress::default());
        let second = Arc::new(DeliveryProgress::default());
        let batch = [
            queued(&first, Some(5)),
            queued(&first, Some(6)),
            queued(&second, Some(90)),
            queued(&first, Some(7)),
            queued(&second, None),
        ];
        for (progress, seq) in stored_positions(&batch) {
            progress.record_stored(seq);
        }
        assert_eq!((first.stored_seq(), second.stored_seq()), (7, 90));
        // The advance left a wake-up behind; an older position does not move it back.
        first.changed().await;
        first.record_stored(3);
        assert_eq!(first.stored_seq(), 7);
    }
}
