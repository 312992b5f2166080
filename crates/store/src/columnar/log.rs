//! The hot partition's log: one append-only file per hot partition, the only place an
//! event is written before it is acknowledged.
//!
//! A record is `[body length u32][CRC-32 of the body u32][body]`; the body holds the
//! arrival id, the envelope, the well-known fields and, last, the payload, so a payload
//! can be read back by offset without decoding the record. A batch is one `write` and one
//! `fdatasync` (the group commit). Reading a log stops at the first short or corrupt
//! record: only a batch that was never acknowledged can be torn, and it is cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::columnar::ColumnarError;
use crate::model::{EventFields, NewEvent};

/// Marks an absent text or number in a record.
const ABSENT_LENGTH: u32 = u32::MAX;
/// Marks an event without a node sequence number.
const NO_SEQ: u64 = u64::MAX;

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoggedEvent {
    pub id: u64,
    pub event: NewEvent,
}

/// Where a payload is in its log: what a hot page reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadPosition {
    pub offset: u64,
    pub length: u32,
}

/// The log file of one hot partition, open for appending.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
    length: u64,
    buffer: Vec<u8>,
}

fn put_text(buffer: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            buffer.extend_from_slice(&(text.len() as u32).to_le_bytes());
            buffer.extend_from_slice(text.as_bytes());
        }
        None => buffer.extend_from_slice(&ABSENT_LENGTH.to_le_bytes()),
    }
}

fn put_number(buffer: &mut Vec<u8>, number: Option<u32>) {
    match number {
        Some(number) => {
            buffer.push(1);
            buffer.extend_from_slice(&number.to_le_bytes());
        }
        None => buffer.push(0),
    }
}

fn encode_body(buffer: &mut Vec<u8>, id: u64, event: &NewEvent) {
    buffer.extend_from_slice(&id.to_le_bytes());
    buffer.extend_from_slice(&event.node_id.to_le_bytes());
    buffer.extend_from_slice(&event.seq.unwrap_or(NO_SEQ).to_le_bytes());
    buffer.extend_from_slice(&event.timestamp.timestamp_micros().to_le_bytes());
    buffer.extend_from_slice(&event.received_at.timestamp_micros().to_le_bytes());
    let fields = &event.fields;
    for text in [
        Some(event.pot_id.as_str()),
        Some(event.pot_type.as_str()),
        Some(event.event_type.as_str()),
        fields.src_ip.as_deref(),
        fields.username.as_deref(),
        fields.password.as_deref(),
        fields.command.as_deref(),
        fields.session.as_deref(),
        fields.url.as_deref(),
        fields.file_hash.as_deref(),
        fields.protocol.as_deref(),
        fields.country.as_deref(),
        fields.city.as_deref(),
    ] {
        put_text(buffer, text);
    }
    put_number(buffer, fields.src_port.map(u32::from));
    put_number(buffer, fields.dst_port.map(u32::from));
    put_number(buffer, fields.asn);
    buffer.extend_from_slice(&(event.data_json.len() as u32).to_le_bytes());
}

impl LogWriter {
    /// Creates the log (it must not exist) and makes its directory entry durable.
    pub fn create(path: &Path) -> Result<LogWriter, ColumnarError> {
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| ColumnarError::io("creating log", path, source))?;
        sync_directory_of(path)?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            length: 0,
            buffer: Vec::new(),
        })
    }

    /// A second handle on the file, for reading payloads back.
    pub fn reader(&self) -> Result<File, ColumnarError> {
        File::open(&self.path)
            .map_err(|source| ColumnarError::io("opening log", &self.path, source))
    }

    /// Appends the events with their ids and (with `sync`) makes them durable before
    /// returning; pushes each payload's position.
    pub fn append(
        &mut self,
        events: &[(u64, &NewEvent)],
        sync: bool,
        positions: &mut Vec<PayloadPosition>,
    ) -> Result<(), ColumnarError> {
        self.buffer.clear();
        for (id, event) in events {
            let start = self.buffer.len();
            self.buffer.extend_from_slice(&[0; 8]);
            encode_body(&mut self.buffer, *id, event);
            positions.push(PayloadPosition {
                offset: self.length + self.buffer.len() as u64,
                length: event.data_json.len() as u32,
            });
            self.buffer.extend_from_slice(event.data_json.as_bytes());
            let body = start + 8..self.buffer.len();
            let length = (body.len() as u32).to_le_bytes();
            let checksum = crc32fast::hash(&self.buffer[body]).to_le_bytes();
            self.buffer[start..start + 4].copy_from_slice(&length);
            self.buffer[start + 4..start + 8].copy_from_slice(&checksum);
        }
        let written = self.file.write_all(&self.buffer).and_then(|()| {
            if sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(source) = written {
            // Whatever part of the batch reached the file is cut off, so the next batch
            // does not land after a torn record that recovery would stop at.
            let _ = self.file.set_len(self.length);
            return Err(ColumnarError::io("writing log", &self.path, source));
        }
        self.length += self.buffer.len() as u64;
        if self.buffer.capacity() > 16 << 20 {
            self.buffer = Vec::new();
        }
        Ok(())
    }
}

/// Reads one payload of a log.
pub(crate) fn read_payload(
    file: &File,
    path: &Path,
    position: PayloadPosition,
) -> Result<String, ColumnarError> {
    let mut bytes = vec![0; position.length as usize];
    file.read_exact_at(&mut bytes, position.offset)
        .map_err(|source| ColumnarError::io("reading log", path, source))?;
    String::from_utf8(bytes).map_err(|_| ColumnarError::Corrupt {
        path: path.to_path_buf(),
        what: format!("payload at offset {} is not UTF-8", position.offset),
    })
}

struct RecordReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> RecordReader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(count)?)?;
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
        if length == ABSENT_LENGTH {
            return Some(None);
        }
        let bytes = self.take(length as usize)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }
    fn number(&mut self) -> Option<Option<u32>> {
        match self.take(1)?[0] {
            0 => Some(None),
            _ => Some(Some(self.u32()?)),
        }
    }
}

