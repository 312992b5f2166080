//! Postings: for each value of `src_ip`, `username` and `password` in a sealed partition,
//! the rows that hold it, so a search for a value that is rare but present reads only its
//! rows instead of scanning a column of every row group.
//!
//! One file per partition, `part-<first id>.postings`, written at seal from the hot
//! partition's dictionary codes (a counting sort: no text is hashed or parsed again) and
//! read with positioned reads, never held in memory. Per column, values are sorted and cut
//! into blocks of [`VALUES_PER_BLOCK`]; a small fence list (each block's first value and
//! place) finds the one block that can hold a value, so a lookup is two reads whatever the
//! partition's size. Every block and fence list carries a CRC-32: a damaged file is
//! reported and the partition is searched by scanning instead, never answered wrongly.
//!
//! Layout (integers little-endian; `varint` is LEB128):
//! ```text
//! per column, in the order of POSTED_COLUMNS:
//!   blocks: entries, then u32 CRC-32 of the entries
//!     entry: varint bytes shared with the previous value of the block (0 for the first),
//!            varint length of the rest, the rest, varint row count, then the rows as
//!            varints (the first row, then each row's distance from the previous),
//!            preceded by their varint byte length when there is more than one
//!   fences: per block: varint first-value length, first value, u64 offset, u32 length;
//!           then u32 CRC-32 of the fences
//! trailer: per column: u64 fences offset, u32 fences length, u32 distinct values;
//!          u32 CRC-32 of those; the magic "HBPOST01"
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::columnar::filter::{CodedColumn, EventFilter};
use crate::columnar::hot::{HotColumns, ABSENT};
use crate::columnar::stats::write_durably;
use crate::columnar::ColumnarError;

/// The columns with postings: those people search for one value of that may occur a
/// handful of times among millions (an attacker's address, a credential).
pub(crate) const POSTED_COLUMNS: [CodedColumn; 3] = [
    CodedColumn::SrcIp,
    CodedColumn::Username,
    CodedColumn::Password,
];

/// Values per block: a lookup reads one block, so this bounds what a miss costs.
const VALUES_PER_BLOCK: usize = 64;
const MAGIC: &[u8; 8] = b"HBPOST01";
const TRAILER_COLUMN_BYTES: usize = 16;
const TRAILER_BYTES: usize = POSTED_COLUMNS.len() * TRAILER_COLUMN_BYTES + 4 + MAGIC.len();

/// The postings file of the partition whose first event has `first_id`.
pub(crate) fn postings_path(directory: &Path, first_id: u64) -> PathBuf {
    directory.join(format!("part-{first_id:020}.postings"))
}

fn put_varint(buffer: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

/// Reads a varint at `*at`, moving past it; `None` when the bytes end or it overflows.
fn take_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take_bytes<'a>(bytes: &'a [u8], at: &mut usize, length: u64) -> Option<&'a [u8]> {
    let end = at.checked_add(usize::try_from(length).ok()?)?;
    let taken = bytes.get(*at..end)?;
    *at = end;
    Some(taken)
}

/// Reads a varint length at `*at` and that many bytes after it, moving past both.
fn take_prefixed<'a>(bytes: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let length = take_varint(bytes, at)?;
    take_bytes(bytes, at, length)
}

fn push_checksum(buffer: &mut Vec<u8>, from: usize) {
    let checksum = crc32fast::hash(&buffer[from..]);
    buffer.extend_from_slice(&checksum.to_le_bytes());
}

