//! `[retention]`: how long events are kept and how much disk they may take.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[retention]`: old events are dropped a whole partition (at most one hour of arrivals)
/// at a time, beside ingest. Either limit can be turned off; both apply when both are set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events are dropped once this long has passed since they arrived: a number and a
    /// unit `h` (hours), `d` (days) or `w` (weeks), at least `1h`; or `"off"` to keep them
    /// all. A partition goes when its newest arrival is this old, so events stay up to an
    /// hour longer. Default `"90d"`.
    pub max_age: String,
    /// The most bytes the event files (`<data_dir>/events/`) may take; past it the oldest
    /// partitions are dropped. The partitions not yet sealed (the newest hour or so) are
    /// never dropped for space, so the files can exceed a cap smaller than that. 0 (the
    /// default) is no cap.
    pub max_disk_bytes: u64,
    /// Seconds between two retention checks. 1 to 86400, default 60.
    pub check_interval: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: "90d".into(),
            max_disk_bytes: 0,
            check_interval: 60.0,
        }
    }
}

impl RetentionConfig {
    /// The age limit; `None` when off. Valid once `validate` passed.
    pub fn max_age(&self) -> Option<Duration> {
        parse_age(&self.max_age).ok().flatten()
    }

    /// The disk cap; `None` when off.
    pub fn max_disk_bytes(&self) -> Option<u64> {
        (self.max_disk_bytes > 0).then_some(self.max_disk_bytes)
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_secs_f64(self.check_interval)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_age(&self.max_age).map_err(|reason| ConfigError::Invalid {
            field: "retention.max_age",
            value: self.max_age.clone(),
            reason,
        })?;
        if !(1.0..=86_400.0).contains(&self.check_interval) {
            return Err(ConfigError::Invalid {
                field: "retention.check_interval",
                value: self.check_interval.to_string(),
                reason: "must be from 1 to 86400 seconds",
            });
        }
        Ok(())
    }
}

/// `"90d"` → 90 days; `"off"` → none.
fn parse_age(text: &str) -> Result<Option<Duration>, &'static str> {
    const EXPECTED: &str =
        "expected a number and a unit h, d or w (e.g. 36h, 90d, 8w), at least 1h, or \"off\"";
    if text == "off" {
        return Ok(None);
    }
    let Some(split) = text.len().checked_sub(1) else {
        return Err(EXPECTED);
    };
    let (number, unit) = text.split_at(split);
    let hours_per_unit = match unit {
        "h" => 1,
        "d" => 24,
        "w" => 24 * 7,
        _ => return Err(EXPECTED),
    };
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(EXPECTED);
    }
    let hours = number
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(hours_per_unit))
        .filter(|hours| (1..=24 * 365 * 100).contains(hours))
        .ok_or(EXPECTED)?;
    Ok(Some(Duration::from_secs(hours * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_read_with_their_unit_or_turned_off() {
        assert_eq!(parse_age("90d"), Ok(Some(Duration::from_secs(90 * 86_400))));
        assert_eq!(parse_age("36h"), Ok(Some(Duration::from_secs(36 * 3600))));
        assert_eq!(parse_age("2w"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert_eq!(parse_age("off"), Ok(None));
        for bad in [
            "", "90", "d", "0d", "-1d", "1.5d", "90 d", "30m", "1000000w",
        ] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_defaults_keep_ninety_days_without_a_cap() {
        let config = RetentionConfig::default();
        config.validate().unwrap();
        assert_eq!(config.max_age(), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(config.max_disk_bytes(), None);
        let bad = RetentionConfig {
            check_interval: 0.5,
            ..RetentionConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("check_interval"));
    }
}