fn time(micros: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(micros as i64)
}

fn decode_body(body: &[u8], body_offset: u64) -> Option<(LoggedEvent, PayloadPosition)> {
    let mut reader = RecordReader { bytes: body, at: 0 };
    let id = reader.u64()?;
    let node_id = reader.u64()?;
    let seq = Some(reader.u64()?).filter(|&seq| seq != NO_SEQ);
    let timestamp = time(reader.u64()?)?;
    let received_at = time(reader.u64()?)?;
    let pot_id = reader.text()??;
    let pot_type = reader.text()??;
    let event_type = reader.text()??;
    let mut fields = EventFields {
        src_ip: reader.text()?,
        username: reader.text()?,
        password: reader.text()?,
        command: reader.text()?,
        session: reader.text()?,
        url: reader.text()?,
        file_hash: reader.text()?,
        protocol: reader.text()?,
        country: reader.text()?,
        city: reader.text()?,
        ..EventFields::default()
    };
    fields.src_port = reader.number()?.map(|port| port as u16);
    fields.dst_port = reader.number()?.map(|port| port as u16);
    fields.asn = reader.number()?;
    let length = reader.u32()?;
    let offset = body_offset + reader.at as u64;
    let data_json = String::from_utf8(reader.take(length as usize)?.to_vec()).ok()?;
    if reader.at != body.len() {
        return None;
    }
    let event = NewEvent {
        node_id,
        pot_id,
        pot_type,
        event_type,
        timestamp,
        received_at,
        data_json,
        fields,
        seq,
    };
    Some((
        LoggedEvent { id, event },
        PayloadPosition { offset, length },
    ))
}

/// What a log holds: every intact record in order, and the length of the intact part.
pub(crate) struct RecoveredLog {
    pub events: Vec<(LoggedEvent, PayloadPosition)>,
    pub intact_length: u64,
    pub file_length: u64,
}

/// Reads every intact record of a log; reading stops at the first short or corrupt one.
pub(crate) fn read_log(path: &Path) -> Result<RecoveredLog, ColumnarError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| ColumnarError::io("reading log", path, source))?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(at + 8..at + 8 + length) else {
            break;
        };
        if crc32fast::hash(body) != checksum {
            break;
        }
        let Some(decoded) = decode_body(body, (at + 8) as u64) else {
            break;
        };
        events.push(decoded);
        at += 8 + length;
    }
    Ok(RecoveredLog {
        events,
        intact_length: at as u64,
        file_length: bytes.len() as u64,
    })
}

/// Cuts a log back to its intact records (the torn tail of a crash), durably.
pub(crate) fn cut_log(path: &Path, length: u64) -> Result<(), ColumnarError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(length)?;
            file.sync_all()
        })
        .map_err(|source| ColumnarError::io("cutting log", path, source))
}

/// Makes a file's creation, rename or removal durable.
pub(crate) fn sync_directory_of(path: &Path) -> Result<(), ColumnarError> {
    let directory = path.parent().unwrap_or(Path::new("."));
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| ColumnarError::io("syncing directory", directory, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(data: &str) -> NewEvent {
        NewEvent {
            node_id: 7,
            pot_id: "ssh".into(),
            pot_type: "cowrie".into(),
            event_type: "cowrie.login.failed".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            received_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap(),
            data_json: data.into(),
            fields: EventFields {
                src_ip: Some("198.51.100.7".into()),
                src_port: Some(40_000),
                username: Some("root".into()),
                asn: Some(64_500),
                ..EventFields::default()
            },
            seq: Some(3),
        }
    }

    #[test]
    fn records_read_back_as_written_and_a_torn_tail_is_cut() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("hot.log");
        let mut log = LogWriter::create(&path).unwrap();
        let (first, second) = (event(r#"{"a":1}"#), event(r#"{"b":"é"}"#));
        let mut positions = Vec::new();
        log.append(&[(10, &first), (11, &second)], true, &mut positions)
            .unwrap();
        let reader = log.reader().unwrap();
        assert_eq!(
            read_payload(&reader, &path, positions[1]).unwrap(),
            r#"{"b":"é"}"#
        );
        let intact = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the next batch's write.
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        torn.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        let recovered = read_log(&path).unwrap();
        assert_eq!(recovered.intact_length, intact);
        assert_eq!(recovered.file_length, intact + 9);
        let ids: Vec<u64> = recovered.events.iter().map(|(e, _)| e.id).collect();
        assert_eq!(ids, [10, 11]);
        assert_eq!(recovered.events[1].0.event, second);
        assert_eq!(recovered.events[1].1, positions[1]);
        cut_log(&path, recovered.intact_length).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), intact);
    }

    #[test]
    fn a_flipped_byte_ends_the_log_at_the_record_before_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("hot.log");
        let mut log = LogWriter::create(&path).unwrap();
        let mut positions = Vec::new();
        let events = [event("{}"), event("{}"), event("{}")];
        let numbered: Vec<(u64, &NewEvent)> = (1..).zip(&events).collect();
        log.append(&numbered, true, &mut positions).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[positions[1].offset as usize] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_log(&path).unwrap().events.len(), 1);
    }
}
