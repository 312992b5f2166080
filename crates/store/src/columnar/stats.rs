//! Exact statistics: every event in the window counted, by value, minute and pot.
//!
//! A sealed partition carries a summary (`part-<first id>.summary.zst`: the counts of all
//! its events, written at sealing from the hot columns' dictionary codes), so a window
//! that holds the whole partition, with no node, pot or type filter, costs a read of that
//! summary, not of the events. Any other partition in the window is counted from its
//! columns: the hot ones from memory, sealed ones from the statistics columns only.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::columnar::arrays::text_of;
use crate::columnar::filter::{CodedColumn, EventFilter, PlainColumn};
use crate::columnar::hot::{micros_to_time, HotColumns, ABSENT};
use crate::columnar::log::sync_directory_of;
use crate::columnar::ColumnarError;
use crate::model::{EventStats, PotActivity, StatField, StatsQuery};

/// Where a field's value is kept in a partition.
fn coded_column(field: StatField) -> Option<CodedColumn> {
    match field {
        StatField::SrcIp => Some(CodedColumn::SrcIp),
        StatField::Username => Some(CodedColumn::Username),
        StatField::Password => Some(CodedColumn::Password),
        StatField::Country => Some(CodedColumn::Country),
        StatField::EventType => Some(CodedColumn::EventType),
        StatField::PotId => Some(CodedColumn::PotId),
        StatField::Command | StatField::Asn | StatField::NodeId => None,
    }
}

fn field_index(field: StatField) -> usize {
    StatField::ALL
        .iter()
        .position(|candidate| *candidate == field)
        .unwrap_or(0)
}

/// Value → events. Hashed with aHash, seeded at random per process: statistics hash
/// millions of short texts per request, several times faster than with std's SipHash, and
/// the random seed keeps attackers (who choose the passwords and commands counted) from
/// crafting values that collide.
pub(crate) type ValueCounts = HashMap<String, u64, ahash::RandomState>;

/// The counts of a set of events.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub total: u64,
    /// Per field of [`StatField::ALL`]: value → events.
    pub values: Vec<ValueCounts>,
    /// Minute (seconds since the epoch / 60) of the event's own time → events.
    pub minutes: HashMap<i64, u64>,
    /// (node, pot) → (events, newest own timestamp in micros).
    pub pots: HashMap<(u64, String), (u64, i64)>,
    /// About what the distinct values take in memory (text plus map overhead).
    pub memory_bytes: usize,
}

/// What one distinct value costs in a count map besides its text: the key's `String`, the
/// count, the hash table's slot and control byte, with slack for its load factor.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// One event as statistics see it.
struct CountedEvent<'a> {
    timestamp: i64,
    node_id: u64,
    pot_id: &'a str,
    values: [Option<&'a str>; 6],
    command: Option<&'a str>,
    asn: Option<u32>,
}

/// The fields of `CountedEvent::values`, in order.
const CODED_FIELDS: [StatField; 6] = [
    StatField::SrcIp,
    StatField::Username,
    StatField::Password,
    StatField::Country,
    StatField::EventType,
    StatField::PotId,
];

impl Counts {
    pub fn new() -> Counts {
        Counts {
            values: vec![ValueCounts::default(); StatField::ALL.len()],
            ..Counts::default()
        }
    }

    fn add_value(&mut self, field: StatField, value: &str, count: u64) {
        self.add_text(field_index(field), Cow::Borrowed(value), count);
    }

    /// Adds `count` events with `value` to the field at `field_index` of
    /// [`StatField::ALL`]; the text is copied (if borrowed) only when the value is new.
    fn add_text(&mut self, field_index: usize, value: Cow<'_, str>, count: u64) {
        let map = &mut self.values[field_index];
        match map.get_mut(value.as_ref()) {
            Some(total) => *total += count,
            None => {
                self.memory_bytes += value.len() + ENTRY_OVERHEAD_BYTES;
                map.insert(value.into_owned(), count);
            }
        }
    }

