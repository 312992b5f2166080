//! How a page of events is cut: at most `limit` events and at most `max_bytes` of their
//! `data` text, and reading rows stops as soon as the page is known to be full, so a page of
//! large events is never read whole into memory only to be cut afterwards.
//!
//! Every reader returns the page's events plus at most one more (the first event of the
//! next page), which tells that another page exists. A page holds at least one event,
//! whatever its size, so paging always moves on.

use rusqlite::Row;

use crate::error::StoreError;
use crate::model::StoredEvent;

/// How many of `events` (newest first) make up the page.
pub(super) fn page_length(events: &[StoredEvent], limit: usize, max_bytes: usize) -> usize {
    let mut bytes = 0usize;
    for (index, event) in events.iter().enumerate() {
        bytes = bytes.saturating_add(event.data_json.len());
        if index == limit || (index > 0 && bytes > max_bytes) {
            return index;
        }
    }
    events.len()
}

/// Reads events from `rows` (newest first) until the page is full and the first event
/// beyond it was read, or the rows end.
pub(super) fn read_page_rows(
    mut rows: rusqlite::Rows<'_>,
    limit: usize,
    max_bytes: usize,
    convert: fn(&Row<'_>) -> Result<StoredEvent, StoreError>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let event = convert(row)?;
        bytes = bytes.saturating_add(event.data_json.len());
        let beyond_the_page = events.len() == limit || (!events.is_empty() && bytes > max_bytes);
        events.push(event);
        if beyond_the_page {
            break;
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event_of(bytes: usize) -> StoredEvent {
        StoredEvent {
            id: 1,
            node_id: 1,
            pot_id: "p".into(),
            pot_type: "t".into(),
            event_type: "e".into(),
            timestamp: Utc::now(),
            received_at: Utc::now(),
            data_json: "x".repeat(bytes),
        }
    }

    #[test]
    fn a_page_ends_at_the_limit_or_at_the_byte_budget_whichever_comes_first() {
        let events: Vec<StoredEvent> = [10, 10, 10, 10].map(event_of).into();
        assert_eq!(page_length(&events, 2, 1000), 2);
        assert_eq!(
            page_length(&events, 10, 25),
            2,
            "a third would make 30 bytes"
        );
        assert_eq!(page_length(&events, 10, 30), 3);
        assert_eq!(page_length(&events, 10, 1000), 4);
        let huge: Vec<StoredEvent> = [100, 1].map(event_of).into();
        assert_eq!(
            page_length(&huge, 10, 50),
            1,
            "an oversized event still makes a page"
        );
    }
}
