//! Candidate C's hot log: one append-only segment file per hot partition. Each record is
//! `[body length u32][crc32 of body u32][body]`, the body holding the arrival id, the
//! envelope, the extracted fields and the payload. A batch is written with one `write`
//! and made durable with one `fdatasync` (the group commit). Recovery reads records
//! until the first short or corrupt one (the torn tail of a crash) and cuts it off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::corpus::{Event, Fields};

/// One logged event, as recovered.
pub struct Record {
    pub id: u64,
    pub event: Event,
    pub fields: Fields,
}

pub struct Segment {
    file: File,
    length: u64,
    buffer: Vec<u8>,
}

fn put_text(buffer: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            buffer.extend_from_slice(&(text.len() as u32).to_le_bytes());
            buffer.extend_from_slice(text.as_bytes());
        }
        None => buffer.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

fn put_number(buffer: &mut Vec<u8>, number: Option<i64>) {
    match number {
        Some(number) => {
            buffer.push(1);
            buffer.extend_from_slice(&number.to_le_bytes());
        }
        None => buffer.push(0),
    }
}

impl Segment {
    pub fn create(path: &Path) -> Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(Segment {
            file,
            length: 0,
            buffer: Vec::new(),
        })
    }

    /// Appends the records and fdatasyncs; returns each payload's offset in the segment.
    pub fn append<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a Event, &'a Fields)>,
        offsets: &mut Vec<u64>,
    ) -> Result<()> {
        self.buffer.clear();
        for (id, event, fields) in records {
            let start = self.buffer.len();
            self.buffer.extend_from_slice(&[0; 8]);
            self.buffer.extend_from_slice(&id.to_le_bytes());
            self.buffer
                .extend_from_slice(&event.received_at.to_le_bytes());
            self.buffer.extend_from_slice(&event.node_id.to_le_bytes());
            for text in [
                Some(event.pot_id.as_str()),
                Some(event.pot_type.as_str()),
                Some(event.event_type.as_str()),
                fields.src_ip.as_deref(),
                fields.username.as_deref(),
                fields.password.as_deref(),
                fields.input.as_deref(),
                fields.session.as_deref(),
                fields.url.as_deref(),
                fields.shasum.as_deref(),
                fields.protocol.as_deref(),
                fields.country,
            ] {
                put_text(&mut self.buffer, text);
            }
            put_number(&mut self.buffer, fields.src_port);
            put_number(&mut self.buffer, fields.dst_port);
            self.buffer
                .extend_from_slice(&(event.data.len() as u32).to_le_bytes());
            offsets.push(self.length + self.buffer.len() as u64);
            self.buffer.extend_from_slice(event.data.as_bytes());
            let body = start + 8..self.buffer.len();
            let length = (body.len() as u32).to_le_bytes();
            let checksum = crc32fast::hash(&self.buffer[body]).to_le_bytes();
            self.buffer[start..start + 4].copy_from_slice(&length);
            self.buffer[start + 4..start + 8].copy_from_slice(&checksum);
        }
        self.file.write_all(&self.buffer)?;
        self.file.sync_data()?;
        self.length += self.buffer.len() as u64;
        Ok(())
    }

    /// Reads `length` payload bytes at `offset` (a hot-partition page).
    pub fn read_payload(&self, offset: u64, length: usize) -> Result<String> {
        let mut bytes = vec![0; length];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(String::from_utf8(bytes)?)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at + count)?;
        self.at += count;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<Option<String>> {
        let length = self.u32()?;
        if length == u32::MAX {
            return Some(None);
        }
        let bytes = self.take(length as usize)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }
    fn number(&mut self) -> Option<Option<i64>> {
        match self.take(1)?[0] {
            0 => Some(None),
            _ => Some(Some(self.u64()? as i64)),
        }
    }
}

fn static_country(code: Option<String>) -> Option<&'static str> {
    // Country codes are the enrichment table's own strings.
    code.map(|code| crate::corpus::country_of_code(&code))
}

fn decode(body: &[u8]) -> Option<Record> {
    let mut cursor = Cursor { bytes: body, at: 0 };
    let id = cursor.u64()?;
    let received_at = cursor.u64()? as i64;
    let node_id = cursor.u64()?;
    let pot_id = cursor.text()??;
    let pot_type = cursor.text()??;
    let event_type = cursor.text()??;
    let src_ip = cursor.text()?;
    let username = cursor.text()?;
    let password = cursor.text()?;
    let input = cursor.text()?;
    let session = cursor.text()?;
    let url = cursor.text()?;
    let shasum = cursor.text()?;
    let protocol = cursor.text()?;
    let country = static_country(cursor.text()?);
    let src_port = cursor.number()?;
    let dst_port = cursor.number()?;
    let data_length = cursor.u32()? as usize;
    let data = String::from_utf8(cursor.take(data_length)?.to_vec()).ok()?;
    Some(Record {
        id,
        event: Event {
            node_id,
            pot_id,
            pot_type,
            event_type,
            received_at,
            data,
        },
        fields: Fields {
            src_ip,
            src_port,
            dst_port,
            username,
            password,
            input,
            session,
            url,
            shasum,
            protocol,
            country,
        },
    })
}

/// Every intact record of a segment, in order; the torn tail of a crash is dropped.
pub fn read_segment(path: &Path) -> Result<Vec<Record>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        let checksum = u32::from_le_bytes(bytes[at + 4..at + 8].try_into()?);
        let Some(body) = bytes.get(at + 8..at + 8 + length) else {
            break;
        };
        if crc32fast::hash(body) != checksum {
            break;
        }
        let Some(record) = decode(body) else {
            break;
        };
        records.push(record);
        at += 8 + length;
    }
    Ok(records)
}
