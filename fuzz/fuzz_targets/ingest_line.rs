//! Fuzz target: any bytes as an ingest line, through framing and normalisation. It must
//! never panic, and an accepted event always has an RFC 3339 UTC timestamp and an object
//! as its payload (written from the line's raw members, not from a parsed map).

#![no_main]

use honeybee_protocol::{normalize_ingest_line, parse_timestamp_text, FramedLine, LineFramer, PotContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let received = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut framer = LineFramer::new(1024);
    framer.push(data);
    while let Some(framed) = framer.next_line() {
        if let FramedLine::Line(line) = framed {
            if let Ok(Some(event)) = normalize_ingest_line(line, &PotContext::default(), received) {
                assert!(event.timestamp.ends_with('Z'));
                assert!(parse_timestamp_text(&event.timestamp).is_some());
                assert!(event.data.get().starts_with('{'));
                if let Err(error) = event.data.to_map() {
                    // JSON allows numbers no f64 holds; the payload keeps them as written.
                    assert!(error.to_string().starts_with("number out of range"), "{error}");
                }
            }
        }
    }
});
