//! Candidate C2: candidate C with the changes its first measurements asked for.
//!
//! - The hot partition is held as columns: every low- and medium-cardinality field is a
//!   code of the partition's own dictionary (one hash lookup per field at append), so a
//!   hot filter compares integers and hot statistics count codes into arrays.
//! - Sealing builds the Parquet dictionary arrays straight from those codes and slices
//!   the payloads out of the log read back as bytes (nothing re-parsed, nothing re-hashed).
//! - Each sealed partition also gets a postings file: for every value of `src_ip`,
//!   `username` and `password`, the partition's row numbers holding it (delta varints),
//!   sorted by value. A query by one of those fields reads one postings row per partition
//!   (or skips the partition when the value is absent) and then only the matching rows.
//!
//! The log, the Parquet layout, the summaries and the durability are candidate C's.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BinaryArray, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt64Array,
};
use arrow_schema::{DataType, Field as Column, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::candidate::{top_ten, Candidate, Field, Filter, Ingested, Row, Top};
use crate::parquet_store::{
    schema, segment_path, sync_dir, write_summary, ParquetStore, Sealed, ROW_GROUP_ROWS,
};
use crate::wal::Segment;

/// The dictionary-coded columns, in schema order.
const CODED: [&str; 8] = [
    "pot_id",
    "pot_type",
    "event_type",
    "src_ip",
    "username",
    "password",
    "protocol",
    "country",
];
const NONE: u32 = u32::MAX;

/// Where a statistics field is among the coded columns.
fn coded_index(field: Field) -> usize {
    match field {
        Field::EventId => 2,
        Field::SrcIp => 3,
        Field::Username => 4,
        Field::Password => 5,
        Field::Country => 7,
    }
}

/// The fields with postings.
const POSTED: [Field; 3] = [Field::SrcIp, Field::Username, Field::Password];

#[derive(Default)]
struct Dictionary {
    codes: HashMap<String, u32>,
    values: Vec<String>,
}

impl Dictionary {
    fn code(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else {
            return NONE;
        };
        if let Some(code) = self.codes.get(value) {
            return *code;
        }
        let code = self.values.len() as u32;
        self.values.push(value.to_owned());
        self.codes.insert(value.to_owned(), code);
        code
    }
}

struct Hot {
    index: usize,
    segment: Segment,
    first_id: u64,
    received_at: Vec<i64>,
    node_id: Vec<u64>,
    dictionaries: Vec<Dictionary>,
    coded: Vec<Vec<u32>>,
    src_port: Vec<Option<i64>>,
    dst_port: Vec<Option<i64>>,
    /// session, input, url, shasum: high-cardinality, kept as text.
    plain: [Vec<Option<String>>; 4],
    /// (offset in the log, length) of each payload.
    data: Vec<(u64, u32)>,
}

impl Hot {
    fn new(dir: &Path, index: usize, first_id: u64) -> Result<Hot> {
        Ok(Hot {
            index,
            segment: Segment::create(&segment_path(dir, index))?,
            first_id,
            received_at: Vec::new(),
            node_id: Vec::new(),
            dictionaries: (0..CODED.len()).map(|_| Dictionary::default()).collect(),
            coded: vec![Vec::new(); CODED.len()],
            src_port: Vec::new(),
            dst_port: Vec::new(),
            plain: Default::default(),
            data: Vec::new(),
        })
    }

    fn len(&self) -> usize {
        self.received_at.len()
    }

    fn payload(&self, row: usize) -> Result<String> {
        let (offset, length) = self.data[row];
        self.segment.read_payload(offset, length as usize)
    }

    /// The code of `value` in coded column `column`, if the partition has it.
    fn lookup(&self, column: usize, value: &str) -> Option<u32> {
        self.dictionaries[column].codes.get(value).copied()
    }
}

/// (field, value) → row of a postings file.
type Positions = HashMap<(Field, String), usize>;

struct IndexedSealed {
    part: Sealed,
    postings: File,
    postings_metadata: ArrowReaderMetadata,
    positions: Positions,
}

pub struct IndexedStore {
    dir: PathBuf,
    page_bytes: usize,
    /// Rows per data page at most. The writer checks the page size only after each write
    /// batch (1,024 rows by default), so a page holds at least that many rows whatever
    /// its byte limit, and reading one row decompresses the page.
    page_rows: usize,
    next_id: u64,
    sealed: Vec<IndexedSealed>,
    hot: Hot,
    offsets: Vec<u64>,
}

fn postings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Column::new("field", DataType::Utf8, false),
        Column::new("value", DataType::Utf8, false),
        Column::new("rows", DataType::Binary, false),
    ]))
}

