//! The embedded SQLite backend: one file, WAL mode, batched transactions.
//!
//! One writer connection and one reader connection, each behind a mutex and used from
//! tokio's blocking pool: WAL lets readers run while a batch is being written, and a
//! single writer is what SQLite allows anyway.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, EnrollmentOutcome, EnrollmentTokenRecord, EventCursor, EventPage,
    EventQuery, NewEnrollmentToken, NewEvent, NodeCredential, NodeKind, NodeRecord,
    NodeRegistrationRecord, NodeState, PotRecord, PotState, StoredEvent, MAX_EVENT_PAGE,
};
use crate::store::Store;

mod event_page;

use event_page::{page_length, read_page_rows};

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
}

impl SqliteOptions {
    /// Options for the database at `path`, with the default partition size and lag.
    pub fn new(path: PathBuf, synchronous: SqliteSynchronous) -> Self {
        SqliteOptions {
            path,
            synchronous,
            source_partition_events: DEFAULT_SOURCE_PARTITION_EVENTS,
            source_index_lag_events: DEFAULT_SOURCE_INDEX_LAG_EVENTS,
        }
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE nodes (
    node_id        INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    address        TEXT NOT NULL,
    port           INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    remote_address TEXT NOT NULL,
    state          TEXT NOT NULL,
    connected      INTEGER NOT NULL,
    session_id     INTEGER NOT NULL,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL
);
CREATE TABLE pots (
    node_id    INTEGER NOT NULL,
    pot_id     TEXT NOT NULL,
    pot_type   TEXT NOT NULL,
    state      TEXT NOT NULL,
    message    TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, pot_id)
);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL,
    pot_id      TEXT NOT NULL,
    pot_type    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    src_ip      TEXT,
    data        TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (ts, id);
CREATE INDEX events_by_pot ON events (pot_id, ts, id);
CREATE INDEX events_by_node ON events (node_id, ts, id);
CREATE INDEX events_by_type ON events (event_type, ts, id);
CREATE INDEX events_by_source ON events (src_ip, ts, id) WHERE src_ip IS NOT NULL;
"#,
    r#"
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE enrollment_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    uses_total INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE node_credentials (
    node_id        INTEGER PRIMARY KEY,
    totp_secret    TEXT NOT NULL,
    last_totp_step INTEGER NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    enrolled_with  INTEGER,
    revoked_at     INTEGER
);
"#,
    r#"
ALTER TABLE events ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX events_by_node_seq ON events (node_id, seq) WHERE seq IS NOT NULL;
"#,
    r#"
ALTER TABLE node_credentials ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;
"#,
    r#"
CREATE TABLE source_partitions (
    partition INTEGER PRIMARY KEY,
    entries   INTEGER NOT NULL,
    min_ts    INTEGER,
    max_ts    INTEGER
);
CREATE TABLE source_index_0 (
    src_ip TEXT NOT NULL,
    ts     INTEGER NOT NULL,
    id     INTEGER NOT NULL,
    PRIMARY KEY (src_ip, ts, id)
) WITHOUT ROWID;
INSERT INTO source_index_0 (src_ip, ts, id)
    SELECT src_ip, ts, id FROM events WHERE src_ip IS NOT NULL;
INSERT INTO source_partitions (partition, entries, min_ts, max_ts)
    SELECT 0, count(*), min(ts), max(ts) FROM source_index_0;
DROP INDEX events_by_source;
"#,
    r#"
CREATE TABLE node_sequences (
    node_id  INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
INSERT INTO node_sequences (node_id, last_seq)
    SELECT node_id, max(seq) FROM events WHERE seq IS NOT NULL GROUP BY node_id;
DROP INDEX events_by_node_seq;
"#,
    r#"
CREATE TABLE source_index_progress (
    singleton       INTEGER PRIMARY KEY CHECK (singleton = 0),
    indexed_through INTEGER NOT NULL
);
INSERT INTO source_index_progress (singleton, indexed_through)
    SELECT 0, coalesce(max(id), 0) FROM events;
"#,
];

/// The table of one source-address index partition.
fn source_partition_table(partition: i64) -> String {
    format!("source_index_{partition}")
}

/// The partition new events go to, opening the next one when the current is full. Runs
/// inside the insert's transaction, so a partition and its first entries commit together.
/// The table's shape repeats migration 6's first partition: a migration stays as it ran.
fn writable_source_partition(
    transaction: &rusqlite::Transaction<'_>,
    partition_events: u64,
) -> Result<i64, StoreError> {
    let (current, entries): (i64, i64) = transaction.query_row(
        "SELECT partition, entries FROM source_partitions ORDER BY partition DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if (entries as u64) < partition_events {
        return Ok(current);
    }
    let next = current + 1;
    transaction.execute_batch(&format!(
        "CREATE TABLE {table} (
             src_ip TEXT NOT NULL,
             ts     INTEGER NOT NULL,
             id     INTEGER NOT NULL,
             PRIMARY KEY (src_ip, ts, id)
         ) WITHOUT ROWID;
         INSERT INTO source_partitions (partition, entries) VALUES ({next}, 0);",
        table = source_partition_table(next)
    ))?;
    Ok(next)
}

