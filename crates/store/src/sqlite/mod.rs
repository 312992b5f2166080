//! The embedded SQLite backend: one file, WAL mode, batched transactions.
//!
//! The control plane: nodes, pots, tokens, credentials. Events live in the columnar event
//! store (`crate::columnar`); `legacy_events.rs` reads the events table of earlier
//! releases so they can be moved there.
//!
//! One writer connection and one reader connection, each behind a mutex and used from
//! tokio's blocking pool: WAL lets readers run while a write commits, and a single writer
//! is what SQLite allows anyway. The store's concerns each have a file: `schema.rs`
//! (migrations), `fleet.rs` ([`FleetStore`](crate::FleetStore)), `access.rs`
//! ([`AccessStore`](crate::AccessStore)); this file opens the database and holds what
//! they share.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::StoreError;
use crate::model::{
    ApiRole, ApiTokenRecord, EnrollmentOutcome, EnrollmentTokenRecord, EventFields,
    NewEnrollmentToken, NewEvent, NodeCredential, NodeKind, NodeRecord, NodeRegistrationRecord,
    NodeState, PotRecord, PotState,
};
use crate::store::{AccessStore, FleetStore};

mod access;
mod fleet;
mod legacy_events;
mod schema;

pub use legacy_events::LegacyEvent;
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

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: SqliteSynchronous,
}

impl SqliteOptions {
    pub fn new(path: PathBuf, synchronous: SqliteSynchronous) -> Self {
        SqliteOptions { path, synchronous }
    }
}

pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    /// Nodes, pots, tokens, credentials: small, quick reads that never wait behind events.
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
        let reader = open_reader(&options.path, READER_CACHE_KIB, MMAP_BYTES)?;
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

/// Locks a connection; a panic while holding the lock cannot leave SQLite inconsistent
/// (transactions roll back on drop), so a poisoned mutex is still safe to use.
fn lock_connection(connection: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens a read-only connection.
fn open_reader(path: &Path, cache_kib: i64, mmap_bytes: i64) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let reader = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    reader
        .execute_batch(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{cache_kib};
             PRAGMA mmap_size = {mmap_bytes};"
        ))
        .map_err(open_error)?;
    Ok(reader)
}
