//! `/api/v1/stats`: exact statistics of a time window — totals, distinct sources, an
//! events-over-time histogram, the most frequent values of chosen fields and per-pot
//! activity — for dashboards and reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use honeybee_protocol::format_timestamp;
use honeybee_store::{EventStats, StatField, StatsQuery};
use serde::Serialize;

use super::events::parse_time_parameter;
use super::integer_parameter::parse_unsigned_integer;
use super::{ApiError, ApiState};

const KNOWN_PARAMETERS: [&str; 8] = [
    "since",
    "until",
    "node_id",
    "pot_id",
    "event_type",
    "top",
    "limit",
    "interval",
];

/// Values per ranked field unless `limit` says otherwise, and the most it may say.
const DEFAULT_TOP_VALUES: usize = 10;
const MAX_TOP_VALUES: usize = 1000;

/// The most buckets a histogram answers with: past it, only the newest are kept
/// (`histogram_truncated`).
const MAX_HISTOGRAM_BUCKETS: usize = 10_000;

/// Bucket widths chosen when `interval` is left out: the finest that keeps a window within
/// about 300 buckets, so a chart has enough points and the answer stays small.
const AUTOMATIC_INTERVALS_MINUTES: [u64; 9] = [1, 5, 15, 30, 60, 180, 360, 720, 1440];
const AUTOMATIC_BUCKET_TARGET: u64 = 300;

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/stats", get(event_stats))
}

#[derive(Serialize)]
struct StatsView {
    total: u64,
    distinct_sources: u64,
    interval_seconds: u64,
    histogram: Vec<BucketView>,
    /// Set when only the newest buckets are shown (no `since`, a fine `interval`).
    histogram_truncated: bool,
    top: serde_json::Map<String, serde_json::Value>,
    pots: Vec<PotActivityView>,
}

#[derive(Serialize)]
struct BucketView {
    start: String,
    count: u64,
}

#[derive(Serialize)]
struct RankedValueView {
    value: String,
    count: u64,
}

#[derive(Serialize)]
struct PotActivityView {
    node_id: u64,
    pot_id: String,
    events: u64,
    last_event: String,
}

async fn event_stats(
    State(state): State<Arc<ApiState>>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<StatsView>, ApiError> {
    let query = parse_stats_query(&parameters, Utc::now())?;
    let interval = query.interval;
    let stats = state.store.event_stats(query).await?;
    Ok(Json(stats_view(stats, interval)))
}

fn stats_view(stats: EventStats, interval: Duration) -> StatsView {
    let mut histogram = stats.histogram;
    let histogram_truncated = histogram.len() > MAX_HISTOGRAM_BUCKETS;
    if histogram_truncated {
        histogram.drain(..histogram.len() - MAX_HISTOGRAM_BUCKETS);
    }
    let top = stats
        .top
        .into_iter()
        .map(|(field, ranked)| {
            let values: Vec<RankedValueView> = ranked
                .into_iter()
                .map(|(value, count)| RankedValueView { value, count })
                .collect();
            (
                field.name().to_owned(),
                serde_json::to_value(values).unwrap_or_default(),
            )
        })
        .collect();
    StatsView {
        total: stats.total,
        distinct_sources: stats.distinct_sources,
        interval_seconds: interval.as_secs(),
        histogram: histogram
            .into_iter()
            .map(|(start, count)| BucketView {
                start: format_timestamp(start),
                count,
            })
            .collect(),
        histogram_truncated,
        top,
        pots: stats
            .pots
            .into_iter()
            .map(|pot| PotActivityView {
                node_id: pot.node_id,
                pot_id: pot.pot_id,
                events: pot.events,
                last_event: format_timestamp(pot.last_event),
            })
            .collect(),
    }
}

/// Turns query parameters into a stats query; an unknown parameter or a bad value is a 400
/// naming it. `now` stands in for a missing `until` when choosing the bucket width.
fn parse_stats_query(
    parameters: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<StatsQuery, ApiError> {
    if let Some(unknown) = parameters
        .keys()
        .find(|key| !KNOWN_PARAMETERS.contains(&key.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?}; known: {}",
            KNOWN_PARAMETERS.join(", ")
        )));
    }
    if let Some(empty) = KNOWN_PARAMETERS
        .iter()
        .find(|name| parameters.get(**name).is_some_and(String::is_empty))
    {
        return Err(ApiError::BadRequest(format!(
            "empty {empty}: give a value, or leave the parameter out"
        )));
    }
    // An until before since is an empty window, not an error: the document cannot say
    // otherwise, and a window that holds nothing has an exact answer.
    let since = parse_time_parameter(parameters, "since")?;
    let until = parse_time_parameter(parameters, "until")?;
    let node_id = match parameters.get("node_id") {
        None => None,
        Some(value) => Some(parse_unsigned_integer(value).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid node_id {value:?}: expected an unsigned integer"
            ))
        })?),
    };
    let top = match parameters.get("top") {
        None => StatField::ALL.to_vec(),
        Some(list) => parse_top_fields(list)?,
    };
    let limit = match parameters.get("limit") {
        None => DEFAULT_TOP_VALUES,
        Some(value) => match parse_unsigned_integer(value) {
            Some(limit) if (1..=MAX_TOP_VALUES as u64).contains(&limit) => limit as usize,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "invalid limit {value:?}: expected an integer from 1 to {MAX_TOP_VALUES}"
                )))
            }
        },
    };
    let window = since.map(|since| (until.unwrap_or(now) - since).to_std().unwrap_or_default());
    let interval = match parameters.get("interval") {
        None => automatic_interval(window),
        Some(value) => parse_interval(value)?,
    };
    Ok(StatsQuery {
        since,
        until,
        node_id,
        pot_id: parameters.get("pot_id").cloned(),
        event_type: parameters.get("event_type").cloned(),
        top,
        limit,
        interval,
    })
}

