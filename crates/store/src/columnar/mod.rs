//! The embedded event store: events partitioned by arrival, the newest partition an
//! append-only log queried from memory, older ones sealed as compressed columnar Parquet
//! files (docs/storage.md has the design and the measurements behind it).
//!
//! Invariants:
//! - An event is acknowledged ([`EventStore::insert_events`] returns) only once its log
//!   record is written and `fdatasync`ed.
//! - Arrival ids ascend with the order events were stored, never reused; every partition
//!   holds one id range, and ranges do not overlap.
//! - A sealed partition exists once its file is renamed into place (after being synced);
//!   only then is its log removed. At start, a log whose events a sealed file already
//!   holds is removed, any other log is replayed, and temporary files are deleted.
//! - The partition set seen by a query is one snapshot: an event is in exactly one of its
//!   partitions, so a page never repeats or skips an event while a partition is sealed.
//!
//! - Ids of dropped partitions stay used: `dropped.json` keeps the next id past them and
//!   every node's highest `seq`, written before any file of theirs is removed.
//!
//! Files: `log.rs` (the hot log), `arrays.rs` (values out of Arrow arrays), `hot.rs` (its
//! columns in memory), `partition_writer.rs` and `sealed.rs` (writing and reading Parquet
//! partitions), `postings.rs` (each partition's rows per address and credential),
//! `filter.rs` (queries as column conditions), `stats.rs` (counts and
//! partition summaries), `day_summary.rs` (a finished day's partition summaries merged),
//! `stats_request.rs` (what answers a statistics request), `retention.rs` (dropping
//! partitions), `recovery.rs` (opening the directory), `sealer.rs` (the sealing thread);
//! this file holds the writer and queries.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use thiserror::Error;

use crate::error::StoreError;
use crate::model::{
    DroppedEvents, EventCursor, EventOrder, EventPage, EventQuery, EventStats, NewEvent,
    RetentionRule, StatsQuery, StoredEvent, MAX_EVENT_PAGE,
};
use crate::store::EventStore;

mod arrays;
mod day_summary;
mod filter;
mod hot;
mod log;
mod partition_writer;
mod postings;
mod recovery;
mod retention;
mod sealed;
mod sealer;
mod stats;
mod stats_request;

use filter::EventFilter;
use hot::{arrival_hour, HotPartition};
use log::{LogWriter, PayloadPosition};
use sealed::SealedPartition;
use sealer::{SealerSender, SealerThread};

/// Errors of the event files, each naming the file.
#[derive(Debug, Error)]
pub enum ColumnarError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event partition {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("event file {path} is damaged: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("the query ran past the store's time limit of {} s and was stopped", limit.as_secs_f64())]
    TimeLimit { limit: Duration },
    #[error("the statistics of this window hold more distinct values than {limit_bytes} bytes of memory allow")]
    StatsTooLarge { limit_bytes: usize },
    #[error("event id {id} is not above the newest stored id {newest}")]
    IdNotAscending { id: u64, newest: u64 },
}

impl ColumnarError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ColumnarError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Settings of the event store.
#[derive(Debug, Clone)]
pub struct ColumnarOptions {
    /// The directory holding the event files (`<data_dir>/events`).
    pub directory: PathBuf,
    /// The hot partition is sealed once it holds this many events (default 250,000): it
    /// bounds the hot partition's memory and the log replayed at start.
    pub partition_max_events: usize,
    /// ... or once its columns hold this many bytes of memory (default 128 MiB), whichever
    /// comes first; free-text fields (commands, URLs) make some events far larger.
    pub partition_max_memory_bytes: usize,
    /// `fdatasync` the log before a batch is acknowledged (default): an acknowledged event
    /// survives power loss. Without it, it survives a crash of the process only (tests).
    pub sync_each_batch: bool,
    /// Events queries running at once (default 4); more wait for a turn.
    pub event_readers: usize,
    /// How long one events query may run (default 10 s) before it is stopped with
    /// [`StoreError::QueryTimeLimit`].
    pub query_time_limit: Duration,
    /// The most memory one statistics request may count distinct values in (default
    /// 256 MiB); past it the request stops with [`StoreError::StatsTooLarge`]. Counts are
    /// exact, so a window with millions of distinct commands or passwords needs room.
    pub stats_max_bytes: usize,
}

impl ColumnarOptions {
    /// Default of [`ColumnarOptions::partition_max_events`].
    pub const DEFAULT_PARTITION_MAX_EVENTS: usize = 250_000;
    /// Default of [`ColumnarOptions::partition_max_memory_bytes`].
    pub const DEFAULT_PARTITION_MAX_MEMORY_BYTES: usize = 128 << 20;