/// Adds the events stored since the last addition to the source index, once there are at
/// least `lag_events` of them (`newest_id` is the newest stored). Runs inside the insert's
/// transaction: the entries, their partition's time range and the new progress mark commit
/// with the events. Invariant: an event with a source address and an id up to
/// `source_index_progress.indexed_through` is in exactly one partition; the newer ones are
/// in none, and a query by source scans them.
fn index_sources_if_lagging(
    transaction: &rusqlite::Transaction<'_>,
    newest_id: i64,
    partition_events: u64,
    lag_events: u64,
) -> Result<(), StoreError> {
    let indexed_through: i64 = transaction
        .prepare_cached("SELECT indexed_through FROM source_index_progress")?
        .query_row([], |row| row.get(0))?;
    if ((newest_id - indexed_through) as u64) < lag_events {
        return Ok(());
    }
    let partition = writable_source_partition(transaction, partition_events)?;
    let range = params![indexed_through, newest_id];
    // NOT INDEXED: the rowid range is the way in, never an index over all events.
    let (entries, min_ts, max_ts): (i64, Option<i64>, Option<i64>) = transaction
        .prepare_cached(
            "SELECT count(*), min(ts), max(ts) FROM events NOT INDEXED
             WHERE id > ?1 AND id <= ?2 AND src_ip IS NOT NULL",
        )?
        .query_row(range, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    if entries > 0 {
        transaction
            .prepare_cached(&format!(
                "INSERT INTO {} (src_ip, ts, id)
                 SELECT src_ip, ts, id FROM events NOT INDEXED
                 WHERE id > ?1 AND id <= ?2 AND src_ip IS NOT NULL",
                source_partition_table(partition)
            ))?
            .execute(range)?;
        transaction
            .prepare_cached(
                "UPDATE source_partitions SET entries = entries + ?2,
                    min_ts = min(coalesce(min_ts, ?3), ?3), max_ts = max(coalesce(max_ts, ?4), ?4)
                 WHERE partition = ?1",
            )?
            .execute(params![partition, entries, min_ts, max_ts])?;
    }
    transaction
        .prepare_cached("UPDATE source_index_progress SET indexed_through = ?1")?
        .execute([newest_id])?;
    Ok(())
}

/// The highest stored `seq` of each node a batch touches: the store's de-duplication.
///
/// A node's numbered events reach the store in `seq` order — one spool, read in order, and
/// a resend starts after the `acked_seq` the Core reported — so "at or below the node's
/// mark" is exactly "already stored". A mark per node replaced a unique (node, seq) index:
/// that index was one more B-tree entry per event, 11 % of an insert's instructions.
#[derive(Default)]
struct NodeSequences {
    /// node → (its mark, whether this batch moved it).
    marks: HashMap<u64, (i64, bool)>,
}

impl NodeSequences {
    /// Whether `seq` is new for the node; if so it becomes the node's mark.
    fn advance(
        &mut self,
        transaction: &rusqlite::Transaction<'_>,
        node_id: u64,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let mark = match self.marks.entry(node_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let stored: Option<i64> = transaction
                    .prepare_cached("SELECT last_seq FROM node_sequences WHERE node_id = ?1")?
                    .query_row([node_id_to_sql(node_id)], |row| row.get(0))
                    .optional()?;
                entry.insert((stored.unwrap_or(i64::MIN), false))
            }
        };
        let seq = seq as i64;
        if seq <= mark.0 {
            return Ok(false);
        }
        *mark = (seq, true);
        Ok(true)
    }

    /// Writes the marks this batch moved, in the batch's transaction.
    fn save(&self, transaction: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO node_sequences (node_id, last_seq) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET last_seq = excluded.last_seq",
        )?;
        for (node_id, (last_seq, moved)) in &self.marks {
            if *moved {
                upsert.execute(params![node_id_to_sql(*node_id), last_seq])?;
            }
        }
        Ok(())
    }
}

