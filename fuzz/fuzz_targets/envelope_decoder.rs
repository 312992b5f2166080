//! Fuzz target: any byte stream, split at an input-chosen point, through the streaming
//! envelope decoder. It must never panic, and every envelope it returns must re-encode.

#![no_main]

use honeybee_protocol::{decode_envelope, encode_envelope, EnvelopeDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte)).min(data.len());
    let mut decoder = EnvelopeDecoder::new(4096);
    for chunk in [&data[..split], &data[split..]] {
        decoder.push(chunk);
        loop {
            match decoder.next_envelope() {
                Ok(Some(envelope)) => {
                    let mut encoded = Vec::new();
                    encode_envelope(&envelope.message, &mut encoded);
                    assert_eq!(decode_envelope(&encoded).unwrap().message, envelope.message);
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => return,
                Err(_) => {}
            }
        }
    }
    let _ = decoder.finish();
});