    fn add_event(&mut self, event: &CountedEvent<'_>) {
        self.total += 1;
        for (field, value) in CODED_FIELDS.iter().zip(event.values) {
            if let Some(value) = value {
                self.add_value(*field, value, 1);
            }
        }
        if let Some(command) = event.command {
            self.add_value(StatField::Command, command, 1);
        }
        if let Some(asn) = event.asn {
            self.add_value(StatField::Asn, &asn.to_string(), 1);
        }
        self.add_value(StatField::NodeId, &event.node_id.to_string(), 1);
        *self
            .minutes
            .entry(event.timestamp.div_euclid(60_000_000))
            .or_default() += 1;
        let pot = self
            .pots
            .entry((event.node_id, event.pot_id.to_owned()))
            .or_insert((0, i64::MIN));
        pot.0 += 1;
        pot.1 = pot.1.max(event.timestamp);
    }

    pub fn merge(&mut self, other: Counts) {
        self.total += other.total;
        for (index, values) in other.values.into_iter().enumerate() {
            for (value, count) in values {
                self.add_text(index, Cow::Owned(value), count);
            }
        }
        for (minute, count) in other.minutes {
            *self.minutes.entry(minute).or_default() += count;
        }
        for (pot, (events, newest)) in other.pots {
            self.add_pot(pot, events, newest);
        }
    }

    /// Adds a summary as decoded from its file: a value already counted costs one lookup,
    /// only a new one is copied out of the file's text.
    pub fn merge_summary(&mut self, summary: SummaryIn<'_>) {
        self.total += summary.total;
        // `merge_encoded_summary` checked that it has every field.
        for (index, values) in summary.values.into_iter().enumerate() {
            for (Text(value), count) in values {
                self.add_text(index, value, count);
            }
        }
        for (minute, count) in summary.minutes {
            *self.minutes.entry(minute).or_default() += count;
        }
        for (node, Text(pot), events, newest) in summary.pots {
            self.add_pot((node, pot.into_owned()), events, newest);
        }
    }

    fn add_pot(&mut self, pot: (u64, String), events: u64, newest: i64) {
        let mine = self.pots.entry(pot).or_insert((0, i64::MIN));
        mine.0 += events;
        mine.1 = mine.1.max(newest);
    }

    /// The answer to `query` from these counts.
    pub fn into_stats(self, query: &StatsQuery) -> EventStats {
        let interval_minutes = (query.interval.as_secs() / 60).max(1) as i64;
        let mut buckets: HashMap<i64, u64> = HashMap::new();
        for (minute, count) in &self.minutes {
            *buckets
                .entry(minute.div_euclid(interval_minutes) * interval_minutes)
                .or_default() += count;
        }
        let mut histogram: Vec<(DateTime<Utc>, u64)> = buckets
            .into_iter()
            .map(|(minute, count)| (micros_to_time(minute * 60_000_000), count))
            .collect();
        histogram.sort_unstable();
        let distinct_sources = self.values[field_index(StatField::SrcIp)].len() as u64;
        let top = query
            .top
            .iter()
            .map(|field| {
                let mut ranked: Vec<(String, u64)> = self.values[field_index(*field)]
                    .iter()
                    .map(|(value, count)| (value.clone(), *count))
                    .collect();
                ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                ranked.truncate(query.limit);
                (*field, ranked)
            })
            .collect();
        let mut pots: Vec<PotActivity> = self
            .pots
            .into_iter()
            .map(|((node_id, pot_id), (events, newest))| PotActivity {
                node_id,
                pot_id,
                events,
                last_event: micros_to_time(newest),
            })
            .collect();
        pots.sort_unstable_by(|a, b| (a.node_id, &a.pot_id).cmp(&(b.node_id, &b.pot_id)));
        EventStats {
            total: self.total,
            distinct_sources,
            histogram,
            top,
            pots,
        }
    }
}

