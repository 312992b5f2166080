//! Candidate C: a hot write-ahead log (`wal.rs`) with the extracted fields, queried from
//! memory until the partition is sealed into one Parquet file (zstd, dictionary encoding
//! where it pays, row-group and page statistics, bloom filters on the filterable
//! high-cardinality columns) plus a small summary file: the count of every value of every
//! statistics field in the partition.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field as Column, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::candidate::{top_ten, Candidate, Field, Filter, Ingested, Row, Top};
use crate::corpus::{Event, Fields};
use crate::wal::{self, Segment};

/// Rows per Parquet row group: the unit the zone maps and bloom filters skip.
pub const ROW_GROUP_ROWS: usize = 65_536;

pub(crate) const ID: usize = 0;
pub(crate) const RECEIVED_AT: usize = 1;
pub(crate) const EVENT_TYPE: usize = 5;
pub(crate) const SRC_IP: usize = 6;
pub(crate) const USERNAME: usize = 9;
pub(crate) const PASSWORD: usize = 10;
pub(crate) const COUNTRY: usize = 16;
pub(crate) const DATA: usize = 17;

pub(crate) fn schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Column::new(name, DataType::Utf8, nullable);
    // Read back as dictionary arrays: a filter compares the dictionary once and then
    // integer keys, and counting counts keys.
    let coded = |name: &str, nullable: bool| {
        Column::new(
            name,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            nullable,
        )
    };
    Arc::new(Schema::new(vec![
        Column::new("id", DataType::UInt64, false),
        Column::new("received_at", DataType::Int64, false),
        Column::new("node_id", DataType::UInt64, false),
        coded("pot_id", false),
        coded("pot_type", false),
        coded("event_type", false),
        coded("src_ip", true),
        Column::new("src_port", DataType::Int64, true),
        Column::new("dst_port", DataType::Int64, true),
        coded("username", true),
        coded("password", true),
        text("input", true),
        text("session", true),
        text("url", true),
        text("shasum", true),
        coded("protocol", true),
        coded("country", true),
        text("data", false),
    ]))
}

struct HotRow {
    id: u64,
    received_at: i64,
    event_type: String,
    fields: Fields,
    data_offset: u64,
    data_length: usize,
}

struct Hot {
    index: usize,
    segment: Segment,
    rows: Vec<HotRow>,
}

pub(crate) struct Sealed {
    pub(crate) first_id: u64,
    pub(crate) last_id: u64,
    pub(crate) min_ts: i64,
    pub(crate) file: File,
    pub(crate) metadata: ArrowReaderMetadata,
    /// Per row group: column → bloom filter.
    pub(crate) blooms: Vec<HashMap<usize, Sbbf>>,
    /// Per row group: its first row in the file.
    pub(crate) row_group_starts: Vec<usize>,
    pub(crate) summary: HashMap<Field, Vec<(String, u64)>>,
}

pub struct ParquetStore {
    dir: PathBuf,
    /// Target size of a data page before compression: the unit a point read decodes.
    page_bytes: usize,
    next_id: u64,
    sealed: Vec<Sealed>,
    hot: Hot,
    offsets: Vec<u64>,
}

