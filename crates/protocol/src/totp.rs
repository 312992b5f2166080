//! Time-based one-time passwords as the contract fixes them (RFC 6238: HMAC-SHA-1, 6 digits,
//! 30 s steps) and the base32 text form of the shared secret (RFC 4648, no padding).
//!
//! Pure functions of (secret, step): the Core and the Node decide which steps to try and
//! which were already used.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per TOTP step.
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Digits in a code.
pub const TOTP_DIGITS: usize = 6;
/// Bytes of a secret the Core issues (160 bits, the HMAC-SHA-1 block-size recommendation of
/// RFC 4226).
pub const TOTP_SECRET_BYTES: usize = 20;

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The step a Unix time (seconds) falls in.
pub fn totp_step_at(unix_seconds: u64) -> u64 {
    unix_seconds / TOTP_STEP_SECONDS
}

/// The code for `step`, zero-padded to [`TOTP_DIGITS`].
pub fn totp_code(secret: &[u8], step: u64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226 §5.3): the low nibble of the last byte picks 4 bytes.
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}

/// Which of `steps` the `code` is valid for, if any. Compares every candidate so the time
/// taken does not tell which step matched.
pub fn totp_matching_step(
    secret: &[u8],
    code: &str,
    steps: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    let mut matched = None;
    for step in steps {
        let expected = totp_code(secret, step);
        let equal = expected.len() == code.len()
            && expected
                .bytes()
                .zip(code.bytes())
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0;
        if equal && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// Base32 (RFC 4648 alphabet) without padding, as authenticator apps and the contract's
/// `totp_key` use it.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(BASE32_ALPHABET[((buffer >> bits) & 0x1f) as usize] as char);
        }
    }
    if bits > 0 {
        text.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize] as char);
    }
    text
}

/// Decodes base32, ignoring case, spaces and trailing `=` padding. `None` for any other
/// character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for character in text.trim_end_matches('=').bytes() {
        if character == b' ' {
            continue;
        }
        let value = BASE32_ALPHABET
            .iter()
            .position(|&letter| letter == character.to_ascii_uppercase())?
            as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column, last six digits.
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        let table = [
            (59, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
            (20000000000, "353130"),
        ];
        for (unix_seconds, expected) in table {
            assert_eq!(
                totp_code(secret, totp_step_at(unix_seconds)),
                expected,
                "time {unix_seconds}"
            );
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw 6ytb oi").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZ1W"), None);
        let secret: Vec<u8> = (0u8..20).collect();
        assert_eq!(base32_decode(&base32_encode(&secret)).unwrap(), secret);
    }

    #[test]
    fn only_a_code_of_one_of_the_offered_steps_matches() {
        let secret = b"secret-secret-secret";
        let code = totp_code(secret, 100);
        assert_eq!(totp_matching_step(secret, &code, 99..=101), Some(100));
        assert_eq!(totp_matching_step(secret, &code, 101..=103), None);
        assert_eq!(totp_matching_step(secret, "12345", 99..=101), None);
    }
}
