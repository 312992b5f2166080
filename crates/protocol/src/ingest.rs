//! Normalisation of ingest lines (honeypot → node) into one canonical event shape.
//!
//! Two shapes arrive: the canonical one (`event_type` + `data`) and the flat one that
//! Cowrie and similar plugins write (`eventid` with the payload at top level). Both become
//! an [`IngestEvent`]; see the contract, section 1, for the field rules.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::IngestError;
use crate::json_object::{raw_string, JsonKind, JsonObject, ObjectEntries};
use crate::timestamp::{format_timestamp, parse_timestamp_text, parse_unix_seconds};

/// Placeholder for a pot id or type nobody told us.
pub const UNKNOWN: &str = "unknown";

/// What the node knows about the connection a line came from (a pot it started).
#[derive(Debug, Clone, Default)]
pub struct PotContext {
    pub pot_id: Option<String>,
    pub pot_type: Option<String>,
}

/// A normalised honeypot event, ready to become a `PotEvent`. Serialisable so a node can
/// keep it on disk until the Core has stored it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IngestEvent {
    pub pot_id: String,
    pub pot_type: String,
    pub event_type: String,
    /// RFC 3339 UTC with `Z`.
    pub timestamp: String,
    pub data: JsonObject,
}

/// An [`IngestEvent`] read back from its serialised form without building it again: the
/// strings borrow from the bytes where they can and `data` stays JSON text, ready to be
/// copied into a [`crate::PotEventRef`].
#[derive(Debug, serde::Deserialize)]
pub struct IngestEventRef<'a> {
    #[serde(borrow)]
    pub pot_id: Cow<'a, str>,
    #[serde(borrow)]
    pub pot_type: Cow<'a, str>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

const POT_ID_KEYS: [&str; 3] = ["pot_id", "honeybee_honeypot_id", "sensor"];
const POT_TYPE_KEYS: [&str; 2] = ["pot_type", "honeybee_honeypot_type"];

/// Normalises one line (without its `\n`). Blank lines give `Ok(None)`: they are skipped
/// silently, not counted as errors. Only the top level of the line is split; the payload's
/// values are copied as they were written.
pub fn normalize_ingest_line(
    line: &[u8],
    context: &PotContext,
    received_at: DateTime<Utc>,
) -> Result<Option<IngestEvent>, IngestError> {
    let text = std::str::from_utf8(line).map_err(|error| IngestError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut fields = ObjectEntries::parse(text).map_err(|error| {
        // Tell "valid JSON, but not an object" apart from "not JSON at all".
        match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => IngestError::NotAnObject {
                found: JsonKind::of(text).name(),
            },
            Err(_) => IngestError::NotJson {
                reason: error.to_string(),
            },
        }
    })?;

    let (event_type, canonical) = match take_string(&mut fields, "event_type")? {
        Some(event_type) => (event_type, true),
        None => match take_string(&mut fields, "eventid")? {
            Some(event_type) => (event_type, false),
            None => return Err(IngestError::MissingEventType),
        },
    };
    let pot_id = take_first_string(&mut fields, &POT_ID_KEYS)
        .or_else(|| context.pot_id.clone())
        .unwrap_or_else(|| UNKNOWN.to_owned());
    let pot_type = take_first_string(&mut fields, &POT_TYPE_KEYS)
        .or_else(|| context.pot_type.clone())
        .unwrap_or_else(|| UNKNOWN.to_owned());
    let timestamp = match fields.take("timestamp") {
        None => received_at,
        Some(value) if value.get() == "null" => received_at,
        Some(value) => parse_timestamp_value(value)?,
    };

    let data = if canonical {
        // Canonical shape: `data` is the payload; any other top-level fields are kept in it
        // rather than silently dropped (the payload's own keys win on a clash).
        match fields.take("data") {
            None => JsonObject::from_entries(&fields),
            Some(data) if data.get() == "null" => JsonObject::from_entries(&fields),
            Some(data) if JsonKind::of(data.get()) == JsonKind::Object => {
                if fields.is_empty() {
                    JsonObject::from_raw(data.to_owned()).expect("checked to be an object")
                } else {
                    let mut payload =
                        ObjectEntries::parse(data.get()).map_err(|error| IngestError::NotJson {
                            reason: error.to_string(),
                        })?;
                    payload.extend_missing(fields);
                    JsonObject::from_entries(&payload)
                }
            }
            Some(other) => {
                return Err(IngestError::DataNotAnObject {
                    found: JsonKind::of(other.get()).name(),
                })
            }
        }
    } else {
        JsonObject::from_entries(&fields)
    };

    Ok(Some(IngestEvent {
        pot_id,
        pot_type,
        event_type,
        timestamp: format_timestamp(timestamp),
        data,
    }))
}

/// Removes `key` if it holds a string; a present non-string or empty value is an error.
fn take_string(
    fields: &mut ObjectEntries<'_>,
    key: &'static str,
) -> Result<Option<String>, IngestError> {
    match fields.take(key) {
        None => Ok(None),
        Some(value) => match raw_string(value) {
            Some(text) if !text.trim().is_empty() => Ok(Some(text)),
            _ => Err(IngestError::BadField {
                field: key,
                found: compact_json(value),
            }),
        },
    }
}

/// Removes and returns the first of `keys` that holds a non-empty string; the other keys
/// stay in the payload.
fn take_first_string(fields: &mut ObjectEntries<'_>, keys: &[&str]) -> Option<String> {
    let (key, text) = keys.iter().find_map(|key| {
        let text = raw_string(fields.get(key)?)?;
        (!text.trim().is_empty()).then_some((*key, text))
    })?;
    fields.take(key);
    Some(text)
}

