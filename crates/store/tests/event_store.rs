//! The event store against real files: filters, both page orders, byte budgets, resends,
//! sealing into Parquet, reopening after a crash, and moving an earlier release's events.
//! Most scenarios run twice — every event in the hot log, and partitions of three events
//! so nearly all of them are sealed — and must give the same answers.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use honeybee_store::{
    ColumnarEventStore, ColumnarOptions, EmbeddedStore, EventFields, EventOrder, EventQuery,
    EventStore, NewEvent, SqliteOptions, SqliteStore, SqliteSynchronous, StoredEvent,
};
use serde_json::{json, Value};

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-15T10:30:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The two layouts every scenario runs in.
const PARTITION_SIZES: [usize; 2] = [1_000_000, 3];

fn open(dir: &tempfile::TempDir, partition_max_events: usize) -> ColumnarEventStore {
    ColumnarEventStore::open(ColumnarOptions {
        partition_max_events,
        ..ColumnarOptions::new(ColumnarOptions::directory_in(dir.path()))
    })
    .unwrap()
}

fn event(node_id: u64, pot_id: &str, event_type: &str, seconds: i64, data: Value) -> NewEvent {
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(String::from);
    NewEvent {
        node_id,
        pot_id: pot_id.into(),
        pot_type: "cowrie".into(),
        event_type: event_type.into(),
        timestamp: base_time() + Duration::seconds(seconds),
        received_at: base_time(),
        fields: EventFields {
            src_ip: text("src_ip"),
            username: text("username"),
            session: text("session"),
            country: text("country"),
            src_port: data
                .get("src_port")
                .and_then(Value::as_u64)
                .map(|port| port as u16),
            ..EventFields::default()
        },
        data_json: data.to_string(),
        seq: None,
    }
}

fn number(event: &StoredEvent) -> i64 {
    serde_json::from_str::<Value>(&event.data_json).unwrap()["n"]
        .as_i64()
        .unwrap()
}

fn numbers(events: &[StoredEvent]) -> Vec<i64> {
    events.iter().map(number).collect()
}

/// Every page of `query`, following `next_cursor`.
async fn every_page(store: &ColumnarEventStore, query: EventQuery) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query_events(EventQuery {
                cursor,
                ..query.clone()
            })
            .await
            .unwrap();
        all.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

