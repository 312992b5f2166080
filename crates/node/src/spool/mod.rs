//! The node's durable spool: every accepted event is appended to an on-disk queue (segment
//! files of records, fsynced once per batch) before it counts as accepted; the uplink reads
//! from it and the Core's acknowledgements delete it.
//!
//! One writer (the spool writer task) appends; any number of readers follow behind it, up to
//! the last durable sequence number; acknowledgements delete whole segments. The shared
//! index (segment list, acknowledged position, size) is behind a mutex that is never held
//! across a write or an fsync.
//!
//! Sequence numbers increase by one per appended event. A new, empty spool starts at the
//! current Unix time in microseconds, so a node whose spool was wiped never reuses numbers
//! the Core has already stored (the Core also tells the node where it is, see
//! [`Spool::ack`]).

mod payload;
mod record;
mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::watch;

pub(crate) use payload::decode_event;
use record::{decode_record, Decoded};
pub(crate) use writer::{run_spool_writer, SpoolWriter, WriterContext};

const SEGMENT_SUFFIX: &str = "spool";
pub(crate) const ACKED_FILE: &str = "acked";
const READ_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool segment {path}: {source}")]
    Segment {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool record {seq} in {path} does not hold an event: {reason}")]
    Record {
        path: PathBuf,
        seq: u64,
        reason: String,
    },
}

/// What to do with new events when the spool is at `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFullPolicy {
    /// Refuse new events (counted, alarmed): what is spooled is never lost.
    Refuse,
    /// Delete the oldest segment (its events counted as dropped, alarmed) to make room.
    DropOldest,
}

#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub directory: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub full_policy: SpoolFullPolicy,
}

/// One segment file: records with consecutive sequence numbers.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    /// The last durable record's seq; `first_seq - 1` while the segment is empty.
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
}

impl Segment {
    fn unacknowledged(&self, acked_seq: u64) -> u64 {
        self.last_seq
            .saturating_sub(acked_seq.max(self.first_seq.saturating_sub(1)))
    }
}

/// The shared index. The last segment is the one the writer appends to.
#[derive(Debug)]
struct Index {
    segments: VecDeque<Segment>,
    acked_seq: u64,
    total_bytes: u64,
}

pub(crate) struct Spool {
    options: SpoolOptions,
    index: Mutex<Index>,
    durable: watch::Sender<u64>,
    /// See [`Spool::raise_seq_floor`].
    seq_floor: std::sync::atomic::AtomicU64,
    /// Set when the writer has appended its last batch (the node is stopping).
    writer_finished: std::sync::atomic::AtomicBool,
}

/// How an [`Spool::open`] went: what recovery found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovery {
    pub unacknowledged_events: u64,
    pub torn_bytes_cut: u64,
}

