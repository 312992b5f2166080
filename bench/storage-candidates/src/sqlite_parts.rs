//! Candidate B: one SQLite file per arrival partition. While hot, a partition is an
//! append-only rowid table (rowid = arrival id) with no secondary index; low-cardinality
//! text (pot, event type, protocol, country) is stored as codes of the partition's own
//! dictionary table, and the payload as a zstd frame compressed with a dictionary trained
//! on the store's first events. Sealing builds the indexes and a per-hour count summary
//! of every statistics field, then checkpoints the WAL away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::candidate::{top_ten, Candidate, Field, Filter, Ingested, Row, Top};

const HOUR_MICROS: i64 = 3_600_000_000;
/// Payload dictionary size and the zstd level of each payload.
const DICTIONARY_BYTES: usize = 32 * 1024;
const LEVEL: i32 = 3;

struct Partition {
    last_id: u64,
    connection: Connection,
    /// (kind, text) → code of this partition's dictionary table.
    codes: HashMap<(u8, String), i64>,
    sealed: bool,
}

/// Kinds of dictionary-coded text.
const POT: u8 = 0;
const EVENT_TYPE: u8 = 1;
const PROTOCOL: u8 = 2;
const COUNTRY: u8 = 3;
const POT_TYPE: u8 = 4;

pub struct SqliteParts {
    dir: PathBuf,
    partitions: Vec<Partition>,
    next_id: u64,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -16384;
CREATE TABLE IF NOT EXISTS codes (code INTEGER PRIMARY KEY, kind INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    node_id     INTEGER NOT NULL,
    pot         INTEGER NOT NULL,
    pot_type    INTEGER NOT NULL,
    event_type  INTEGER NOT NULL,
    src_ip      TEXT,
    src_port    INTEGER,
    dst_port    INTEGER,
    username    TEXT,
    password    TEXT,
    input       TEXT,
    session     TEXT,
    url         TEXT,
    shasum      TEXT,
    protocol    INTEGER,
    country     INTEGER,
    data        BLOB NOT NULL
);";

const SEAL: &str = "
CREATE INDEX by_src_ip ON events (src_ip) WHERE src_ip IS NOT NULL;
CREATE INDEX by_username ON events (username) WHERE username IS NOT NULL;
CREATE INDEX by_country ON events (country) WHERE country IS NOT NULL;
CREATE INDEX by_event_type ON events (event_type);
CREATE TABLE summary (field TEXT NOT NULL, hour INTEGER NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL);
INSERT INTO summary SELECT 'src_ip', received_at / 3600000000, src_ip, count(*) FROM events WHERE src_ip IS NOT NULL GROUP BY 2, 3;
INSERT INTO summary SELECT 'username', received_at / 3600000000, username, count(*) FROM events WHERE username IS NOT NULL GROUP BY 2, 3;
INSERT INTO summary SELECT 'password', received_at / 3600000000, password, count(*) FROM events WHERE password IS NOT NULL GROUP BY 2, 3;
INSERT INTO summary SELECT 'eventid', received_at / 3600000000, codes.text, count(*) FROM events JOIN codes ON codes.code = events.event_type GROUP BY 2, 3;
INSERT INTO summary SELECT 'country', received_at / 3600000000, codes.text, count(*) FROM events JOIN codes ON codes.code = events.country GROUP BY 2, 3;
CREATE INDEX summary_by_hour ON summary (hour);
PRAGMA wal_checkpoint(TRUNCATE);
PRAGMA journal_mode = DELETE;";

impl SqliteParts {
    pub fn open(dir: &Path) -> Result<SqliteParts> {
        std::fs::create_dir_all(dir)?;
        Ok(SqliteParts {
            dir: dir.to_path_buf(),
            partitions: Vec::new(),
            next_id: 1,
            compressor: None,
            decompressor: None,
        })
    }

