//! `/api/v1/events`: stored events, newest first or in the order they were stored
//! (`order=asc`, from `after_id`), with filters and keyset pagination; `DELETE` purges
//! whole partitions stored up to a time (admin).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use honeybee_protocol::format_timestamp;
use honeybee_store::RetentionRule;
use honeybee_store::{
    EventCursor, EventFields, EventOrder, EventQuery, StoreError, StoredEvent, DEFAULT_EVENT_PAGE,
    MAX_EVENT_PAGE,
};
use serde::Serialize;
use serde_json::value::RawValue;

use super::integer_parameter::parse_unsigned_integer;
use super::{ApiError, ApiState};

const KNOWN_PARAMETERS: [&str; 21] = [
    "node_id",
    "pot_id",
    "event_type",
    "src_ip",
    "src_port",
    "dst_port",
    "username",
    "password",
    "command",
    "session",
    "url",
    "file_hash",
    "protocol",
    "country",
    "asn",
    "since",
    "until",
    "limit",
    "cursor",
    "after_id",
    "order",
];

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/events", get(list_events).delete(purge_events))
}

/// An event as the API shows it; `data` is passed through as stored.
#[derive(Serialize)]
struct EventView {
    id: i64,
    node_id: u64,
    pot_id: String,
    pot_type: String,
    event_type: String,
    timestamp: String,
    received_at: String,
    data: Box<RawValue>,
    fields: FieldsView,
}

/// The well-known fields taken from `data` at ingest, and the GeoIP enrichment of the
/// source address; a field the event does not have is left out.
#[derive(Serialize)]
struct FieldsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    asn: Option<u32>,
}

impl From<EventFields> for FieldsView {
    fn from(fields: EventFields) -> Self {
        FieldsView {
            src_ip: fields.src_ip,
            src_port: fields.src_port,
            dst_port: fields.dst_port,
            username: fields.username,
            password: fields.password,
            command: fields.command,
            session: fields.session,
            url: fields.url,
            file_hash: fields.file_hash,
            protocol: fields.protocol,
            country: fields.country,
            city: fields.city,
            asn: fields.asn,
        }
    }
}

impl TryFrom<StoredEvent> for EventView {
    type Error = ApiError;

    fn try_from(event: StoredEvent) -> Result<Self, ApiError> {
        let data = RawValue::from_string(event.data_json).map_err(|error| {
            ApiError::Internal(format!(
                "stored event {} has invalid data: {error}",
                event.id
            ))
        })?;
        Ok(EventView {
            id: event.id,
            node_id: event.node_id,
            pot_id: event.pot_id,
            pot_type: event.pot_type,
            event_type: event.event_type,
            timestamp: format_timestamp(event.timestamp),
            received_at: format_timestamp(event.received_at),
            data,
            fields: event.fields.into(),
        })
    }
}

#[derive(Serialize)]
struct EventList {
    events: Vec<EventView>,
    /// Pass as `cursor` to get the next page; `null` on the last page. A page may hold
    /// fewer than `limit` events while this is set: it also ends at `[api] page_max_bytes`.
    next_cursor: Option<String>,
    /// In arrival order (`order=asc`): pass as `after_id` to follow on — the last event's
    /// id, or where this page started when it is empty. `null` newest first.
    next_after_id: Option<i64>,
}

async fn list_events(
    State(state): State<Arc<ApiState>>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<EventList>, ApiError> {
    let query = parse_query(&parameters, state.event_page_max_bytes)?;
    let start = query
        .after_id
        .unwrap_or(0)
        .max(query.cursor.map_or(0, |cursor| cursor.id));
    let arrival = query.order == EventOrder::Arrival;
    let page = state.store.query_events(query).await?;
    let next_after_id = arrival.then(|| page.events.last().map_or(start, |last| last.id));
    let events = page
        .events
        .into_iter()
        .map(EventView::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Json(EventList {
        events,
        next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
        next_after_id,
    }))
}

/// What a purge removed.
#[derive(Serialize)]
struct PurgeView {
    deleted_events: u64,
    deleted_partitions: usize,
    deleted_bytes: u64,
    remaining_bytes: u64,
    /// The lowest id still stored; `null` when nothing is.
    oldest_id: Option<i64>,
}

/// `DELETE /api/v1/events?until=T`: drops every partition whose events were all stored
/// (arrived) at or before `until`, the newest included, so `until` = now empties the store.
async fn purge_events(
    State(state): State<Arc<ApiState>>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<PurgeView>, ApiError> {
    if let Some(unknown) = parameters.keys().find(|key| key.as_str() != "until") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?}; known: until"
        )));
    }
    let until = parse_time_parameter(&parameters, "until")?.ok_or_else(|| {
        ApiError::BadRequest(
            "until is required: the time up to which stored events are deleted (RFC 3339)".into(),
        )
    })?;
    let dropped = state
        .store
        .drop_events(RetentionRule {
            arrived_through: Some(until),
            max_disk_bytes: None,
            include_hot: true,
        })
        .await;
    let dropped = match dropped {
        Ok(dropped) => dropped,
        Err(error) => {
            state.metrics.retention_failures.increment();
            return Err(error.into());
        }
    };
    crate::retention::record_drop(&state.metrics, &dropped, "purge");
    Ok(Json(PurgeView {
        deleted_events: dropped.events,
        deleted_partitions: dropped.partitions,
        deleted_bytes: dropped.bytes,
        remaining_bytes: dropped.remaining_bytes,
        oldest_id: dropped.oldest_id,
    }))
}

