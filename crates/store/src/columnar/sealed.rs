//! Sealed partitions: a hot partition written once as a Parquet file, then only read.
//!
//! One file per partition, `part-<first id>.parquet` (written by `partition_writer.rs`,
//! which explains its page layout): row groups of [`ROW_GROUP_ROWS`] rows with min/max
//! statistics per row group and page, and bloom filters on the columns people search for
//! rare values of (address, credentials, country, session). A query skips a row group whose statistics or bloom filter rule its value
//! out; a value of a posted column (`postings.rs`) is then looked up in the partition's
//! postings, which name its rows; any other condition reads only the columns it filters
//! on, then only the rows of its page. Researchers can open the files with DuckDB or
//! pandas as they are.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;

use crate::columnar::arrays::{keep_equal_number, keep_equal_text, text_of};
use crate::columnar::filter::{CodedColumn, EventFilter, PlainColumn};
use crate::columnar::hot::micros_to_time;
use crate::columnar::postings::{postings_path, PostingsFile, POSTED_COLUMNS};
use crate::columnar::stats::{count_batch, Counts, COUNTED_COLUMNS};
use crate::columnar::ColumnarError;
use crate::model::{EventFields, StoredEvent};

/// Rows per row group: the unit statistics and bloom filters skip.
pub(crate) const ROW_GROUP_ROWS: usize = 65_536;
/// Key of the file metadata entry holding each node's highest stored `seq`.
pub(crate) const NODE_SEQUENCES_KEY: &str = "honeybee.node_sequences";
/// Key of the file metadata entry naming the layout's version.
pub(crate) const FORMAT_KEY: &str = "honeybee.format";
pub(crate) const FORMAT: &str = "1";

pub(crate) const ID: &str = "id";
pub(crate) const TIMESTAMP: &str = "timestamp";
pub(crate) const RECEIVED_AT: &str = "received_at";
pub(crate) const NODE_ID: &str = "node_id";
pub(crate) const SEQ: &str = "seq";
pub(crate) const SRC_PORT: &str = "src_port";
pub(crate) const DST_PORT: &str = "dst_port";
pub(crate) const ASN: &str = "asn";
pub(crate) const DATA: &str = "data";

/// Columns with bloom filters: exact searches for values that may occur once.
pub(crate) const BLOOM_COLUMNS: [&str; 5] =
    ["src_ip", "username", "password", "country", "session"];