fn put_varint(buffer: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

fn read_varints(bytes: &[u8]) -> Vec<usize> {
    let mut rows = Vec::new();
    let (mut value, mut shift, mut previous) = (0u32, 0, 0usize);
    for byte in bytes {
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            previous += value as usize;
            rows.push(previous);
            value = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    rows
}

fn write_file(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    properties: WriterProperties,
) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut writer = ArrowWriter::try_new(File::create(&temporary)?, schema, Some(properties))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.into_inner()?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

impl IndexedStore {
    pub fn open(dir: &Path, page_bytes: usize, page_rows: usize) -> Result<IndexedStore> {
        std::fs::create_dir_all(dir)?;
        Ok(IndexedStore {
            dir: dir.to_path_buf(),
            page_bytes,
            page_rows,
            next_id: 1,
            sealed: Vec::new(),
            hot: Hot::new(dir, 0, 1)?,
            offsets: Vec::new(),
        })
    }

    fn write_partition(&self, path: &Path, log: &[u8]) -> Result<()> {
        let hot = &self.hot;
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_data_page_size_limit(self.page_bytes)
            .set_write_batch_size(self.page_rows)
            .set_data_page_row_count_limit(self.page_rows);
        for column in ["id", "received_at", "data", "session", "input", "src_port"] {
            properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        for column in ["id", "received_at"] {
            properties = properties
                .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
        }
        for field in [
            Field::SrcIp,
            Field::Username,
            Field::Password,
            Field::Country,
        ] {
            let column = CODED[coded_index(field)];
            let ndv = (hot.dictionaries[coded_index(field)].values.len() as u64)
                .clamp(1, ROW_GROUP_ROWS as u64);
            properties = properties
                .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
                .set_column_bloom_filter_ndv(ColumnPath::from(column), ndv)
                .set_column_bloom_filter_fpp(ColumnPath::from(column), 0.01);
        }
        let values: Vec<Arc<StringArray>> = hot
            .dictionaries
            .iter()
            .map(|dictionary| Arc::new(dictionary.values.iter().map(Some).collect::<StringArray>()))
            .collect();
        let mut batches = Vec::new();
        let mut start = 0;
        while start < hot.len() {
            let end = (start + ROW_GROUP_ROWS).min(hot.len());
            let coded = |column: usize| -> Result<ArrayRef> {
                let keys: Int32Array = hot.coded[column][start..end]
                    .iter()
                    .map(|&code| (code != NONE).then_some(code as i32))
                    .collect();
                Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                    keys,
                    values[column].clone(),
                )?))
            };
            let plain = |column: usize| -> ArrayRef {
                Arc::new(
                    hot.plain[column][start..end]
                        .iter()
                        .map(|v| v.as_deref())
                        .collect::<StringArray>(),
                )
            };
            let mut data = Vec::with_capacity(end - start);
            for &(offset, length) in &hot.data[start..end] {
                let bytes = log
                    .get(offset as usize..offset as usize + length as usize)
                    .context("payload beyond the log")?;
                data.push(std::str::from_utf8(bytes)?);
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(
                    (start..end)
                        .map(|row| hot.first_id + row as u64)
                        .collect::<UInt64Array>(),
                ),
                Arc::new(Int64Array::from(hot.received_at[start..end].to_vec())),
                Arc::new(UInt64Array::from(hot.node_id[start..end].to_vec())),
                coded(0)?,
                coded(1)?,
                coded(2)?,
                coded(3)?,
                Arc::new(Int64Array::from(hot.src_port[start..end].to_vec())),
                Arc::new(Int64Array::from(hot.dst_port[start..end].to_vec())),
                coded(4)?,
                coded(5)?,
                plain(1),
                plain(0),
                plain(2),
                plain(3),
                coded(6)?,
                coded(7)?,
                Arc::new(StringArray::from(data)),
            ];
            batches.push(RecordBatch::try_new(schema(), columns)?);
            start = end;
        }
        write_file(path, schema(), &batches, properties.build())
    }

    /// Value counts of the whole hot partition, by codes.
    fn summary(&self) -> HashMap<Field, HashMap<String, u64>> {
        let mut counts = HashMap::new();
        for field in Field::ALL {
            counts.insert(field, self.count_codes(field, 0));
        }
        counts
    }

    fn count_codes(&self, field: Field, first: usize) -> HashMap<String, u64> {
        let column = coded_index(field);
        let dictionary = &self.hot.dictionaries[column];
        let mut per_code = vec![0u64; dictionary.values.len()];
        for &code in &self.hot.coded[column][first..] {
            if code != NONE {
                per_code[code as usize] += 1;
            }
        }
        per_code
            .into_iter()
            .enumerate()
            .filter(|(_, count)| *count > 0)
            .map(|(code, count)| (dictionary.values[code].clone(), count))
            .collect()
    }

    fn write_postings(&self, path: &Path) -> Result<()> {
        let mut entries: Vec<(&str, &str, Vec<u8>)> = Vec::new();
        for field in POSTED {
            let column = coded_index(field);
            let dictionary = &self.hot.dictionaries[column];
            let mut rows: Vec<Vec<u8>> = vec![Vec::new(); dictionary.values.len()];
            let mut previous: Vec<u32> = vec![0; dictionary.values.len()];
            for (row, &code) in self.hot.coded[column].iter().enumerate() {
                if code != NONE {
                    let code = code as usize;
                    let row = row as u32;
                    put_varint(&mut rows[code], row - previous[code]);
                    previous[code] = row;
                }
            }
            for (code, bytes) in rows.into_iter().enumerate() {
                entries.push((field.name(), &dictionary.values[code], bytes));
            }
        }
        entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let batch = RecordBatch::try_new(
            postings_schema(),
            vec![
                Arc::new(entries.iter().map(|e| Some(e.0)).collect::<StringArray>()),
                Arc::new(entries.iter().map(|e| Some(e.1)).collect::<StringArray>()),
                Arc::new(
                    entries
                        .iter()
                        .map(|e| Some(e.2.as_slice()))
                        .collect::<BinaryArray>(),
                ),
            ],
        )?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_data_page_size_limit(8 * 1024)
            .build();
        write_file(path, postings_schema(), &[batch], properties)
    }

    fn open_postings(path: &Path) -> Result<(File, ArrowReaderMetadata, Positions)> {
        let file = File::open(path)?;
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))?;
        let mask =
            ProjectionMask::leaves(metadata.metadata().file_metadata().schema_descr(), [0, 1]);
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, metadata.clone())
                .with_projection(mask)
                .build()?;
        let mut positions = HashMap::new();
        let mut row = 0;
        for batch in reader {
            let batch = batch?;
            let fields = batch.column(0).as_string::<i32>();
            let values = batch.column(1).as_string::<i32>();
            for index in 0..batch.num_rows() {
                let field = Field::ALL
                    .into_iter()
                    .find(|field| field.name() == fields.value(index))
                    .context("unknown postings field")?;
                positions.insert((field, values.value(index).to_owned()), row);
                row += 1;
            }
        }
        Ok((file, metadata, positions))
    }

    /// The rows of a partition holding `value` in `field`, ascending.
    fn postings(sealed: &IndexedSealed, position: usize) -> Result<Vec<usize>> {
        let total = sealed
            .postings_metadata
            .metadata()
            .file_metadata()
            .num_rows() as usize;
        let mask = ProjectionMask::leaves(
            sealed
                .postings_metadata
                .metadata()
                .file_metadata()
                .schema_descr(),
            [2],
        );
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            sealed.postings.try_clone()?,
            sealed.postings_metadata.clone(),
        )
        .with_projection(mask)
        .with_row_selection(RowSelection::from_consecutive_ranges(
            std::iter::once(position..position + 1),
            total,
        ))
        .build()?;
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch?;
            let blobs = batch.column(0).as_binary::<i32>();
            for index in 0..batch.num_rows() {
                rows.extend(read_varints(blobs.value(index)));
            }
        }
        Ok(rows)
    }

    fn sealed_page(sealed: &IndexedSealed, filter: &Filter, wanted: usize) -> Result<Vec<Row>> {
        let (field, value) = match filter {
            Filter::SrcIp(value) => (Field::SrcIp, value),
            Filter::Username(value) => (Field::Username, value),
            _ => return ParquetStore::sealed_page(&sealed.part, filter, wanted),
        };
        let Some(&position) = sealed.positions.get(&(field, value.clone())) else {
            return Ok(Vec::new());
        };
        let rows = Self::postings(sealed, position)?;
        let newest = &rows[rows.len().saturating_sub(wanted)..];
        let mut page = read_rows_across(&sealed.part, newest)?;
        page.reverse();
        Ok(page)
    }
}

