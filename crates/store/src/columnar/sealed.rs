//! Sealed partitions: a hot partition written once as a Parquet file, then only read.
//!
//! One file per partition, `part-<first id>.parquet`: zstd, the coded columns dictionary
//! encoded, ids and times delta encoded, row groups of [`ROW_GROUP_ROWS`] rows with min/max
//! statistics per row group and page, and bloom filters on the columns people search for
//! rare values of (address, credentials, country, session). A query skips a row group
//! whose statistics or bloom filter rule its value out, and reads only the columns it
//! filters on, then only the rows of its page. Researchers can open the files with DuckDB
//! or pandas as they are.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::columnar::arrays::{keep_equal_number, keep_equal_text, text_of};
use crate::columnar::filter::{CodedColumn, EventFilter, PlainColumn};
use crate::columnar::hot::{micros_to_time, HotColumns, ABSENT};
use crate::columnar::log::sync_directory_of;
use crate::columnar::stats::{count_batch, Counts, COUNTED_COLUMNS};
use crate::columnar::ColumnarError;
use crate::model::{EventFields, StoredEvent};

/// Rows per row group: the unit statistics and bloom filters skip.
pub(crate) const ROW_GROUP_ROWS: usize = 65_536;
/// Key of the file metadata entry holding each node's highest stored `seq`.
const NODE_SEQUENCES_KEY: &str = "honeybee.node_sequences";
/// Key of the file metadata entry naming the layout's version.
const FORMAT_KEY: &str = "honeybee.format";
const FORMAT: &str = "1";

const ID: &str = "id";
const TIMESTAMP: &str = "timestamp";
const RECEIVED_AT: &str = "received_at";
const NODE_ID: &str = "node_id";
const SEQ: &str = "seq";
const SRC_PORT: &str = "src_port";
const DST_PORT: &str = "dst_port";
const ASN: &str = "asn";
const DATA: &str = "data";

/// Columns with bloom filters: exact searches for values that may occur once.
const BLOOM_COLUMNS: [&str; 5] = ["src_ip", "username", "password", "country", "session"];