/// `top=src_ip,username`: the fields to rank, each once, in the order given.
fn parse_top_fields(list: &str) -> Result<Vec<StatField>, ApiError> {
    let mut fields = Vec::new();
    for name in list.split(',') {
        let field = StatField::parse(name).ok_or_else(|| {
            let known: Vec<&str> = StatField::ALL.iter().map(|field| field.name()).collect();
            ApiError::BadRequest(format!(
                "invalid top field {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

/// `interval=15m`: whole minutes (`m`), hours (`h`) or days (`d`), one to six digits with
/// no leading zero (the document's pattern); the store counts per minute.
fn parse_interval(value: &str) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::BadRequest(format!(
            "invalid interval {value:?}: expected a number from 1 to 999999 and a unit m, h or d (e.g. 5m, 1h, 1d)"
        ))
    };
    let split = value.len().checked_sub(1).ok_or_else(invalid)?;
    let (number, unit) = value.split_at(split);
    let minutes_per_unit = match unit {
        "m" => 1,
        "h" => 60,
        "d" => 1440,
        _ => return Err(invalid()),
    };
    if number.len() > 6 || number.starts_with('0') {
        return Err(invalid());
    }
    let count = parse_unsigned_integer(number).ok_or_else(invalid)?;
    Ok(Duration::from_secs(count * minutes_per_unit * 60))
}

/// The bucket width for a window: an hour when the window is open-ended.
fn automatic_interval(window: Option<Duration>) -> Duration {
    let Some(window) = window else {
        return Duration::from_secs(3600);
    };
    let window_minutes = window.as_secs() / 60;
    let minutes = AUTOMATIC_INTERVALS_MINUTES
        .into_iter()
        .find(|minutes| window_minutes / minutes <= AUTOMATIC_BUCKET_TARGET)
        .unwrap_or_else(|| (window_minutes / AUTOMATIC_BUCKET_TARGET).div_ceil(1440) * 1440);
    Duration::from_secs(minutes * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2024-01-15T12:00:00Z".parse().unwrap()
    }

    fn bad_request(pairs: &[(&str, &str)]) -> String {
        match parse_stats_query(&parameters(pairs), now()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn defaults_rank_every_field_hourly() {
        let query = parse_stats_query(&parameters(&[]), now()).unwrap();
        assert_eq!(query.top, StatField::ALL.to_vec());
        assert_eq!(query.limit, DEFAULT_TOP_VALUES);
        assert_eq!(query.interval, Duration::from_secs(3600));
        assert_eq!((query.since, query.until), (None, None));
    }

    #[test]
    fn the_automatic_interval_follows_the_window() {
        let interval = |since: &str| {
            parse_stats_query(&parameters(&[("since", since)]), now())
                .unwrap()
                .interval
                .as_secs()
        };
        assert_eq!(interval("2024-01-15T11:00:00Z"), 60);
        assert_eq!(interval("2024-01-14T12:00:00Z"), 5 * 60);
        assert_eq!(interval("2024-01-08T12:00:00Z"), 60 * 60);
        assert_eq!(interval("2023-01-15T12:00:00Z"), 2 * 1440 * 60);
    }

    #[test]
    fn top_limit_and_interval_are_parsed() {
        let query = parse_stats_query(
            &parameters(&[
                ("top", "username,src_ip,username"),
                ("limit", "3"),
                ("interval", "15m"),
                ("node_id", "4"),
                ("pot_id", "cowrie-01"),
            ]),
            now(),
        )
        .unwrap();
        assert_eq!(query.top, vec![StatField::Username, StatField::SrcIp]);
        assert_eq!(query.limit, 3);
        assert_eq!(query.interval, Duration::from_secs(900));
        assert_eq!(query.node_id, Some(4));
        assert_eq!(query.pot_id.as_deref(), Some("cowrie-01"));
        assert_eq!(
            parse_interval("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        assert!(bad_request(&[("top", "src_ip,colour")]).contains("\"colour\""));
        assert!(bad_request(&[("limit", "0")]).contains("limit \"0\""));
        assert!(bad_request(&[("limit", "1001")]).contains("1 to 1000"));
        for interval in ["", "m", "0m", "05m", "5", "5s", "1.5h", "+5m", "1234567d"] {
            let message = bad_request(&[("interval", interval)]);
            assert!(message.contains("interval"), "{interval}: {message}");
        }
        assert!(bad_request(&[("window", "1h")]).contains("unknown query parameter"));
    }

    #[test]
    fn a_long_histogram_keeps_its_newest_buckets() {
        let start: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let histogram = (0..MAX_HISTOGRAM_BUCKETS as i64 + 5)
            .map(|minute| (start + chrono::Duration::minutes(minute), 1))
            .collect();
        let view = stats_view(
            EventStats {
                histogram,
                ..EventStats::default()
            },
            Duration::from_secs(60),
        );
        assert!(view.histogram_truncated);
        assert_eq!(view.histogram.len(), MAX_HISTOGRAM_BUCKETS);
        assert_eq!(view.histogram[0].start, "2024-01-01T00:05:00Z");
    }
}
