//! Candidate A, the baseline: today's store, the project's own `honeybee-store` crate
//! (`SqliteStore`: one events table with its indexes, the partitioned source-address
//! index, WAL, `synchronous = full`), fed through `insert_events` like the Core's event
//! writer. Queries the store has no API for (after_id, username, country, statistics) are
//! plain SQL on a read-only connection to the same file, as today's layout allows them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::DateTime;
use honeybee_store::{EventQuery, NewEvent, SqliteOptions, SqliteStore, SqliteSynchronous, Store};
use rusqlite::{Connection, OpenFlags};

use crate::candidate::{top_ten, Candidate, Field, Filter, Ingested, Row, Top};
use crate::corpus::country_of;

pub struct Today {
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    reader: Connection,
    sequences: HashMap<u64, u64>,
    dir: std::path::PathBuf,
}

impl Today {
    pub fn open(dir: &Path) -> Result<Today> {
        let path = SqliteStore::path_in(dir);
        let store = SqliteStore::open(&SqliteOptions::new(path.clone(), SqliteSynchronous::Full))?;
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        reader.execute_batch("PRAGMA cache_size = -32768; PRAGMA mmap_size = 268435456;")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("tokio runtime")?;
        Ok(Today {
            runtime,
            store,
            reader,
            sequences: HashMap::new(),
            dir: dir.to_path_buf(),
        })
    }

    fn rows(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Row>> {
        let mut statement = self.reader.prepare_cached(sql)?;
        let rows = statement.query_map(params, |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn timestamp(micros: i64) -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

impl Candidate for Today {
    fn append(&mut self, batch: &[Ingested]) -> Result<()> {
        let events: Vec<NewEvent> = batch
            .iter()
            .map(|item| {
                let seq = self.sequences.entry(item.event.node_id).or_insert(0);
                *seq += 1;
                NewEvent {
                    node_id: item.event.node_id,
                    pot_id: item.event.pot_id.clone(),
                    pot_type: item.event.pot_type.clone(),
                    event_type: item.event.event_type.clone(),
                    timestamp: timestamp(item.event.received_at),
                    received_at: timestamp(item.event.received_at),
                    data_json: item.event.data.clone(),
                    source_ip: item.fields.src_ip.clone(),
                    seq: Some(*seq),
                }
            })
            .collect();
        let stored = self
            .runtime
            .block_on(self.store.insert_events(Arc::from(events)))?;
        anyhow::ensure!(
            stored as usize == batch.len(),
            "stored {stored} of {}",
            batch.len()
        );
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let connection = Connection::open(SqliteStore::path_in(&self.dir))?;
        connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>> {
        let api = |query: EventQuery| -> Result<Vec<Row>> {
            let page = self.runtime.block_on(self.store.query_events(query))?;
            Ok(page
                .events
                .into_iter()
                .map(|event| (event.id as u64, event.data_json))
                .collect())
        };
        match filter {
            Filter::SrcIp(value) => api(EventQuery {
                source_ip: Some(value.clone()),
                limit: limit as u32,
                ..EventQuery::default()
            }),
            Filter::EventType(value) => api(EventQuery {
                event_type: Some(value.clone()),
                limit: limit as u32,
                ..EventQuery::default()
            }),
            // Not a column today: the payload is searched, newest rows first.
            Filter::Username(value) => self.rows(
                "SELECT id, data FROM events WHERE json_extract(data, '$.username') = ?1
                 ORDER BY id DESC LIMIT ?2",
                rusqlite::params![value, limit as i64],
            ),
            // No country today: it would be looked up from src_ip row by row.
            Filter::Country(value) => {
                let mut statement = self
                    .reader
                    .prepare_cached("SELECT id, data, src_ip FROM events ORDER BY id DESC")?;
                let mut rows = statement.query([])?;
                let mut page = Vec::new();
                while let Some(row) = rows.next()? {
                    let source: Option<String> = row.get(2)?;
                    if source.as_deref().map(country_of) == Some(value.as_str()) {
                        page.push((row.get::<_, i64>(0)? as u64, row.get(1)?));
                        if page.len() == limit {
                            break;
                        }
                    }
                }
                Ok(page)
            }
        }
    }

    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>> {
        self.rows(
            "SELECT id, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            rusqlite::params![after as i64, limit as i64],
        )
    }

    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>> {
        let since = since.unwrap_or(i64::MIN);
        let mut result = Vec::new();
        for field in Field::ALL {
            let expression = match field {
                Field::SrcIp | Field::Country => "src_ip",
                Field::Username => "json_extract(data, '$.username')",
                Field::Password => "json_extract(data, '$.password')",
                Field::EventId => "event_type",
            };
            let sql = format!(
                "SELECT {expression}, count(*) FROM events WHERE ts >= ?1 AND {expression} IS NOT NULL
                 GROUP BY 1"
            );
            let mut statement = self.reader.prepare_cached(&sql)?;
            let rows = statement.query_map([since], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?;
            let mut counts: HashMap<String, u64> = HashMap::new();
            for row in rows {
                let (value, count) = row?;
                let key = if field == Field::Country {
                    country_of(&value).to_owned()
                } else {
                    value
                };
                *counts.entry(key).or_default() += count;
            }
            result.push((field, top_ten(counts)));
        }
        Ok(result)
    }
}