impl Spool {
    /// Opens (creating) the spool directory, cuts a torn last record left by a crash, and
    /// returns the spool and its single writer.
    pub fn open(
        options: SpoolOptions,
    ) -> Result<(std::sync::Arc<Spool>, SpoolWriter, Recovery), SpoolError> {
        let directory = options.directory.clone();
        let directory_error = |source| SpoolError::Directory {
            path: directory.clone(),
            source,
        };
        std::fs::create_dir_all(&directory).map_err(directory_error)?;
        // Spooled events hold what attackers typed, captured credentials included.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700))
                .map_err(directory_error)?;
        }
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&directory)
            .map_err(directory_error)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|e| e == SEGMENT_SUFFIX))
            .filter_map(|path| {
                let first = path.file_stem()?.to_str()?.parse::<u64>().ok()?;
                Some((first, path))
            })
            .collect();
        names.sort();
        let acked_seq = std::fs::read_to_string(directory.join(ACKED_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        for (first_seq, path) in names {
            let (last_seq, bytes, cut) = recover_segment(&path, first_seq)?;
            recovery.torn_bytes_cut += cut;
            let segment = Segment {
                first_seq,
                last_seq,
                path,
                bytes,
            };
            if bytes == 0 || segment.last_seq <= acked_seq {
                let _ = std::fs::remove_file(&segment.path);
                continue;
            }
            recovery.unacknowledged_events += segment.unacknowledged(acked_seq);
            segments.push_back(segment);
        }
        let last_seq = segments
            .back()
            .map_or(0, |segment: &Segment| segment.last_seq);
        let next_seq = if segments.is_empty() {
            unix_micros().max(acked_seq + 1)
        } else {
            last_seq + 1
        };
        // An empty spool holds nothing unacknowledged: readers start where the writer does.
        let acked_seq = if segments.is_empty() {
            acked_seq.max(next_seq - 1)
        } else {
            acked_seq
        };
        let total_bytes = segments.iter().map(|segment| segment.bytes).sum();
        let (durable, _) = watch::channel(next_seq - 1);
        let spool = std::sync::Arc::new(Spool {
            options,
            index: Mutex::new(Index {
                segments,
                acked_seq,
                total_bytes,
            }),
            durable,
            seq_floor: std::sync::atomic::AtomicU64::new(0),
            writer_finished: std::sync::atomic::AtomicBool::new(false),
        });
        let writer = SpoolWriter::new(spool.clone(), next_seq);
        Ok((spool, writer, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the last durable sequence number (and wakes up once more when the writer
    /// finishes).
    pub fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Whether the writer has appended its last batch: nothing more will be spooled.
    pub fn writer_finished(&self) -> bool {
        self.writer_finished
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the writer after its last batch; wakes every reader.
    fn finish_writing(&self) {
        self.writer_finished
            .store(true, std::sync::atomic::Ordering::Release);
        self.durable.send_modify(|_| {});
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn acked_seq(&self) -> u64 {
        self.lock().acked_seq
    }

    /// Bytes of the segment files on disk.
    pub fn size_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Events appended and not yet acknowledged.
    pub fn unacknowledged_events(&self) -> u64 {
        let index = self.lock();
        index
            .segments
            .iter()
            .map(|segment| segment.unacknowledged(index.acked_seq))
            .sum()
    }

    /// Everything up to `seq` reached the Core: segments wholly at or below it are deleted
    /// (except the one being written). The position is kept on disk so a restarted node
    /// does not send it all again (if it is lost, the Core skips the repeats). Returns how
    /// many spooled events this acknowledged.
    pub fn ack(&self, seq: u64) -> u64 {
        let mut index = self.lock();
        if seq <= index.acked_seq {
            return 0;
        }
        let acknowledged = index
            .segments
            .iter()
            .map(|segment| {
                let below = segment.first_seq.saturating_sub(1).max(index.acked_seq);
                segment.last_seq.min(seq).saturating_sub(below)
            })
            .sum();
        index.acked_seq = seq;
        while index.segments.len() > 1 && index.segments[0].last_seq <= seq {
            let segment = index.segments.pop_front().expect("checked non-empty");
            index.total_bytes -= segment.bytes;
            if let Err(error) = std::fs::remove_file(&segment.path) {
                tracing::warn!(path = %segment.path.display(), %error, "deleting an acknowledged spool segment failed");
            }
        }
        drop(index);
        let path = self.options.directory.join(ACKED_FILE);
        if let Err(error) = std::fs::write(&path, format!("{seq}\n")) {
            tracing::warn!(path = %path.display(), %error, "recording the acknowledged spool position failed");
        }
        acknowledged
    }

    /// New events are numbered above `seq` (the Core already holds events up to it, e.g.
    /// from before this node's spool was wiped).
    pub fn raise_seq_floor(&self, seq: u64) {
        self.seq_floor
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
    }

    fn seq_floor(&self) -> u64 {
        self.seq_floor.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A reader from the first unacknowledged event.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader {
            next_seq: self.acked_seq() + 1,
            open: None,
        }
    }

    /// The segment holding `seq`, or else the first one after it (events before it were
    /// dropped to make room); `None` when nothing at or after `seq` is durable.
    fn segment_for(&self, seq: u64) -> Option<Segment> {
        let index = self.lock();
        index
            .segments
            .iter()
            .find(|segment| segment.last_seq >= seq && segment.last_seq >= segment.first_seq)
            .cloned()
    }
}

/// Spooled events as read: their payloads (see [`decode_event`]) back to back in one buffer
/// that is reused from batch to batch, so reading allocates nothing per event.
#[derive(Debug, Default)]
pub(crate) struct SpooledBatch {
    payloads: Vec<u8>,
    records: Vec<(u64, Range<usize>)>,
}

impl SpooledBatch {
    pub fn clear(&mut self) {
        self.payloads.clear();
        self.records.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|(seq, _)| *seq)
    }

    /// Each event's sequence number and payload, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.records
            .iter()
            .map(|(seq, range)| (*seq, &self.payloads[range.clone()]))
    }

    fn push(&mut self, seq: u64, payload: &[u8]) {
        let start = self.payloads.len();
        self.payloads.extend_from_slice(payload);
        self.records.push((seq, start..self.payloads.len()));
    }
}

/// Reads events in order, from its position up to the last durable one.
pub(crate) struct SpoolReader {
    next_seq: u64,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first_seq: u64,
    file: File,
    buffer: Vec<u8>,
    /// Where the unread part of `buffer` starts.
    consumed: usize,
}

impl SpoolReader {
    /// Whether every durable event was read.
    pub fn caught_up(&self, spool: &Spool) -> bool {
        self.next_seq > spool.durable_seq()
    }

    /// Replaces `batch` with up to `max` durable events from the reader's position
    /// (blocking file I/O). The payloads are checked by their checksum, not parsed.
    pub fn read_batch(
        &mut self,
        spool: &Spool,
        max: usize,
        batch: &mut SpooledBatch,
    ) -> Result<(), SpoolError> {
        batch.clear();
        let durable = spool.durable_seq();
        self.next_seq = self.next_seq.max(spool.acked_seq() + 1);
        while batch.len() < max && self.next_seq <= durable {
            let Some(open) = self.open.as_mut() else {
                let Some(segment) = spool.segment_for(self.next_seq) else {
                    break;
                };
                // Events before this segment were dropped to make room.
                self.next_seq = self.next_seq.max(segment.first_seq);
                let file = File::open(&segment.path).map_err(|source| SpoolError::Segment {
                    path: segment.path.clone(),
                    source,
                })?;
                self.open = Some(OpenSegment {
                    first_seq: segment.first_seq,
                    file,
                    buffer: Vec::new(),
                    consumed: 0,
                });
                continue;
            };
            match decode_record(&open.buffer[open.consumed..]) {
                Decoded::Record {
                    seq,
                    payload,
                    length,
                } => {
                    open.consumed += length;
                    if seq < self.next_seq {
                        continue;
                    }
                    batch.push(seq, payload);
                    self.next_seq = seq + 1;
                }
                Decoded::Incomplete => {
                    let path = segment_path(&spool.options.directory, open.first_seq);
                    open.buffer.drain(..open.consumed);
                    open.consumed = 0;
                    let start = open.buffer.len();
                    open.buffer.resize(start + READ_CHUNK_BYTES, 0);
                    let read = open
                        .file
                        .read(&mut open.buffer[start..])
                        .map_err(|source| SpoolError::Segment {
                            path: path.clone(),
                            source,
                        })?;
                    open.buffer.truncate(start + read);
                    if read == 0 {
                        // The end of the file. The next event is in a later segment, or
                        // not written yet: then keep the file open, it is still growing.
                        let current = open.first_seq;
                        match spool.segment_for(self.next_seq) {
                            Some(segment) if segment.first_seq != current => {
                                self.open = None;
                                continue;
                            }
                            _ => break,
                        }
                    }
                }
                Decoded::Corrupt => {
                    return Err(SpoolError::Record {
                        path: segment_path(&spool.options.directory, open.first_seq),
                        seq: self.next_seq,
                        reason: "checksum mismatch".into(),
                    })
                }
            }
        }
        Ok(())
    }
}

fn segment_path(directory: &Path, first_seq: u64) -> PathBuf {
    directory.join(format!("{first_seq:020}.{SEGMENT_SUFFIX}"))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(1)
}

/// Reads a segment, cuts whatever follows its last intact record (a write torn by a crash),
/// and returns (last seq, bytes kept, bytes cut).
fn recover_segment(path: &Path, first_seq: u64) -> Result<(u64, u64, u64), SpoolError> {
    let segment_error = |source| SpoolError::Segment {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(segment_error)?;
    let mut offset = 0;
    let mut last_seq = first_seq.saturating_sub(1);
    while let Decoded::Record { seq, length, .. } = decode_record(&bytes[offset..]) {
        last_seq = seq;
        offset += length;
    }
    let cut = (bytes.len() - offset) as u64;
    if cut > 0 {
        tracing::warn!(path = %path.display(), cut_bytes = cut, "spool segment ends in a torn record (crash during a write); cut it");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(segment_error)?;
        file.set_len(offset as u64).map_err(segment_error)?;
        let mut file = file;
        file.seek(SeekFrom::End(0)).map_err(segment_error)?;
        file.sync_all().map_err(segment_error)?;
    }
    Ok((last_seq, offset as u64, cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::NodeMetrics;
    use honeybee_protocol::IngestEvent;
    use std::sync::Arc;

    fn event(n: usize) -> IngestEvent {
        let mut data = serde_json::Map::new();
        data.insert("n".into(), serde_json::json!(n));
        data.insert("padding".into(), serde_json::json!("x".repeat(100)));
        IngestEvent {
            pot_id: "p".into(),
            pot_type: "cowrie".into(),
            event_type: "login".into(),
            timestamp: "2024-01-15T10:30:00Z".into(),
            data: honeybee_protocol::JsonObject::from_map(&data),
        }
    }

    fn options(directory: &Path, max_bytes: u64, policy: SpoolFullPolicy) -> SpoolOptions {
        SpoolOptions {
            directory: directory.to_path_buf(),
            max_bytes,
            segment_bytes: 4096,
            full_policy: policy,
        }
    }

    fn numbers(events: &[(u64, IngestEvent)]) -> Vec<u64> {
        events
            .iter()
            .map(|(_, event)| event.data.to_map().unwrap()["n"].as_u64().unwrap())
            .collect()
    }

    fn read_event(payload: &[u8]) -> IngestEvent {
        let event = decode_event(payload).unwrap();
        IngestEvent {
            pot_id: event.pot_id.into_owned(),
            pot_type: event.pot_type.into_owned(),
            event_type: event.event_type.into_owned(),
            timestamp: event.timestamp.into_owned(),
            data: serde_json::from_slice(event.data).unwrap(),
        }
    }

    fn read_all(spool: &Spool, reader: &mut SpoolReader) -> Vec<(u64, IngestEvent)> {
        let mut all = Vec::new();
        let mut batch = SpooledBatch::default();
        loop {
            reader.read_batch(spool, 7, &mut batch).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(
                batch
                    .iter()
                    .map(|(seq, payload)| (seq, read_event(payload))),
            );
        }
    }

    #[test]
    fn a_new_or_fully_acknowledged_spool_has_nothing_to_read() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        assert!(spool.reader().caught_up(&spool), "a new spool");
        assert_eq!(writer.append(&[event(1)]).appended, 1);
        let mut reader = spool.reader();
        assert!(!reader.caught_up(&spool));
        let read = read_all(&spool, &mut reader);
        spool.ack(read[0].0);
        drop((spool, writer));
        let (reopened, _, _) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        assert!(
            reopened.reader().caught_up(&reopened),
            "after a restart with all acknowledged"
        );
    }

    /// Group commit: after a quiet spell an event is synced at once; what arrives within
    /// `sync_interval` of that sync is appended and synced together.
    #[tokio::test]
    async fn events_arriving_within_the_sync_interval_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, writer, _) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        let metrics = Arc::new(NodeMetrics::new(honeybee_telemetry::MetricsRegistry::new()));
        let (alarms, _alarm_outbox) = tokio::sync::mpsc::channel(4);
        let (queue, queue_receiver) = crate::ingest_queue::ingest_queue(
            1024,
            honeybee_byte_budget::ByteBudget::new(1 << 20, Default::default()),
        );
        let writing = tokio::spawn(run_spool_writer(
            writer,
            queue_receiver,
            WriterContext {
                metrics: metrics.clone(),
                sync_interval: std::time::Duration::from_secs(1),
                alarms,
            },
        ));
        let appended = |count: u64| {
            let metrics = metrics.clone();
            async move {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                while metrics.spool_appended.get() < count {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{count} events appended"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        queue.send(event(0)).await.unwrap();
        appended(1).await;
        assert_eq!(metrics.spool_syncs.get(), 1, "the first event alone");
        // However slow this machine, fifty events sent at once need at most one sync per
        // started interval (one second here) while they are appended, never one each.
        let sending = std::time::Instant::now();
        for n in 1..=50 {
            queue.send(event(n)).await.unwrap();
        }
        appended(51).await;
        let intervals = sending.elapsed().as_secs() + 1;
        let syncs = metrics.spool_syncs.get() - 1;
        assert!(
            (1..=intervals).contains(&syncs),
            "{syncs} syncs for fifty events within {intervals} interval(s)"
        );
        drop(queue);
        writing.await.unwrap();
        let read = read_all(&spool, &mut spool.reader());
        assert_eq!(numbers(&read), (0..=50).collect::<Vec<u64>>());
    }

    #[test]
    fn events_are_read_in_order_across_segments_and_acks_delete_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        let events: Vec<IngestEvent> = (0..100).map(event).collect();
        assert_eq!(writer.append(&events[..60]).appended, 60);
        assert_eq!(writer.append(&events[60..]).appended, 40);
        let mut reader = spool.reader();
        let read = read_all(&spool, &mut reader);
        assert_eq!(numbers(&read), (0..100).collect::<Vec<u64>>());
        let seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "consecutive"
        );
        assert!(reader.caught_up(&spool));
        let segments_before = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(spool.ack(seqs[49]), 50);
        assert_eq!(spool.unacknowledged_events(), 50);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() < segments_before);
        // A new reader starts at the first unacknowledged event.
        assert_eq!(numbers(&read_all(&spool, &mut spool.reader()))[0], 50);
    }

    #[test]
    fn a_torn_last_record_is_cut_and_everything_before_it_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first_seq;
        {
            let (spool, mut writer, _) =
                Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
            writer.append(&(0..10).map(event).collect::<Vec<_>>());
            let mut batch = SpooledBatch::default();
            spool.reader().read_batch(&spool, 1, &mut batch).unwrap();
            first_seq = batch.last_seq().unwrap();
            spool.ack(first_seq + 2);
        }
        // A crash in the middle of a write leaves half a record behind.
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|e| e == SEGMENT_SUFFIX))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let torn = bytes[..20].to_owned();
        bytes.extend_from_slice(&torn);
        std::fs::write(&segment, &bytes).unwrap();

        let (spool, mut writer, recovery) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        assert_eq!(recovery.torn_bytes_cut, 20);
        assert_eq!(recovery.unacknowledged_events, 7);
        writer.append(&[event(10)]);
        let read = read_all(&spool, &mut spool.reader());
        assert_eq!(numbers(&read), (3..=10).collect::<Vec<u64>>());
        assert_eq!(
            read.last().unwrap().0,
            first_seq + 10,
            "numbering continues"
        );
    }

    #[test]
    fn a_full_spool_refuses_exactly_what_does_not_fit_or_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) =
            Spool::open(options(dir.path(), 8192, SpoolFullPolicy::Refuse)).unwrap();
        let report = writer.append(&(0..100).map(event).collect::<Vec<_>>());
        assert_eq!(report.appended + report.refused, 100);
        assert!(report.refused > 0 && report.dropped == 0, "{report:?}");
        assert!(spool.size_bytes() <= 8192);
        let kept = read_all(&spool, &mut spool.reader());
        assert_eq!(kept.len() as u64, report.appended);
        assert_eq!(numbers(&kept)[0], 0, "the oldest are kept");

        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) =
            Spool::open(options(dir.path(), 8192, SpoolFullPolicy::DropOldest)).unwrap();
        let report = writer.append(&(0..100).map(event).collect::<Vec<_>>());
        assert_eq!((report.appended, report.refused), (100, 0));
        let kept = read_all(&spool, &mut spool.reader());
        assert_eq!(kept.len() as u64 + report.dropped, 100, "{report:?}");
        assert_eq!(*numbers(&kept).last().unwrap(), 99, "the newest are kept");
        assert!(spool.size_bytes() <= 8192);
    }

    #[test]
    fn numbering_jumps_past_what_the_core_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) =
            Spool::open(options(dir.path(), 1 << 20, SpoolFullPolicy::Refuse)).unwrap();
        let far_ahead = unix_micros() + 1_000_000_000;
        spool.raise_seq_floor(far_ahead);
        spool.ack(far_ahead);
        writer.append(&[event(1)]);
        let read = read_all(&spool, &mut spool.reader());
        assert_eq!(read[0].0, far_ahead + 1);
    }
}
