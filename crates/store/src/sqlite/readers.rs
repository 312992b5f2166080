//! The connections that read events: a pool, so slow queries run side by side instead of
//! in a line, and every query under a time limit, after which SQLite is told to stop
//! (its progress handler says so) and the caller gets [`StoreError::QueryTimeLimit`]. The reads of
//! nodes, pots and tokens — an API token check on every request — use a connection of
//! their own (`SqliteStore::with_reader`), so no events query can hold them up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::error::StoreError;

/// Page cache of each events reader, in KiB.
const EVENT_READER_CACHE_KIB: i64 = 16 * 1024;

/// `count` read-only connections to the database at `path`.
pub(super) struct EventReaders {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection: a query waits here while every connection is busy. The
    /// permit goes back with the connection, once the work on it has ended.
    permits: Arc<Semaphore>,
    time_limit: Duration,
    mmap_bytes: i64,
}

/// Asks the query running on a connection to stop when dropped, unless disarmed: a caller
/// that stops waiting (a client gone, a request past its timeout) stops its query too. The
/// connection's progress handler reads the flag, so the request holds whether the query
/// has started yet or not.
struct StopOnDrop(Option<Arc<AtomicBool>>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = &self.0 {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// SQLite calls the progress handler every this many virtual machine steps.
const PROGRESS_STEPS: i32 = 1_000;

/// Opens a read-only connection with the readers' settings.
pub(super) fn open_reader(
    path: &Path,
    cache_kib: i64,
    mmap_bytes: i64,
) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
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

impl EventReaders {
    pub fn open(
        path: &Path,
        count: usize,
        time_limit: Duration,
        mmap_bytes: i64,
    ) -> Result<Self, StoreError> {
        let count = count.max(1);
        let connections = (0..count)
            .map(|_| open_reader(path, EVENT_READER_CACHE_KIB, mmap_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventReaders {
            path: path.to_path_buf(),
            idle: Arc::new(Mutex::new(connections)),
            permits: Arc::new(Semaphore::new(count)),
            time_limit,
            mmap_bytes,
        })
    }

    /// Connections not running a query now.
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.permits.available_permits()
    }

    /// Runs `work` on an idle connection on the blocking pool, stopping it at the time
    /// limit (or when the caller stops waiting).
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| StoreError::Worker(error.to_string()))?;
        let idle_connection = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        // None only after a panic took a connection along: open its replacement.
        let mut connection = match idle_connection {
            Some(connection) => connection,
            None => open_reader(&self.path, EVENT_READER_CACHE_KIB, self.mmap_bytes)?,
        };
        let stop_requested = Arc::new(AtomicBool::new(false));
        let stop = StopOnDrop(Some(stop_requested.clone()));
        let idle = self.idle.clone();
        let deadline = Instant::now() + self.time_limit;
        let running = tokio::task::spawn_blocking(move || {
            // Returning true makes SQLite stop the statement (SQLITE_INTERRUPT).
            connection.progress_handler(
                PROGRESS_STEPS,
                Some(move || stop_requested.load(Ordering::Relaxed) || Instant::now() >= deadline),
            );
            let result = work(&mut connection);
            connection.progress_handler(0, None::<fn() -> bool>);
            idle.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(connection);
            drop(permit);
            result
        });
        let outcome = running.await;
        stop.disarm();
        match outcome {
            Err(error) => Err(StoreError::Worker(error.to_string())),
            Ok(Err(_)) if Instant::now() >= deadline => Err(StoreError::QueryTimeLimit {
                limit: self.time_limit,
            }),
            Ok(result) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query that never ends on its own.
    const ENDLESS: &str =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";

    fn endless(connection: &mut Connection) -> Result<i64, StoreError> {
        Ok(connection.query_row(ENDLESS, [], |row| row.get(0))?)
    }

    fn database() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join("db"))
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        dir
    }

    #[tokio::test]
    async fn a_query_past_the_time_limit_is_stopped_and_its_connection_comes_back() {
        let dir = database();
        let readers =
            EventReaders::open(&dir.path().join("db"), 1, Duration::from_millis(200), 0).unwrap();
        match readers.run(endless).await {
            Err(StoreError::QueryTimeLimit { limit }) => {
                assert_eq!(limit, Duration::from_millis(200))
            }
            other => panic!("expected the time limit, got {other:?}"),
        }
        // The one connection is back and works.
        let count = readers
            .run(|connection| {
                Ok(connection
                    .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))?)
            })
            .await
            .unwrap();
        assert_eq!(count, 0);
    }

    #[tokio::test]
    async fn a_query_whose_caller_stops_waiting_is_stopped_too() {
        let dir = database();
        let readers = Arc::new(
            EventReaders::open(&dir.path().join("db"), 1, Duration::from_secs(3600), 0).unwrap(),
        );
        let abandoned = tokio::spawn({
            let readers = readers.clone();
            async move { readers.run(endless).await }
        });
        // Once the query holds the one connection, its caller goes away.
        while readers.permits.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        // Without the interrupt the connection would never come back (the time limit is
        // an hour): this query would wait for it forever.
        let count = tokio::time::timeout(
            Duration::from_secs(60),
            readers.run(|connection| {
                Ok(connection
                    .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))?)
            }),
        )
        .await
        .expect("the abandoned query was stopped and its connection given back")
        .unwrap();
        assert_eq!(count, 0);
    }
}
