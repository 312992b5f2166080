//! Timestamp parsing and formatting shared by ingest normalisation and the Core.
//!
//! Honeypots write timestamps in many ways; the wire always carries RFC 3339 UTC with `Z`
//! and only as many fractional digits as needed (0, 3, 6 or 9).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Formats a UTC instant the way every HoneyBee wire carries it.
pub fn format_timestamp(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp with any offset; also accepts the offset-less ISO 8601 form
/// (`2024-01-15T10:30:00.5`, as Python's `isoformat()` writes it) and a space instead of `T`,
/// both read as UTC.
pub fn parse_timestamp_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.with_timezone(&Utc));
    }
    let with_t = text.replacen(' ', "T", 1);
    if let Ok(parsed) = DateTime::parse_from_rfc3339(&with_t) {
        return Some(parsed.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(&with_t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| Utc.from_utc_datetime(&naive))
}

/// Reads a number of Unix seconds (integer or fractional).
pub(crate) fn parse_unix_seconds(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round() as u32;
    let whole = whole as i64;
    // Round-off can carry a full second; normalise instead of rejecting.
    let (whole, nanos) = if nanos >= 1_000_000_000 {
        (whole + 1, 0)
    } else {
        (whole, nanos)
    };
    DateTime::from_timestamp(whole, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_fractions_are_normalised_to_utc_z() {
        let cases = [
            ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00Z"),
            ("2024-01-15T12:30:00+02:00", "2024-01-15T10:30:00Z"),
            ("2024-01-15T10:30:00.123456Z", "2024-01-15T10:30:00.123456Z"),
            ("2024-01-15T10:30:00.5", "2024-01-15T10:30:00.500Z"),
            ("2024-01-15 10:30:00", "2024-01-15T10:30:00Z"),
        ];
        for (input, expected) in cases {
            let parsed = parse_timestamp_text(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(format_timestamp(parsed), expected, "input {input}");
        }
        assert!(parse_timestamp_text("yesterday").is_none());
    }

    #[test]
    fn unix_seconds_integer_and_fraction() {
        assert_eq!(
            format_timestamp(parse_unix_seconds(1705314600.0).unwrap()),
            "2024-01-15T10:30:00Z"
        );
        assert_eq!(
            format_timestamp(parse_unix_seconds(1705314600.25).unwrap()),
            "2024-01-15T10:30:00.250Z"
        );
        assert!(parse_unix_seconds(f64::NAN).is_none());
        assert!(parse_unix_seconds(1e30).is_none());
    }
}
