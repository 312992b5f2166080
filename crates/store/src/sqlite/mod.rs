//! The embedded SQLite backend: one file, WAL mode, batched transactions.
//!
//! One writer connection and one reader connection, each behind a mutex and used from
//! tokio's blocking pool: WAL lets readers run while a batch is being written, and a
//! single writer is what SQLite allows anyway. The store's concerns each have a file:
//! `schema.rs` (migrations), `events.rs` ([`EventStore`](crate::EventStore)), `fleet.rs`
//! ([`FleetStore`](crate::FleetStore)), `access.rs` ([`AccessStore`](crate::AccessStore));
//! this file opens the database and holds what they share.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, EnrollmentOutcome, EnrollmentTokenRecord, EventCursor, EventOrder,
    EventPage, EventQuery, NewEnrollmentToken, NewEvent, NodeCredential, NodeKind, NodeRecord,
    NodeRegistrationRecord, NodeState, PotRecord, PotState, StoredEvent, MAX_EVENT_PAGE,
};
use crate::store::{AccessStore, EventStore, FleetStore};

mod access;
mod event_page;
mod events;
mod fleet;
mod readers;
mod schema;

use event_page::{page_length, read_page_rows};
use readers::{open_reader, EventReaders};
use schema::migrate;

/// How hard SQLite syncs to disk on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// fsync on every commit: a committed batch survives power loss. Commits are batched,
    /// so this costs one fsync per batch, not per event.
    Full,
    /// fsync at WAL checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

impl SqliteSynchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        }
    }
}

/// Page cache of the writer, KiB. The events table's indexes grow with every batch; with
/// SQLite's 2 MiB default their pages did not fit, and a third of the writer's time went
/// to reading pages back from the OS and spilling dirty ones mid-transaction.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of the reader (API queries), KiB.
const READER_CACHE_KIB: i64 = 32 * 1024;
/// Bytes of the database file read through a memory map instead of a copy per page.
const MMAP_BYTES: i64 = 256 << 20;
/// How often the checkpointer thread copies the WAL back into the database. Checkpoints
/// run beside the writer, not inside a commit: in the commit they took a tenth of the
/// single writer's time (moving them out took the benchmark's full-speed run from about
/// 61k to 70k events/s). The interval is short because a checkpoint ends with an fsync of
/// the database file, and a commit's own fsync waits behind it on the same disk: every
/// 500 ms that was a 20 ms stall, the slowest percent of the 10k events/s latency run (p99
/// 13-44 ms); every 100 ms each stall is a few milliseconds (p99 7.3 ms) and full-speed
/// throughput did not change.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) after which the checkpointer also restarts the WAL: it waits for the
/// current commit and makes the next one start at the beginning of the file, which a
/// checkpoint beside a busy writer cannot do. Bounds the WAL at about 128 MiB.
const RESTART_WAL_PAGES: i64 = 32_768;
/// The writer's own checkpoint, a backstop in case the checkpointer falls far behind.
const AUTOCHECKPOINT_PAGES: i64 = 4 * RESTART_WAL_PAGES;

/// Default of [`SqliteOptions::event_readers`].
const DEFAULT_EVENT_READERS: usize = 4;
/// Default of [`SqliteOptions::query_time_limit`].
const DEFAULT_QUERY_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Source-address index entries per partition (see [`SqliteOptions::source_partition_events`]).
/// At this size a 16,384-event commit touches about a thousand of the partition's leaf
/// pages; in one table over a million events it touched most of its sixteen thousand.
const DEFAULT_SOURCE_PARTITION_EVENTS: u64 = 65_536;
/// Stored events after which the newest are added to the source index (see
/// [`SqliteOptions::source_index_lag_events`]).
const DEFAULT_SOURCE_INDEX_LAG_EVENTS: u64 = 1_024;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: SqliteSynchronous,
    /// The source-address index is split into tables of about this many entries, newest
    /// written, older ones only read. Its key is random (attackers' addresses), so one
    /// index over every event dirtied a different page per event, and each commit wrote
    /// those pages whole to the WAL: the index that halved the store's insert rate. A small
    /// current partition keeps the pages a commit dirties few and in cache. A query by
    /// source reads the partitions newest first and stops when no older one can hold a
    /// newer event.
    pub source_partition_events: u64,
    /// The newest events join the source index in bulk, once this many were stored since
    /// the last addition; until then a query by source scans them (a rowid range of at
    /// most this many rows). Indexing each commit's few events at once made every small
    /// commit rewrite a page of the partition per event (random keys) and made SQLite
    /// sweep its whole page cache at the end of the commit: a quarter of the insert's
    /// instructions at 10,000 events/s. Default 1,024: the addition stalls its commit for
    /// a few milliseconds; at 8,192 the stall (tens of ms) showed in the p99 latency.
    pub source_index_lag_events: u64,
    /// Connections reading events, so that slow queries run side by side (default 4).
    /// Nodes, pots and tokens are read on a connection of their own.
    pub event_readers: usize,
    /// How long one events query may run before SQLite is told to stop it (default 10 s):
    /// the caller gets [`StoreError::QueryTimeLimit`], never a request that hangs.
    pub query_time_limit: Duration,
}