/// The statistics filter of a stats query (no id bounds, no field filters).
pub(crate) fn stats_filter(query: &StatsQuery) -> EventFilter {
    let mut coded = Vec::new();
    if let Some(pot) = &query.pot_id {
        coded.push((CodedColumn::PotId, pot.clone()));
    }
    if let Some(kind) = &query.event_type {
        coded.push((CodedColumn::EventType, kind.clone()));
    }
    EventFilter {
        since: query.since.map(|since| since.timestamp_micros()),
        until: query.until.map(|until| until.timestamp_micros()),
        node_id: query.node_id,
        coded,
        ..EventFilter::default()
    }
}

/// Counts the hot rows matching `filter`.
pub(crate) fn count_hot(columns: &HotColumns, filter: &EventFilter) -> Counts {
    let mut counts = Counts::new();
    let rows = columns.matching_rows(filter, false, usize::MAX);
    let text = |column: CodedColumn, row: usize| {
        let code = columns.coded[column as usize][row];
        (code != ABSENT)
            .then(|| columns.dictionaries[column as usize].value(code))
            .flatten()
    };
    for row in rows {
        let values =
            CODED_FIELDS.map(|field| coded_column(field).and_then(|column| text(column, row)));
        counts.add_event(&CountedEvent {
            timestamp: columns.timestamps[row],
            node_id: columns.node_ids[row],
            pot_id: text(CodedColumn::PotId, row).unwrap_or_default(),
            values,
            command: columns.plain[PlainColumn::Command as usize][row].as_deref(),
            asn: columns.asns[row],
        });
    }
    counts
}

/// The columns a count reads from a sealed partition, in this order.
pub(crate) const COUNTED_COLUMNS: [&str; 10] = [
    "timestamp",
    "node_id",
    "pot_id",
    "event_type",
    "src_ip",
    "username",
    "password",
    "country",
    "command",
    "asn",
];

/// Counts the rows of one batch of [`COUNTED_COLUMNS`] that match `filter`.
pub(crate) fn count_batch(columns: &[ArrayRef], filter: &EventFilter, counts: &mut Counts) {
    let times = columns[0].as_primitive::<TimestampMicrosecondType>();
    let nodes = columns[1].as_primitive::<UInt64Type>();
    let asns = columns[9].as_primitive::<UInt32Type>();
    for row in 0..times.len() {
        let timestamp = times.value(row);
        if filter.since.is_some_and(|since| timestamp < since)
            || filter.until.is_some_and(|until| timestamp > until)
            || filter.node_id.is_some_and(|node| nodes.value(row) != node)
        {
            continue;
        }
        let pot_id = text_of(&columns[2], row).unwrap_or_default();
        let event_type = text_of(&columns[3], row);
        let excluded = filter.coded.iter().any(|(column, wanted)| {
            let value = match column {
                CodedColumn::PotId => Some(pot_id),
                CodedColumn::EventType => event_type,
                _ => None,
            };
            value != Some(wanted.as_str())
        });
        if excluded {
            continue;
        }
        counts.add_event(&CountedEvent {
            timestamp,
            node_id: nodes.value(row),
            pot_id,
            values: [
                text_of(&columns[4], row),
                text_of(&columns[5], row),
                text_of(&columns[6], row),
                text_of(&columns[7], row),
                event_type,
                Some(pot_id),
            ],
            command: text_of(&columns[8], row),
            asn: asns.is_valid(row).then(|| asns.value(row)),
        });
    }
}