/// Reads (id, data) of the given partition rows (ascending) with one reader over every row
/// group they fall in: one reader set-up per partition instead of one per row group.
fn read_rows_across(part: &Sealed, rows: &[usize]) -> Result<Vec<Row>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let metadata = part.metadata.metadata();
    let group_of = |row: usize| part.row_group_starts.partition_point(|&start| start <= row) - 1;
    let mut groups: Vec<usize> = rows.iter().map(|&row| group_of(row)).collect();
    groups.dedup();
    // Row positions within the concatenation of the chosen row groups.
    let mut ranges = Vec::with_capacity(rows.len());
    let mut total = 0usize;
    for &group in &groups {
        let start = part.row_group_starts[group];
        let count = metadata.row_group(group).num_rows() as usize;
        for &row in rows
            .iter()
            .filter(|&&row| row >= start && row < start + count)
        {
            let at = total + row - start;
            ranges.push(at..at + 1);
        }
        total += count;
    }
    let mask = ProjectionMask::leaves(
        metadata.file_metadata().schema_descr(),
        [crate::parquet_store::ID, crate::parquet_store::DATA],
    );
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        part.file.try_clone()?,
        part.metadata.clone(),
    )
    .with_row_groups(groups)
    .with_projection(mask)
    .with_row_selection(RowSelection::from_consecutive_ranges(
        ranges.into_iter(),
        total,
    ))
    .build()?;
    let mut found = Vec::with_capacity(rows.len());
    for batch in reader {
        let batch = batch?;
        let ids = batch
            .column(0)
            .as_primitive::<arrow_array::types::UInt64Type>();
        let data = batch.column(1).as_string::<i32>();
        for index in 0..batch.num_rows() {
            found.push((ids.value(index), data.value(index).to_owned()));
        }
    }
    Ok(found)
}

