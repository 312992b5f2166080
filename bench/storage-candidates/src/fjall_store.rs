//! Candidate D: `fjall` (an LSM tree): one keyspace of events keyed by the arrival id
//! (big-endian, so key order is arrival order), whose value holds the statistics fields
//! and the payload, and one index keyspace per filterable field keyed by
//! `[value length u16][value][id]` (a prefix scan in reverse is a newest-first page).
//! A batch is one atomic fjall batch committed with an fdatasync of its journal. There
//! are no pre-aggregates: an LSM has no cheap per-partition summary, so statistics scan
//! the events keyspace over the window's id range.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::candidate::{top_ten, Candidate, Field, Filter, Ingested, Row, Top};

pub struct FjallStore {
    keyspace: Keyspace,
    events: PartitionHandle,
    indexes: [PartitionHandle; 4],
    next_id: u64,
}

const INDEXED: [Field; 4] = [
    Field::SrcIp,
    Field::Username,
    Field::Country,
    Field::EventId,
];

fn index_prefix(value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + 10);
    key.extend_from_slice(&(value.len() as u16).to_be_bytes());
    key.extend_from_slice(value.as_bytes());
    key
}

fn put(buffer: &mut Vec<u8>, text: Option<&str>) {
    let text = text.unwrap_or("");
    buffer.extend_from_slice(&(text.len() as u16).to_le_bytes());
    buffer.extend_from_slice(text.as_bytes());
}

/// The value of an event: received_at, the five statistics fields, the payload.
fn encode(item: &Ingested) -> Vec<u8> {
    let mut value = Vec::with_capacity(item.event.data.len() + 64);
    value.extend_from_slice(&item.event.received_at.to_le_bytes());
    for field in Field::ALL {
        put(
            &mut value,
            field.value(&item.event.event_type, &item.fields),
        );
    }
    value.extend_from_slice(item.event.data.as_bytes());
    value
}

struct Decoded<'a> {
    received_at: i64,
    fields: [&'a str; 5],
    data: &'a [u8],
}

fn decode(value: &[u8]) -> Option<Decoded<'_>> {
    let received_at = i64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let mut at = 8;
    let mut fields = [""; 5];
    for slot in &mut fields {
        let length = u16::from_le_bytes(value.get(at..at + 2)?.try_into().ok()?) as usize;
        *slot = std::str::from_utf8(value.get(at + 2..at + 2 + length)?).ok()?;
        at += 2 + length;
    }
    Some(Decoded {
        received_at,
        fields,
        data: value.get(at..)?,
    })
}

impl FjallStore {
    pub fn open(dir: &Path) -> Result<FjallStore> {
        let keyspace = Config::new(dir).open()?;
        let options = PartitionCreateOptions::default;
        let events = keyspace.open_partition("events", options())?;
        let indexes = [
            keyspace.open_partition("by_src_ip", options())?,
            keyspace.open_partition("by_username", options())?,
            keyspace.open_partition("by_country", options())?,
            keyspace.open_partition("by_eventid", options())?,
        ];
        Ok(FjallStore {
            keyspace,
            events,
            indexes,
            next_id: 1,
        })
    }

    fn row(&self, id: u64) -> Result<Row> {
        let value = self
            .events
            .get(id.to_be_bytes())?
            .context("indexed event missing")?;
        let decoded = decode(&value).context("corrupt event")?;
        Ok((id, String::from_utf8(decoded.data.to_vec())?))
    }

    /// The first id whose event arrived at or after `since` (ids are dense from 1).
    fn first_id_since(&self, since: i64) -> Result<u64> {
        let (mut low, mut high) = (1u64, self.next_id);
        while low < high {
            let middle = low + (high - low) / 2;
            let value = self
                .events
                .get(middle.to_be_bytes())?
                .context("gap in ids")?;
            let decoded = decode(&value).context("corrupt event")?;
            if decoded.received_at < since {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }
}

impl Candidate for FjallStore {
    fn append(&mut self, batch: &[Ingested]) -> Result<()> {
        let mut write = self
            .keyspace
            .batch()
            .durability(Some(PersistMode::SyncData));
        for (offset, item) in batch.iter().enumerate() {
            let id = self.next_id + offset as u64;
            write.insert(&self.events, id.to_be_bytes(), encode(item));
            for (field, index) in INDEXED.iter().zip(&self.indexes) {
                if let Some(value) = field.value(&item.event.event_type, &item.fields) {
                    let mut key = index_prefix(value);
                    key.extend_from_slice(&id.to_be_bytes());
                    write.insert(index, key, []);
                }
            }
        }
        write.commit()?;
        self.next_id += batch.len() as u64;
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for partition in std::iter::once(&self.events).chain(&self.indexes) {
            partition.rotate_memtable_and_wait()?;
        }
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>> {
        let (index, value) = match filter {
            Filter::SrcIp(value) => (&self.indexes[0], value),
            Filter::Username(value) => (&self.indexes[1], value),
            Filter::Country(value) => (&self.indexes[2], value),
            Filter::EventType(value) => (&self.indexes[3], value),
        };
        let prefix = index_prefix(value);
        let mut page = Vec::new();
        for key in index.prefix(&prefix).rev().take(limit) {
            let (key, _) = key?;
            let id = u64::from_be_bytes(key[key.len() - 8..].try_into()?);
            page.push(self.row(id)?);
        }
        Ok(page)
    }

    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>> {
        let mut page = Vec::new();
        for item in self.events.range((after + 1).to_be_bytes()..).take(limit) {
            let (key, value) = item?;
            let decoded = decode(&value).context("corrupt event")?;
            page.push((
                u64::from_be_bytes(key[..].try_into()?),
                String::from_utf8(decoded.data.to_vec())?,
            ));
        }
        Ok(page)
    }

    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>> {
        let first = match since {
            Some(since) => self.first_id_since(since)?,
            None => 1,
        };
        let mut counts: [HashMap<String, u64>; 5] = Default::default();
        for item in self.events.range(first.to_be_bytes()..) {
            let (_, value) = item?;
            let decoded = decode(&value).context("corrupt event")?;
            for (map, value) in counts.iter_mut().zip(decoded.fields) {
                if value.is_empty() {
                    continue;
                }
                match map.get_mut(value) {
                    Some(count) => *count += 1,
                    None => {
                        map.insert(value.to_owned(), 1);
                    }
                }
            }
        }
        Ok(Field::ALL
            .into_iter()
            .zip(counts)
            .map(|(field, map)| (field, top_ten(map)))
            .collect())
    }
}