fn parse_timestamp_value(value: &RawValue) -> Result<DateTime<Utc>, IngestError> {
    let parsed = match JsonKind::of(value.get()) {
        JsonKind::String => raw_string(value).and_then(|text| parse_timestamp_text(&text)),
        JsonKind::Number => serde_json::from_str::<f64>(value.get())
            .ok()
            .and_then(parse_unix_seconds),
        _ => None,
    };
    parsed.ok_or_else(|| IngestError::BadTimestamp {
        value: compact_json(value),
    })
}

/// A value as compact JSON text, for error messages.
fn compact_json(value: &RawValue) -> String {
    serde_json::from_str::<Value>(value.get())
        .map(|value| value.to_string())
        .unwrap_or_else(|_| value.get().to_owned())
}

#[cfg(test)]
mod tests {
    use crate::{encode_envelope, encode_pot_event, Message, PotEvent, PotEventRef};

    /// The node spools an `IngestEvent` and sends it without rebuilding it; the Core must
    /// receive the very bytes an owned `PotEvent` would have been.
    #[test]
    fn a_spooled_event_is_sent_byte_for_byte_as_the_owned_pot_event() {
        let line = r#"{"eventid":"cowrie.login.failed","sensor":"pot-\u00e9\"1","src_ip":"203.0.113.7","n":[1,{"a":null}],"message":"tab\there","timestamp":"2024-01-15T10:30:00.5Z"}"#;
        let event = normalize_ingest_line(line.as_bytes(), &PotContext::default(), now())
            .unwrap()
            .unwrap();
        let spooled = serde_json::to_vec(&event).unwrap();
        let read_back: IngestEventRef<'_> = serde_json::from_slice(&spooled).unwrap();
        for seq in [None, Some(41)] {
            let mut borrowed = Vec::new();
            encode_pot_event(
                &PotEventRef {
                    node_id: 7,
                    pot_id: &read_back.pot_id,
                    pot_type: &read_back.pot_type,
                    event_type: &read_back.event_type,
                    timestamp: &read_back.timestamp,
                    data: read_back.data.get().as_bytes(),
                    seq,
                },
                &mut borrowed,
            );
            let mut owned = Vec::new();
            encode_envelope(
                &Message::PotEvent(PotEvent {
                    node_id: 7,
                    pot_id: event.pot_id.clone(),
                    pot_type: event.pot_type.clone(),
                    event_type: event.event_type.clone(),
                    timestamp: event.timestamp.clone(),
                    data: event.data.clone(),
                    seq,
                }),
                &mut owned,
            );
            assert_eq!(
                String::from_utf8(borrowed).unwrap(),
                String::from_utf8(owned).unwrap()
            );
        }
    }
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn pot_context_fills_missing_pot_fields() {
        let context = PotContext {
            pot_id: Some("cowrie-9".into()),
            pot_type: Some("cowrie".into()),
        };
        let event = normalize_ingest_line(br#"{"eventid":"x","a":1}"#, &context, now())
            .unwrap()
            .unwrap();
        assert_eq!(event.pot_id, "cowrie-9");
        assert_eq!(event.pot_type, "cowrie");
        assert_eq!(event.timestamp, "2027-01-15T08:00:00Z");
        assert_eq!(event.data.to_map().unwrap()["a"], 1);
    }

    #[test]
    fn canonical_shape_keeps_extra_top_level_fields_in_data() {
        let line = br#"{"event_type":"e","src_ip":"192.0.2.1","data":{"k":"v","src_ip":"inner"}}"#;
        let event = normalize_ingest_line(line, &PotContext::default(), now())
            .unwrap()
            .unwrap();
        let data = event.data.to_map().unwrap();
        assert_eq!(data["k"], "v");
        assert_eq!(data["src_ip"], "inner");
    }

    /// The hostile case of the merge: a 64 KiB line whose thousands of `data` keys and
    /// thousands of top-level keys half overlap. Each side's keys are looked up once (the
    /// merge hashes them), and the payload's own values win every clash.
    #[test]
    fn thousands_of_extra_keys_merge_into_data_once_each() {
        let data: Vec<String> = (0..3000).map(|n| format!("\"k{n}\":\"data\"")).collect();
        let extra: Vec<String> = (1500..4500).map(|n| format!("\"k{n}\":\"top\"")).collect();
        let line = format!(
            "{{\"event_type\":\"e\",{},\"data\":{{{}}}}}",
            extra.join(","),
            data.join(",")
        );
        let event = normalize_ingest_line(line.as_bytes(), &PotContext::default(), now())
            .unwrap()
            .unwrap();
        let merged = event.data.to_map().unwrap();
        assert_eq!(merged.len(), 4500);
        assert_eq!(merged["k0"], "data");
        assert_eq!(merged["k2999"], "data", "the payload's own value wins");
        assert_eq!(merged["k4499"], "top");
    }

    #[test]
    fn non_utf8_and_bad_types_are_rejected_with_clear_errors() {
        let context = PotContext::default();
        let error =
            normalize_ingest_line(b"{\"event_type\":\"\xff\"}", &context, now()).unwrap_err();
        assert_eq!(error, IngestError::NotUtf8 { offset: 15 });
        let error = normalize_ingest_line(br#"{"event_type":5}"#, &context, now()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "field \"event_type\" must be a non-empty string, found 5"
        );
        let error = normalize_ingest_line(br#"{"event_type":"e","data":[1]}"#, &context, now())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "field \"data\" must be an object (found an array)"
        );
    }
}
