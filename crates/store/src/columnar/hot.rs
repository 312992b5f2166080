//! The hot partition: the events of the open log, held in memory as columns until the
//! partition is sealed.
//!
//! Every low- or medium-cardinality text (pot, type, address, credentials, protocol,
//! country, city) is a code of the partition's own dictionary: a filter looks its value up
//! once and then compares integers from the newest row back, and sealing hands the codes
//! to the Parquet writer as dictionary arrays. Payloads stay in the log and are read back
//! by position, so memory holds about 100 bytes per event besides the free-text fields.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::RwLock;

use chrono::{DateTime, Utc};

use crate::columnar::filter::{CodedColumn, EventFilter, PlainColumn};
use crate::columnar::log::{read_payload, PayloadPosition};
use crate::columnar::ColumnarError;
use crate::model::{EventFields, NewEvent, StoredEvent};

/// A row without a value in a coded column.
pub(crate) const ABSENT: u32 = u32::MAX;

/// Values of one coded column, each given the next code.
#[derive(Debug, Default)]
pub(crate) struct Dictionary {
    codes: HashMap<Box<str>, u32>,
    pub values: Vec<Box<str>>,
}

impl Dictionary {
    fn code(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else {
            return ABSENT;
        };
        if let Some(code) = self.codes.get(value) {
            return *code;
        }
        let code = self.values.len() as u32;
        self.values.push(value.into());
        self.codes.insert(value.into(), code);
        code
    }

    pub fn lookup(&self, value: &str) -> Option<u32> {
        self.codes.get(value).copied()
    }

    pub fn value(&self, code: u32) -> Option<&str> {
        self.values.get(code as usize).map(|value| &**value)
    }
}

/// The columns of a hot partition; row `r` is the `r`-th event appended.
#[derive(Debug, Default)]
pub(crate) struct HotColumns {
    pub ids: Vec<u64>,
    pub timestamps: Vec<i64>,
    pub received_at: Vec<i64>,
    pub node_ids: Vec<u64>,
    pub seqs: Vec<Option<u64>>,
    pub coded: [Vec<u32>; CodedColumn::COUNT],
    pub dictionaries: [Dictionary; CodedColumn::COUNT],
    pub src_ports: Vec<Option<u16>>,
    pub dst_ports: Vec<Option<u16>>,
    pub asns: Vec<Option<u32>>,
    pub plain: [Vec<Option<Box<str>>>; PlainColumn::COUNT],
    pub payloads: Vec<PayloadPosition>,
    /// Bytes the columns hold, counted as they grow: what caps the partition's memory.
    pub memory_bytes: usize,
}

/// Memory of one row besides its free text: ids, times, codes, ports, payload position.
const ROW_BYTES: usize = 8 * 5 + 4 * CodedColumn::COUNT + 2 * 2 + 8 + 16 + 16;

impl HotColumns {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn push(&mut self, id: u64, event: &NewEvent, payload: PayloadPosition) {
        let fields = &event.fields;
        self.ids.push(id);
        self.timestamps.push(event.timestamp.timestamp_micros());
        self.received_at.push(event.received_at.timestamp_micros());
        self.node_ids.push(event.node_id);
        self.seqs.push(event.seq);
        for column in CodedColumn::ALL {
            let value = match column {
                CodedColumn::PotId => Some(event.pot_id.as_str()),
                CodedColumn::PotType => Some(event.pot_type.as_str()),
                CodedColumn::EventType => Some(event.event_type.as_str()),
                other => other.field(fields),
            };
            let dictionary = &mut self.dictionaries[column as usize];
            let known = dictionary.values.len();
            let code = dictionary.code(value);
            if dictionary.values.len() > known {
                self.memory_bytes += 2 * value.map_or(0, str::len) + 48;
            }
            self.coded[column as usize].push(code);
        }
        self.src_ports.push(fields.src_port);
        self.dst_ports.push(fields.dst_port);
        self.asns.push(fields.asn);
        for column in PlainColumn::ALL {
            let value = column.field(fields);
            self.memory_bytes += value.map_or(0, str::len);
            self.plain[column as usize].push(value.map(Into::into));
        }
        self.payloads.push(payload);
        self.memory_bytes += ROW_BYTES;
    }

    fn text(&self, column: CodedColumn, row: usize) -> &str {
        self.dictionaries[column as usize]
            .value(self.coded[column as usize][row])
            .unwrap_or_default()
    }

    /// The well-known fields of row `row`, as stored.
    fn fields(&self, row: usize) -> EventFields {
        let coded = |column: CodedColumn| {
            self.dictionaries[column as usize]
                .value(self.coded[column as usize][row])
                .map(str::to_owned)
        };
        let plain = |column: PlainColumn| {
            self.plain[column as usize][row]
                .as_deref()
                .map(str::to_owned)
        };
        EventFields {
            src_ip: coded(CodedColumn::SrcIp),
            src_port: self.src_ports[row],
            dst_port: self.dst_ports[row],
            username: coded(CodedColumn::Username),
            password: coded(CodedColumn::Password),
            command: plain(PlainColumn::Command),
            session: plain(PlainColumn::Session),
            url: plain(PlainColumn::Url),
            file_hash: plain(PlainColumn::FileHash),
            protocol: coded(CodedColumn::Protocol),
            country: coded(CodedColumn::Country),
            city: coded(CodedColumn::City),
            asn: self.asns[row],
        }
    }