/// The bytes of a postings file for the hot partition's columns.
pub(crate) fn encode_postings(columns: &HotColumns) -> Vec<u8> {
    let mut file = Vec::new();
    let mut trailer = Vec::with_capacity(TRAILER_BYTES);
    for column in POSTED_COLUMNS {
        let codes = &columns.coded[column as usize];
        let values = &columns.dictionaries[column as usize].values;
        // Counting sort of the rows by code: rows come out ascending within each code.
        let mut starts = vec![0u32; values.len() + 1];
        for &code in codes {
            if code != ABSENT {
                starts[code as usize + 1] += 1;
            }
        }
        for code in 0..values.len() {
            starts[code + 1] += starts[code];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; starts[values.len()] as usize];
        for (row, &code) in codes.iter().enumerate() {
            if code != ABSENT {
                rows[next[code as usize] as usize] = row as u32;
                next[code as usize] += 1;
            }
        }
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_unstable_by(|a, b| values[*a as usize].cmp(&values[*b as usize]));

        let mut fences = Vec::new();
        let mut encoded_rows = Vec::new();
        for block in order.chunks(VALUES_PER_BLOCK) {
            let block_start = file.len();
            let mut previous_value: &[u8] = &[];
            for &code in block {
                let value = values[code as usize].as_bytes();
                // Sorted values share prefixes (addresses of one network): each keeps
                // only what differs from the one before it.
                let shared = value
                    .iter()
                    .zip(previous_value)
                    .take_while(|(a, b)| a == b)
                    .count();
                previous_value = value;
                let list =
                    &rows[starts[code as usize] as usize..starts[code as usize + 1] as usize];
                encoded_rows.clear();
                let mut previous = 0u32;
                for (index, &row) in list.iter().enumerate() {
                    put_varint(
                        &mut encoded_rows,
                        u64::from(if index == 0 { row } else { row - previous }),
                    );
                    previous = row;
                }
                put_varint(&mut file, shared as u64);
                put_varint(&mut file, (value.len() - shared) as u64);
                file.extend_from_slice(&value[shared..]);
                put_varint(&mut file, list.len() as u64);
                if list.len() > 1 {
                    put_varint(&mut file, encoded_rows.len() as u64);
                }
                file.extend_from_slice(&encoded_rows);
            }
            push_checksum(&mut file, block_start);
            let first = values[block[0] as usize].as_bytes();
            put_varint(&mut fences, first.len() as u64);
            fences.extend_from_slice(first);
            fences.extend_from_slice(&(block_start as u64).to_le_bytes());
            fences.extend_from_slice(&((file.len() - block_start) as u32).to_le_bytes());
        }
        let fences_start = file.len();
        file.extend_from_slice(&fences);
        push_checksum(&mut file, fences_start);
        trailer.extend_from_slice(&(fences_start as u64).to_le_bytes());
        trailer.extend_from_slice(&((file.len() - fences_start) as u32).to_le_bytes());
        trailer.extend_from_slice(&(values.len() as u32).to_le_bytes());
    }
    push_checksum(&mut trailer, 0);
    trailer.extend_from_slice(MAGIC);
    file.extend_from_slice(&trailer);
    file
}

/// Writes the postings of the hot partition's columns durably to `path`.
pub(crate) fn write_postings(path: &Path, columns: &HotColumns) -> Result<(), ColumnarError> {
    write_durably(path, &encode_postings(columns))
}

/// Where one column's fence list is.
#[derive(Debug, Clone, Copy)]
struct ColumnFences {
    offset: u64,
    length: u32,
}

/// A partition's postings file, open for lookups.
#[derive(Debug)]
pub(crate) struct PostingsFile {
    path: PathBuf,
    file: File,
    length: u64,
    fences: [ColumnFences; POSTED_COLUMNS.len()],
}