impl SqliteOptions {
    /// Options for the database at `path`, with the default partition size and lag.
    pub fn new(path: PathBuf, synchronous: SqliteSynchronous) -> Self {
        SqliteOptions {
            path,
            synchronous,
            source_partition_events: DEFAULT_SOURCE_PARTITION_EVENTS,
            source_index_lag_events: DEFAULT_SOURCE_INDEX_LAG_EVENTS,
            event_readers: DEFAULT_EVENT_READERS,
            query_time_limit: DEFAULT_QUERY_TIME_LIMIT,
        }
    }
}

pub struct SqliteStore {
    source_partition_events: u64,
    source_index_lag_events: u64,
    writer: Arc<Mutex<Connection>>,
    /// Nodes, pots, tokens, credentials: small, quick reads that never wait behind events.
    reader: Arc<Mutex<Connection>>,
    event_readers: EventReaders,
    /// Dropping the store drops this sender, which stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(options: &SqliteOptions) -> Result<Self, StoreError> {
        if let Some(parent) = options.path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDirectory {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        restrict_to_owner(&options.path)?;
        let open_error = |source| StoreError::Open {
            path: options.path.clone(),
            source,
        };
        let mut writer = Connection::open(&options.path).map_err(open_error)?;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA busy_timeout = 5000;
                 PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA mmap_size = {MMAP_BYTES};
                 PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};",
                options.synchronous.pragma_value()
            ))
            .map_err(open_error)?;
        migrate(&mut writer)?;
        let reader = open_reader(&options.path, READER_CACHE_KIB, MMAP_BYTES)?;
        let event_readers = EventReaders::open(
            &options.path,
            options.event_readers,
            options.query_time_limit,
            MMAP_BYTES,
        )?;
        let checkpointer = Connection::open(&options.path).map_err(open_error)?;
        checkpointer
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(open_error)?;
        let (stop_checkpoints, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, stopped))
            .map_err(|source| StoreError::Checkpointer {
                path: options.path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            source_partition_events: options.source_partition_events.max(1),
            source_index_lag_events: options.source_index_lag_events.max(1),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            event_readers,
            _checkpointer: stop_checkpoints,
        })
    }

    /// The database file path for a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("honeybee.sqlite3")
    }

    async fn with_writer<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_blocking(self.writer.clone(), work).await
    }

    async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_blocking(self.reader.clone(), work).await
    }
}

/// Copies the WAL into the database every [`CHECKPOINT_INTERVAL`] until the store is
/// dropped. A failed checkpoint is only logged: the WAL keeps every commit safe meanwhile,
/// and the writer's own checkpoint is the backstop.
fn run_checkpointer(connection: Connection, stop: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        let checkpoint = |mode: &str| {
            connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                row.get::<_, i64>(1)
            })
        };
        match checkpoint("PASSIVE") {
            Ok(wal_pages) if wal_pages > RESTART_WAL_PAGES => {
                if let Err(error) = checkpoint("RESTART") {
                    tracing::warn!(%error, wal_pages, "restarting the SQLite WAL failed");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "checkpointing the SQLite WAL failed"),
        }
    }
}

/// The database holds node TOTP secrets and every captured credential: it is created (or
/// kept) readable by its owner only. SQLite gives new `-wal` and `-shm` files the database
/// file's mode, but side files left by an older run keep theirs, so those are fixed too.
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Permissions {
            path: path.to_path_buf(),
            source,
        })?;
    drop(file);
    for suffix in ["", "-wal", "-shm"] {
        let mut side_file = path.as_os_str().to_owned();
        side_file.push(suffix);
        make_private_if_present(Path::new(&side_file))?;
    }
    Ok(())
}

