//! Watches the Core's SQLite file from outside (read-only, as any SQLite reader would):
//! how many benchmark events are stored, and when each sampled one became visible, which
//! is the end of its latency. Only committed rows are visible, so "stored" here means what
//! the Core has made durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::report::unix_micros;

/// What the watcher saw until it was told to stop or everything arrived.
#[derive(Debug, Default)]
pub struct WatchOutcome {
    /// Highest row id seen (the store starts empty, so this is the number of rows).
    pub rows: u64,
    /// When the last expected row became visible.
    pub all_stored_after: Option<Duration>,
    /// Latency samples in microseconds: time seen stored minus `bench_sent_us`.
    pub latencies_micros: Vec<u64>,
    /// The first stage of the same samples: the Core's `received_at` minus `bench_sent_us`
    /// (the honeypot's write, the node, and the link). The rest is the Core's queue and commit.
    pub to_core_micros: Vec<u64>,
}

/// Settings of one watch.
pub struct StoreWatch {
    pub database: PathBuf,
    /// Rows to wait for.
    pub expected_rows: u64,
    /// Every `sample_every`-th row (by id) gives a latency sample.
    pub sample_every: u64,
    pub poll_interval: Duration,
    pub started: Instant,
}

impl StoreWatch {
    /// Polls until `expected_rows` rows exist or `stop` is set. Runs on its own thread: it
    /// must not wait behind the load generator.
    pub fn run(self, stop: &AtomicBool) -> anyhow::Result<WatchOutcome> {
        let connection = open_when_present(&self.database, stop)?;
        let mut outcome = WatchOutcome::default();
        let Some(connection) = connection else {
            return Ok(outcome);
        };
        let mut max_id = connection.prepare("SELECT coalesce(max(id), 0) FROM events")?;
        let mut samples = connection.prepare(
            "SELECT json_extract(data, '$.bench_sent_us'), received_at FROM events
             WHERE id > ?1 AND id <= ?2 AND id % ?3 = 0",
        )?;
        let mut seen = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let rows: u64 = max_id.query_row([], |row| row.get::<_, i64>(0))? as u64;
            if rows > seen {
                let now = unix_micros();
                let mut sampled =
                    samples.query([seen as i64, rows as i64, self.sample_every as i64])?;
                while let Some(row) = sampled.next()? {
                    if let Some(sent) = row.get::<_, Option<i64>>(0)? {
                        let received: i64 = row.get(1)?;
                        outcome
                            .latencies_micros
                            .push(now.saturating_sub(sent as u64));
                        outcome
                            .to_core_micros
                            .push(received.saturating_sub(sent).max(0) as u64);
                    }
                }
                seen = rows;
            }
            if seen >= self.expected_rows {
                outcome.all_stored_after = Some(self.started.elapsed());
                break;
            }
            std::thread::sleep(self.poll_interval);
        }
        outcome.rows = seen;
        Ok(outcome)
    }
}

fn open_when_present(database: &Path, stop: &AtomicBool) -> anyhow::Result<Option<Connection>> {
    loop {
        if database.exists() {
            let connection = Connection::open_with_flags(
                database,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_context(|| format!("opening {} read-only", database.display()))?;
            connection.busy_timeout(Duration::from_secs(5))?;
            return Ok(Some(connection));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The final count: benchmark events stored, and how many distinct ones (the difference
/// is duplicates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCount {
    pub rows: u64,
    pub distinct: u64,
}

pub fn count_benchmark_events(database: &Path) -> anyhow::Result<StoredCount> {
    let connection = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {} read-only", database.display()))?;
    connection.busy_timeout(Duration::from_secs(30))?;
    let counted = connection
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(data, '$.bench_id')) FROM events
             WHERE json_extract(data, '$.bench_id') IS NOT NULL",
            [],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0));
    Ok(StoredCount {
        rows: counted.0 as u64,
        distinct: counted.1 as u64,
    })
}