impl PostingsFile {
    /// Opens the postings at `path`; `Ok(None)` when there are none (a partition sealed by
    /// a release that did not write them).
    pub fn open(path: &Path) -> Result<Option<PostingsFile>, ColumnarError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ColumnarError::io("opening postings", path, source)),
        };
        let length = file
            .metadata()
            .map_err(|source| ColumnarError::io("opening postings", path, source))?
            .len();
        let damaged = |what: &str| ColumnarError::Corrupt {
            path: path.to_path_buf(),
            what: what.to_owned(),
        };
        if length < TRAILER_BYTES as u64 {
            return Err(damaged("postings file shorter than its trailer"));
        }
        let mut trailer = [0u8; TRAILER_BYTES];
        file.read_exact_at(&mut trailer, length - TRAILER_BYTES as u64)
            .map_err(|source| ColumnarError::io("reading postings", path, source))?;
        let (body, magic) = trailer.split_at(TRAILER_BYTES - MAGIC.len());
        let (columns, checksum) = body.split_at(body.len() - 4);
        if magic != MAGIC {
            return Err(damaged("postings trailer without its magic"));
        }
        if crc32fast::hash(columns).to_le_bytes() != checksum {
            return Err(damaged("postings trailer checksum"));
        }
        let mut fences = [ColumnFences {
            offset: 0,
            length: 0,
        }; POSTED_COLUMNS.len()];
        for (index, fence) in fences.iter_mut().enumerate() {
            let entry = &columns[index * TRAILER_COLUMN_BYTES..][..TRAILER_COLUMN_BYTES];
            fence.offset = u64::from_le_bytes(entry[..8].try_into().expect("eight bytes"));
            fence.length = u32::from_le_bytes(entry[8..12].try_into().expect("four bytes"));
            if fence.offset + u64::from(fence.length) > length - TRAILER_BYTES as u64
                || fence.length < 4
            {
                return Err(damaged("postings fences outside the file"));
            }
        }
        Ok(Some(PostingsFile {
            path: path.to_path_buf(),
            file,
            length,
            fences,
        }))
    }

    /// Reads `length` bytes at `offset` whose last four are the CRC-32 of the rest, and
    /// returns the rest.
    fn read_checked(&self, offset: u64, length: u32, what: &str) -> Result<Vec<u8>, ColumnarError> {
        if length < 4 || offset + u64::from(length) > self.length {
            return Err(self.damaged(format!("{what} outside the file")));
        }
        let mut bytes = vec![0u8; length as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|source| ColumnarError::io("reading postings", &self.path, source))?;
        let checksum: [u8; 4] = bytes[bytes.len() - 4..].try_into().expect("four bytes");
        bytes.truncate(bytes.len() - 4);
        if crc32fast::hash(&bytes).to_le_bytes() != checksum {
            return Err(self.damaged(format!("{what} checksum")));
        }
        Ok(bytes)
    }

    fn damaged(&self, what: String) -> ColumnarError {
        ColumnarError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    /// The rows (ascending, counted from the partition's first row) where `column` holds
    /// `value`; empty when no row does. `column` must be one of [`POSTED_COLUMNS`].
    pub fn rows_of(&self, column: CodedColumn, value: &str) -> Result<Vec<u32>, ColumnarError> {
        let Some(index) = POSTED_COLUMNS.iter().position(|posted| *posted == column) else {
            return Err(self.damaged(format!("no postings for column {}", column.name())));
        };
        let fences = self.fences[index];
        let fence_bytes = self.read_checked(fences.offset, fences.length, "postings fences")?;
        // The last block whose first value is at most `value`.
        let mut at = 0;
        let mut chosen = None;
        while at < fence_bytes.len() {
            let parsed =
                take_prefixed(&fence_bytes, &mut at).zip(take_bytes(&fence_bytes, &mut at, 12));
            let Some((first, place)) = parsed else {
                return Err(self.damaged("postings fence entry".into()));
            };
            if first > value.as_bytes() {
                break;
            }
            let offset = u64::from_le_bytes(place[..8].try_into().expect("eight bytes"));
            let length = u32::from_le_bytes(place[8..].try_into().expect("four bytes"));
            chosen = Some((offset, length));
        }
        let Some((offset, length)) = chosen else {
            return Ok(Vec::new());
        };
        let block = self.read_checked(offset, length, "postings block")?;
        let damaged = || self.damaged("postings block entry".into());
        let mut at = 0;
        let mut entry: Vec<u8> = Vec::new();
        while at < block.len() {
            let shared = take_varint(&block, &mut at).ok_or_else(damaged)?;
            let rest = take_prefixed(&block, &mut at).ok_or_else(damaged)?;
            let shared = usize::try_from(shared)
                .ok()
                .filter(|shared| *shared <= entry.len())
                .ok_or_else(damaged)?;
            entry.truncate(shared);
            entry.extend_from_slice(rest);
            let count = take_varint(&block, &mut at).ok_or_else(damaged)?;
            let encoded = if count > 1 {
                take_prefixed(&block, &mut at).ok_or_else(damaged)?
            } else {
                let start = at;
                take_varint(&block, &mut at).ok_or_else(damaged)?;
                &block[start..at]
            };
            match entry.as_slice().cmp(value.as_bytes()) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => return Ok(Vec::new()),
                std::cmp::Ordering::Equal => {}
            }
            let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 20));
            let mut position = 0;
            let mut row = 0u64;
            for index in 0..count {
                let step = take_varint(encoded, &mut position)
                    .ok_or_else(|| self.damaged("postings rows".into()))?;
                row = if index == 0 { step } else { row + step };
                let row = u32::try_from(row).map_err(|_| self.damaged("postings row".into()))?;
                rows.push(row);
            }
            return Ok(rows);
        }
        Ok(Vec::new())
    }

    /// The rows (ascending) matching every condition `filter` puts on a posted column, or
    /// `None` when it puts none.
    pub fn candidate_rows(&self, filter: &EventFilter) -> Result<Option<Vec<u32>>, ColumnarError> {
        let mut candidates: Option<Vec<u32>> = None;
        for (column, value) in &filter.coded {
            if !POSTED_COLUMNS.contains(column) {
                continue;
            }
            let rows = self.rows_of(*column, value)?;
            candidates = Some(match candidates {
                None => rows,
                Some(earlier) => intersect(&earlier, &rows),
            });
            if candidates.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
        }
        Ok(candidates)
    }
}

/// The rows in both ascending lists.
fn intersect(left: &[u32], right: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut both = Vec::new();
    while i < left.len() && j < right.len() {
        match left[i].cmp(&right[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both.push(left[i]);
                i += 1;
                j += 1;
            }
        }
    }
    both
}