    pub fn new(directory: PathBuf) -> Self {
        ColumnarOptions {
            directory,
            partition_max_events: Self::DEFAULT_PARTITION_MAX_EVENTS,
            partition_max_memory_bytes: Self::DEFAULT_PARTITION_MAX_MEMORY_BYTES,
            sync_each_batch: true,
            event_readers: 4,
            query_time_limit: Duration::from_secs(10),
            stats_max_bytes: 256 << 20,
        }
    }

    /// The event directory of a data directory.
    pub fn directory_in(data_dir: &Path) -> PathBuf {
        data_dir.join("events")
    }
}

/// The partitions a query sees, oldest first: sealed, then hot (the last hot one takes
/// appends).
#[derive(Debug, Default, Clone)]
struct PartitionSet {
    sealed: Vec<Arc<SealedPartition>>,
    hot: Vec<Arc<HotPartition>>,
}

/// The single writer's state.
struct Writer {
    log: LogWriter,
    hot: Arc<HotPartition>,
    next_log_number: u64,
    /// The id the next event gets.
    next_id: u64,
    /// The hot partition's per-node highest `seq` (its sealed file keeps them).
    hot_sequences: HashMap<u64, u64>,
    positions: Vec<PayloadPosition>,
}

/// What the writer, the queries and the sealing thread share.
struct Shared {
    options: ColumnarOptions,
    partitions: RwLock<PartitionSet>,
    /// Each node's highest stored `seq`, over every partition.
    node_sequences: Mutex<HashMap<u64, u64>>,
    /// The day summaries whose partitions are all sealed and present.
    day_summaries: RwLock<Vec<Arc<day_summary::DaySummary>>>,
    /// Held while a day summary is built: one at a time, whoever builds it.
    summarizing: Mutex<()>,
}

/// The store's state, owned by the blocking calls it runs.
struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
    sealer: SealerSender,
    /// Held by a drop: drops run one at a time.
    dropping: Mutex<()>,
}

/// The embedded event store. See the module documentation.
pub struct ColumnarEventStore {
    inner: Arc<Inner>,
    readers: Arc<tokio::sync::Semaphore>,
    /// Dropped last: the sealing thread finishes what it was given.
    _sealer_thread: SealerThread,
}

impl ColumnarEventStore {
    /// Opens the event directory (creating it), replays what a crash left in logs, and
    /// starts sealing what is due.
    pub fn open(options: ColumnarOptions) -> Result<Self, ColumnarError> {
        let recovered = recovery::recover(&options.directory)?;
        let day_summaries = day_summary::load(&options.directory, &recovered.sealed)?;
        let log_path = recovery::log_path(&options.directory, recovered.next_log_number);
        let log = LogWriter::create(&log_path)?;
        let hot = Arc::new(HotPartition::new(log_path, log.reader()?));
        let mut hot_partitions = recovered.unsealed.clone();
        hot_partitions.push(hot.clone());
        let shared = Arc::new(Shared {
            options: options.clone(),
            partitions: RwLock::new(PartitionSet {
                sealed: recovered.sealed,
                hot: hot_partitions,
            }),
            node_sequences: Mutex::new(recovered.node_sequences),
            day_summaries: RwLock::new(day_summaries),
            summarizing: Mutex::new(()),
        });
        let (sealer_thread, sealer) = SealerThread::start(shared.clone())?;
        for (partition, sequences) in recovered
            .unsealed
            .into_iter()
            .zip(recovered.unsealed_sequences)
        {
            sealer.seal(partition, sequences);
        }
        let writer = Writer {
            log,
            hot,
            next_log_number: recovered.next_log_number + 1,
            next_id: recovered.next_id,
            hot_sequences: HashMap::new(),
            positions: Vec::new(),
        };
        Ok(ColumnarEventStore {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(writer),
                sealer,
                dropping: Mutex::new(()),
            }),
            readers: Arc::new(tokio::sync::Semaphore::new(options.event_readers.max(1))),
            _sealer_thread: sealer_thread,
        })
    }

    /// The id the next stored event will get.
    pub fn next_id(&self) -> u64 {
        lock(&self.inner.writer).next_id
    }

    /// What the store holds: (sealed partitions, events in them, events in logs).
    pub fn partition_counts(&self) -> (usize, u64, u64) {
        let set = read(&self.inner.shared.partitions);
        let sealed_events = set.sealed.iter().map(|part| part.rows).sum();
        let hot_events = set
            .hot
            .iter()
            .map(|part| read(&part.columns).len() as u64)
            .sum();
        (set.sealed.len(), sealed_events, hot_events)
    }

    /// Seals the hot partition now (if it holds events) and waits until every partition
    /// waiting for sealing is sealed: for tests, tools and migrations.
    pub fn seal_now(&self) -> Result<(), ColumnarError> {
        {
            let mut writer = lock(&self.inner.writer);
            self.inner.rotate(&mut writer)?;
        }
        self.inner.sealer.wait_idle();
        let unsealed = read(&self.inner.shared.partitions).hot.len() - 1;
        if unsealed == 0 {
            return Ok(());
        }
        Err(ColumnarError::Corrupt {
            path: self.inner.shared.options.directory.clone(),
            what: format!("{unsealed} partitions could not be sealed (see the log)"),
        })
    }

    /// Builds every day summary that is due now, on the caller's thread (the sealing
    /// thread builds them when idle): for tools and benchmarks that want a store at rest.
    /// Returns how many were built.
    pub fn summarize_due_days(&self) -> usize {
        let mut failed = HashSet::new();
        let mut built = 0;
        while day_summary::summarize_next_day(&self.inner.shared, &mut failed) {
            built += 1;
        }
        built
    }

    /// Stores events that already have ids (moved from an earlier store); ids must
    /// ascend and be above every stored one. Durable on return, like any batch.
    pub fn insert_with_ids(&self, events: &[(u64, NewEvent)]) -> Result<(), ColumnarError> {
        let mut writer = lock(&self.inner.writer);
        let numbered: Vec<(u64, &NewEvent)> =
            events.iter().map(|(id, event)| (*id, event)).collect();
        self.inner.append(&mut writer, &numbered)
    }
}

