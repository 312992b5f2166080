//! The spool's single writer: appends batches of events (group commit: one write and one
//! fsync per batch, and batches grow under load), rolls segments, applies the full policy,
//! and reports refused or dropped events to the Core as `NodeEvent` Alarms.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use honeybee_byte_budget::BytePermit;
use honeybee_protocol::{IngestEvent, Message, NodeEvent, NodeEventKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::payload::encode_event;
use super::record::{encode_record, HEADER_BYTES};
use super::{segment_path, Segment, Spool, SpoolError, SpoolFullPolicy};
use crate::ingest::sleep_until_some;
use crate::ingest_queue::QueuedIngestEvent;
use crate::metrics::NodeMetrics;

/// Most events appended (and fsynced) as one batch.
const BATCH_MAX_EVENTS: usize = 4096;
/// Refused or dropped events are reported to the Core at most this often.
const ALARM_INTERVAL: Duration = Duration::from_secs(5);

/// What one append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AppendReport {
    pub appended: u64,
    /// Not appended: the spool was full (policy `refuse`) or the write failed.
    pub refused: u64,
    /// Older unacknowledged events deleted to make room (policy `drop_oldest`).
    pub dropped: u64,
}

pub(crate) struct SpoolWriter {
    spool: Arc<Spool>,
    next_seq: u64,
    /// The segment being appended to, once one exists.
    active: Option<ActiveSegment>,
    encoded: Vec<u8>,
    /// Records in `encoded`.
    unsynced: u64,
    /// Records of this batch whose write failed (they count as refused).
    lost: u64,
    payload: Vec<u8>,
}

struct ActiveSegment {
    first_seq: u64,
    file: File,
    bytes: u64,
}

impl SpoolWriter {
    pub(super) fn new(spool: Arc<Spool>, next_seq: u64) -> Self {
        SpoolWriter {
            spool,
            next_seq,
            active: None,
            encoded: Vec::new(),
            unsynced: 0,
            lost: 0,
            payload: Vec::new(),
        }
    }

    /// Appends `events` durably: when this returns, what it reports as appended survives a
    /// crash of the node. Blocking I/O; the index lock is never held across it.
    pub fn append(&mut self, events: &[IngestEvent]) -> AppendReport {
        let mut report = AppendReport::default();
        let floor = self.spool.seq_floor();
        if self.next_seq <= floor {
            // Jumping forward leaves a gap, which readers and the Core take in their stride.
            self.write_and_sync_or_log();
            self.next_seq = floor + 1;
            self.active = None;
        }
        self.encoded.clear();
        for event in events {
            self.payload.clear();
            encode_event(event, &mut self.payload);
            let record_bytes = (HEADER_BYTES + self.payload.len()) as u64;
            if !self.make_room(record_bytes, &mut report) {
                report.refused += 1;
                continue;
            }
            let active_bytes =
                self.active.as_ref().map_or(0, |active| active.bytes) + self.encoded.len() as u64;
            let must_roll = self.active.is_none()
                || (active_bytes > 0
                    && active_bytes + record_bytes > self.spool.options.segment_bytes);
            if must_roll {
                if let Err(error) = self.roll() {
                    tracing::error!(%error, "starting a spool segment failed; event refused");
                    report.refused += 1;
                    continue;
                }
            }
            encode_record(self.next_seq, &self.payload, &mut self.encoded);
            self.next_seq += 1;
            self.unsynced += 1;
            report.appended += 1;
            // Counted at once, so the room check sees the rest of this batch too.
            self.spool.lock().total_bytes += record_bytes;
        }
        if let Err(error) = self.write_and_sync() {
            tracing::error!(%error, "writing to the spool failed; the batch's unwritten events are refused");
        }
        // Events whose write failed are not durable: they count as refused, exactly.
        report.appended -= self.lost;
        report.refused += self.lost;
        self.lost = 0;
        report
    }