/// Turns query parameters into a store query; any unknown parameter or bad value is a 400
/// naming it, so a typo never silently widens a search. An empty value (`until=`) is a bad
/// value too: a parameter left out means "no filter", one given must filter.
fn parse_query(
    parameters: &HashMap<String, String>,
    max_bytes: usize,
) -> Result<EventQuery, ApiError> {
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
            "empty {empty}: give a value, or leave the parameter out for no {empty} filter"
        )));
    }
    let text = |name: &str| parameters.get(name).cloned();
    let node_id = match parameters.get("node_id") {
        None => None,
        Some(value) => Some(parse_unsigned_integer(value).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid node_id {value:?}: expected an unsigned integer"
            ))
        })?),
    };
    let limit = match parameters.get("limit") {
        None => DEFAULT_EVENT_PAGE,
        Some(value) => match parse_unsigned_integer(value) {
            Some(limit) if (1..=u64::from(MAX_EVENT_PAGE)).contains(&limit) => limit as u32,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "invalid limit {value:?}: expected an integer from 1 to {MAX_EVENT_PAGE}"
                )))
            }
        },
    };
    let cursor = match parameters.get("cursor") {
        None => None,
        Some(value) if is_cursor_shaped(value) => Some(EventCursor::decode(value)?),
        Some(value) => return Err(StoreError::InvalidCursor(value.clone()).into()),
    };
    let after_id = match parameters.get("after_id") {
        None => None,
        Some(value) => match parse_unsigned_integer(value).and_then(|id| i64::try_from(id).ok()) {
            Some(id) => Some(id),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "invalid after_id {value:?}: expected an event id, an integer from 0 to {}",
                    i64::MAX
                )))
            }
        },
    };
    let order = match parameters.get("order").map(String::as_str) {
        None | Some("desc") => EventOrder::NewestFirst,
        Some("asc") => EventOrder::Arrival,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid order {other:?}: expected asc (the order events were stored in) or desc (newest first)"
            )))
        }
    };
    Ok(EventQuery {
        node_id,
        pot_id: text("pot_id"),
        event_type: text("event_type"),
        fields: EventFields {
            src_ip: text("src_ip"),
            src_port: number_parameter(parameters, "src_port")?,
            dst_port: number_parameter(parameters, "dst_port")?,
            username: text("username"),
            password: text("password"),
            command: text("command"),
            session: text("session"),
            url: text("url"),
            file_hash: text("file_hash"),
            protocol: text("protocol"),
            // Stored as ISO codes in capitals.
            country: text("country").map(|country| country.to_ascii_uppercase()),
            city: None,
            asn: number_parameter(parameters, "asn")?,
        },
        since: parse_time_parameter(parameters, "since")?,
        until: parse_time_parameter(parameters, "until")?,
        limit,
        max_bytes,
        cursor,
        after_id,
        order,
    })
}

/// Reads a numeric filter (a port, an ASN): an unsigned integer that fits `T`.
fn number_parameter<T: TryFrom<u64>>(
    parameters: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = parameters.get(name) else {
        return Ok(None);
    };
    parse_unsigned_integer(value)
        .and_then(|number| T::try_from(number).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid {name} {value:?}: expected an unsigned integer in range"
            ))
        })
}

/// Whether `value` has the shape of a `next_cursor` as the OpenAPI document's pattern
/// describes it (`^([0-9]{1,18}|-?[0-9]{1,18}_[0-9]{1,18})$`: an event id, or an earlier
/// release's `<timestamp>_<id>`): at most 18 digits each, so every value of that shape fits
/// the store's integers and the pattern admits exactly what is accepted.
fn is_cursor_shaped(value: &str) -> bool {
    let digits = |text: &str| {
        (1..=18).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit())
    };
    match value.split_once('_') {
        Some((timestamp, id)) => {
            digits(timestamp.strip_prefix('-').unwrap_or(timestamp)) && digits(id)
        }
        None => digits(value),
    }
}