impl Inner {
    fn stats(&self, query: &StatsQuery) -> Result<EventStats, ColumnarError> {
        stats_request::count_window(&self.shared, query)
    }

    /// Drops the partitions `rule` selects (see `retention.rs`).
    fn drop_events(&self, rule: &RetentionRule) -> Result<DroppedEvents, ColumnarError> {
        let _one_at_a_time = lock(&self.dropping);
        let directory = &self.shared.options.directory;
        if let (true, Some(through)) = (rule.include_hot, rule.arrived_through) {
            {
                let mut writer = lock(&self.writer);
                let newest = read(&writer.hot.columns).received_at.iter().max().copied();
                if newest.is_some_and(|newest| newest <= through.timestamp_micros()) {
                    self.rotate(&mut writer)?;
                }
            }
            self.sealer.wait_idle();
        }
        let (sealed, other_bytes) = self.disk_use();
        let victims = retention::choose_victims(directory, &sealed, other_bytes, rule);
        let mut dropped = DroppedEvents::default();
        if !victims.is_empty() {
            let earlier = retention::read_marks(directory)?;
            let past_victims = victims
                .iter()
                .map(|part| part.last_id + 1)
                .max()
                .unwrap_or(0);
            let marks = retention::DroppedMarks {
                next_id: earlier.next_id.max(past_victims),
                node_sequences: lock(&self.shared.node_sequences)
                    .iter()
                    .map(|(node, seq)| (node.to_string(), *seq))
                    .collect(),
            };
            retention::write_marks(directory, &marks)?;
            // No day summary is built meanwhile: one naming a victim would outlive it.
            let summarizing = lock(&self.shared.summarizing);
            let victim_ids: HashSet<u64> = victims.iter().map(|part| part.first_id).collect();
            day_summary::forget_partitions(&self.shared, &victim_ids)?;
            retention::count_dropped(directory, &victims, &mut dropped);
            write(&self.shared.partitions)
                .sealed
                .retain(|part| !victims.iter().any(|victim| Arc::ptr_eq(victim, part)));
            drop(summarizing);
            for victim in &victims {
                retention::remove_partition_files(directory, victim)?;
                tracing::info!(
                    partition = %victim.path.display(),
                    events = victim.rows,
                    first_id = victim.first_id,
                    last_id = victim.last_id,
                    "dropped an event partition"
                );
            }
        }
        let (sealed, other_bytes) = self.disk_use();
        dropped.remaining_bytes = other_bytes
            + sealed
                .iter()
                .map(|part| retention::partition_disk_bytes(directory, part))
                .sum::<u64>();
        let set = read(&self.shared.partitions);
        dropped.oldest_id = set
            .sealed
            .first()
            .map(|part| part.first_id as i64)
            .or_else(|| {
                set.hot
                    .iter()
                    .find_map(|hot| read(&hot.columns).ids.first().map(|id| *id as i64))
            });
        Ok(dropped)
    }