    /// Whether row `row` passes `filter`, given the filter's values as this partition's
    /// codes (`codes[i]` for `filter.coded[i]`).
    fn row_matches(&self, filter: &EventFilter, codes: &[u32], row: usize) -> bool {
        let id = self.ids[row];
        if filter.id_above.is_some_and(|above| id <= above)
            || filter.id_below.is_some_and(|below| id >= below)
        {
            return false;
        }
        let timestamp = self.timestamps[row];
        if filter.since.is_some_and(|since| timestamp < since)
            || filter.until.is_some_and(|until| timestamp > until)
        {
            return false;
        }
        if filter
            .node_id
            .is_some_and(|node| self.node_ids[row] != node)
        {
            return false;
        }
        if filter
            .coded
            .iter()
            .zip(codes)
            .any(|((column, _), &code)| self.coded[*column as usize][row] != code)
        {
            return false;
        }
        if filter
            .src_port
            .is_some_and(|port| self.src_ports[row] != Some(port))
            || filter
                .dst_port
                .is_some_and(|port| self.dst_ports[row] != Some(port))
            || filter.asn.is_some_and(|asn| self.asns[row] != Some(asn))
        {
            return false;
        }
        filter
            .plain
            .iter()
            .all(|(column, value)| self.plain[*column as usize][row].as_deref() == Some(value))
    }

    /// Rows matching `filter`, newest first or oldest first, at most `wanted`.
    pub fn matching_rows(
        &self,
        filter: &EventFilter,
        newest_first: bool,
        wanted: usize,
    ) -> Vec<usize> {
        let mut codes = Vec::with_capacity(filter.coded.len());
        for (column, value) in &filter.coded {
            match self.dictionaries[*column as usize].lookup(value) {
                Some(code) => codes.push(code),
                // The value never occurs in this partition.
                None => return Vec::new(),
            }
        }
        // Ids ascend with rows: the id bounds cut the row range before any comparison.
        let start = filter
            .id_above
            .map_or(0, |above| self.ids.partition_point(|&id| id <= above));
        let end = filter.id_below.map_or(self.ids.len(), |below| {
            self.ids.partition_point(|&id| id < below)
        });
        let mut rows = Vec::new();
        let mut consider = |row: usize| {
            if self.row_matches(filter, &codes, row) {
                rows.push(row);
            }
            rows.len() >= wanted
        };
        if newest_first {
            for row in (start..end).rev() {
                if consider(row) {
                    break;
                }
            }
        } else {
            for row in start..end {
                if consider(row) {
                    break;
                }
            }
        }
        rows
    }
}

/// A hot partition: its log and its columns. The newest one takes appends; older ones
/// wait for (or are in) sealing and no longer change.
#[derive(Debug)]
pub(crate) struct HotPartition {
    pub log_path: PathBuf,
    /// A read handle on the log: payloads are read back through it, and it stays valid
    /// after sealing removes the file.
    pub log_reader: File,
    /// The UTC hour (seconds since the epoch, divisible by 3,600) of the first event's
    /// arrival: a partition holds one hour of arrivals at most.
    pub arrival_hour: RwLock<Option<i64>>,
    pub columns: RwLock<HotColumns>,
}

/// The hour of an arrival time, as the start of that hour in seconds since the epoch.
pub(crate) fn arrival_hour(received_at: DateTime<Utc>) -> i64 {
    received_at.timestamp().div_euclid(3_600) * 3_600
}

impl HotPartition {
    pub fn new(log_path: PathBuf, log_reader: File) -> Self {
        HotPartition {
            log_path,
            log_reader,
            arrival_hour: RwLock::new(None),
            columns: RwLock::new(HotColumns::default()),
        }
    }

    /// The events of `rows`, in the order given.
    pub fn events(
        &self,
        columns: &HotColumns,
        rows: &[usize],
    ) -> Result<Vec<StoredEvent>, ColumnarError> {
        rows.iter()
            .map(|&row| {
                let data_json =
                    read_payload(&self.log_reader, &self.log_path, columns.payloads[row])?;
                Ok(StoredEvent {
                    id: columns.ids[row] as i64,
                    node_id: columns.node_ids[row],
                    pot_id: columns.text(CodedColumn::PotId, row).to_owned(),
                    pot_type: columns.text(CodedColumn::PotType, row).to_owned(),
                    event_type: columns.text(CodedColumn::EventType, row).to_owned(),
                    timestamp: micros_to_time(columns.timestamps[row]),
                    received_at: micros_to_time(columns.received_at[row]),
                    data_json,
                    fields: columns.fields(row),
                })
            })
            .collect()
    }
}

/// A stored time back as a `DateTime`; the store only ever writes valid ones.
pub(crate) fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