impl Candidate for IndexedStore {
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
        let hot = &mut self.hot;
        for (item, offset) in batch.iter().zip(&self.offsets) {
            let (event, fields) = (&item.event, &item.fields);
            hot.received_at.push(event.received_at);
            hot.node_id.push(event.node_id);
            let texts = [
                Some(event.pot_id.as_str()),
                Some(event.pot_type.as_str()),
                Some(event.event_type.as_str()),
                fields.src_ip.as_deref(),
                fields.username.as_deref(),
                fields.password.as_deref(),
                fields.protocol.as_deref(),
                fields.country,
            ];
            for (column, text) in texts.into_iter().enumerate() {
                let code = hot.dictionaries[column].code(text);
                hot.coded[column].push(code);
            }
            hot.src_port.push(fields.src_port);
            hot.dst_port.push(fields.dst_port);
            hot.plain[0].push(fields.session.clone());
            hot.plain[1].push(fields.input.clone());
            hot.plain[2].push(fields.url.clone());
            hot.plain[3].push(fields.shasum.clone());
            hot.data.push((*offset, event.data.len() as u32));
        }
        self.next_id += batch.len() as u64;
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if self.hot.len() == 0 {
            return Ok(());
        }
        let index = self.hot.index;
        let log_path = segment_path(&self.dir, index);
        let log = std::fs::read(&log_path)?;
        let path = self.dir.join(format!("part-{index:06}.parquet"));
        let summary_path = self.dir.join(format!("part-{index:06}.summary.parquet"));
        let postings_path = self.dir.join(format!("part-{index:06}.postings.parquet"));
        self.write_partition(&path, &log)?;
        write_summary(&summary_path, &self.summary())?;
        self.write_postings(&postings_path)?;
        sync_dir(&self.dir)?;
        // Only once the partition is durable does its log go.
        std::fs::remove_file(&log_path)?;
        self.hot = Hot::new(&self.dir, index + 1, self.next_id)?;
        sync_dir(&self.dir)?;
        let part = ParquetStore::open_sealed(&path, &summary_path)?;
        let (postings, postings_metadata, positions) = Self::open_postings(&postings_path)?;
        self.sealed.push(IndexedSealed {
            part,
            postings,
            postings_metadata,
            positions,
        });
        Ok(())
    }

    fn disk_report(&self) -> Vec<String> {
        let postings: u64 = (0..self.hot.index)
            .filter_map(|index| {
                let path = self.dir.join(format!("part-{index:06}.postings.parquet"));
                std::fs::metadata(path).ok().map(|metadata| metadata.len())
            })
            .sum();
        let rows: u64 = self
            .sealed
            .iter()
            .map(|s| s.part.last_id - s.part.first_id + 1)
            .sum();
        vec![format!(
            "postings: {:.2} B/event",
            postings as f64 / rows.max(1) as f64
        )]
    }

    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>> {
        let mut page = Vec::new();
        let (field, value) = match filter {
            Filter::Username(value) => (Field::Username, value),
            Filter::SrcIp(value) => (Field::SrcIp, value),
            Filter::Country(value) => (Field::Country, value),
            Filter::EventType(value) => (Field::EventId, value),
        };
        let column = coded_index(field);
        if let Some(code) = self.hot.lookup(column, value) {
            for (row, &stored) in self.hot.coded[column].iter().enumerate().rev() {
                if stored == code {
                    page.push((self.hot.first_id + row as u64, self.hot.payload(row)?));
                    if page.len() == limit {
                        return Ok(page);
                    }
                }
            }
        }
        for sealed in self.sealed.iter().rev() {
            let wanted = limit - page.len();
            page.extend(Self::sealed_page(sealed, filter, wanted)?);
            if page.len() >= limit {
                break;
            }
        }
        Ok(page)
    }

    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>> {
        let mut page = Vec::new();
        for sealed in self.sealed.iter().filter(|s| s.part.last_id > after) {
            let part = &sealed.part;
            let mut row = (after + 1).saturating_sub(part.first_id) as usize;
            while page.len() < limit && row as u64 + part.first_id <= part.last_id {
                let row_group = part.row_group_starts.partition_point(|&start| start <= row) - 1;
                let start = part.row_group_starts[row_group];
                let in_group = part.metadata.metadata().row_group(row_group).num_rows() as usize;
                let end = (row + limit - page.len()).min(start + in_group);
                let rows: Vec<usize> = (row - start..end - start).collect();
                page.extend(ParquetStore::read_rows(part, row_group, &rows)?);
                row = end;
            }
            if page.len() >= limit {
                return Ok(page);
            }
        }
        let skip = (after + 1).saturating_sub(self.hot.first_id) as usize;
        for row in (skip..self.hot.len()).take(limit - page.len()) {
            page.push((self.hot.first_id + row as u64, self.hot.payload(row)?));
        }
        Ok(page)
    }

    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>> {
        let since = since.unwrap_or(i64::MIN);
        let mut counts: HashMap<Field, HashMap<String, u64>> = HashMap::new();
        for sealed in &self.sealed {
            let part = &sealed.part;
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
                ParquetStore::scan_counts(part, since, &mut counts)?;
            }
        }
        let first = self.hot.received_at.partition_point(|&at| at < since);
        for field in Field::ALL {
            let map = counts.entry(field).or_default();
            for (value, count) in self.count_codes(field, first) {
                *map.entry(value).or_default() += count;
            }
        }
        Ok(Field::ALL
            .into_iter()
            .map(|field| (field, top_ten(counts.remove(&field).unwrap_or_default())))
            .collect())
    }
}