    /// The sealed partitions, and the bytes the logs and day summaries take.
    fn disk_use(&self) -> (Vec<Arc<SealedPartition>>, u64) {
        let set = read(&self.shared.partitions);
        let hot_bytes: u64 = set
            .hot
            .iter()
            .map(|hot| std::fs::metadata(&hot.log_path).map_or(0, |metadata| metadata.len()))
            .sum();
        (
            set.sealed.clone(),
            hot_bytes + day_summary::disk_bytes(&self.shared),
        )
    }

    /// Starts a new hot partition and hands the current one to the sealer.
    fn rotate(&self, writer: &mut Writer) -> Result<(), ColumnarError> {
        if read(&writer.hot.columns).len() == 0 {
            return Ok(());
        }
        let number = writer.next_log_number;
        let path = recovery::log_path(&self.shared.options.directory, number);
        let log = LogWriter::create(&path)?;
        let hot = Arc::new(HotPartition::new(path, log.reader()?));
        writer.next_log_number += 1;
        writer.log = log;
        let previous = std::mem::replace(&mut writer.hot, hot.clone());
        write(&self.shared.partitions).hot.push(hot);
        let sequences = std::mem::take(&mut writer.hot_sequences);
        self.sealer.seal(previous, sequences);
        Ok(())
    }

    /// Whether the hot partition must be sealed before `next_arrival` joins it.
    fn hot_is_due(&self, writer: &Writer, next_arrival: chrono::DateTime<chrono::Utc>) -> bool {
        let columns = read(&writer.hot.columns);
        if columns.len() == 0 {
            return false;
        }
        let hour = *read(&writer.hot.arrival_hour);
        columns.len() >= self.shared.options.partition_max_events
            || columns.memory_bytes >= self.shared.options.partition_max_memory_bytes
            || hour.is_some_and(|hour| hour != arrival_hour(next_arrival))
    }

    /// Appends events with their ids to the log (durably), then to the hot columns.
    fn append(
        &self,
        writer: &mut Writer,
        events: &[(u64, &NewEvent)],
    ) -> Result<(), ColumnarError> {
        let Some((first_id, first)) = events.first() else {
            return Ok(());
        };
        if *first_id < writer.next_id {
            return Err(ColumnarError::IdNotAscending {
                id: *first_id,
                newest: writer.next_id.saturating_sub(1),
            });
        }
        if self.hot_is_due(writer, first.received_at) {
            self.rotate(writer)?;
        }
        let mut positions = std::mem::take(&mut writer.positions);
        positions.clear();
        writer
            .log
            .append(events, self.shared.options.sync_each_batch, &mut positions)?;
        {
            let mut columns = write(&writer.hot.columns);
            for ((id, event), position) in events.iter().zip(&positions) {
                columns.push(*id, event, *position);
            }
        }
        write(&writer.hot.arrival_hour).get_or_insert(arrival_hour(first.received_at));
        let mut marks = lock(&self.shared.node_sequences);
        for (_, event) in events {
            if let Some(seq) = event.seq {
                for map in [&mut *marks, &mut writer.hot_sequences] {
                    let mark = map.entry(event.node_id).or_insert(seq);
                    *mark = (*mark).max(seq);
                }
            }
        }
        writer.next_id = events.last().map_or(writer.next_id, |(id, _)| id + 1);
        writer.positions = positions;
        Ok(())
    }

    /// Stores a batch, skipping what a node resent; returns how many were new.
    fn insert_batch(&self, batch: &[NewEvent]) -> Result<u64, ColumnarError> {
        let mut writer = lock(&self.writer);
        let mut marks: HashMap<u64, Option<u64>> = HashMap::new();
        let mut fresh: Vec<(u64, &NewEvent)> = Vec::with_capacity(batch.len());
        {
            let stored = lock(&self.shared.node_sequences);
            for event in batch {
                if let Some(seq) = event.seq {
                    let mark = marks
                        .entry(event.node_id)
                        .or_insert_with(|| stored.get(&event.node_id).copied());
                    if mark.is_some_and(|mark| seq <= mark) {
                        continue;
                    }
                    *mark = Some(seq);
                }
                fresh.push((writer.next_id + fresh.len() as u64, event));
            }
        }
        self.append(&mut writer, &fresh)?;
        Ok(fresh.len() as u64)
    }