/// One source partition as the query planner sees it.
struct SourcePartition {
    partition: i64,
    min_ts: i64,
    max_ts: i64,
}

pub struct SqliteStore {
    source_partition_events: u64,
    source_index_lag_events: u64,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
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
        let reader = Connection::open_with_flags(
            &options.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        reader
            .execute_batch(&format!(
                "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{READER_CACHE_KIB};
                 PRAGMA mmap_size = {MMAP_BYTES};"
            ))
            .map_err(open_error)?;
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

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: usize =
        connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            supported: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = write_transaction(connection)?;
        transaction.execute_batch(migration)?;
        transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        transaction.commit()?;
    }
    Ok(())
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

/// The WHERE clause of an event query, without its source address, and its values.
/// `events` and `ordered` prefix the columns of the events table and of the table whose
/// (ts, id) order the query follows (the same table, or a source partition).
fn event_conditions(query: &EventQuery, events: &str, ordered: &str) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(node_id) = query.node_id {
        conditions.push(format!("{events}node_id = ?"));
        values.push(SqlValue::Integer(node_id_to_sql(node_id)));
    }
    for (column, value) in [("pot_id", &query.pot_id), ("event_type", &query.event_type)] {
        if let Some(value) = value {
            conditions.push(format!("{events}{column} = ?"));
            values.push(SqlValue::Text(value.clone()));
        }
    }
    if let Some(since) = query.since {
        conditions.push(format!("{ordered}ts >= ?"));
        values.push(SqlValue::Integer(micros(since)));
    }
    if let Some(until) = query.until {
        conditions.push(format!("{ordered}ts <= ?"));
        values.push(SqlValue::Integer(micros(until)));
    }
    if let Some(cursor) = query.cursor {
        conditions.push(format!("({ordered}ts, {ordered}id) < (?, ?)"));
        values.push(SqlValue::Integer(cursor.timestamp_micros));
        values.push(SqlValue::Integer(cursor.id));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (where_clause, values)
}

/// Newest-first events of one source address, merged from the events not yet indexed and
/// the source partitions. The partitions are read in order of their newest event; once
/// `wanted` events are held and the next partition's newest is older than all of them, no
/// later partition can change the page.
fn query_by_source(
    connection: &Connection,
    query: &EventQuery,
    source_ip: &str,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let wanted = limit + 1;
    let partitions = {
        let mut statement = connection.prepare_cached(
            "SELECT partition, min_ts, max_ts FROM source_partitions
             WHERE entries > 0 ORDER BY max_ts DESC",
        )?;
        collect_rows(&mut statement, [], |row| {
            Ok(SourcePartition {
                partition: row.get(0)?,
                min_ts: row.get(1)?,
                max_ts: row.get(2)?,
            })
        })?
    };
    let since = query.since.map(micros);
    let upper_ts = match (query.until.map(micros), query.cursor) {
        (Some(until), Some(cursor)) => Some(until.min(cursor.timestamp_micros)),
        (until, cursor) => until.or(cursor.map(|cursor| cursor.timestamp_micros)),
    };
    let (where_clause, mut values) = event_conditions(query, "events.", "source.");
    let source_condition = if where_clause.is_empty() {
        "WHERE source.src_ip = ?".to_string()
    } else {
        format!("{where_clause} AND source.src_ip = ?")
    };
    values.push(SqlValue::Text(source_ip.to_string()));
    values.push(SqlValue::Integer(wanted as i64));
    let mut events = query_unindexed_sources(connection, query, source_ip, limit)?;
    for partition in partitions {
        if since.is_some_and(|since| partition.max_ts < since)
            || upper_ts.is_some_and(|upper| partition.min_ts > upper)
        {
            continue;
        }
        // The page and the first event beyond it are known and newer than anything in
        // this partition (and the older ones).
        if events.len() > page_length(&events, limit, query.max_bytes)
            && events
                .last()
                .is_some_and(|oldest| micros(oldest.timestamp) > partition.max_ts)
        {
            break;
        }
        // CROSS JOIN keeps the partition as the outer loop: its primary key gives the
        // order, the events table is read by id.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {table} AS source CROSS JOIN events ON events.id = source.id
             {source_condition} ORDER BY source.ts DESC, source.id DESC LIMIT ?",
            table = source_partition_table(partition.partition)
        );
        let mut statement = connection.prepare_cached(&sql)?;
        events.extend(read_page_rows(
            statement.query(rusqlite::params_from_iter(values.iter()))?,
            limit,
            query.max_bytes,
            event_from_row,
        )?);
        // Each partition gave its own page plus one; merged, the first page (plus one) of
        // the merge is among them: an event a partition did not read is older than the one
        // beyond its own page, which cannot be on the merged page either.
        events.sort_unstable_by_key(|event| std::cmp::Reverse((event.timestamp, event.id)));
        events.truncate(page_length(&events, limit, query.max_bytes) + 1);
    }
    Ok(events)
}

