//! Writing a sealed partition: the hot partition's columns and the payloads in its log,
//! written once as a Parquet file whose pages are laid out for reading single rows
//! (`write_sealed_partition` says how and why); `sealed.rs` reads it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::columnar::filter::{CodedColumn, PlainColumn};
use crate::columnar::hot::{HotColumns, ABSENT};
use crate::columnar::log::sync_directory_of;
use crate::columnar::sealed::{
    parquet_error, ASN, BLOOM_COLUMNS, DATA, DST_PORT, FORMAT, FORMAT_KEY, ID, NODE_ID,
    NODE_SEQUENCES_KEY, RECEIVED_AT, ROW_GROUP_ROWS, SEQ, SRC_PORT, TIMESTAMP,
};
use crate::columnar::ColumnarError;

/// Bytes of a data page, uncompressed: the writer closes a page at the first batch of
/// 1,024 rows past it, so a payload page holds about 1,024 events.
const DATA_PAGE_BYTES: usize = 64 * 1024;

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
    // Reading one event reads one page of each column, so the page layout is chosen for
    // that (docs/storage.md, "Postings and row fetch"): pages of about 64 KiB; zstd only
    // where its entropy coding pays (payloads, commands, URLs, addresses) or on what a
    // row read does not need (`seq`), because every zstd page read sets up a decoder,
    // which costs tens of microseconds on a VM; LZ4 (no set-up) for short tokens; nothing
    // for other numbers and dictionary codes.
    let zstd = ZstdLevel::try_new(3).map_err(|e| failed(&e))?;
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(FORMAT_KEY.to_owned(), FORMAT.to_owned()),
            KeyValue::new(NODE_SEQUENCES_KEY.to_owned(), sequences_text),
        ]));
    for column in [DATA, "command", "url", "src_ip", SEQ] {
        properties =
            properties.set_column_compression(ColumnPath::from(column), Compression::ZSTD(zstd));
    }
    for column in ["session", "file_hash", "username", "password"] {
        properties =
            properties.set_column_compression(ColumnPath::from(column), Compression::LZ4_RAW);
    }
    for column in [
        ID,
        TIMESTAMP,
        RECEIVED_AT,
        SEQ,
        DATA,
        "command",
        "session",
        "url",
        "file_hash",
    ] {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // Addresses and passwords keep a dictionary only where values repeat in the partition
    // (a botnet's few thousand addresses over an hour); nearly unique ones are stored plain.
    for column in [CodedColumn::SrcIp, CodedColumn::Password] {
        let distinct = columns.dictionaries[column as usize].values.len();
        if distinct * 2 > columns.len() {
            properties =
                properties.set_column_dictionary_enabled(ColumnPath::from(column.name()), false);
        }
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