async fn store_with_27_events(
    dir: &tempfile::TempDir,
    partition_max_events: usize,
) -> ColumnarEventStore {
    let store = open(dir, partition_max_events);
    let mut batch = Vec::new();
    for n in 0..27 {
        let pot = if n % 2 == 0 { "even" } else { "odd" };
        let kind = if n % 5 == 0 { "login" } else { "command" };
        let data = if n % 3 == 0 {
            json!({"src_ip": "203.0.113.7", "username": "root", "country": "NL", "src_port": 40000 + n, "n": n})
        } else {
            json!({"src_ip": "198.51.100.4", "username": "admin", "session": format!("s{}", n % 4), "n": n})
        };
        // Timestamps out of arrival order: the page order is the arrival order.
        batch.push(event(n as u64 % 2 + 1, pot, kind, (n * 7) % 27, data));
    }
    for chunk in batch.chunks(4) {
        store
            .insert_events(Arc::from(chunk.to_vec()))
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn events_filter_and_paginate_newest_first_whether_hot_or_sealed() {
    for partition_max_events in PARTITION_SIZES {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_27_events(&dir, partition_max_events).await;
        store.seal_now().unwrap_or(());
        let all_newest_first: Vec<i64> = (0..27).rev().collect();
        let all = store.query_events(EventQuery::default()).await.unwrap();
        assert_eq!(
            numbers(&all.events),
            all_newest_first,
            "{partition_max_events}"
        );
        assert!(all.next_cursor.is_none());
        let ids: Vec<i64> = all.events.iter().map(|event| event.id).collect();
        assert_eq!(ids, (1..=27).rev().collect::<Vec<_>>(), "dense arrival ids");
        for limit in [1, 4, 27] {
            let query = EventQuery {
                limit,
                ..EventQuery::default()
            };
            assert_eq!(numbers(&every_page(&store, query).await), all_newest_first);
        }
        let filtered = |query: EventQuery| {
            let store = &store;
            async move {
                let mut seen = Vec::new();
                for limit in [1, 2, 100] {
                    let pages = numbers(
                        &every_page(
                            store,
                            EventQuery {
                                limit,
                                ..query.clone()
                            },
                        )
                        .await,
                    );
                    if limit > 1 {
                        assert_eq!(pages, seen, "page size {limit} for {query:?}");
                    }
                    seen = pages;
                }
                seen
            }
        };
        let keep = |test: fn(i64) -> bool| (0..27).rev().filter(|n| test(*n)).collect::<Vec<i64>>();
        assert_eq!(
            filtered(EventQuery {
                pot_id: Some("odd".into()),
                event_type: Some("login".into()),
                ..EventQuery::default()
            })
            .await,
            vec![25, 15, 5]
        );
        let by = |fields: EventFields| EventQuery {
            fields,
            ..EventQuery::default()
        };
        assert_eq!(
            filtered(by(EventFields {
                src_ip: Some("203.0.113.7".into()),
                ..EventFields::default()
            }))
            .await,
            keep(|n| n % 3 == 0)
        );
        assert_eq!(
            filtered(by(EventFields {
                username: Some("admin".into()),
                session: Some("s1".into()),
                ..EventFields::default()
            }))
            .await,
            keep(|n| n % 3 != 0 && n % 4 == 1)
        );
        assert_eq!(
            filtered(by(EventFields {
                country: Some("NL".into()),
                src_port: Some(40_012),
                ..EventFields::default()
            }))
            .await,
            vec![12]
        );
        for absent in [
            EventFields {
                username: Some("nobody".into()),
                ..EventFields::default()
            },
            EventFields {
                src_port: Some(1),
                ..EventFields::default()
            },
        ] {
            assert!(filtered(by(absent)).await.is_empty());
        }
        assert_eq!(
            filtered(EventQuery {
                node_id: Some(1),
                fields: EventFields {
                    src_ip: Some("198.51.100.4".into()),
                    ..EventFields::default()
                },
                ..EventQuery::default()
            })
            .await,
            keep(|n| n % 2 == 0 && n % 3 != 0)
        );
        // since and until: the event's own time, both ends included.
        assert_eq!(
            filtered(EventQuery {
                since: Some(base_time() + Duration::seconds(10)),
                until: Some(base_time() + Duration::seconds(12)),
                ..EventQuery::default()
            })
            .await,
            keep(|n| (10..=12).contains(&((n * 7) % 27)))
        );
    }
}

/// Follows the store in arrival order from `after_id`, page by page, as the live stream and
/// exports do: each page starts after the last id of the one before.
async fn follow(
    store: &ColumnarEventStore,
    query: &EventQuery,
    after_id: i64,
) -> (Vec<StoredEvent>, i64) {
    let mut seen = Vec::new();
    let mut position = after_id;
    loop {
        let page = store
            .query_events(EventQuery {
                after_id: Some(position),
                order: EventOrder::Arrival,
                ..query.clone()
            })
            .await
            .unwrap();
        let Some(last) = page.events.last() else {
            return (seen, position);
        };
        position = last.id;
        seen.extend(page.events);
    }
}

#[tokio::test]
async fn arrival_order_pages_forward_from_any_id_without_gaps_or_repeats_while_partitions_seal() {
    for partition_max_events in PARTITION_SIZES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, partition_max_events);
        let small_pages = EventQuery {
            limit: 7,
            ..EventQuery::default()
        };
        let mut position = 0;
        let mut seen = Vec::new();
        // Batches land while the follower reads; the last ones are a spool delivered late,
        // with timestamps older than everything before them.
        for batch_start in (0..70).step_by(10) {
            let batch: Vec<NewEvent> = (batch_start..batch_start + 10)
                .map(|n| {
                    let seconds = if n >= 50 { n - 1000 } else { n };
                    event(
                        1 + n as u64 % 2,
                        "a",
                        "login",
                        seconds,
                        json!({"n": n, "src_ip": "192.0.2.1"}),
                    )
                })
                .collect();
            store.insert_events(Arc::from(batch)).await.unwrap();
            let (page, end) = follow(&store, &small_pages, position).await;
            seen.extend(numbers(&page));
            position = end;
        }
        assert_eq!(seen, (0..70).collect::<Vec<_>>(), "{partition_max_events}");
        let (nothing, same) = follow(&store, &small_pages, position).await;
        assert!(nothing.is_empty());
        assert_eq!(
            same, position,
            "an empty page leaves the position where it was"
        );
        // From any id: exactly the events after it.
        for start in [0, 1, 2, 3, 33, 69] {
            let (rest, _) = follow(&store, &small_pages, start).await;
            assert_eq!(
                numbers(&rest),
                (start..70).collect::<Vec<_>>(),
                "after {start}"
            );
        }
        let by_node = EventQuery {
            node_id: Some(2),
            limit: 3,
            ..EventQuery::default()
        };
        assert_eq!(
            numbers(&follow(&store, &by_node, 0).await.0),
            (0..70).filter(|n| n % 2 == 1).collect::<Vec<_>>()
        );
        // A full page says so with a cursor that continues after its last event.
        let page = store
            .query_events(EventQuery {
                order: EventOrder::Arrival,
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        let cursor = page.next_cursor.expect("more events follow");
        assert_eq!(cursor.id, page.events.last().unwrap().id);
        // Newest first, after_id keeps only what was stored after that id.
        let after = every_page(
            &store,
            EventQuery {
                after_id: Some(60),
                limit: 4,
                ..EventQuery::default()
            },
        )
        .await;
        assert_eq!(numbers(&after), (60..70).rev().collect::<Vec<_>>());
    }
}

/// A page ends at its byte budget as well as at `limit`; the cursor continues after the
/// last event returned, so paging by bytes still sees every event once and in order.
#[tokio::test]
async fn a_page_stops_at_its_byte_budget_and_the_next_page_continues_after_it() {
    for partition_max_events in PARTITION_SIZES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, partition_max_events);
        for n in 0..10 {
            let filler = "f".repeat(if n == 4 { 5_000 } else { 1_000 });
            let big = event(1, "p", "big", n, json!({"n": n, "filler": filler}));
            store.insert_events(Arc::from(vec![big])).await.unwrap();
        }
        let query = EventQuery {
            limit: 100,
            max_bytes: 2_500,
            ..EventQuery::default()
        };
        let first = store.query_events(query.clone()).await.unwrap();
        assert_eq!(numbers(&first.events), vec![9, 8]);
        assert!(
            first.next_cursor.is_some(),
            "fewer than limit, more to come"
        );
        let mut sizes = Vec::new();
        let mut cursor = None;
        let mut all = Vec::new();
        loop {
            let page = store
                .query_events(EventQuery {
                    cursor,
                    ..query.clone()
                })
                .await
                .unwrap();
            sizes.push(page.events.len());
            all.extend(numbers(&page.events));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(all, (0..10).rev().collect::<Vec<_>>());
        assert_eq!(
            sizes,
            vec![2, 2, 1, 1, 2, 2],
            "the 5,000-byte event is a page of its own"
        );
    }
}

#[tokio::test]
async fn a_resent_event_is_stored_once_and_the_marks_survive_reopening() {
    for partition_max_events in PARTITION_SIZES {
        let dir = tempfile::tempdir().unwrap();
        let numbered = |node_id, seq: u64| NewEvent {
            seq: Some(seq),
            ..event(node_id, "p", "login", seq as i64, json!({"n": seq}))
        };
        {
            let store = open(&dir, partition_max_events);
            assert_eq!(store.last_event_seq(1).await.unwrap(), None);
            let first: Vec<NewEvent> = (1..=3).map(|seq| numbered(1, seq)).collect();
            assert_eq!(store.insert_events(Arc::from(first)).await.unwrap(), 3);
            let mut second: Vec<NewEvent> = (2..=5).map(|seq| numbered(1, seq)).collect();
            second.push(numbered(2, 2));
            second.push(event(1, "p", "login", 0, json!({"n": 0})));
            second.push(event(1, "p", "login", 0, json!({"n": 0})));
            assert_eq!(store.insert_events(Arc::from(second)).await.unwrap(), 5);
            assert_eq!(store.last_event_seq(1).await.unwrap(), Some(5));
            assert_eq!(store.last_event_seq(2).await.unwrap(), Some(2));
        }
        let store = open(&dir, partition_max_events);
        assert_eq!(store.last_event_seq(1).await.unwrap(), Some(5));
        assert_eq!(store.last_event_seq(2).await.unwrap(), Some(2));
        let resend: Vec<NewEvent> = (4..=6).map(|seq| numbered(1, seq)).collect();
        assert_eq!(store.insert_events(Arc::from(resend)).await.unwrap(), 1);
        let all = store.query_events(EventQuery::default()).await.unwrap();
        assert_eq!(all.events.len(), 9);
        assert_eq!(all.events[0].id, 9, "ids go on after reopening");
    }
}

fn files_in(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_crash_loses_only_the_torn_batch_and_reopening_replays_and_seals_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = ColumnarOptions::directory_in(dir.path());
    {
        let store = open(&dir, 1_000_000);
        let batch: Vec<NewEvent> = (0..20)
            .map(|n| event(1, "p", "login", n, json!({"n": n, "src_ip": "192.0.2.9"})))
            .collect();
        store.insert_events(Arc::from(batch)).await.unwrap();
        // Not sealed: the events are only in the log when the store goes away.
    }
    let logs = files_in(&events_dir, ".log");
    assert!(!logs.is_empty());
    // The torn end of a batch that was being written, and a seal left half-done.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.last().unwrap())
        .unwrap();
    log.write_all(&[200, 0, 0, 0, 9, 9, 9]).unwrap();
    let leftover = events_dir.join("part-00000000000000000999.parquet.tmp");
    std::fs::write(&leftover, b"half").unwrap();

    let store = open(&dir, 1_000_000);
    let all = every_page(&store, EventQuery::default()).await;
    assert_eq!(numbers(&all), (0..20).rev().collect::<Vec<_>>());
    assert!(!leftover.exists(), "leftovers are removed");
    store.seal_now().unwrap();
    let (sealed, sealed_events, hot_events) = store.partition_counts();
    assert_eq!((sealed, sealed_events, hot_events), (1, 20, 0));
    assert_eq!(files_in(&events_dir, ".parquet").len(), 1);
    let next = event(1, "p", "login", 30, json!({"n": 20}));
    store.insert_events(Arc::from(vec![next])).await.unwrap();
    let newest = store
        .query_events(EventQuery {
            limit: 1,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.events[0].id, 21);
    assert_eq!(
        every_page(
            &store,
            EventQuery {
                fields: EventFields {
                    src_ip: Some("192.0.2.9".into()),
                    ..EventFields::default()
                },
                ..EventQuery::default()
            }
        )
        .await
        .len(),
        20
    );
}

#[tokio::test]
async fn a_partition_holds_one_hour_of_arrivals_and_payloads_come_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1_000_000);
    let odd_text = r#"{"n":1, "spaced" : "é\u00e9",  "dup":1,"dup":2}"#;
    let mut first = event(1, "p", "login", 0, json!({}));
    first.data_json = odd_text.into();
    let mut later = event(1, "p", "login", 0, json!({"n": 2}));
    later.received_at = base_time() + Duration::hours(1);
    store.insert_events(Arc::from(vec![first])).await.unwrap();
    store.insert_events(Arc::from(vec![later])).await.unwrap();
    store.seal_now().unwrap();
    assert_eq!(store.partition_counts(), (2, 2, 0));
    let all = store.query_events(EventQuery::default()).await.unwrap();
    assert_eq!(all.events[1].data_json, odd_text);
    assert_eq!(all.events[0].received_at, base_time() + Duration::hours(1));
}