pub(crate) fn segment_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("hot-{index:06}.log"))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl ParquetStore {
    pub fn open(dir: &Path, page_bytes: usize) -> Result<ParquetStore> {
        std::fs::create_dir_all(dir)?;
        Ok(ParquetStore {
            dir: dir.to_path_buf(),
            page_bytes,
            next_id: 1,
            sealed: Vec::new(),
            hot: Hot {
                index: 0,
                segment: Segment::create(&segment_path(dir, 0))?,
                rows: Vec::new(),
            },
            offsets: Vec::new(),
        })
    }

    pub(crate) fn builder(
        part: &Sealed,
        row_group: usize,
        columns: &[usize],
    ) -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let mask = ProjectionMask::leaves(
            part.metadata.metadata().file_metadata().schema_descr(),
            columns.iter().copied(),
        );
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
            part.file.try_clone()?,
            part.metadata.clone(),
        )
        .with_row_groups(vec![row_group])
        .with_projection(mask)
        .with_batch_size(ROW_GROUP_ROWS))
    }

    /// Reads (id, data) of the given rows (ascending, within the row group).
    pub(crate) fn read_rows(part: &Sealed, row_group: usize, rows: &[usize]) -> Result<Vec<Row>> {
        let total = part.metadata.metadata().row_group(row_group).num_rows() as usize;
        let selection =
            RowSelection::from_consecutive_ranges(rows.iter().map(|&row| row..row + 1), total);
        let reader = Self::builder(part, row_group, &[ID, DATA])?
            .with_row_selection(selection)
            .build()?;
        let mut found = Vec::new();
        for batch in reader {
            let batch = batch?;
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let data = batch.column(1).as_string::<i32>();
            for index in 0..batch.num_rows() {
                found.push((ids.value(index), data.value(index).to_owned()));
            }
        }
        Ok(found)
    }

    pub(crate) fn sealed_page(part: &Sealed, filter: &Filter, wanted: usize) -> Result<Vec<Row>> {
        let (column, value) = match filter {
            Filter::Username(value) => (USERNAME, value),
            Filter::SrcIp(value) => (SRC_IP, value),
            Filter::Country(value) => (COUNTRY, value),
            Filter::EventType(value) => (EVENT_TYPE, value),
        };
        let mut page = Vec::new();
        for row_group in (0..part.blooms.len()).rev() {
            let chunk = part.metadata.metadata().row_group(row_group).column(column);
            if let Some(statistics) = chunk.statistics() {
                let outside = statistics
                    .min_bytes_opt()
                    .is_some_and(|min| value.as_bytes() < min)
                    || statistics
                        .max_bytes_opt()
                        .is_some_and(|max| value.as_bytes() > max);
                if outside || statistics.null_count_opt() == Some(chunk.num_values() as u64) {
                    continue;
                }
            }
            if let Some(bloom) = part.blooms[row_group].get(&column) {
                if !bloom.check(&value.as_str()) {
                    continue;
                }
            }
            let reader = Self::builder(part, row_group, &[column])?.build()?;
            let mut matches = Vec::new();
            let mut offset = 0;
            for batch in reader {
                let batch = batch?;
                equal_rows(batch.column(0), value, offset, &mut matches);
                offset += batch.num_rows();
            }
            let keep = matches.len().min(wanted - page.len());
            let newest = &matches[matches.len() - keep..];
            let mut rows = Self::read_rows(part, row_group, newest)?;
            rows.reverse();
            page.extend(rows);
            if page.len() >= wanted {
                break;
            }
        }
        Ok(page)
    }

    /// Counts the statistics fields of the rows of `part` that arrived at or after `since`.
    pub(crate) fn scan_counts(
        part: &Sealed,
        since: i64,
        counts: &mut HashMap<Field, HashMap<String, u64>>,
    ) -> Result<()> {
        let columns = [RECEIVED_AT, EVENT_TYPE, SRC_IP, USERNAME, PASSWORD, COUNTRY];
        for row_group in 0..part.blooms.len() {
            let chunk = part
                .metadata
                .metadata()
                .row_group(row_group)
                .column(RECEIVED_AT);
            let newest = chunk
                .statistics()
                .and_then(|statistics| statistics.max_bytes_opt())
                .and_then(|bytes| bytes.try_into().ok())
                .map(i64::from_le_bytes);
            if newest.is_some_and(|newest| newest < since) {
                continue;
            }
            for batch in Self::builder(part, row_group, &columns)?.build()? {
                let batch = batch?;
                let received = batch.column(0).as_primitive::<Int64Type>();
                let fields = [
                    Field::EventId,
                    Field::SrcIp,
                    Field::Username,
                    Field::Password,
                    Field::Country,
                ];
                let first = received.values().partition_point(|&at| at < since);
                for (position, field) in fields.into_iter().enumerate() {
                    let map = counts.entry(field).or_default();
                    count_column(batch.column(position + 1), first, map);
                }
            }
        }
        Ok(())
    }

    fn write_partition(&self, path: &Path, records: &[wal::Record]) -> Result<()> {
        let distinct = |value: fn(&wal::Record) -> Option<&str>| {
            let set: HashSet<&str> = records.iter().filter_map(value).collect();
            (set.len() as u64).clamp(1, ROW_GROUP_ROWS as u64)
        };
        let blooms = [
            ("src_ip", distinct(|r| r.fields.src_ip.as_deref())),
            ("username", distinct(|r| r.fields.username.as_deref())),
            ("password", distinct(|r| r.fields.password.as_deref())),
            ("country", distinct(|r| r.fields.country)),
        ];
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_data_page_size_limit(self.page_bytes);
        for column in ["id", "received_at", "data", "session", "input", "src_port"] {
            properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        for column in ["id", "received_at"] {
            properties = properties
                .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
        }
        for (column, ndv) in blooms {
            properties = properties
                .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
                .set_column_bloom_filter_ndv(ColumnPath::from(column), ndv)
                .set_column_bloom_filter_fpp(ColumnPath::from(column), 0.01);
        }
        let temporary = path.with_extension("tmp");
        let file = File::create(&temporary)?;
        let mut writer = ArrowWriter::try_new(file, schema(), Some(properties.build()))?;
        for chunk in records.chunks(ROW_GROUP_ROWS) {
            writer.write(&record_batch(chunk)?)?;
        }
        let file = writer.into_inner()?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    pub(crate) fn open_sealed(path: &Path, summary_path: &Path) -> Result<Sealed> {
        let file = File::open(path)?;
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))?;
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, metadata.clone());
        let groups = metadata.metadata().num_row_groups();
        let mut blooms = Vec::with_capacity(groups);
        let mut row_group_starts = Vec::with_capacity(groups);
        let mut start = 0usize;
        for row_group in 0..groups {
            let mut filters = HashMap::new();
            for column in [SRC_IP, USERNAME, PASSWORD, COUNTRY] {
                if let Some(bloom) = builder.get_row_group_column_bloom_filter(row_group, column)? {
                    filters.insert(column, bloom);
                }
            }
            blooms.push(filters);
            row_group_starts.push(start);
            start += metadata.metadata().row_group(row_group).num_rows() as usize;
        }
        let bound = |row_group: usize, column: usize, max: bool| -> Result<[u8; 8]> {
            let statistics = metadata
                .metadata()
                .row_group(row_group)
                .column(column)
                .statistics()
                .context("column statistics")?;
            let bytes = if max {
                statistics.max_bytes_opt()
            } else {
                statistics.min_bytes_opt()
            };
            Ok(bytes.context("column bounds")?.try_into()?)
        };
        let first_id = u64::from_le_bytes(bound(0, ID, false)?);
        let last_id = u64::from_le_bytes(bound(groups - 1, ID, true)?);
        let min_ts = i64::from_le_bytes(bound(0, RECEIVED_AT, false)?);
        let summary = read_summary(summary_path)?;
        Ok(Sealed {
            first_id,
            last_id,
            min_ts,
            file,
            metadata,
            blooms,
            row_group_starts,
            summary,
        })
    }
}

