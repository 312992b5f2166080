//! The on-disk record of the spool: `[payload length u32][crc32 u32][seq u64][payload]`,
//! little-endian, the CRC covering seq and payload. Pure framing, no I/O, so recovery after
//! a crash (a torn last record) is decided here and tested without files.

/// Bytes before the payload.
pub(crate) const HEADER_BYTES: usize = 16;
/// A payload longer than this is corruption, not an event (ingest lines are far smaller).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Appends one record to `out`.
pub(crate) fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let seq_bytes = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq_bytes);
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole, intact record, `length` bytes long in all.
    Record {
        seq: u64,
        payload: &'a [u8],
        length: usize,
    },
    /// The buffer ends inside a record: need more bytes (or, at the end of a file, a torn
    /// write).
    Incomplete,
    /// Not a record: a checksum mismatch or an impossible length.
    Corrupt,
}

pub(crate) fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let word =
        |range: std::ops::Range<usize>| -> [u8; 4] { bytes[range].try_into().expect("4 bytes") };
    let payload_length = u32::from_le_bytes(word(0..4)) as usize;
    if payload_length > MAX_PAYLOAD_BYTES {
        return Decoded::Corrupt;
    }
    let expected_crc = u32::from_le_bytes(word(4..8));
    let length = HEADER_BYTES + payload_length;
    if bytes.len() < length {
        return Decoded::Incomplete;
    }
    let seq_bytes: [u8; 8] = bytes[8..16].try_into().expect("8 bytes");
    let payload = &bytes[HEADER_BYTES..length];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq_bytes);
    crc.update(payload);
    if crc.finalize() != expected_crc {
        return Decoded::Corrupt;
    }
    Decoded::Record {
        seq: u64::from_le_bytes(seq_bytes),
        payload,
        length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_or_damaged_ones_are_recognised() {
        let mut bytes = Vec::new();
        encode_record(7, b"first", &mut bytes);
        encode_record(8, b"", &mut bytes);
        let Decoded::Record {
            seq,
            payload,
            length,
        } = decode_record(&bytes)
        else {
            panic!("a record")
        };
        assert_eq!((seq, payload, length), (7, &b"first"[..], HEADER_BYTES + 5));
        assert_eq!(
            decode_record(&bytes[length..]),
            Decoded::Record {
                seq: 8,
                payload: b"",
                length: HEADER_BYTES
            }
        );
        // Every cut inside a record is "incomplete", never a wrong record.
        for cut in 0..length {
            assert_eq!(
                decode_record(&bytes[..cut]),
                Decoded::Incomplete,
                "cut {cut}"
            );
        }
        let mut damaged = bytes.clone();
        damaged[HEADER_BYTES + 1] ^= 0x20;
        assert_eq!(decode_record(&damaged), Decoded::Corrupt);
        let mut huge = bytes.clone();
        huge[3] = 0xff;
        assert_eq!(decode_record(&huge), Decoded::Corrupt);
    }
}