#[tokio::test]
async fn every_event_comes_back_with_its_fields_whether_hot_or_sealed() {
    let every_field = EventFields {
        src_ip: Some("203.0.113.7".into()),
        src_port: Some(40_022),
        dst_port: Some(22),
        username: Some("root".into()),
        password: Some("pa\"ss".into()),
        command: Some("wget http://198.51.100.9/x.sh".into()),
        session: Some("c0ffee".into()),
        url: Some("http://198.51.100.9/x.sh".into()),
        file_hash: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        protocol: Some("ssh".into()),
        country: Some("NL".into()),
        city: Some("Amsterdam".into()),
        asn: Some(64_496),
    };
    let mut full = event(1, "p", "cowrie.command.input", 0, json!({"n": 1}));
    full.fields = every_field.clone();
    let bare = event(1, "p", "cowrie.session.closed", 1, json!({"n": 2}));
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1_000_000);
    store
        .insert_events(Arc::from(vec![full, bare]))
        .await
        .unwrap();
    for layout in ["hot", "sealed"] {
        if layout == "sealed" {
            store.seal_now().unwrap();
        }
        let page = store.query_events(EventQuery::default()).await.unwrap();
        assert_eq!(page.events.len(), 2, "{layout}");
        assert_eq!(page.events[1].fields, every_field, "{layout}");
        assert_eq!(page.events[0].fields, EventFields::default(), "{layout}");
    }
}