fn coded_column<'a>(
    records: &'a [wal::Record],
    value: fn(&'a wal::Record) -> Option<&'a str>,
) -> ArrayRef {
    Arc::new(
        records
            .iter()
            .map(value)
            .collect::<DictionaryArray<Int32Type>>(),
    )
}

fn text_column<'a>(
    records: &'a [wal::Record],
    value: fn(&'a wal::Record) -> Option<&'a str>,
) -> ArrayRef {
    Arc::new(records.iter().map(value).collect::<StringArray>())
}

fn record_batch(records: &[wal::Record]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(records.iter().map(|r| r.id).collect::<UInt64Array>()),
        Arc::new(
            records
                .iter()
                .map(|r| r.event.received_at)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            records
                .iter()
                .map(|r| r.event.node_id)
                .collect::<UInt64Array>(),
        ),
        coded_column(records, |r| Some(r.event.pot_id.as_str())),
        coded_column(records, |r| Some(r.event.pot_type.as_str())),
        coded_column(records, |r| Some(r.event.event_type.as_str())),
        coded_column(records, |r| r.fields.src_ip.as_deref()),
        Arc::new(
            records
                .iter()
                .map(|r| r.fields.src_port)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            records
                .iter()
                .map(|r| r.fields.dst_port)
                .collect::<Int64Array>(),
        ),
        coded_column(records, |r| r.fields.username.as_deref()),
        coded_column(records, |r| r.fields.password.as_deref()),
        text_column(records, |r| r.fields.input.as_deref()),
        text_column(records, |r| r.fields.session.as_deref()),
        text_column(records, |r| r.fields.url.as_deref()),
        text_column(records, |r| r.fields.shasum.as_deref()),
        coded_column(records, |r| r.fields.protocol.as_deref()),
        coded_column(records, |r| r.fields.country),
        text_column(records, |r| Some(r.event.data.as_str())),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

fn count_fields<'a>(
    rows: impl Iterator<Item = (&'a str, &'a Fields)>,
    counts: &mut HashMap<Field, HashMap<String, u64>>,
) {
    for (event_type, fields) in rows {
        for field in Field::ALL {
            if let Some(value) = field.value(event_type, fields) {
                let map = counts.entry(field).or_default();
                match map.get_mut(value) {
                    Some(count) => *count += 1,
                    None => {
                        map.insert(value.to_owned(), 1);
                    }
                }
            }
        }
    }
}

fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Column::new("field", DataType::Utf8, false),
        Column::new("value", DataType::Utf8, false),
        Column::new("count", DataType::UInt64, false),
    ]))
}

pub(crate) fn write_summary(
    path: &Path,
    counts: &HashMap<Field, HashMap<String, u64>>,
) -> Result<()> {
    let mut rows: Vec<(&str, &str, u64)> = Vec::new();
    for (field, values) in counts {
        for (value, count) in values {
            rows.push((field.name(), value, *count));
        }
    }
    rows.sort_unstable();
    let batch = RecordBatch::try_new(
        summary_schema(),
        vec![
            Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.2).collect::<UInt64Array>()),
        ],
    )?;
    let temporary = path.with_extension("tmp");
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(
        File::create(&temporary)?,
        summary_schema(),
        Some(properties),
    )?;
    writer.write(&batch)?;
    writer.into_inner()?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

fn read_summary(path: &Path) -> Result<HashMap<Field, Vec<(String, u64)>>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let mut summary: HashMap<Field, Vec<(String, u64)>> = HashMap::new();
    for batch in reader {
        let batch = batch?;
        let fields = batch.column(0).as_string::<i32>();
        let values = batch.column(1).as_string::<i32>();
        let counts = batch.column(2).as_primitive::<UInt64Type>();
        for index in 0..batch.num_rows() {
            let field = Field::ALL
                .into_iter()
                .find(|field| field.name() == fields.value(index))
                .context("unknown summary field")?;
            summary
                .entry(field)
                .or_default()
                .push((values.value(index).to_owned(), counts.value(index)));
        }
    }
    Ok(summary)
}

