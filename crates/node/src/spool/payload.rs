//! The spooled form of one event, the payload inside a spool record: a format byte, the four
//! short fields with their lengths, then the event's `data` as JSON text. Pure encoding, no
//! I/O.
//!
//! Why not JSON: reading a JSON record back means scanning every byte of the payload again to
//! find where `data` ends — a full third pass over each event on the node (after the ingest
//! split and the spool write). Here the uplink slices the fields out and copies `data` into
//! the envelope untouched. The record's checksum guarantees the bytes are the ones written,
//! and the writer only ever writes `data` it took from a parsed JSON object.
//!
//! Spools written by earlier versions hold JSON records (`{"pot_id":…}`); they start with
//! `{`, never with [`FORMAT_FIELDS_THEN_DATA`], and are still read.

use std::borrow::Cow;

use honeybee_protocol::{IngestEvent, IngestEventRef};
use thiserror::Error;

/// The first byte of a payload in this format.
const FORMAT_FIELDS_THEN_DATA: u8 = 1;

/// One spooled event, borrowed from the payload where it can be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SpooledEvent<'a> {
    pub pot_id: Cow<'a, str>,
    pub pot_type: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub timestamp: Cow<'a, str>,
    /// The text of one JSON object.
    pub data: &'a [u8],
}

#[derive(Debug, Error)]
pub(crate) enum PayloadError {
    #[error("spooled event ends inside its {field}")]
    Truncated { field: &'static str },
    #[error("spooled event's {field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("spooled event (JSON, from an earlier version) cannot be read: {0}")]
    Json(#[from] serde_json::Error),
}

/// Appends `event` in the spool's format to `out`.
pub(crate) fn encode_event(event: &IngestEvent, out: &mut Vec<u8>) {
    out.push(FORMAT_FIELDS_THEN_DATA);
    for field in [
        &event.pot_id,
        &event.pot_type,
        &event.event_type,
        &event.timestamp,
    ] {
        out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(event.data.get().as_bytes());
}

/// Reads one payload written by [`encode_event`] or, as JSON, by an earlier version.
pub(crate) fn decode_event(payload: &[u8]) -> Result<SpooledEvent<'_>, PayloadError> {
    let Some((&FORMAT_FIELDS_THEN_DATA, mut rest)) = payload.split_first() else {
        let legacy: IngestEventRef<'_> = serde_json::from_slice(payload)?;
        return Ok(SpooledEvent {
            pot_id: legacy.pot_id,
            pot_type: legacy.pot_type,
            event_type: legacy.event_type,
            timestamp: legacy.timestamp,
            data: legacy.data.get().as_bytes(),
        });
    };
    let mut next_field = |field: &'static str| -> Result<Cow<'_, str>, PayloadError> {
        let (length, after_length) = rest
            .split_first_chunk::<4>()
            .ok_or(PayloadError::Truncated { field })?;
        let length = u32::from_le_bytes(*length) as usize;
        if after_length.len() < length {
            return Err(PayloadError::Truncated { field });
        }
        let (text, after_text) = after_length.split_at(length);
        rest = after_text;
        std::str::from_utf8(text)
            .map(Cow::Borrowed)
            .map_err(|_| PayloadError::NotUtf8 { field })
    };
    let pot_id = next_field("pot_id")?;
    let pot_type = next_field("pot_type")?;
    let event_type = next_field("event_type")?;
    let timestamp = next_field("timestamp")?;
    Ok(SpooledEvent {
        pot_id,
        pot_type,
        event_type,
        timestamp,
        data: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use honeybee_protocol::{normalize_ingest_line, PotContext};

    fn event() -> IngestEvent {
        let line = r#"{"eventid":"cowrie.login.failed","sensor":"pot-\u00e9\"1","src_ip":"203.0.113.7","message":"tab\there","timestamp":"2024-01-15T10:30:00.5Z"}"#;
        normalize_ingest_line(line.as_bytes(), &PotContext::default(), chrono::Utc::now())
            .unwrap()
            .unwrap()
    }

    fn expected(event: &IngestEvent) -> SpooledEvent<'_> {
        SpooledEvent {
            pot_id: Cow::Borrowed(&event.pot_id),
            pot_type: Cow::Borrowed(&event.pot_type),
            event_type: Cow::Borrowed(&event.event_type),
            timestamp: Cow::Borrowed(&event.timestamp),
            data: event.data.get().as_bytes(),
        }
    }

    #[test]
    fn an_event_reads_back_as_written() {
        let event = event();
        let mut payload = Vec::new();
        encode_event(&event, &mut payload);
        assert_eq!(decode_event(&payload).unwrap(), expected(&event));
    }

    #[test]
    fn a_json_payload_of_an_earlier_version_is_still_read() {
        let event = event();
        let payload = serde_json::to_vec(&event).unwrap();
        assert_eq!(decode_event(&payload).unwrap(), expected(&event));
    }

    #[test]
    fn every_cut_inside_the_fields_is_an_error_naming_the_field() {
        let event = event();
        let mut payload = Vec::new();
        encode_event(&event, &mut payload);
        let fields_end = payload.len() - event.data.get().len();
        for cut in 1..fields_end {
            let error = decode_event(&payload[..cut]).unwrap_err();
            assert!(
                matches!(error, PayloadError::Truncated { .. }),
                "cut {cut}: {error}"
            );
        }
        payload[5] = 0xff;
        assert_eq!(
            decode_event(&payload).unwrap_err().to_string(),
            "spooled event's pot_id is not UTF-8"
        );
        assert!(matches!(
            decode_event(b"not json").unwrap_err(),
            PayloadError::Json(_)
        ));
    }
}