    fn train(&mut self, batch: &[Ingested]) -> Result<()> {
        let samples: Vec<&[u8]> = batch
            .iter()
            .map(|item| item.event.data.as_bytes())
            .collect();
        let dictionary = zstd::dict::from_samples(&samples, DICTIONARY_BYTES)
            .context("training the payload dictionary")?;
        let path = self.dir.join("payload.dict");
        std::fs::write(&path, &dictionary)?;
        std::fs::File::open(&path)?.sync_all()?;
        self.compressor = Some(zstd::bulk::Compressor::with_dictionary(LEVEL, &dictionary)?);
        self.decompressor = Some(zstd::bulk::Decompressor::with_dictionary(&dictionary)?);
        Ok(())
    }

    fn hot(&mut self) -> Result<&mut Partition> {
        if self
            .partitions
            .last()
            .is_none_or(|partition| partition.sealed)
        {
            let path = self
                .dir
                .join(format!("part-{:06}.sqlite", self.partitions.len()));
            let connection = Connection::open(&path)?;
            connection.execute_batch(SCHEMA)?;
            self.partitions.push(Partition {
                last_id: self.next_id - 1,
                connection,
                codes: HashMap::new(),
                sealed: false,
            });
        }
        Ok(self.partitions.last_mut().expect("a hot partition"))
    }