impl Candidate for ParquetStore {
    fn append(&mut self, batch: &[Ingested]) -> Result<()> {
        let first_id = self.next_id;
        self.offsets.clear();
        self.hot.segment.append(
            batch
                .iter()
                .enumerate()
                .map(|(offset, item)| (first_id + offset as u64, &item.event, &item.fields)),
            &mut self.offsets,
        )?;
        for ((offset, item), data_offset) in batch.iter().enumerate().zip(&self.offsets) {
            let event: &Event = &item.event;
            self.hot.rows.push(HotRow {
                id: first_id + offset as u64,
                received_at: event.received_at,
                event_type: event.event_type.clone(),
                fields: item.fields.clone(),
                data_offset: *data_offset,
                data_length: event.data.len(),
            });
        }
        self.next_id += batch.len() as u64;
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if self.hot.rows.is_empty() {
            return Ok(());
        }
        let index = self.hot.index;
        let log = segment_path(&self.dir, index);
        let records = wal::read_segment(&log)?;
        anyhow::ensure!(
            records.len() == self.hot.rows.len(),
            "log and memory disagree"
        );
        let path = self.dir.join(format!("part-{index:06}.parquet"));
        let summary_path = self.dir.join(format!("part-{index:06}.summary.parquet"));
        self.write_partition(&path, &records)?;
        let mut counts = HashMap::new();
        count_fields(
            records
                .iter()
                .map(|r| (r.event.event_type.as_str(), &r.fields)),
            &mut counts,
        );
        write_summary(&summary_path, &counts)?;
        sync_dir(&self.dir)?;
        // Only once the partition is durable does its log go.
        std::fs::remove_file(&log)?;
        let next = index + 1;
        self.hot = Hot {
            index: next,
            segment: Segment::create(&segment_path(&self.dir, next))?,
            rows: Vec::new(),
        };
        sync_dir(&self.dir)?;
        self.sealed.push(Self::open_sealed(&path, &summary_path)?);
        Ok(())
    }

    fn disk_report(&self) -> Vec<String> {
        let mut columns: Vec<(String, u64)> = Vec::new();
        let mut blooms = 0u64;
        let mut rows = 0u64;
        for part in &self.sealed {
            let metadata = part.metadata.metadata();
            for group in metadata.row_groups() {
                rows += group.num_rows() as u64;
                for (index, chunk) in group.columns().iter().enumerate() {
                    if columns.len() <= index {
                        columns.push((chunk.column_path().string(), 0));
                    }
                    columns[index].1 += chunk.compressed_size() as u64;
                    blooms += chunk.bloom_filter_length().unwrap_or(0) as u64;
                }
            }
        }
        let per_event = |bytes: u64| bytes as f64 / rows.max(1) as f64;
        let mut lines: Vec<String> = columns
            .iter()
            .map(|(name, bytes)| format!("column {name}: {:.2} B/event", per_event(*bytes)))
            .collect();
        lines.push(format!("bloom filters: {:.2} B/event", per_event(blooms)));
        let summaries: u64 = (0..self.hot.index)
            .filter_map(|index| {
                let path = self.dir.join(format!("part-{index:06}.summary.parquet"));
                std::fs::metadata(path).ok().map(|metadata| metadata.len())
            })
            .sum();
        lines.push(format!("summaries: {:.2} B/event", per_event(summaries)));
        lines
    }

    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>> {
        let mut page = Vec::new();
        for row in self.hot.rows.iter().rev() {
            if filter.matches(&row.event_type, &row.fields) {
                let data = self
                    .hot
                    .segment
                    .read_payload(row.data_offset, row.data_length)?;
                page.push((row.id, data));
                if page.len() == limit {
                    return Ok(page);
                }
            }
        }
        for part in self.sealed.iter().rev() {
            let wanted = limit - page.len();
            page.extend(Self::sealed_page(part, filter, wanted)?);
            if page.len() >= limit {
                break;
            }
        }
        Ok(page)
    }

    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>> {
        let mut page = Vec::new();
        for part in self.sealed.iter().filter(|part| part.last_id > after) {
            let mut row = (after + 1).saturating_sub(part.first_id) as usize;
            while page.len() < limit && row as u64 + part.first_id <= part.last_id {
                let row_group = part.row_group_starts.partition_point(|&start| start <= row) - 1;
                let start = part.row_group_starts[row_group];
                let in_group = part.metadata.metadata().row_group(row_group).num_rows() as usize;
                let end = (row + limit - page.len()).min(start + in_group);
                let rows: Vec<usize> = (row - start..end - start).collect();
                page.extend(Self::read_rows(part, row_group, &rows)?);
                row = end;
            }
            if page.len() >= limit {
                return Ok(page);
            }
        }
        let first_hot = self
            .hot
            .rows
            .first()
            .map(|row| row.id)
            .unwrap_or(self.next_id);
        let skip = (after + 1).saturating_sub(first_hot) as usize;
        for row in self.hot.rows.iter().skip(skip).take(limit - page.len()) {
            let data = self
                .hot
                .segment
                .read_payload(row.data_offset, row.data_length)?;
            page.push((row.id, data));
        }
        Ok(page)
    }

    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>> {
        let since = since.unwrap_or(i64::MIN);
        let mut counts: HashMap<Field, HashMap<String, u64>> = HashMap::new();
        for part in &self.sealed {
            if part.min_ts >= since {
                for (field, values) in &part.summary {
                    let map = counts.entry(*field).or_default();
                    for (value, count) in values {
                        match map.get_mut(value.as_str()) {
                            Some(total) => *total += count,
                            None => {
                                map.insert(value.clone(), *count);
                            }
                        }
                    }
                }
            } else {
                Self::scan_counts(part, since, &mut counts)?;
            }
        }
        let first = self.hot.rows.partition_point(|row| row.received_at < since);
        count_fields(
            self.hot.rows[first..]
                .iter()
                .map(|row| (row.event_type.as_str(), &row.fields)),
            &mut counts,
        );
        Ok(Field::ALL
            .into_iter()
            .map(|field| (field, top_ten(counts.remove(&field).unwrap_or_default())))
            .collect())
    }
}