fn make_private_if_present(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(failed(error)),
    };
    if metadata.permissions().mode() & 0o777 != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(())
}

async fn run_blocking<T, F>(connection: Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned mutex is still safe to use.
        let mut guard = connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
    })
    .await
    .map_err(|error| StoreError::Worker(error.to_string()))?
}

/// A transaction that takes the write lock at its start. A deferred one that reads first
/// upgrades to writing later, and SQLite fails that upgrade at once ("database is locked",
/// without waiting out the busy timeout) when the WAL changed since its read began — which
/// the checkpointer thread does; seen as failed batches while filling the benchmark's
/// store. An immediate start waits for the lock like any writer.
fn write_transaction(connection: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    Ok(connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
}

/// Node ids are u64 on the wire; SQLite integers are i64. The bits are stored unchanged.
fn node_id_to_sql(node_id: u64) -> i64 {
    node_id as i64
}

fn node_id_from_sql(value: i64) -> u64 {
    value as u64
}

fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

fn from_micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or(StoreError::CorruptValue {
        column: "timestamp",
        value: value.to_string(),
    })
}

fn optional_micros(value: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(from_micros).transpose()
}

fn parse_text<T>(
    column: &'static str,
    text: String,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(&text).ok_or(StoreError::CorruptValue {
        column,
        value: text,
    })
}

const NODE_COLUMNS: &str =
    "node_id, name, address, port, kind, remote_address, state, connected, first_seen, last_seen, \
     EXISTS (SELECT 1 FROM node_credentials AS credential \
             WHERE credential.node_id = nodes.node_id AND credential.revoked_at IS NOT NULL)";

fn node_from_row(row: &Row<'_>) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        node_id: node_id_from_sql(row.get(0)?),
        name: row.get(1)?,
        address: row.get(2)?,
        port: row.get(3)?,
        kind: parse_text("kind", row.get(4)?, NodeKind::parse)?,
        remote_address: row.get(5)?,
        reported_state: parse_text("state", row.get(6)?, NodeState::parse)?,
        connected: row.get(7)?,
        first_seen: from_micros(row.get(8)?)?,
        last_seen: from_micros(row.get(9)?)?,
        revoked: row.get(10)?,
    })
}

fn pot_from_row(row: &Row<'_>) -> Result<PotRecord, StoreError> {
    Ok(PotRecord {
        node_id: node_id_from_sql(row.get(0)?),
        pot_id: row.get(1)?,
        pot_type: row.get(2)?,
        state: parse_text("state", row.get(3)?, PotState::parse)?,
        message: row.get(4)?,
        updated_at: from_micros(row.get(5)?)?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: row.get(0)?,
        node_id: node_id_from_sql(row.get(1)?),
        pot_id: row.get(2)?,
        pot_type: row.get(3)?,
        event_type: row.get(4)?,
        timestamp: from_micros(row.get(5)?)?,
        received_at: from_micros(row.get(6)?)?,
        data_json: row.get(7)?,
    })
}

const EVENT_COLUMNS: &str =
    "events.id, events.node_id, events.pot_id, events.pot_type, events.event_type, events.ts, \
     events.received_at, events.data";

fn collect_rows<T>(
    statement: &mut rusqlite::Statement<'_>,
    parameters: impl rusqlite::Params,
    convert: fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = statement.query(parameters)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(convert(row)?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_checks_answer_while_every_events_reader_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&SqliteOptions {
                event_readers: 2,
                query_time_limit: Duration::from_secs(3600),
                ..SqliteOptions::new(SqliteStore::path_in(dir.path()), SqliteSynchronous::Normal)
            })
            .unwrap(),
        );
        let endless = |connection: &mut Connection| -> Result<i64, StoreError> {
            Ok(connection.query_row(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
                [],
                |row| row.get(0),
            )?)
        };
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.event_readers.run(endless).await })
            })
            .collect();
        while store.event_readers.idle_count() != 0 {
            tokio::task::yield_now().await;
        }
        // On the events readers this would wait for an hour.
        let role = tokio::time::timeout(
            Duration::from_secs(60),
            store.api_token_role("no such token".into()),
        )
        .await
        .expect("the token check does not wait for the events readers")
        .unwrap();
        assert_eq!(role, None);
        for query in busy {
            query.abort();
        }
    }
}