/// An earlier release kept events in the SQLite database's `events` table. Opening the
/// embedded store moves them, with their ids, and drops the table.
#[tokio::test]
async fn events_of_an_earlier_release_are_moved_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let control = SqliteOptions::new(SqliteStore::path_in(dir.path()), SqliteSynchronous::Normal);
    drop(SqliteStore::open(&control).unwrap());
    {
        // Rows as that release wrote them; ids with a gap, as rowids may have.
        let connection = rusqlite::Connection::open(SqliteStore::path_in(dir.path())).unwrap();
        for (id, n) in [(1, 0), (2, 1), (5, 2)] {
            connection
                .execute(
                    "INSERT INTO events (id, node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq)
                     VALUES (?1, 3, 'p', 'cowrie', 'login', ?2, ?2, '192.0.2.1', ?3, ?4)",
                    rusqlite::params![
                        id,
                        base_time().timestamp_micros() + n,
                        json!({"n": n, "username": "root"}).to_string(),
                        n + 10
                    ],
                )
                .unwrap();
        }
    }
    let fields_of = |text: &str| EventFields {
        username: serde_json::from_str::<Value>(text).unwrap()["username"]
            .as_str()
            .map(String::from),
        ..EventFields::default()
    };
    let events = ColumnarOptions::new(ColumnarOptions::directory_in(dir.path()));
    let store = EmbeddedStore::open(&control, events.clone(), &fields_of).unwrap();
    let moved = store.query_events(EventQuery::default()).await.unwrap();
    assert_eq!(
        moved.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![5, 2, 1]
    );
    assert_eq!(numbers(&moved.events), vec![2, 1, 0]);
    assert_eq!(store.last_event_seq(3).await.unwrap(), Some(12));
    let by_user = store
        .query_events(EventQuery {
            fields: EventFields {
                username: Some("root".into()),
                ..EventFields::default()
            },
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_user.events.len(),
        3,
        "the fields were taken from the payloads"
    );
    assert_eq!(
        store.control.legacy_event_count().unwrap(),
        None,
        "the old table is gone"
    );
    store
        .insert_events(Arc::from(vec![event(3, "p", "login", 9, json!({"n": 3}))]))
        .await
        .unwrap();
    let newest = store
        .query_events(EventQuery {
            limit: 1,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.events[0].id, 6, "new ids go on after the moved ones");
    drop(store);
    // Opening again moves nothing twice.
    let store = EmbeddedStore::open(&control, events, &fields_of).unwrap();
    assert_eq!(
        every_page(&store.events, EventQuery::default()).await.len(),
        4
    );
}