    /// Makes room for `record_bytes` under `max_bytes`; `false` when the policy refuses.
    fn make_room(&mut self, record_bytes: u64, report: &mut AppendReport) -> bool {
        let max_bytes = self.spool.options.max_bytes;
        loop {
            let mut index = self.spool.lock();
            if index.total_bytes + record_bytes <= max_bytes {
                return true;
            }
            if self.spool.options.full_policy == SpoolFullPolicy::Refuse {
                return false;
            }
            if index.segments.len() <= 1 {
                // Only the active segment is left: start a new one so this one can go.
                let empty = index
                    .segments
                    .back()
                    .is_none_or(|segment| segment.bytes == 0)
                    && self.encoded.is_empty();
                drop(index);
                if empty || self.roll().is_err() {
                    return false;
                }
                continue;
            }
            let oldest = index.segments.pop_front().expect("more than one segment");
            report.dropped += oldest.unacknowledged(index.acked_seq);
            index.total_bytes -= oldest.bytes;
            index.acked_seq = index.acked_seq.max(oldest.last_seq);
            drop(index);
            if let Err(error) = std::fs::remove_file(&oldest.path) {
                tracing::warn!(path = %oldest.path.display(), %error, "deleting a spool segment to make room failed");
            }
        }
    }

    /// Writes what is encoded to the active segment, fsyncs it, and publishes its size and
    /// last seq in the index.
    fn write_and_sync(&mut self) -> Result<(), SpoolError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let path = segment_path(&self.spool.options.directory, active.first_seq);
        let failed = |source| SpoolError::Segment {
            path: path.clone(),
            source,
        };
        if !self.encoded.is_empty() {
            let written = active
                .file
                .write_all(&self.encoded)
                .and_then(|()| active.file.sync_data());
            if let Err(source) = written {
                // Undo: cut what may have reached the file, give back the reserved room,
                // and start a fresh segment next time, so the failed records can never be
                // read and delivered later.
                let _ = active.file.set_len(active.bytes);
                self.spool.lock().total_bytes -= self.encoded.len() as u64;
                self.encoded.clear();
                self.lost += self.unsynced;
                self.unsynced = 0;
                self.active = None;
                return Err(failed(source));
            }
            active.bytes += self.encoded.len() as u64;
            self.encoded.clear();
            self.unsynced = 0;
        }
        let last_seq = self.next_seq - 1;
        let mut index = self.spool.lock();
        if let Some(segment) = index
            .segments
            .iter_mut()
            .rev()
            .find(|segment| segment.first_seq == active.first_seq)
        {
            segment.bytes = active.bytes;
            segment.last_seq = last_seq.max(segment.first_seq - 1);
        }
        drop(index);
        if last_seq > self.spool.durable_seq() {
            self.spool.durable.send_replace(last_seq);
        }
        Ok(())
    }

    /// Finishes the active segment (written and synced) and starts a new one at `next_seq`.
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.write_and_sync()?;
        let first_seq = self.next_seq;
        let path = segment_path(&self.spool.options.directory, first_seq);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError::Segment {
                path: path.clone(),
                source,
            })?;
        self.active = Some(ActiveSegment {
            first_seq,
            file,
            bytes: 0,
        });
        self.spool.lock().segments.push_back(Segment {
            first_seq,
            last_seq: first_seq - 1,
            path,
            bytes: 0,
        });
        Ok(())
    }

    fn write_and_sync_or_log(&mut self) {
        if let Err(error) = self.write_and_sync() {
            tracing::error!(%error, "writing to the spool failed");
        }
    }
}

/// What the spool writer task needs besides the writer.
pub(crate) struct WriterContext {
    pub metrics: Arc<NodeMetrics>,
    /// Shortest time between two appends (each ends in an fsync): `spool.sync_interval_ms`.
    pub sync_interval: Duration,
    /// Where alarms for the Core go (the uplink's outbox).
    pub alarms: mpsc::Sender<Message>,
}

/// Counts of refused and dropped events, reported to the Core at most every
/// [`ALARM_INTERVAL`], always with the running totals so the Core's log is exact.
#[derive(Default)]
struct LossReport {
    refused_total: u64,
    dropped_total: u64,
    unreported: bool,
    last_sent: Option<Instant>,
}