    fn query(&self, query: &EventQuery) -> Result<EventPage, ColumnarError> {
        let time_limit = self.shared.options.query_time_limit;
        let deadline = Instant::now() + time_limit;
        let filter = EventFilter::of_query(query);
        let newest_first = query.order == EventOrder::NewestFirst;
        let limit = query.limit.clamp(1, MAX_EVENT_PAGE) as usize;
        let snapshot = read(&self.shared.partitions).clone();
        let mut page = PageBuilder::new(limit, query.max_bytes);
        enum Part<'a> {
            Sealed(&'a SealedPartition),
            Hot(&'a HotPartition),
        }
        let mut parts: Vec<Part<'_>> = snapshot
            .sealed
            .iter()
            .map(|part| Part::Sealed(part))
            .chain(snapshot.hot.iter().map(|part| Part::Hot(part)))
            .collect();
        if newest_first {
            parts.reverse();
        }
        for part in parts {
            if page.is_full() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ColumnarError::TimeLimit { limit: time_limit });
            }
            let found = match part {
                Part::Sealed(sealed) => {
                    if !filter.may_match_ids(sealed.first_id, sealed.last_id)
                        || !filter.may_match_times(sealed.min_timestamp, sealed.max_timestamp)
                    {
                        continue;
                    }
                    sealed.matching_events(
                        &filter,
                        newest_first,
                        page.wanted(),
                        deadline,
                        time_limit,
                    )?
                }
                Part::Hot(hot) => {
                    let columns = read(&hot.columns);
                    let rows = columns.matching_rows(&filter, newest_first, page.wanted());
                    hot.events(&columns, &rows)?
                }
            };
            for event in found {
                if page.push(event) {
                    break;
                }
            }
        }
        Ok(page.finish())
    }
}

/// Collects a page: at most `limit` events and `max_bytes` of payload text, plus the first
/// event beyond it, which tells that another page exists. A page holds at least one event,
/// whatever its size, so paging always moves on.
struct PageBuilder {
    events: Vec<StoredEvent>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
    full: bool,
}

impl PageBuilder {
    fn new(limit: usize, max_bytes: usize) -> Self {
        PageBuilder {
            events: Vec::new(),
            bytes: 0,
            limit,
            max_bytes,
            full: false,
        }
    }

    /// Events still to read: the rest of the page and the one beyond it.
    fn wanted(&self) -> usize {
        self.limit + 1 - self.events.len()
    }

    fn is_full(&self) -> bool {
        self.full
    }

    /// Adds an event; `true` once the page and the event beyond it are read.
    fn push(&mut self, event: StoredEvent) -> bool {
        self.bytes = self.bytes.saturating_add(event.data_json.len());
        self.full = self.events.len() == self.limit
            || (!self.events.is_empty() && self.bytes > self.max_bytes);
        self.events.push(event);
        self.full
    }

    fn finish(mut self) -> EventPage {
        if !self.full {
            return EventPage {
                events: self.events,
                next_cursor: None,
            };
        }
        self.events.pop();
        let next_cursor = self.events.last().map(|last| EventCursor { id: last.id });
        EventPage {
            events: self.events,
            next_cursor,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl From<ColumnarError> for StoreError {
    fn from(error: ColumnarError) -> Self {
        match error {
            ColumnarError::TimeLimit { limit } => StoreError::QueryTimeLimit { limit },
            ColumnarError::StatsTooLarge { limit_bytes } => {
                StoreError::StatsTooLarge { limit_bytes }
            }
            other => StoreError::Events(other),
        }
    }
}

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ColumnarError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
        .map_err(StoreError::from)
}

#[async_trait]
impl EventStore for ColumnarEventStore {
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.insert_batch(&batch)).await
    }

    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.inner.shared.node_sequences)
            .get(&node_id)
            .copied())
    }

    async fn event_stats(&self, query: StatsQuery) -> Result<EventStats, StoreError> {
        let _turn = self
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| StoreError::Worker(error.to_string()))?;
        let inner = self.inner.clone();
        blocking(move || inner.stats(&query)).await
    }

    async fn drop_events(&self, rule: RetentionRule) -> Result<DroppedEvents, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.drop_events(&rule)).await
    }

    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        let _turn = self
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| StoreError::Worker(error.to_string()))?;
        let inner = self.inner.clone();
        blocking(move || inner.query(&query)).await
    }
}