    fn decode(&mut self, rows: Vec<(u64, Vec<u8>)>) -> Result<Vec<Row>> {
        let decompressor = self.decompressor.as_mut().context("no dictionary yet")?;
        rows.into_iter()
            .map(|(id, blob)| {
                let bytes = decompressor.decompress(&blob, 1 << 24)?;
                Ok((id, String::from_utf8(bytes)?))
            })
            .collect()
    }
}

fn code(
    transaction: &rusqlite::Transaction<'_>,
    codes: &mut HashMap<(u8, String), i64>,
    kind: u8,
    text: &str,
) -> Result<i64> {
    if let Some(code) = codes.get(&(kind, text.to_owned())) {
        return Ok(*code);
    }
    transaction
        .prepare_cached("INSERT INTO codes (kind, text) VALUES (?1, ?2)")?
        .execute(params![kind, text])?;
    let code = transaction.last_insert_rowid();
    codes.insert((kind, text.to_owned()), code);
    Ok(code)
}

fn lookup(partition: &Partition, kind: u8, text: &str) -> Result<Option<i64>> {
    Ok(partition
        .connection
        .prepare_cached("SELECT code FROM codes WHERE kind = ?1 AND text = ?2")?
        .query_row(params![kind, text], |row| row.get(0))
        .optional()?)
}

impl Candidate for SqliteParts {
    fn append(&mut self, batch: &[Ingested]) -> Result<()> {
        if self.compressor.is_none() {
            self.train(batch)?;
        }
        let mut compressor = self.compressor.take().context("no dictionary")?;
        let first_id = self.next_id;
        let partition = self.hot()?;
        let transaction = partition.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO events (id, received_at, node_id, pot, pot_type, event_type, src_ip,
                 src_port, dst_port, username, password, input, session, url, shasum, protocol,
                 country, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
                 ?14, ?15, ?16, ?17, ?18)",
            )?;
            for (offset, item) in batch.iter().enumerate() {
                let event = &item.event;
                let fields = &item.fields;
                let codes = &mut partition.codes;
                let pot = code(&transaction, codes, POT, &event.pot_id)?;
                let pot_type = code(&transaction, codes, POT_TYPE, &event.pot_type)?;
                let event_type = code(&transaction, codes, EVENT_TYPE, &event.event_type)?;
                let protocol = match &fields.protocol {
                    Some(text) => Some(code(&transaction, codes, PROTOCOL, text)?),
                    None => None,
                };
                let country = match fields.country {
                    Some(text) => Some(code(&transaction, codes, COUNTRY, text)?),
                    None => None,
                };
                let data = compressor.compress(event.data.as_bytes())?;
                insert.execute(params![
                    (first_id + offset as u64) as i64,
                    event.received_at,
                    event.node_id as i64,
                    pot,
                    pot_type,
                    event_type,
                    fields.src_ip,
                    fields.src_port,
                    fields.dst_port,
                    fields.username,
                    fields.password,
                    fields.input,
                    fields.session,
                    fields.url,
                    fields.shasum,
                    protocol,
                    country,
                    data,
                ])?;
            }
        }
        transaction.commit()?;
        partition.last_id = first_id + batch.len() as u64 - 1;
        self.next_id += batch.len() as u64;
        self.compressor = Some(compressor);
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if let Some(partition) = self.partitions.last_mut().filter(|p| !p.sealed) {
            partition.connection.execute_batch(SEAL)?;
            partition.sealed = true;
        }
        Ok(())
    }

    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>> {
        let mut found: Vec<(u64, Vec<u8>)> = Vec::new();
        for partition in self.partitions.iter().rev() {
            let wanted = (limit - found.len()) as i64;
            let (column, value): (&str, rusqlite::types::Value) = match filter {
                Filter::Username(value) => ("username", value.clone().into()),
                Filter::SrcIp(value) => ("src_ip", value.clone().into()),
                Filter::Country(value) => match lookup(partition, COUNTRY, value)? {
                    Some(code) => ("country", code.into()),
                    None => continue,
                },
                Filter::EventType(value) => match lookup(partition, EVENT_TYPE, value)? {
                    Some(code) => ("event_type", code.into()),
                    None => continue,
                },
            };
            let sql = format!(
                "SELECT id, data FROM events WHERE {column} = ?1 ORDER BY id DESC LIMIT ?2"
            );
            let mut statement = partition.connection.prepare_cached(&sql)?;
            let rows = statement.query_map(params![value, wanted], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                found.push(row?);
            }
            if found.len() >= limit {
                break;
            }
        }
        self.decode(found)
    }

    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>> {
        let mut found: Vec<(u64, Vec<u8>)> = Vec::new();
        for partition in self.partitions.iter().filter(|p| p.last_id > after) {
            let wanted = (limit - found.len()) as i64;
            let mut statement = partition
                .connection
                .prepare_cached("SELECT id, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = statement.query_map(params![after as i64, wanted], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                found.push(row?);
            }
            if found.len() >= limit {
                break;
            }
        }
        self.decode(found)
    }

    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>> {
        let mut counts: HashMap<Field, HashMap<String, u64>> = HashMap::new();
        let since = since.unwrap_or(i64::MIN);
        let since_hour = since.div_euclid(HOUR_MICROS);
        for partition in &self.partitions {
            if partition.sealed {
                let mut statement = partition.connection.prepare_cached(
                    "SELECT field, value, sum(n) FROM summary WHERE hour >= ?1 GROUP BY 1, 2",
                )?;
                let mut rows = statement.query([since_hour])?;
                while let Some(row) = rows.next()? {
                    let field: String = row.get(0)?;
                    let field = Field::ALL
                        .into_iter()
                        .find(|candidate| candidate.name() == field)
                        .context("unknown summary field")?;
                    *counts
                        .entry(field)
                        .or_default()
                        .entry(row.get(1)?)
                        .or_default() += row.get::<_, i64>(2)? as u64;
                }
                continue;
            }
            // The hot partition: counted from its rows.
            for field in Field::ALL {
                let sql = match field {
                    Field::SrcIp | Field::Username | Field::Password => format!(
                        "SELECT {0}, count(*) FROM events WHERE received_at >= ?1 AND {0} IS NOT NULL GROUP BY 1",
                        field.name()
                    ),
                    Field::EventId => "SELECT codes.text, count(*) FROM events JOIN codes ON codes.code = events.event_type WHERE received_at >= ?1 GROUP BY events.event_type".into(),
                    Field::Country => "SELECT codes.text, count(*) FROM events JOIN codes ON codes.code = events.country WHERE received_at >= ?1 GROUP BY events.country".into(),
                };
                let mut statement = partition.connection.prepare_cached(&sql)?;
                let mut rows = statement.query([since])?;
                let map = counts.entry(field).or_default();
                while let Some(row) = rows.next()? {
                    *map.entry(row.get(0)?).or_default() += row.get::<_, i64>(1)? as u64;
                }
            }
        }
        Ok(Field::ALL
            .into_iter()
            .map(|field| (field, top_ten(counts.remove(&field).unwrap_or_default())))
            .collect())
    }
}