/// A summary as written to disk (zstd-compressed JSON), borrowing from the counts.
#[derive(Serialize)]
struct SummaryOut<'counts> {
    total: u64,
    /// Per field of [`StatField::ALL`]: (value, events).
    values: Vec<Vec<(&'counts str, u64)>>,
    minutes: Vec<(i64, u64)>,
    pots: Vec<(u64, &'counts str, u64, i64)>,
}

/// A summary as read, borrowing its texts from the decompressed file where it can.
#[derive(Deserialize)]
pub(crate) struct SummaryIn<'file> {
    total: u64,
    #[serde(borrow)]
    values: Vec<Vec<(Text<'file>, u64)>>,
    minutes: Vec<(i64, u64)>,
    #[serde(borrow)]
    pots: Vec<(u64, Text<'file>, u64, i64)>,
}

/// A text of a summary: borrowed from the file's JSON unless it had escapes to undo.
/// (serde borrows a `Cow` only as a struct's direct field, never inside tuples.)
pub(crate) struct Text<'file>(Cow<'file, str>);

impl<'de: 'file, 'file> Deserialize<'de> for Text<'file> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The summary file of the partition whose first event has `first_id`.
pub(crate) fn summary_path(directory: &Path, first_id: u64) -> PathBuf {
    directory.join(format!("part-{first_id:020}.summary.zst"))
}

/// `counts` as a summary file's bytes.
pub(crate) fn encode_summary(path: &Path, counts: &Counts) -> Result<Vec<u8>, ColumnarError> {
    let file = SummaryOut {
        total: counts.total,
        values: counts
            .values
            .iter()
            .map(|values| values.iter().map(|(v, c)| (v.as_str(), *c)).collect())
            .collect(),
        minutes: counts.minutes.iter().map(|(m, c)| (*m, *c)).collect(),
        pots: counts
            .pots
            .iter()
            .map(|((node, pot), (events, newest))| (*node, pot.as_str(), *events, *newest))
            .collect(),
    };
    let json = serde_json::to_vec(&file).map_err(|error| ColumnarError::Corrupt {
        path: path.to_path_buf(),
        what: error.to_string(),
    })?;
    zstd::encode_all(json.as_slice(), 3)
        .map_err(|source| ColumnarError::io("compressing summary", path, source))
}

/// Writes `bytes` to `path` durably: a temporary file, synced, renamed into place.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ColumnarError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    File::create(&temporary)
        .and_then(|mut out| {
            out.write_all(bytes)?;
            out.sync_all()
        })
        .map_err(|source| ColumnarError::io("writing", &temporary, source))?;
    std::fs::rename(&temporary, path)
        .map_err(|source| ColumnarError::io("naming", path, source))?;
    sync_directory_of(path)
}

/// Writes the counts of a whole partition, durably, before the partition file itself.
pub(crate) fn write_summary(path: &Path, counts: &Counts) -> Result<(), ColumnarError> {
    write_durably(path, &encode_summary(path, counts)?)
}

/// Adds a partition's summary to `counts`; on error `counts` is unchanged.
pub(crate) fn merge_summary_file(path: &Path, counts: &mut Counts) -> Result<(), ColumnarError> {
    let mut compressed = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut compressed))
        .map_err(|source| ColumnarError::io("reading summary", path, source))?;
    merge_encoded_summary(path, &compressed, counts)
}

/// Adds a summary from its file's bytes to `counts`; on error `counts` is unchanged.
pub(crate) fn merge_encoded_summary(
    path: &Path,
    compressed: &[u8],
    counts: &mut Counts,
) -> Result<(), ColumnarError> {
    let damaged = |what: String| ColumnarError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let json = zstd::decode_all(compressed).map_err(|error| damaged(error.to_string()))?;
    let summary: SummaryIn<'_> =
        serde_json::from_slice(&json).map_err(|error| damaged(error.to_string()))?;
    if summary.values.len() != StatField::ALL.len() {
        return Err(damaged(format!("{} fields", summary.values.len())));
    }
    counts.merge_summary(summary);
    Ok(())
}

/// The counts of a whole hot partition, for its summary.
pub(crate) fn count_whole(columns: &HotColumns) -> Counts {
    count_hot(columns, &EventFilter::default())
}
