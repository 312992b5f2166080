//! `/api/v1/events`: stored events, newest first, with filters and keyset pagination.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use honeybee_protocol::{format_timestamp, parse_timestamp_text};
use honeybee_store::{EventCursor, EventQuery, StoredEvent, DEFAULT_EVENT_PAGE, MAX_EVENT_PAGE};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ApiError, ApiState};

const KNOWN_PARAMETERS: [&str; 8] = [
    "node_id",
    "pot_id",
    "event_type",
    "src_ip",
    "since",
    "until",
    "limit",
    "cursor",
];

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/events", get(list_events))
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
        })
    }
}

#[derive(Serialize)]
struct EventList {
    events: Vec<EventView>,
    /// Pass as `cursor` to get the next page; `null` on the last page. A page may hold
    /// fewer than `limit` events while this is set: it also ends at `[api] page_max_bytes`.
    next_cursor: Option<String>,
}

async fn list_events(
    State(state): State<Arc<ApiState>>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<EventList>, ApiError> {
    let query = parse_query(&parameters, state.event_page_max_bytes)?;
    let page = state.store.query_events(query).await?;
    let events = page
        .events
        .into_iter()
        .map(EventView::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Json(EventList {
        events,
        next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
    }))
}

/// Turns query parameters into a store query; any unknown parameter or bad value is a 400
/// naming it, so a typo never silently widens a search.
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
    let text = |name: &str| parameters.get(name).filter(|v| !v.is_empty()).cloned();
    let node_id = match parameters.get("node_id") {
        None => None,
        Some(value) => Some(value.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid node_id {value:?}: expected an unsigned integer"
            ))
        })?),
    };
    let limit = match parameters.get("limit") {
        None => DEFAULT_EVENT_PAGE,
        Some(value) => match value.parse::<u32>() {
            Ok(limit) if (1..=MAX_EVENT_PAGE).contains(&limit) => limit,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "invalid limit {value:?}: expected an integer from 1 to {MAX_EVENT_PAGE}"
                )))
            }
        },
    };
    let cursor = match parameters.get("cursor").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => Some(EventCursor::decode(value)?),
    };
    Ok(EventQuery {
        node_id,
        pot_id: text("pot_id"),
        event_type: text("event_type"),
        source_ip: text("src_ip"),
        since: parse_time_parameter(parameters, "since")?,
        until: parse_time_parameter(parameters, "until")?,
        limit,
        max_bytes,
        cursor,
    })
}

fn parse_time_parameter(
    parameters: &HashMap<String, String>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(value) = parameters.get(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // An unencoded `+` in an offset arrives as a space; read it back as `+`.
    parse_timestamp_text(value)
        .or_else(|| parse_timestamp_text(&value.replace(' ', "+")))
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid {name} {value:?}: expected an RFC 3339 time such as 2024-01-15T10:30:00Z"
            ))
        })
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
        assert_eq!(
            query.cursor,
            Some(EventCursor {
                timestamp_micros: 5,
                id: 9
            })
        );
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
}