impl LossReport {
    fn due_at(&self) -> Option<Instant> {
        if !self.unreported {
            return None;
        }
        Some(
            self.last_sent
                .map_or_else(Instant::now, |sent| sent + ALARM_INTERVAL),
        )
    }

    fn send(&mut self, context: &WriterContext, spool: &Spool) {
        let message = format!(
            "spool full ({} of {} bytes, policy {}): {} events refused and {} dropped in total",
            spool.size_bytes(),
            spool.options.max_bytes,
            match spool.options.full_policy {
                SpoolFullPolicy::Refuse => "refuse",
                SpoolFullPolicy::DropOldest => "drop_oldest",
            },
            self.refused_total,
            self.dropped_total
        );
        tracing::warn!(
            refused_total = self.refused_total,
            dropped_total = self.dropped_total,
            "spool full: events lost (reported to the core)"
        );
        let alarm = Message::NodeEvent(NodeEvent {
            kind: NodeEventKind::Alarm,
            message: Some(message),
        });
        // A full outbox keeps the counts unreported; the next alarm carries them.
        self.unreported = context.alarms.try_send(alarm).is_err();
        self.last_sent = Some(Instant::now());
    }
}

/// Appends what the ingest queue delivers until every ingest sender is gone, then tells
/// readers that nothing more will come.
pub(crate) async fn run_spool_writer(
    mut writer: SpoolWriter,
    mut queue: mpsc::Receiver<QueuedIngestEvent>,
    context: WriterContext,
) {
    let spool = writer.spool.clone();
    let mut received: Vec<QueuedIngestEvent> = Vec::with_capacity(BATCH_MAX_EVENTS);
    let mut batch: Vec<IngestEvent> = Vec::with_capacity(BATCH_MAX_EVENTS);
    let mut permits: Vec<BytePermit> = Vec::with_capacity(BATCH_MAX_EVENTS);
    let mut losses = LossReport::default();
    let mut next_append_at = Instant::now();
    loop {
        // Group commit: one fsync per `sync_interval` at most. After a quiet spell the
        // deadline is past and the next event is appended at once; a full batch waiting
        // has no reason to wait longer.
        if queue.len() < BATCH_MAX_EVENTS {
            tokio::time::sleep_until(next_append_at).await;
        }
        let alarm_due = losses.due_at();
        tokio::select! {
            count = queue.recv_many(&mut received, BATCH_MAX_EVENTS) => {
                if count == 0 {
                    break;
                }
            }
            _ = sleep_until_some(alarm_due) => {
                losses.send(&context, &spool);
                continue;
            }
        }
        next_append_at = Instant::now() + context.sync_interval;
        for queued in received.drain(..) {
            batch.push(queued.event);
            permits.push(queued.bytes);
        }
        let events = std::mem::take(&mut batch);
        let appended = tokio::task::spawn_blocking(move || {
            let report = writer.append(&events);
            (writer, events, report)
        })
        .await;
        let Ok((returned_writer, mut events, report)) = appended else {
            tracing::error!("the spool writer panicked; no more events are accepted");
            spool.finish_writing();
            return;
        };
        writer = returned_writer;
        events.clear();
        batch = events;
        // The batch is in the spool (or refused): its bytes go back to the ingest queue.
        permits.clear();
        // The sync is counted first: whoever sees the appended count move finds its sync
        // counted already.
        if report.appended > 0 {
            context.metrics.spool_syncs.increment();
        }
        context.metrics.spool_appended.add(report.appended);
        context
            .metrics
            .spool_size_bytes
            .set(spool.size_bytes() as i64);
        if report.refused > 0 || report.dropped > 0 {
            context.metrics.spool_refused.add(report.refused);
            context.metrics.spool_dropped.add(report.dropped);
            losses.refused_total += report.refused;
            losses.dropped_total += report.dropped;
            losses.unreported = true;
        }
    }
    if losses.unreported {
        losses.send(&context, &spool);
    }
    spool.finish_writing();
    tracing::debug!(durable_seq = spool.durable_seq(), "spool writer finished");
}