/// Pushes `offset +` the index of every row of `column` equal to `value`.
fn equal_rows(column: &ArrayRef, value: &str, offset: usize, matches: &mut Vec<usize>) {
    if let Some(coded) = column.as_dictionary_opt::<Int32Type>() {
        let values = coded.values().as_string::<i32>();
        let wanted: Vec<i32> = (0..values.len())
            .filter(|&key| values.is_valid(key) && values.value(key) == value)
            .map(|key| key as i32)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let keys = coded.keys();
        for index in 0..keys.len() {
            if keys.is_valid(index) && wanted.contains(&keys.value(index)) {
                matches.push(offset + index);
            }
        }
        return;
    }
    let values = column.as_string::<i32>();
    for index in 0..values.len() {
        if values.is_valid(index) && values.value(index) == value {
            matches.push(offset + index);
        }
    }
}

/// Adds the values of rows `first..` of `column` to `counts`.
fn count_column(column: &ArrayRef, first: usize, counts: &mut HashMap<String, u64>) {
    let mut add = |value: &str, count: u64| match counts.get_mut(value) {
        Some(total) => *total += count,
        None => {
            counts.insert(value.to_owned(), count);
        }
    };
    if let Some(coded) = column.as_dictionary_opt::<Int32Type>() {
        let values = coded.values().as_string::<i32>();
        let mut per_key = vec![0u64; values.len()];
        let keys = coded.keys();
        for index in first..keys.len() {
            if keys.is_valid(index) {
                per_key[keys.value(index) as usize] += 1;
            }
        }
        for (key, count) in per_key.into_iter().enumerate() {
            if count > 0 && values.is_valid(key) {
                add(values.value(key), count);
            }
        }
        return;
    }
    let values = column.as_string::<i32>();
    for index in first..values.len() {
        if values.is_valid(index) {
            add(values.value(index), 1);
        }
    }
}
