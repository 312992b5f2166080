//! Reading an unsigned integer from a path segment or query value exactly as the OpenAPI
//! document describes it (an integer from 0 to 2^64-1): decimal digits only.
//!
//! Rust's `u64::from_str` also takes a leading `+`; a client writing `+7` or `-7` has made a
//! mistake the API should name (400), not a request it should quietly read as node 7.

/// The value of `text` if it is one or more ASCII digits that fit a `u64`.
pub(super) fn parse_unsigned_integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decimal_digits_that_fit_are_read() {
        assert_eq!(parse_unsigned_integer("0"), Some(0));
        assert_eq!(parse_unsigned_integer("42"), Some(42));
        assert_eq!(
            parse_unsigned_integer("18446744073709551615"),
            Some(u64::MAX)
        );
        for refused in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x10",
            "18446744073709551616",
            "١٢",
        ] {
            assert_eq!(parse_unsigned_integer(refused), None, "{refused:?}");
        }
    }
}
