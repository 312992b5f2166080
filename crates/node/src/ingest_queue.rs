//! The queue between the ingest connections and the spool writer, bounded in events
//! (`ingest.queue_capacity`) and in bytes (`ingest.queue_max_bytes`).
//!
//! A connection takes its event's bytes from the budget before queueing it, and the spool
//! writer gives them back once the batch holding the event is appended (fsynced, or refused
//! by a full spool): the batch being written is memory too. Waiting for bytes, like waiting
//! for a slot, stops the connection from being read (backpressure).

use honeybee_byte_budget::{ByteBudget, BytePermit};
use honeybee_protocol::IngestEvent;
use tokio::sync::mpsc;

/// An event on its way into the spool, with its share of the byte budget.
pub(crate) struct QueuedIngestEvent {
    pub event: IngestEvent,
    pub bytes: BytePermit,
}

/// The producers' end of the queue.
pub(crate) struct IngestQueueSender {
    sender: mpsc::Sender<QueuedIngestEvent>,
    budget: ByteBudget,
}

/// The spool writer is gone (the node is shutting down).
#[derive(Debug)]
pub(crate) struct IngestQueueClosed;

/// A queue of `capacity` events and `budget`'s bytes.
pub(crate) fn ingest_queue(
    capacity: usize,
    budget: ByteBudget,
) -> (IngestQueueSender, mpsc::Receiver<QueuedIngestEvent>) {
    let (sender, receiver) = mpsc::channel(capacity);
    (IngestQueueSender { sender, budget }, receiver)
}

impl IngestQueueSender {
    /// Waits for the event's bytes, then for a slot, and queues it.
    pub async fn send(&self, event: IngestEvent) -> Result<(), IngestQueueClosed> {
        let bytes = self.budget.acquire(queued_ingest_event_bytes(&event)).await;
        self.sender
            .send(QueuedIngestEvent { event, bytes })
            .await
            .map_err(|_| IngestQueueClosed)
    }
}

/// What a queued event is charged: its text plus the fixed part of the queue item.
/// Allocator slack is not counted; the documented bound allows for it.
pub(crate) fn queued_ingest_event_bytes(event: &IngestEvent) -> usize {
    std::mem::size_of::<QueuedIngestEvent>()
        + event.pot_id.len()
        + event.pot_type.len()
        + event.event_type.len()
        + event.timestamp.len()
        + event.data.get().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use honeybee_byte_budget::ByteBudgetMetrics;
    use honeybee_protocol::JsonObject;
    use std::time::Duration;

    fn event_with(data_bytes: usize) -> IngestEvent {
        let mut data = serde_json::Map::new();
        data.insert("filler".into(), "f".repeat(data_bytes).into());
        IngestEvent {
            pot_id: "p".into(),
            pot_type: "t".into(),
            event_type: "e".into(),
            timestamp: "2024-01-15T10:30:00Z".into(),
            data: JsonObject::from_map(&data),
        }
    }

    #[tokio::test]
    async fn a_sender_waits_for_bytes_until_the_writer_is_done_with_earlier_events() {
        let metrics = ByteBudgetMetrics::default();
        // Room for two events of 40 KiB, not three; plenty of slots.
        let (sender, mut receiver) =
            ingest_queue(1024, ByteBudget::new(100 * 1024, metrics.clone()));
        sender.send(event_with(40 * 1024)).await.unwrap();
        sender.send(event_with(40 * 1024)).await.unwrap();
        let third = sender.send(event_with(40 * 1024));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut third)
                .await
                .is_err(),
            "the third waits for bytes although slots are free"
        );
        // Received is not done: the writer holds the bytes until the batch is spooled.
        let first = receiver.recv().await.unwrap();
        assert!(tokio::time::timeout(Duration::ZERO, &mut third)
            .await
            .is_err());
        drop(first);
        third.await.unwrap();
        assert!(metrics.producer_waits.get() >= 1);
        assert!(metrics.bytes_held.get() as usize > 80 * 1024);
        drop(receiver);
        assert!(sender.send(event_with(1)).await.is_err(), "closed");
    }
}