/// Reads `since` or `until`: an RFC 3339 date-time (`T` between date and time, an offset
/// required), as the document's `date-time` format says; nothing looser, so what the
/// document refuses the API refuses too.
pub(super) fn parse_time_parameter(
    parameters: &HashMap<String, String>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(value) = parameters.get(name) else {
        return Ok(None);
    };
    // An unencoded `+` in an offset arrives as a space; read it back as `+`.
    parse_rfc3339_date_time(value)
        .or_else(|| parse_rfc3339_date_time(&value.replace(' ', "+")))
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid {name} {value:?}: expected an RFC 3339 time such as 2024-01-15T10:30:00Z"
            ))
        })
}

/// RFC 3339 strictly: chrono also takes a space between date and time, which the
/// `date-time` format does not.
fn parse_rfc3339_date_time(text: &str) -> Option<DateTime<Utc>> {
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|parsed| parsed.with_timezone(&Utc))
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

    fn bad_request(pairs: &[(&str, &str)]) -> String {
        match parse_query(&parameters(pairs), 1 << 20) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn arrival_order_and_after_id_are_parsed_and_bad_values_named() {
        let query = parse_query(
            &parameters(&[("after_id", "41"), ("order", "asc")]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            (query.after_id, query.order),
            (Some(41), EventOrder::Arrival)
        );
        let default = parse_query(&parameters(&[]), 1 << 20).unwrap();
        assert_eq!(
            (default.after_id, default.order),
            (None, EventOrder::NewestFirst)
        );
        assert!(bad_request(&[("order", "up")]).contains("order"));
        for after_id in ["-1", "x", "9223372036854775808"] {
            assert!(
                bad_request(&[("after_id", after_id)]).contains("after_id"),
                "{after_id}"
            );
        }
    }

    #[test]
    fn filters_are_parsed() {
        let query = parse_query(
            &parameters(&[
                ("node_id", "7"),
                ("pot_id", "cowrie-01"),
                ("since", "2024-01-15T12:30:00 02:00"),
                ("limit", "1000"),
                ("cursor", "5_9"),
            ]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(query.node_id, Some(7));
        assert_eq!(query.pot_id.as_deref(), Some("cowrie-01"));
        assert_eq!(
            format_timestamp(query.since.unwrap()),
            "2024-01-15T10:30:00Z"
        );
        assert_eq!(query.limit, 1000);
        assert_eq!(query.cursor, Some(EventCursor { id: 9 }));
    }

    #[test]
    fn bad_filters_name_the_parameter_and_value() {
        assert!(bad_request(&[("limit", "0")]).contains("limit \"0\""));
        assert!(bad_request(&[("limit", "1001")]).contains("1 to 1000"));
        assert!(bad_request(&[("node_id", "-1")]).contains("node_id \"-1\""));
        assert!(bad_request(&[("since", "yesterday")]).contains("since \"yesterday\""));
        assert!(bad_request(&[("cursor", "zzz")]).contains("cursor"));
        assert!(bad_request(&[("pot", "x")]).contains("unknown query parameter \"pot\""));
    }

    /// Each was accepted once although the OpenAPI document refuses it.
    #[test]
    fn values_the_document_refuses_are_refused() {
        for name in KNOWN_PARAMETERS {
            let message = bad_request(&[(name, "")]);
            assert!(message.starts_with(&format!("empty {name}:")), "{message}");
        }
        assert!(bad_request(&[("node_id", "+7")]).contains("node_id \"+7\""));
        assert!(bad_request(&[("limit", "+5")]).contains("limit \"+5\""));
        assert!(bad_request(&[("until", "2024-01-15 10:30:00Z")]).contains("until"));
        assert!(bad_request(&[("since", "2024-01-15T10:30:00")]).contains("since"));
        assert!(bad_request(&[("since", " 2024-01-15T10:30:00Z")]).contains("since"));
        for cursor in [
            "-5",
            "5_",
            "_9",
            "+5_9",
            "5_-9",
            "1234567890123456789_1",
            "1234567890123456789",
        ] {
            assert!(
                bad_request(&[("cursor", cursor)]).contains("cursor"),
                "{cursor}"
            );
        }
    }

    #[test]
    fn every_cursor_of_the_documented_shape_is_read() {
        let query = parse_query(
            &parameters(&[("cursor", "-999999999999999999_999999999999999999")]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            query.cursor,
            Some(EventCursor {
                id: 999_999_999_999_999_999
            })
        );
        let query = parse_query(&parameters(&[("cursor", "999999999999999999")]), 1 << 20).unwrap();
        assert_eq!(
            query.cursor,
            Some(EventCursor {
                id: 999_999_999_999_999_999
            })
        );
        let query =
            parse_query(&parameters(&[("until", "2024-01-15t10:30:00.5z")]), 1 << 20).unwrap();
        assert_eq!(
            format_timestamp(query.until.unwrap()),
            "2024-01-15T10:30:00.500Z"
        );
    }
}