/// The newest events of one source address among those the source index does not hold yet
/// (at most `source_index_lag_events` rows, read by rowid).
fn query_unindexed_sources(
    connection: &Connection,
    query: &EventQuery,
    source_ip: &str,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let wanted = limit + 1;
    let indexed_through: i64 = connection
        .prepare_cached("SELECT indexed_through FROM source_index_progress")?
        .query_row([], |row| row.get(0))?;
    let (where_clause, conditions) = event_conditions(query, "events.", "events.");
    let more_conditions = where_clause.replacen("WHERE", "AND", 1);
    let mut values = vec![
        SqlValue::Integer(indexed_through),
        SqlValue::Text(source_ip.to_string()),
    ];
    values.extend(conditions);
    values.push(SqlValue::Integer(wanted as i64));
    // NOT INDEXED: the rowid range is the way in, never an index over all events.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events NOT INDEXED
         WHERE events.id > ? AND events.src_ip = ? {more_conditions}
         ORDER BY events.ts DESC, events.id DESC LIMIT ?"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let events = read_page_rows(
        statement.query(rusqlite::params_from_iter(values))?,
        limit,
        query.max_bytes,
        event_from_row,
    )?;
    Ok(events)
}

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

#[async_trait]
impl Store for SqliteStore {
    async fn register_node(&self, registration: NodeRegistrationRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            let at = micros(registration.at);
            connection.execute(
                "INSERT INTO nodes (node_id, name, address, port, kind, remote_address, state, connected, session_id, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?9, ?8, ?8)
                 ON CONFLICT (node_id) DO UPDATE SET
                    name = excluded.name, address = excluded.address, port = excluded.port,
                    kind = excluded.kind, remote_address = excluded.remote_address,
                    state = excluded.state, connected = 1, session_id = excluded.session_id,
                    last_seen = excluded.last_seen",
                params![
                    node_id_to_sql(registration.node_id),
                    registration.name,
                    registration.address,
                    registration.port,
                    registration.kind.as_str(),
                    registration.remote_address,
                    NodeState::Connected.as_str(),
                    at,
                    registration.session_id as i64,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn update_node_state(
        &self,
        node_id: u64,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET state = ?2, last_seen = MAX(last_seen, ?3) WHERE node_id = ?1",
                params![node_id_to_sql(node_id), state.as_str(), micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn touch_node(&self, node_id: u64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET last_seen = MAX(last_seen, ?2) WHERE node_id = ?1",
                params![node_id_to_sql(node_id), micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn disconnect_node(
        &self,
        node_id: u64,
        session_id: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET connected = 0, last_seen = MAX(last_seen, ?2)
                 WHERE node_id = ?1 AND session_id = ?3",
                params![node_id_to_sql(node_id), micros(at), session_id as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn disconnect_all_nodes(&self) -> Result<(), StoreError> {
        self.with_writer(|connection| {
            connection.execute("UPDATE nodes SET connected = 0 WHERE connected = 1", [])?;
            Ok(())
        })
        .await
    }

    async fn upsert_pot(&self, pot: PotRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO pots (node_id, pot_id, pot_type, state, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (node_id, pot_id) DO UPDATE SET
                    pot_type = excluded.pot_type, state = excluded.state,
                    message = excluded.message, updated_at = excluded.updated_at",
                params![
                    node_id_to_sql(pot.node_id),
                    pot.pot_id,
                    pot.pot_type,
                    pot.state.as_str(),
                    pot.message,
                    micros(pot.updated_at),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_pot(&self, node_id: u64, pot_id: String) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "DELETE FROM pots WHERE node_id = ?1 AND pot_id = ?2",
                params![node_id_to_sql(node_id), pot_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError> {
        let partition_events = self.source_partition_events;
        let lag_events = self.source_index_lag_events;
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            let mut sequences = NodeSequences::default();
            let mut inserted = 0u64;
            let mut newest_id = None;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for event in batch.iter() {
                    if let Some(seq) = event.seq {
                        if !sequences.advance(&transaction, event.node_id, seq)? {
                            continue;
                        }
                    }
                    insert.execute(params![
                        node_id_to_sql(event.node_id),
                        event.pot_id,
                        event.pot_type,
                        event.event_type,
                        micros(event.timestamp),
                        micros(event.received_at),
                        event.source_ip,
                        event.data_json,
                        event.seq.map(|seq| seq as i64),
                    ])?;
                    inserted += 1;
                    newest_id = Some(transaction.last_insert_rowid());
                }
            }
            sequences.save(&transaction)?;
            if let Some(newest_id) = newest_id {
                index_sources_if_lagging(&transaction, newest_id, partition_events, lag_events)?;
            }
            transaction.commit()?;
            Ok(inserted)
        })
        .await
    }

    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        self.with_reader(move |connection| {
            let seq: Option<i64> = connection
                .query_row(
                    "SELECT last_seq FROM node_sequences WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(seq.map(|seq| seq as u64))
        })
        .await
    }

    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO api_tokens (token_hash, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![token.token_hash, token.name, token.role.as_str(), micros(token.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError> {
        self.with_reader(move |connection| {
            let role: Option<String> = connection
                .query_row(
                    "SELECT role FROM api_tokens WHERE token_hash = ?1",
                    [token_hash],
                    |row| row.get(0),
                )
                .optional()?;
            role.map(|role| parse_text("role", role, ApiRole::parse))
                .transpose()
        })
        .await
    }

    async fn count_api_tokens(&self) -> Result<u64, StoreError> {
        self.with_reader(|connection| {
            let count: i64 =
                connection.query_row("SELECT COUNT(*) FROM api_tokens", [], |row| row.get(0))?;
            Ok(count as u64)
        })
        .await
    }

    async fn create_enrollment_token(&self, token: NewEnrollmentToken) -> Result<u64, StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO enrollment_tokens (token_hash, name, uses_total, uses_left, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
                params![
                    token.token_hash,
                    token.name,
                    token.uses,
                    token.expires_at.map(micros),
                    micros(token.created_at)
                ],
            )?;
            Ok(connection.last_insert_rowid() as u64)
        })
        .await
    }

    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, name, uses_total, uses_left, expires_at, created_at, revoked_at \
                 FROM enrollment_tokens ORDER BY id",
            )?;
            collect_rows(&mut statement, [], |row| {
                Ok(EnrollmentTokenRecord {
                    id: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    uses_total: row.get(2)?,
                    uses_left: row.get(3)?,
                    expires_at: optional_micros(row.get(4)?)?,
                    created_at: from_micros(row.get(5)?)?,
                    revoked_at: optional_micros(row.get(6)?)?,
                })
            })
        })
        .await
    }

    async fn revoke_enrollment_token(
        &self,
        id: u64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.with_writer(move |connection| {
            let changed = connection.execute(
                "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id as i64, micros(at)],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn enroll_node(
        &self,
        node_id: u64,
        totp_secret: String,
        token_hash: Option<String>,
        at: DateTime<Utc>,
        open_reissue_window: std::time::Duration,
    ) -> Result<EnrollmentOutcome, StoreError> {
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            // (enrolled at, confirmed, revoked)
            let existing: Option<(i64, bool, bool)> = transaction
                .query_row(
                    "SELECT enrolled_at, confirmed, revoked_at IS NOT NULL FROM node_credentials WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            // Only a secret that never reached its node may be replaced.
            if matches!(existing, Some((_, confirmed, revoked)) if confirmed || revoked) {
                return Ok(EnrollmentOutcome::AlreadyEnrolled);
            }
            let mut token_id = None;
            if let Some(token_hash) = &token_hash {
                let token: Option<(i64, i64, Option<i64>, Option<i64>)> = transaction
                    .query_row(
                        "SELECT id, uses_left, expires_at, revoked_at FROM enrollment_tokens WHERE token_hash = ?1",
                        [token_hash],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()?;
                let Some((id, uses_left, expires_at, revoked_at)) = token else {
                    return Ok(EnrollmentOutcome::TokenUnknown);
                };
                if revoked_at.is_some() {
                    return Ok(EnrollmentOutcome::TokenRevoked);
                }
                if expires_at.is_some_and(|expires_at| expires_at <= micros(at)) {
                    return Ok(EnrollmentOutcome::TokenExpired);
                }
                // A new secret for an id enrolled before costs a use too: a spent token
                // must not let whoever holds it replace a node's secret.
                if uses_left <= 0 {
                    return Ok(EnrollmentOutcome::TokenUsedUp);
                }
                transaction.execute(
                    "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1",
                    [id],
                )?;
                token_id = Some(id);
            } else if let Some((enrolled_at, _, _)) = existing {
                let window = i64::try_from(open_reissue_window.as_micros()).unwrap_or(i64::MAX);
                if enrolled_at.saturating_add(window) <= micros(at) {
                    return Ok(EnrollmentOutcome::ReissueWindowClosed);
                }
            }
            // An open re-issue keeps the first enrollment's time, so its window never grows.
            transaction.execute(
                "INSERT INTO node_credentials (node_id, totp_secret, last_totp_step, enrolled_at, enrolled_with, confirmed) \
                 VALUES (?1, ?2, 0, ?3, ?4, 0) \
                 ON CONFLICT (node_id) DO UPDATE SET totp_secret = excluded.totp_secret, \
                 last_totp_step = 0, enrolled_with = COALESCE(excluded.enrolled_with, enrolled_with), \
                 enrolled_at = CASE WHEN excluded.enrolled_with IS NULL THEN enrolled_at ELSE excluded.enrolled_at END",
                params![node_id_to_sql(node_id), totp_secret, micros(at), token_id],
            )?;
            transaction.commit()?;
            Ok(EnrollmentOutcome::Enrolled)
        })
        .await
    }

    async fn confirm_node_credential(
        &self,
        node_id: u64,
        totp_secret: String,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE node_credentials SET confirmed = 1 \
                 WHERE node_id = ?1 AND totp_secret = ?2 AND confirmed = 0",
                params![node_id_to_sql(node_id), totp_secret],
            )?;
            Ok(())
        })
        .await
    }

    async fn node_credential(&self, node_id: u64) -> Result<Option<NodeCredential>, StoreError> {
        self.with_reader(move |connection| {
            connection
                .query_row(
                    "SELECT totp_secret, last_totp_step, enrolled_at, revoked_at, confirmed FROM node_credentials WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                            row.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?
                .map(|(totp_secret, last_totp_step, enrolled_at, revoked_at, confirmed)| {
                    Ok(NodeCredential {
                        node_id,
                        totp_secret,
                        last_totp_step: last_totp_step as u64,
                        enrolled_at: from_micros(enrolled_at)?,
                        confirmed,
                        revoked_at: optional_micros(revoked_at)?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn use_totp_step(&self, node_id: u64, step: u64) -> Result<bool, StoreError> {
        self.with_writer(move |connection| {
            let changed = connection.execute(
                "UPDATE node_credentials SET last_totp_step = ?2, confirmed = 1 \
                 WHERE node_id = ?1 AND last_totp_step < ?2 AND revoked_at IS NULL",
                params![node_id_to_sql(node_id), step as i64],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn revoke_node(
        &self,
        node_id: u64,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            // An id with no credential gets a revoked one with an unusable (empty) secret.
            transaction.execute(
                "INSERT INTO node_credentials (node_id, totp_secret, last_totp_step, enrolled_at, revoked_at) \
                 VALUES (?1, '', 0, ?2, ?2) \
                 ON CONFLICT (node_id) DO UPDATE SET revoked_at = COALESCE(revoked_at, excluded.revoked_at)",
                params![node_id_to_sql(node_id), micros(at)],
            )?;
            let revoked_at: i64 = transaction.query_row(
                "SELECT revoked_at FROM node_credentials WHERE node_id = ?1",
                [node_id_to_sql(node_id)],
                |row| row.get(0),
            )?;
            transaction.commit()?;
            from_micros(revoked_at)
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"
            ))?;
            collect_rows(&mut statement, [], node_from_row)
        })
        .await
    }

    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?1"
            ))?;
            let row = statement
                .query_row([node_id_to_sql(node_id)], |row| Ok(node_from_row(row)))
                .optional()?;
            row.transpose()
        })
        .await
    }

    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT node_id, pot_id, pot_type, state, message, updated_at FROM pots
                 WHERE ?1 IS NULL OR node_id = ?1 ORDER BY node_id, pot_id",
            )?;
            collect_rows(&mut statement, [node_id.map(node_id_to_sql)], pot_from_row)
        })
        .await
    }

    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.with_reader(move |connection| {
            let limit = query.limit.clamp(1, MAX_EVENT_PAGE) as usize;
            // One row more than the page tells whether another page exists.
            let wanted = limit + 1;
            let mut events = match &query.source_ip {
                Some(source_ip) => {
                    // One read transaction: the partition list and every partition read
                    // come from the same snapshot, whatever the writer commits meanwhile.
                    let snapshot = connection.transaction()?;
                    let events = query_by_source(&snapshot, &query, source_ip, limit)?;
                    snapshot.commit()?;
                    events
                }
                None => {
                    let (where_clause, mut values) = event_conditions(&query, "", "");
                    values.push(SqlValue::Integer(wanted as i64));
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM events {where_clause}
                         ORDER BY ts DESC, id DESC LIMIT ?"
                    );
                    let mut statement = connection.prepare_cached(&sql)?;
                    let events = read_page_rows(
                        statement.query(rusqlite::params_from_iter(values))?,
                        limit,
                        query.max_bytes,
                        event_from_row,
                    )?;
                    events
                }
            };
            let page = page_length(&events, limit, query.max_bytes);
            let next_cursor = if events.len() > page {
                events.truncate(page);
                events.last().map(|last| EventCursor {
                    timestamp_micros: micros(last.timestamp),
                    id: last.id,
                })
            } else {
                None
            };
            Ok(EventPage {
                events,
                next_cursor,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database as a release with the first `applied` migrations left it,
    /// holding what `rows` inserts.
    fn database_at_migration(applied: usize, rows: &str) -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..applied] {
            connection.execute_batch(migration).unwrap();
        }
        connection
            .execute_batch(&format!("PRAGMA user_version = {applied}; {rows}"))
            .unwrap();
        connection
    }

    /// A database written before the sequence marks keeps de-duplicating: each node's
    /// mark starts at the highest seq it already stored.
    #[test]
    fn the_sequence_marks_start_at_what_each_node_stored() {
        let mut connection = database_at_migration(
            6,
            "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq)
             VALUES (1, 'p', 'cowrie', 'login', 1, 0, NULL, '{}', 7),
                    (1, 'p', 'cowrie', 'login', 2, 0, NULL, '{}', 9),
                    (2, 'p', 'cowrie', 'login', 3, 0, NULL, '{}', 4),
                    (3, 'p', 'cowrie', 'login', 4, 0, NULL, '{}', NULL);",
        );
        migrate(&mut connection).unwrap();
        let marks: Vec<(i64, i64)> = connection
            .prepare("SELECT node_id, last_seq FROM node_sequences ORDER BY node_id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, vec![(1, 9), (2, 4)]);
    }

    /// A database written before the source index was partitioned keeps every indexed
    /// event: the migration moves the old index's entries into the first partition.
    #[test]
    fn the_old_source_index_becomes_the_first_partition() {
        let mut connection = database_at_migration(
            5,
            "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data)
             VALUES (1, 'p', 'cowrie', 'login', 30, 0, '203.0.113.7', '{}'),
                    (1, 'p', 'cowrie', 'login', 10, 0, NULL, '{}'),
                    (1, 'p', 'cowrie', 'login', 20, 0, '198.51.100.4', '{}');",
        );
        migrate(&mut connection).unwrap();
        let partition: (i64, i64, i64, i64) = connection
            .query_row(
                "SELECT partition, entries, min_ts, max_ts FROM source_partitions",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .unwrap();
        assert_eq!(partition, (0, 2, 20, 30));
        let indexed: Vec<(String, i64)> = connection
            .prepare("SELECT src_ip, id FROM source_index_0 ORDER BY src_ip")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexed,
            vec![("198.51.100.4".into(), 3), ("203.0.113.7".into(), 1)]
        );
        // Every event already stored is indexed: the progress mark starts at the newest.
        let indexed_through: i64 = connection
            .query_row(
                "SELECT indexed_through FROM source_index_progress",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(indexed_through, 3);
    }
}
