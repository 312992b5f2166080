//! Table-driven tests over the golden vectors of the wire contract (`testdata/vectors`,
//! a copy of `shared/vectors` that a test keeps identical to the original).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use honeybee_protocol::{
    decode_envelope, encode_envelope, normalize_ingest_line, Envelope, EnvelopeDecoder, Message,
    PotContext,
};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn read_jsonl(relative: &str) -> Vec<Value> {
    let path = vectors_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let rows: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("vector rows are JSON"))
        .collect();
    assert!(!rows.is_empty(), "{relative} has no rows");
    rows
}

fn wire_of(row: &Value) -> &str {
    row["wire"].as_str().expect("row has a wire string")
}

fn valid_protocol_rows() -> Vec<Value> {
    let mut rows = read_jsonl("protocol/node_to_core.jsonl");
    rows.extend(read_jsonl("protocol/core_to_node.jsonl"));
    rows
}

#[test]
fn committed_vectors_match_the_shared_contract() {
    // The contract's vectors live in `shared/` beside the repository (CI always has them);
    // a clone elsewhere names their place in HONEYBEE_SHARED_DIR.
    let shared = std::env::var_os("HONEYBEE_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("vectors");
    assert!(
        shared.is_dir(),
        "the shared contract's vectors are not at {} (set HONEYBEE_SHARED_DIR to the shared/ directory)",
        shared.display()
    );
    for relative in [
        "ingest/valid.jsonl",
        "ingest/invalid.jsonl",
        "protocol/node_to_core.jsonl",
        "protocol/core_to_node.jsonl",
        "protocol/invalid.jsonl",
    ] {
        let committed = std::fs::read(vectors_dir().join(relative)).unwrap();
        let original = std::fs::read(shared.join(relative)).unwrap();
        assert_eq!(
            committed, original,
            "{relative} drifted from shared/vectors"
        );
    }
}

#[test]
fn every_valid_wire_parses_to_expect_and_expect_round_trips() {
    for row in valid_protocol_rows() {
        let wire = wire_of(&row);
        let from_wire =
            decode_envelope(wire.as_bytes()).unwrap_or_else(|error| panic!("{wire}: {error}"));
        let expect_text = row["expect"].to_string();
        let from_expect = decode_envelope(expect_text.as_bytes()).unwrap();
        assert_eq!(from_wire, from_expect, "wire {wire}");

        // Strict in what we send: serialising gives exactly the expected JSON.
        let mut encoded = Vec::new();
        encode_envelope(&from_expect.message, &mut encoded);
        assert_eq!(encoded.last(), Some(&b'\n'));
        let encoded_value: Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(encoded_value, row["expect"], "encoding of {wire}");
        assert_eq!(decode_envelope(&encoded).unwrap(), from_expect);
        assert_eq!(
            serde_json::to_value(Envelope::new(from_expect.message.clone())).unwrap(),
            row["expect"]
        );
    }
}

#[test]
fn every_invalid_wire_is_refused_with_a_clear_error() {
    for row in read_jsonl("protocol/invalid.jsonl") {
        let wire = wire_of(&row);
        let error = decode_envelope(wire.as_bytes())
            .expect_err(&format!("{wire} should be refused ({})", row["why"]));
        assert!(!error.to_string().is_empty());

        // In a stream, the same bytes are refused too, or (truncated) reported at the end.
        let mut decoder = EnvelopeDecoder::default();
        decoder.push(wire.as_bytes());
        match decoder.next_envelope() {
            Err(_) => {}
            Ok(None) => assert!(
                decoder.finish().is_err(),
                "{wire} accepted at end of stream"
            ),
            Ok(Some(envelope)) => panic!("{wire} decoded as {envelope:?}"),
        }
    }
}

fn expected_messages() -> Vec<Message> {
    valid_protocol_rows()
        .iter()
        .map(|row| decode_envelope(wire_of(row).as_bytes()).unwrap().message)
        .collect()
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Message> {
    let mut decoder = EnvelopeDecoder::default();
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(envelope) = decoder.next_envelope().unwrap() {
            messages.push(envelope.message);
        }
    }
    decoder.finish().unwrap();
    messages
}

#[test]
fn concatenated_streams_yield_the_same_messages_in_order() {
    let rows = valid_protocol_rows();
    let wires: Vec<&str> = rows.iter().map(wire_of).collect();
    let expected = expected_messages();
    for separator in ["\n", "", " \r\n\t ", "\n\n"] {
        let stream = wires.join(separator);
        assert_eq!(
            decode_chunks([stream.as_bytes()]),
            expected,
            "separator {separator:?}"
        );
    }
}

#[test]
fn a_stream_split_at_every_byte_boundary_yields_the_same_messages() {
    let rows = valid_protocol_rows();
    let stream: String = rows.iter().map(wire_of).collect::<Vec<_>>().join("");
    let bytes = stream.as_bytes();
    let expected = expected_messages();
    // One byte at a time.
    assert_eq!(decode_chunks(bytes.chunks(1)), expected);
    // Every single split point.
    for split in 0..=bytes.len() {
        let (head, tail) = bytes.split_at(split);
        assert_eq!(decode_chunks([head, tail]), expected, "split at {split}");
    }
}

fn receipt_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

#[test]
fn every_valid_ingest_line_normalises_to_expect() {
    for row in read_jsonl("ingest/valid.jsonl") {
        let line = row["line"].as_str().unwrap();
        let event = normalize_ingest_line(line.as_bytes(), &PotContext::default(), receipt_time())
            .unwrap_or_else(|error| panic!("{line}: {error}"))
            .unwrap_or_else(|| panic!("{line}: skipped"));
        let expect = &row["expect"];
        assert_eq!(event.pot_id, expect["pot_id"], "{line}");
        assert_eq!(event.pot_type, expect["pot_type"], "{line}");
        assert_eq!(event.event_type, expect["event_type"], "{line}");
        let expected_timestamp = match &expect["timestamp"] {
            Value::Null => "2030-03-17T17:46:40Z".to_owned(),
            other => other.as_str().unwrap().to_owned(),
        };
        assert_eq!(event.timestamp, expected_timestamp, "{line}");
        assert_eq!(
            Value::Object(event.data.to_map().unwrap()),
            expect["data"],
            "{line}"
        );
    }
}

#[test]
fn every_invalid_ingest_line_is_rejected_and_empty_lines_are_skipped() {
    for row in read_jsonl("ingest/invalid.jsonl") {
        let line = row["line"].as_str().unwrap();
        let result = normalize_ingest_line(line.as_bytes(), &PotContext::default(), receipt_time());
        if line.trim().is_empty() {
            assert_eq!(result, Ok(None), "empty line must be skipped silently");
        } else {
            let error = result.expect_err(&format!("{line} should be rejected ({})", row["why"]));
            assert!(!error.to_string().is_empty());
        }
    }
}