/// The layout of a sealed partition.
pub(crate) fn schema() -> SchemaRef {
    let coded = |name: &str, nullable: bool| {
        Field::new(
            name,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            nullable,
        )
    };
    let time = |name: &str| {
        Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )
    };
    let mut fields = vec![
        Field::new(ID, DataType::UInt64, false),
        time(TIMESTAMP),
        time(RECEIVED_AT),
        Field::new(NODE_ID, DataType::UInt64, false),
        Field::new(SEQ, DataType::UInt64, true),
        coded(CodedColumn::PotId.name(), false),
        coded(CodedColumn::PotType.name(), false),
        coded(CodedColumn::EventType.name(), false),
    ];
    for column in &CodedColumn::ALL[3..] {
        fields.push(coded(column.name(), true));
    }
    for column in PlainColumn::ALL {
        fields.push(Field::new(column.name(), DataType::Utf8, true));
    }
    fields.push(Field::new(SRC_PORT, DataType::UInt16, true));
    fields.push(Field::new(DST_PORT, DataType::UInt16, true));
    fields.push(Field::new(ASN, DataType::UInt32, true));
    fields.push(Field::new(DATA, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The file name of the partition whose first event has `first_id`.
pub(crate) fn partition_file_name(first_id: u64) -> String {
    format!("part-{first_id:020}.parquet")
}

fn parquet_error(path: &Path, error: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Parquet {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Writes the hot partition's events as a sealed partition file in `directory` and
/// makes it durable (written under a temporary name, synced, renamed, directory synced):
/// once this returns, the file is the partition and its log may go.
pub(crate) fn write_sealed_partition(
    directory: &Path,
    columns: &HotColumns,
    log: &File,
    log_path: &Path,
    node_sequences: &HashMap<u64, u64>,
) -> Result<PathBuf, ColumnarError> {
    let first_id = *columns.ids.first().ok_or_else(|| ColumnarError::Corrupt {
        path: log_path.to_path_buf(),
        what: "sealing an empty partition".into(),
    })?;
    let path = directory.join(partition_file_name(first_id));
    let temporary = path.with_extension("parquet.tmp");
    let failed = |error: &dyn std::fmt::Display| parquet_error(&temporary, error);

    let mut sequences: Vec<(u64, u64)> = node_sequences.iter().map(|(n, s)| (*n, *s)).collect();
    sequences.sort_unstable();
    let sequences_text = sequences
        .iter()
        .map(|(node, seq)| format!("{node}:{seq}"))
        .collect::<Vec<_>>()
        .join(",");
    let zstd = ZstdLevel::try_new(3).map_err(|e| failed(&e))?;
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(FORMAT_KEY.to_owned(), FORMAT.to_owned()),
            KeyValue::new(NODE_SEQUENCES_KEY.to_owned(), sequences_text),
        ]));
    for column in [
        ID,
        TIMESTAMP,
        RECEIVED_AT,
        DATA,
        "command",
        "session",
        "url",
        "file_hash",
    ] {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in [ID, TIMESTAMP, RECEIVED_AT] {
        properties =
            properties.set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    for column in BLOOM_COLUMNS {
        let distinct = match CodedColumn::ALL.iter().find(|coded| coded.name() == column) {
            Some(coded) => columns.dictionaries[*coded as usize].values.len(),
            None => columns.len(),
        };
        properties = properties
            .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
            .set_column_bloom_filter_ndv(
                ColumnPath::from(column),
                (distinct as u64).clamp(1, ROW_GROUP_ROWS as u64),
            )
            .set_column_bloom_filter_fpp(ColumnPath::from(column), 0.01);
    }
    let dictionaries: Vec<Arc<StringArray>> = columns
        .dictionaries
        .iter()
        .map(|dictionary| {
            Arc::new(
                dictionary
                    .values
                    .iter()
                    .map(|value| Some(&**value))
                    .collect::<StringArray>(),
            )
        })
        .collect();
    let file = File::create(&temporary)
        .map_err(|source| ColumnarError::io("creating partition", &temporary, source))?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(properties.build())).map_err(|e| failed(&e))?;
    let mut start = 0;
    while start < columns.len() {
        let end = (start + ROW_GROUP_ROWS).min(columns.len());
        let batch = row_group_batch(columns, &dictionaries, start..end, log, log_path)?;
        writer.write(&batch).map_err(|e| failed(&e))?;
        writer.flush().map_err(|e| failed(&e))?;
        start = end;
    }
    let file = writer.into_inner().map_err(|e| failed(&e))?;
    file.sync_all()
        .map_err(|source| ColumnarError::io("syncing partition", &temporary, source))?;
    std::fs::rename(&temporary, &path)
        .map_err(|source| ColumnarError::io("naming partition", &path, source))?;
    sync_directory_of(&path)?;
    Ok(path)
}

/// The record batch of rows `rows` of the hot columns, payloads read from the log in one
/// read of the span they occupy.
fn row_group_batch(
    columns: &HotColumns,
    dictionaries: &[Arc<StringArray>],
    rows: std::ops::Range<usize>,
    log: &File,
    log_path: &Path,
) -> Result<RecordBatch, ColumnarError> {
    use std::os::unix::fs::FileExt;
    let payloads = &columns.payloads[rows.clone()];
    let span_start = payloads.first().map_or(0, |p| p.offset);
    let span_end = payloads
        .last()
        .map_or(0, |p| p.offset + u64::from(p.length));
    let mut span = vec![0u8; (span_end - span_start) as usize];
    log.read_exact_at(&mut span, span_start)
        .map_err(|source| ColumnarError::io("reading log", log_path, source))?;
    let mut data = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let at = (payload.offset - span_start) as usize;
        let text = std::str::from_utf8(&span[at..at + payload.length as usize]).map_err(|_| {
            ColumnarError::Corrupt {
                path: log_path.to_path_buf(),
                what: format!("payload at offset {} is not UTF-8", payload.offset),
            }
        })?;
        data.push(text);
    }
    let time = |values: &[i64]| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values.to_vec()).with_timezone("UTC"))
    };
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(columns.ids[rows.clone()].to_vec())),
        time(&columns.timestamps[rows.clone()]),
        time(&columns.received_at[rows.clone()]),
        Arc::new(UInt64Array::from(columns.node_ids[rows.clone()].to_vec())),
        Arc::new(UInt64Array::from(columns.seqs[rows.clone()].to_vec())),
    ];
    for column in CodedColumn::ALL {
        let keys: Int32Array = columns.coded[column as usize][rows.clone()]
            .iter()
            .map(|&code| (code != ABSENT).then_some(code as i32))
            .collect();
        let array =
            DictionaryArray::<Int32Type>::try_new(keys, dictionaries[column as usize].clone())
                .map_err(|e| parquet_error(log_path, e))?;
        arrays.push(Arc::new(array));
    }
    for column in PlainColumn::ALL {
        arrays.push(Arc::new(
            columns.plain[column as usize][rows.clone()]
                .iter()
                .map(|value| value.as_deref())
                .collect::<StringArray>(),
        ));
    }
    arrays.push(Arc::new(UInt16Array::from(
        columns.src_ports[rows.clone()].to_vec(),
    )));
    arrays.push(Arc::new(UInt16Array::from(
        columns.dst_ports[rows.clone()].to_vec(),
    )));
    arrays.push(Arc::new(UInt32Array::from(
        columns.asns[rows.clone()].to_vec(),
    )));
    arrays.push(Arc::new(StringArray::from(data)));
    RecordBatch::try_new(schema(), arrays).map_err(|e| parquet_error(log_path, e))
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
        let texts = filter
            .coded
            .iter()
            .map(|(column, value)| (column.name(), value))
            .chain(
                filter
                    .plain
                    .iter()
                    .map(|(column, value)| (column.name(), value)),
            );
        for (name, value) in texts {
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
                if !bloom.check(&value.as_str()) {
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
        let mut events = Vec::new();
        let groups = self.metadata.metadata().num_row_groups();
        let order: Box<dyn Iterator<Item = usize>> = if newest_first {
            Box::new((0..groups).rev())
        } else {
            Box::new(0..groups)
        };
        for group in order {
            if Instant::now() >= deadline {
                return Err(ColumnarError::TimeLimit { limit: time_limit });
            }
            if !self.group_may_match(group, filter)? {
                continue;
            }
            let rows = self.matching_rows(group, filter)?;
            let take = rows.len().min(wanted - events.len());
            let chosen: Vec<usize> = if newest_first {
                rows[rows.len() - take..].to_vec()
            } else {
                rows[..take].to_vec()
            };
            let mut found = self.events_of_rows(group, &chosen)?;
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

    /// The rows of row group `group` matching `filter`, ascending.
    fn matching_rows(
        &self,
        group: usize,
        filter: &EventFilter,
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
        for batch in self.read(group, &names, None)? {
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
            for (name, value) in filter
                .coded
                .iter()
                .map(|(column, value)| (column.name(), value))
                .chain(
                    filter
                        .plain
                        .iter()
                        .map(|(column, value)| (column.name(), value)),
                )
            {
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
                    .map(|(row, _)| offset + row),
            );
            offset += count;
        }
        Ok(rows)
    }

    /// The events of the given rows (ascending) of row group `group`, ascending.
    fn events_of_rows(
        &self,
        group: usize,
        rows: &[usize],
    ) -> Result<Vec<StoredEvent>, ColumnarError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let names = [
            ID,
            TIMESTAMP,
            RECEIVED_AT,
            NODE_ID,
            CodedColumn::PotId.name(),
            CodedColumn::PotType.name(),
            CodedColumn::EventType.name(),
            DATA,
            CodedColumn::SrcIp.name(),
            CodedColumn::Username.name(),
            CodedColumn::Password.name(),
            CodedColumn::Protocol.name(),
            CodedColumn::Country.name(),
            CodedColumn::City.name(),
            PlainColumn::Command.name(),
            PlainColumn::Session.name(),
            PlainColumn::Url.name(),
            PlainColumn::FileHash.name(),
            SRC_PORT,
            DST_PORT,
            ASN,
        ];
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
            let pots = column(CodedColumn::PotId.name())?;
            let types = column(CodedColumn::PotType.name())?;
            let event_types = column(CodedColumn::EventType.name())?;
            let data = column(DATA)?;
            let data = data.as_string::<i32>();
            let texts = [
                column(CodedColumn::SrcIp.name())?,
                column(CodedColumn::Username.name())?,
                column(CodedColumn::Password.name())?,
                column(CodedColumn::Protocol.name())?,
                column(CodedColumn::Country.name())?,
                column(CodedColumn::City.name())?,
                column(PlainColumn::Command.name())?,
                column(PlainColumn::Session.name())?,
                column(PlainColumn::Url.name())?,
                column(PlainColumn::FileHash.name())?,
            ];
            let src_ports = column(SRC_PORT)?;
            let src_ports = src_ports.as_primitive::<UInt16Type>();
            let dst_ports = column(DST_PORT)?;
            let dst_ports = dst_ports.as_primitive::<UInt16Type>();
            let asns = column(ASN)?;
            let asns = asns.as_primitive::<UInt32Type>();
            for row in 0..batch.num_rows() {
                let text = |index: usize| text_of(&texts[index], row).map(str::to_owned);
                let fields = EventFields {
                    src_ip: text(0),
                    src_port: src_ports.is_valid(row).then(|| src_ports.value(row)),
                    dst_port: dst_ports.is_valid(row).then(|| dst_ports.value(row)),
                    username: text(1),
                    password: text(2),
                    command: text(6),
                    session: text(7),
                    url: text(8),
                    file_hash: text(9),
                    protocol: text(3),
                    country: text(4),
                    city: text(5),
                    asn: asns.is_valid(row).then(|| asns.value(row)),
                };
                events.push(StoredEvent {
                    id: ids.value(row) as i64,
                    node_id: nodes.value(row),
                    pot_id: text_of(&pots, row).unwrap_or_default().to_owned(),
                    pot_type: text_of(&types, row).unwrap_or_default().to_owned(),
                    event_type: text_of(&event_types, row).unwrap_or_default().to_owned(),
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