pub(crate) fn parquet_error(path: &Path, error: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Parquet {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// A sealed partition, open for reading.
pub(crate) struct SealedPartition {
    pub path: PathBuf,
    file: File,
    metadata: ArrowReaderMetadata,
    pub first_id: u64,
    pub last_id: u64,
    pub rows: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// The latest arrival (`received_at`, micros) of its events: retention goes by it.
    pub max_received_at: i64,
    pub bytes: u64,
    /// Each node's highest `seq` among the partition's events.
    pub node_sequences: HashMap<u64, u64>,
    /// Per row group: bloom filter of each column that has one.
    blooms: Vec<HashMap<&'static str, Sbbf>>,
    /// The first row of each row group, then the partition's row count.
    group_starts: Vec<usize>,
    /// The rows of each value of the posted columns; `None` for a partition sealed
    /// without them (or whose file was found damaged at open).
    postings: Option<PostingsFile>,
    /// Set once a lookup found the postings damaged: the partition is scanned from then
    /// on, and the damage is logged once.
    postings_damaged: AtomicBool,
}

impl std::fmt::Debug for SealedPartition {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SealedPartition")
            .field("path", &self.path)
            .field("first_id", &self.first_id)
            .field("last_id", &self.last_id)
            .finish()
    }
}

/// An integer statistic of a column chunk, read from its little-endian bytes.
fn statistic(bytes: Option<&[u8]>) -> Option<i64> {
    Some(i64::from_le_bytes(bytes?.try_into().ok()?))
}

impl SealedPartition {
    pub fn open(path: &Path) -> Result<SealedPartition, ColumnarError> {
        let failed = |error: &dyn std::fmt::Display| parquet_error(path, error);
        let file = File::open(path)
            .map_err(|source| ColumnarError::io("opening partition", path, source))?;
        let bytes = file
            .metadata()
            .map_err(|source| ColumnarError::io("opening partition", path, source))?
            .len();
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))
                .map_err(|e| failed(&e))?;
        let parquet = metadata.metadata().clone();
        let file_metadata = parquet.file_metadata();
        let key_value = |key: &str| {
            file_metadata
                .key_value_metadata()
                .and_then(|entries| entries.iter().find(|entry| entry.key == key))
                .and_then(|entry| entry.value.clone())
        };
        if key_value(FORMAT_KEY).as_deref() != Some(FORMAT) {
            return Err(failed(
                &"not a partition of this layout (format entry missing or unknown)",
            ));
        }
        let mut node_sequences = HashMap::new();
        for pair in key_value(NODE_SEQUENCES_KEY)
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let parsed = pair
                .split_once(':')
                .and_then(|(node, seq)| Some((node.parse().ok()?, seq.parse().ok()?)));
            let (node, seq) =
                parsed.ok_or_else(|| failed(&format!("node sequence entry {pair:?}")))?;
            node_sequences.insert(node, seq);
        }
        let schema = file_metadata.schema_descr();
        let leaf = |name: &str| {
            (0..schema.num_columns()).find(|&index| schema.column(index).name() == name)
        };
        let (id_leaf, time_leaf, arrival_leaf) = (
            leaf(ID).ok_or_else(|| failed(&"no id column"))?,
            leaf(TIMESTAMP).ok_or_else(|| failed(&"no timestamp column"))?,
            leaf(RECEIVED_AT).ok_or_else(|| failed(&"no received_at column"))?,
        );
        let groups = parquet.num_row_groups();
        if groups == 0 {
            return Err(failed(&"no rows"));
        }
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            file.try_clone()
                .map_err(|source| ColumnarError::io("opening partition", path, source))?,
            metadata.clone(),
        );
        let (mut first_id, mut last_id) = (u64::MAX, 0u64);
        let (mut min_timestamp, mut max_timestamp) = (i64::MAX, i64::MIN);
        let mut max_received_at = i64::MIN;
        let mut blooms = Vec::with_capacity(groups);
        for group in 0..groups {
            let row_group = parquet.row_group(group);
            let ids = row_group
                .column(id_leaf)
                .statistics()
                .ok_or_else(|| failed(&"no id statistics"))?;
            let times = row_group
                .column(time_leaf)
                .statistics()
                .ok_or_else(|| failed(&"no timestamp statistics"))?;
            let bound = |value: Option<i64>| value.ok_or_else(|| failed(&"missing statistics"));
            first_id = first_id.min(bound(statistic(ids.min_bytes_opt()))? as u64);
            last_id = last_id.max(bound(statistic(ids.max_bytes_opt()))? as u64);
            min_timestamp = min_timestamp.min(bound(statistic(times.min_bytes_opt()))?);
            max_timestamp = max_timestamp.max(bound(statistic(times.max_bytes_opt()))?);
            let arrivals = row_group
                .column(arrival_leaf)
                .statistics()
                .ok_or_else(|| failed(&"no received_at statistics"))?;
            max_received_at = max_received_at.max(bound(statistic(arrivals.max_bytes_opt()))?);
            let mut filters = HashMap::new();
            for column in BLOOM_COLUMNS {
                let Some(index) = leaf(column) else { continue };
                if let Some(bloom) = builder
                    .get_row_group_column_bloom_filter(group, index)
                    .map_err(|e| failed(&e))?
                {
                    filters.insert(column, bloom);
                }
            }
            blooms.push(filters);
        }
        let mut group_starts = Vec::with_capacity(groups + 1);
        group_starts.push(0);
        for group in 0..groups {
            let rows = parquet.row_group(group).num_rows() as usize;
            group_starts.push(group_starts[group] + rows);
        }
        let postings_file = path
            .parent()
            .map(|directory| postings_path(directory, first_id));
        let postings = match postings_file.as_deref().map(PostingsFile::open) {
            Some(Ok(postings)) => postings,
            Some(Err(error)) => {
                tracing::warn!(%error, "a partition's postings are damaged; searches scan it instead");
                None
            }
            None => None,
        };
        Ok(SealedPartition {
            path: path.to_path_buf(),
            file,
            metadata,
            first_id,
            last_id,
            rows: file_metadata.num_rows() as u64,
            min_timestamp,
            max_timestamp,
            max_received_at,
            bytes,
            node_sequences,
            blooms,
            group_starts,
            postings,
            postings_damaged: AtomicBool::new(false),
        })
    }

    fn leaf(&self, name: &str) -> Result<usize, ColumnarError> {
        let schema = self.metadata.metadata().file_metadata().schema_descr();
        (0..schema.num_columns())
            .find(|&index| schema.column(index).name() == name)
            .ok_or_else(|| parquet_error(&self.path, format!("no column {name}")))
    }

    /// Reads columns `names` of the given rows (ascending, within the row group; all rows
    /// when `None`) of one row group.
    fn read(
        &self,
        group: usize,
        names: &[&str],
        rows: Option<&[usize]>,
    ) -> Result<Vec<RecordBatch>, ColumnarError> {
        let failed = |error: &dyn std::fmt::Display| parquet_error(&self.path, error);
        let mut leaves = Vec::with_capacity(names.len());
        for name in names {
            leaves.push(self.leaf(name)?);
        }
        let schema = self.metadata.metadata().file_metadata().schema_descr();
        let mask = ProjectionMask::leaves(schema, leaves);
        let file = self
            .file
            .try_clone()
            .map_err(|source| ColumnarError::io("reading partition", &self.path, source))?;
        let total = self.metadata.metadata().row_group(group).num_rows() as usize;
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_groups(vec![group])
                .with_projection(mask)
                .with_batch_size(ROW_GROUP_ROWS);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                rows.iter().map(|&row| row..row + 1),
                total,
            ));
        }
        let reader = builder.build().map_err(|e| failed(&e))?;
        reader.map(|batch| batch.map_err(|e| failed(&e))).collect()
    }

    /// Whether row group `group`'s statistics and bloom filters leave room for a match.
    fn group_may_match(&self, group: usize, filter: &EventFilter) -> Result<bool, ColumnarError> {
        let row_group = self.metadata.metadata().row_group(group);
        let bounds = |name: &str| -> Result<Option<(i64, i64)>, ColumnarError> {
            let statistics = row_group.column(self.leaf(name)?).statistics();
            Ok(statistics
                .and_then(|s| Some((statistic(s.min_bytes_opt())?, statistic(s.max_bytes_opt())?))))
        };
        if let Some((first, last)) = bounds(ID)? {
            if !filter.may_match_ids(first as u64, last as u64) {
                return Ok(false);
            }
        }
        if filter.since.is_some() || filter.until.is_some() {
            if let Some((min, max)) = bounds(TIMESTAMP)? {
                if !filter.may_match_times(min, max) {
                    return Ok(false);
                }
            }
        }
        for (name, value) in filter.text_conditions() {
            let chunk = row_group.column(self.leaf(name)?);
            if let Some(statistics) = chunk.statistics() {
                if statistics.null_count_opt() == Some(chunk.num_values() as u64) {
                    return Ok(false);
                }
                let below = statistics
                    .min_bytes_opt()
                    .is_some_and(|min| value.as_bytes() < min);
                let above = statistics
                    .max_bytes_opt()
                    .is_some_and(|max| value.as_bytes() > max);
                if below || above {
                    return Ok(false);
                }
            }
            if let Some(bloom) = self.blooms[group].get(name) {
                if !bloom.check(&value) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Counts the events matching `filter` (a statistics filter: time, node, pot, type).
    pub fn count(
        &self,
        filter: &EventFilter,
        counts: &mut Counts,
        deadline: Instant,
        time_limit: std::time::Duration,
    ) -> Result<(), ColumnarError> {
        for group in 0..self.metadata.metadata().num_row_groups() {
            if Instant::now() >= deadline {
                return Err(ColumnarError::TimeLimit { limit: time_limit });
            }
            if !self.group_may_match(group, filter)? {
                continue;
            }
            for batch in self.read(group, &COUNTED_COLUMNS, None)? {
                let mut columns = Vec::with_capacity(COUNTED_COLUMNS.len());
                for name in COUNTED_COLUMNS {
                    columns.push(batch.column_by_name(name).cloned().ok_or_else(|| {
                        parquet_error(&self.path, format!("no column {name} read"))
                    })?);
                }
                count_batch(&columns, filter, counts);
            }
        }
        Ok(())
    }

    /// Up to `wanted` events matching `filter`, newest first or oldest first.
    pub fn matching_events(
        &self,
        filter: &EventFilter,
        newest_first: bool,
        wanted: usize,
        deadline: Instant,
        time_limit: std::time::Duration,
    ) -> Result<Vec<StoredEvent>, ColumnarError> {
        let mut groups = Vec::new();
        for group in 0..self.metadata.metadata().num_row_groups() {
            if self.group_may_match(group, filter)? {
                groups.push(group);
            }
        }
        if newest_first {
            groups.reverse();
        }
        // Statistics and bloom filters (in memory) first: the postings are read only for
        // a partition that may hold the value.
        let candidates = if groups.is_empty() {
            None
        } else {
            self.posted_candidates(filter)
        };
        if candidates.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        // With candidates, what the postings do not answer is checked on their columns.
        let candidates = candidates.map(|rows| {
            let unposted = EventFilter {
                coded: filter
                    .coded
                    .iter()
                    .filter(|(column, _)| !POSTED_COLUMNS.contains(column))
                    .cloned()
                    .collect(),
                ..filter.clone()
            };
            (rows, unposted)
        });
        let mut events = Vec::new();
        for group in groups {
            if Instant::now() >= deadline {
                return Err(ColumnarError::TimeLimit { limit: time_limit });
            }
            let rows = match &candidates {
                Some((candidates, unposted)) => {
                    let (start, end) = (self.group_starts[group], self.group_starts[group + 1]);
                    let from = candidates.partition_point(|&row| (row as usize) < start);
                    let to = candidates.partition_point(|&row| (row as usize) < end);
                    let in_group: Vec<usize> = candidates[from..to]
                        .iter()
                        .map(|&row| row as usize - start)
                        .collect();
                    if in_group.is_empty() || unposted.is_everything() {
                        in_group
                    } else {
                        self.matching_rows(group, unposted, Some(&in_group))?
                    }
                }
                None => self.matching_rows(group, filter, None)?,
            };
            let take = rows.len().min(wanted - events.len());
            let chosen: Vec<usize> = if newest_first {
                rows[rows.len() - take..].to_vec()
            } else {
                rows[..take].to_vec()
            };
            let mut found = self.events_of_rows(group, &chosen, filter)?;
            if newest_first {
                found.reverse();
            }
            events.extend(found);
            if events.len() >= wanted {
                break;
            }
        }
        Ok(events)
    }

    /// The rows (ascending, from the partition's first) that the postings give for the
    /// filter's conditions on posted columns; `None` when there are no such conditions,
    /// no postings, or the postings are damaged (then the partition is scanned).
    fn posted_candidates(&self, filter: &EventFilter) -> Option<Vec<u32>> {
        let postings = self.postings.as_ref()?;
        if self.postings_damaged.load(Ordering::Relaxed) {
            return None;
        }
        match postings.candidate_rows(filter) {
            Ok(candidates) => candidates,
            Err(error) => {
                if !self.postings_damaged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "a partition's postings are damaged; searches scan it instead");
                }
                None
            }
        }
    }

    /// The rows of row group `group` matching `filter`, ascending: among `among` (rows of
    /// the group, ascending) when given, else among all.
    fn matching_rows(
        &self,
        group: usize,
        filter: &EventFilter,
        among: Option<&[usize]>,
    ) -> Result<Vec<usize>, ColumnarError> {
        let mut names = vec![ID];
        if filter.since.is_some() || filter.until.is_some() {
            names.push(TIMESTAMP);
        }
        if filter.node_id.is_some() {
            names.push(NODE_ID);
        }
        for (column, _) in &filter.coded {
            names.push(column.name());
        }
        for (column, _) in &filter.plain {
            names.push(column.name());
        }
        for (name, wanted) in [
            (SRC_PORT, filter.src_port.is_some()),
            (DST_PORT, filter.dst_port.is_some()),
            (ASN, filter.asn.is_some()),
        ] {
            if wanted {
                names.push(name);
            }
        }
        let mut rows = Vec::new();
        let mut offset = 0;
        for batch in self.read(group, &names, among)? {
            let count = batch.num_rows();
            let mut keep = vec![true; count];
            let column = |name: &str| batch.column_by_name(name).cloned();
            if let Some(ids) = column(ID) {
                let ids = ids.as_primitive::<UInt64Type>();
                for (row, keep) in keep.iter_mut().enumerate() {
                    let id = ids.value(row);
                    *keep &= filter.id_above.is_none_or(|above| id > above)
                        && filter.id_below.is_none_or(|below| id < below);
                }
            }
            if let Some(times) = column(TIMESTAMP) {
                let times = times.as_primitive::<TimestampMicrosecondType>();
                for (row, keep) in keep.iter_mut().enumerate() {
                    let time = times.value(row);
                    *keep &= filter.since.is_none_or(|since| time >= since)
                        && filter.until.is_none_or(|until| time <= until);
                }
            }
            if let (Some(node), Some(nodes)) = (filter.node_id, column(NODE_ID)) {
                let nodes = nodes.as_primitive::<UInt64Type>();
                for (row, keep) in keep.iter_mut().enumerate() {
                    *keep &= nodes.value(row) == node;
                }
            }
            for (name, value) in filter.text_conditions() {
                if let Some(array) = column(name) {
                    keep_equal_text(&array, value, &mut keep);
                }
            }
            keep_equal_number::<UInt16Type>(column(SRC_PORT), filter.src_port, &mut keep);
            keep_equal_number::<UInt16Type>(column(DST_PORT), filter.dst_port, &mut keep);
            keep_equal_number::<UInt32Type>(column(ASN), filter.asn, &mut keep);
            rows.extend(
                keep.iter()
                    .enumerate()
                    .filter(|(_, keep)| **keep)
                    .map(|(row, _)| among.map_or(offset + row, |among| among[offset + row])),
            );
            offset += count;
        }
        Ok(rows)
    }

    /// The events of the given rows (ascending) of row group `group`, ascending. A text
    /// column `filter` fixes to one value is not read: every matching row holds that value.
    fn events_of_rows(
        &self,
        group: usize,
        rows: &[usize],
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>, ColumnarError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let fixed = |name: &str| -> Option<&str> {
            filter
                .text_conditions()
                .find(|(column, _)| *column == name)
                .map(|(_, value)| value)
        };
        // The coded columns, then the plain ones: `texts` below is indexed the same way.
        let text_columns: Vec<&str> = CodedColumn::ALL
            .iter()
            .map(|column| column.name())
            .chain(PlainColumn::ALL.iter().map(|column| column.name()))
            .collect();
        let mut names = vec![
            ID,
            TIMESTAMP,
            RECEIVED_AT,
            NODE_ID,
            DATA,
            SRC_PORT,
            DST_PORT,
            ASN,
        ];
        names.extend(
            text_columns
                .iter()
                .copied()
                .filter(|name| fixed(name).is_none()),
        );
        let mut events = Vec::with_capacity(rows.len());
        for batch in self.read(group, &names, Some(rows))? {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| parquet_error(&self.path, format!("no column {name} read")))
            };
            let ids = column(ID)?;
            let ids = ids.as_primitive::<UInt64Type>();
            let times = column(TIMESTAMP)?;
            let times = times.as_primitive::<TimestampMicrosecondType>();
            let arrivals = column(RECEIVED_AT)?;
            let arrivals = arrivals.as_primitive::<TimestampMicrosecondType>();
            let nodes = column(NODE_ID)?;
            let nodes = nodes.as_primitive::<UInt64Type>();
            let data = column(DATA)?;
            let data = data.as_string::<i32>();
            // Per text column: the value the filter fixes, or the array read.
            let mut texts = Vec::with_capacity(text_columns.len());
            for name in &text_columns {
                texts.push(match fixed(name) {
                    Some(value) => Err(value),
                    None => Ok(column(name)?),
                });
            }
            let src_ports = column(SRC_PORT)?;
            let src_ports = src_ports.as_primitive::<UInt16Type>();
            let dst_ports = column(DST_PORT)?;
            let dst_ports = dst_ports.as_primitive::<UInt16Type>();
            let asns = column(ASN)?;
            let asns = asns.as_primitive::<UInt32Type>();
            for row in 0..batch.num_rows() {
                let text = |index: usize| -> Option<String> {
                    match &texts[index] {
                        Err(value) => Some((*value).to_owned()),
                        Ok(array) => text_of(array, row).map(str::to_owned),
                    }
                };
                let coded = |column: CodedColumn| text(column as usize);
                let plain = |column: PlainColumn| text(CodedColumn::COUNT + column as usize);
                let fields = EventFields {
                    src_ip: coded(CodedColumn::SrcIp),
                    src_port: src_ports.is_valid(row).then(|| src_ports.value(row)),
                    dst_port: dst_ports.is_valid(row).then(|| dst_ports.value(row)),
                    username: coded(CodedColumn::Username),
                    password: coded(CodedColumn::Password),
                    command: plain(PlainColumn::Command),
                    session: plain(PlainColumn::Session),
                    url: plain(PlainColumn::Url),
                    file_hash: plain(PlainColumn::FileHash),
                    protocol: coded(CodedColumn::Protocol),
                    country: coded(CodedColumn::Country),
                    city: coded(CodedColumn::City),
                    asn: asns.is_valid(row).then(|| asns.value(row)),
                };
                events.push(StoredEvent {
                    id: ids.value(row) as i64,
                    node_id: nodes.value(row),
                    pot_id: coded(CodedColumn::PotId).unwrap_or_default(),
                    pot_type: coded(CodedColumn::PotType).unwrap_or_default(),
                    event_type: coded(CodedColumn::EventType).unwrap_or_default(),
                    timestamp: micros_to_time(times.value(row)),
                    received_at: micros_to_time(arrivals.value(row)),
                    data_json: data.value(row).to_owned(),
                    fields,
                });
            }
        }
        Ok(events)
    }
}
