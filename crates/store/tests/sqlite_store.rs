//! The SQLite backend against a real database file: nodes, pots, events, filters,
//! keyset pagination and persistence across reopening.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use honeybee_store::{
    AccessStore, EventCursor, EventOrder, EventQuery, EventStore, FleetStore, NewEvent, NodeKind,
    NodeRegistrationRecord, NodeState, PotRecord, PotState, SqliteOptions, SqliteStore,
    SqliteSynchronous, StoredEvent, SOURCE_ADDRESS_KEYS,
};
use serde_json::{json, Map, Value};

fn options(dir: &tempfile::TempDir) -> SqliteOptions {
    SqliteOptions::new(SqliteStore::path_in(dir.path()), SqliteSynchronous::Normal)
}

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-15T10:30:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn event(node_id: u64, pot_id: &str, event_type: &str, seconds: i64, data: Value) -> NewEvent {
    let Value::Object(data) = data else {
        panic!("data must be an object")
    };
    NewEvent {
        node_id,
        pot_id: pot_id.into(),
        pot_type: "cowrie".into(),
        event_type: event_type.into(),
        timestamp: base_time() + Duration::seconds(seconds),
        received_at: Utc::now(),
        source_ip: SOURCE_ADDRESS_KEYS
            .iter()
            .find_map(|key| data.get(*key).and_then(Value::as_str).map(String::from)),
        data_json: Value::Object(data).to_string(),
        seq: None,
    }
}

fn registration(node_id: u64, name: &str) -> NodeRegistrationRecord {
    NodeRegistrationRecord {
        node_id,
        name: name.into(),
        address: "0.0.0.0".into(),
        port: 0,
        kind: NodeKind::Full,
        remote_address: "127.0.0.1:5000".into(),
        session_id: 1,
        at: base_time(),
    }
}

#[tokio::test]
async fn nodes_and_pots_are_tracked_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(&options(&dir)).unwrap();
        store
            .register_node(registration(7, "sensor-a"))
            .await
            .unwrap();
        store
            .update_node_state(7, NodeState::Running, base_time() + Duration::seconds(30))
            .await
            .unwrap();
        store
            .upsert_pot(PotRecord {
                node_id: 7,
                pot_id: "cowrie-01".into(),
                pot_type: "cowrie".into(),
                state: PotState::Running,
                message: Some("started".into()),
                updated_at: base_time(),
            })
            .await
            .unwrap();
        store.disconnect_node(7, 1, base_time()).await.unwrap();
    }
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let node = store.get_node(7).await.unwrap().expect("node 7 persisted");
    assert_eq!(node.name, "sensor-a");
    assert_eq!(node.reported_state, NodeState::Running);
    assert!(!node.connected);
    assert_eq!(node.last_seen, base_time() + Duration::seconds(30));
    assert_eq!(node.first_seen, base_time());
    assert!(store.get_node(8).await.unwrap().is_none());
    let pots = store.list_pots(Some(7)).await.unwrap();
    assert_eq!(pots.len(), 1);
    assert_eq!(pots[0].state, PotState::Running);
    assert!(store.list_pots(Some(8)).await.unwrap().is_empty());
    assert_eq!(store.list_pots(None).await.unwrap().len(), 1);
    store.delete_pot(7, "other".into()).await.unwrap();
    assert_eq!(store.list_pots(None).await.unwrap().len(), 1);

    // Registering again keeps first_seen and marks the node connected.
    let mut again = registration(7, "sensor-a-renamed");
    again.at = base_time() + Duration::seconds(60);
    store.register_node(again).await.unwrap();
    let node = store.get_node(7).await.unwrap().unwrap();
    assert!(node.connected);
    assert_eq!(node.name, "sensor-a-renamed");
    assert_eq!(node.first_seen, base_time());
    store.disconnect_all_nodes().await.unwrap();
    assert!(!store.list_nodes().await.unwrap()[0].connected);
    store.delete_pot(7, "cowrie-01".into()).await.unwrap();
    assert!(store.list_pots(Some(7)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_late_disconnect_of_a_replaced_session_does_not_disconnect_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let mut newer = registration(9, "reconnecting");
    newer.session_id = 2;
    store
        .register_node(registration(9, "reconnecting"))
        .await
        .unwrap();
    store.register_node(newer).await.unwrap();
    // The old session (1) finishes after the new one (2) registered.
    store.disconnect_node(9, 1, base_time()).await.unwrap();
    assert!(store.get_node(9).await.unwrap().unwrap().connected);
    store.disconnect_node(9, 2, base_time()).await.unwrap();
    assert!(!store.get_node(9).await.unwrap().unwrap().connected);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(&options(&dir)).unwrap());
    let connection = rusqlite::Connection::open(SqliteStore::path_in(dir.path())).unwrap();
    connection
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    drop(connection);
    let error = SqliteStore::open(&options(&dir)).err().unwrap().to_string();
    assert!(error.contains("99") && error.contains("newer"), "{error}");
}

#[tokio::test]
async fn large_node_ids_keep_their_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    store
        .register_node(registration(u64::MAX, "max"))
        .await
        .unwrap();
    assert_eq!(store.list_nodes().await.unwrap()[0].node_id, u64::MAX);
}

/// Follows the cursor from the first page to the last; no page holds more than asked.
async fn every_page(store: &SqliteStore, query: EventQuery) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = store
            .query_events(EventQuery {
                cursor,
                ..query.clone()
            })
            .await
            .unwrap();
        assert!(page.events.len() <= query.limit as usize);
        events.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return events,
        }
    }
}

/// The events of `source_ip`, newest first, as seconds after [`base_time`].
async fn seconds_by_source(store: &SqliteStore, source_ip: &str) -> Vec<i64> {
    let query = EventQuery {
        source_ip: Some(source_ip.into()),
        limit: 100,
        ..EventQuery::default()
    };
    store
        .query_events(query)
        .await
        .unwrap()
        .events
        .iter()
        .map(|event| (event.timestamp - base_time()).num_seconds())
        .collect()
}

/// The source index trails the newest events; a query by source finds them all the same,
/// before they join the index, after, and across a restart in between.
#[tokio::test]
async fn events_are_found_by_source_before_and_after_they_join_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let lagging = SqliteOptions {
        source_index_lag_events: 4,
        ..options(&dir)
    };
    // Numbered like a node's events: the store's bookkeeping of each node's highest seq
    // must not confuse which events are indexed.
    let numbered = |seconds: i64, source_ip: &str| NewEvent {
        seq: Some(seconds as u64),
        ..event(
            1_000_000,
            "p",
            "login",
            seconds,
            json!({"src_ip": source_ip}),
        )
    };
    let attacker = |seconds| numbered(seconds, "203.0.113.7");
    let other = |seconds| numbered(seconds, "198.51.100.4");
    let store = SqliteStore::open(&lagging).unwrap();
    store
        .insert_events(Arc::from(vec![attacker(1), other(2), attacker(3)]))
        .await
        .unwrap();
    assert_eq!(
        seconds_by_source(&store, "203.0.113.7").await,
        vec![3, 1],
        "none indexed yet"
    );
    drop(store);
    let store = SqliteStore::open(&lagging).unwrap();
    assert_eq!(
        seconds_by_source(&store, "203.0.113.7").await,
        vec![3, 1],
        "after a restart"
    );
    store
        .insert_events(Arc::from(vec![other(4), attacker(5)]))
        .await
        .unwrap();
    assert_eq!(
        seconds_by_source(&store, "203.0.113.7").await,
        vec![5, 3, 1],
        "all five indexed"
    );
    store
        .insert_events(Arc::from(vec![attacker(6)]))
        .await
        .unwrap();
    assert_eq!(
        seconds_by_source(&store, "203.0.113.7").await,
        vec![6, 5, 3, 1],
        "indexed and not"
    );
}

#[tokio::test]
async fn events_filter_and_paginate_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny source partitions, and a small lag: the batches below spread each address over
    // several partitions, and the newest events are not indexed yet.
    let store = SqliteStore::open(&SqliteOptions {
        source_partition_events: 3,
        source_index_lag_events: 5,
        ..options(&dir)
    })
    .unwrap();
    let mut batch = Vec::new();
    for index in 0..25 {
        let pot = if index % 2 == 0 { "even" } else { "odd" };
        let kind = if index % 5 == 0 { "login" } else { "command" };
        let data = if index % 3 == 0 {
            json!({"src_ip": "203.0.113.7", "n": index})
        } else {
            json!({"ip": "198.51.100.4", "n": index})
        };
        batch.push(event(index as u64 % 2 + 1, pot, kind, index, data));
    }
    // Two events with the same timestamp: the id breaks the tie.
    batch.push(event(1, "even", "tie", 100, json!({"n": 100})));
    batch.push(event(1, "even", "tie", 100, json!({"n": 101})));
    // Stored in batches of four, the newest batch first, so the source partitions are
    // written out of timestamp order and the merge has to order them.
    for chunk in batch.chunks(4).rev() {
        store
            .insert_events(Arc::from(chunk.to_vec()))
            .await
            .unwrap();
    }

    let numbers = |events: &[StoredEvent]| -> Vec<i64> {
        events
            .iter()
            .map(|event| {
                let data: Map<String, Value> = serde_json::from_str(&event.data_json).unwrap();
                data["n"].as_i64().unwrap()
            })
            .collect()
    };

    let all = store.query_events(EventQuery::default()).await.unwrap();
    let mut expected: Vec<i64> = (0..25).rev().collect();
    expected.insert(0, 100);
    expected.insert(0, 101);
    assert_eq!(numbers(&all.events), expected);
    assert!(all.next_cursor.is_none());

    // Keyset pagination visits every event exactly once, in order, whatever the page size:
    // with 1 the cursor falls between the two events that share a timestamp.
    for page_size in [1, 4, 26] {
        let query = EventQuery {
            limit: page_size,
            ..EventQuery::default()
        };
        let seen = numbers(&every_page(&store, query).await);
        assert_eq!(seen, expected, "page size {page_size}");
    }

    // Pagination combined with a filter.
    let query = EventQuery {
        limit: 2,
        pot_id: Some("even".into()),
        ..EventQuery::default()
    };
    let seen = numbers(&every_page(&store, query).await);
    let mut even: Vec<i64> = vec![101, 100];
    even.extend((0..25).rev().filter(|n| n % 2 == 0));
    assert_eq!(seen, even);

    let by_pot = store
        .query_events(EventQuery {
            pot_id: Some("odd".into()),
            event_type: Some("login".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(numbers(&by_pot.events), vec![15, 5]);

    let by_source = store
        .query_events(EventQuery {
            source_ip: Some("203.0.113.7".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        numbers(&by_source.events),
        vec![24, 21, 18, 15, 12, 9, 6, 3, 0]
    );
    // Paging through one address crosses partitions: every event once, newest first.
    for page_size in [1, 2, 4] {
        let query = EventQuery {
            limit: page_size,
            source_ip: Some("203.0.113.7".into()),
            ..EventQuery::default()
        };
        let seen = numbers(&every_page(&store, query).await);
        assert_eq!(
            seen,
            vec![24, 21, 18, 15, 12, 9, 6, 3, 0],
            "page size {page_size}"
        );
    }
    let source_window = store
        .query_events(EventQuery {
            source_ip: Some("203.0.113.7".into()),
            since: Some(base_time() + Duration::seconds(6)),
            until: Some(base_time() + Duration::seconds(18)),
            event_type: Some("login".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(numbers(&source_window.events), vec![15]);
    let by_plain_ip = store
        .query_events(EventQuery {
            source_ip: Some("198.51.100.4".into()),
            node_id: Some(1),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        numbers(&by_plain_ip.events),
        vec![22, 20, 16, 14, 10, 8, 4, 2]
    );

    let window = store
        .query_events(EventQuery {
            since: Some(base_time() + Duration::seconds(10)),
            until: Some(base_time() + Duration::seconds(12)),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(numbers(&window.events), vec![12, 11, 10]);
}

#[tokio::test]
async fn api_tokens_are_kept_by_hash_with_their_role() {
    use honeybee_store::{ApiRole, ApiTokenRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    assert_eq!(store.count_api_tokens().await.unwrap(), 0);
    store
        .create_api_token(ApiTokenRecord {
            token_hash: "ab12".into(),
            name: "ops".into(),
            role: ApiRole::Admin,
            created_at: base_time(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.api_token_role("ab12".into()).await.unwrap(),
        Some(ApiRole::Admin)
    );
    assert_eq!(store.api_token_role("other".into()).await.unwrap(), None);
    assert_eq!(store.count_api_tokens().await.unwrap(), 1);
}

#[tokio::test]
async fn enrollment_tokens_are_consumed_once_per_use_and_honour_expiry_and_revocation() {
    use honeybee_store::{EnrollmentOutcome, NewEnrollmentToken};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let token = |hash: &str, uses, expires_at| NewEnrollmentToken {
        token_hash: hash.into(),
        name: hash.into(),
        uses,
        expires_at,
        created_at: base_time(),
    };
    let now = base_time();
    store
        .create_enrollment_token(token("two", 2, None))
        .await
        .unwrap();
    let expired = Some(now - Duration::seconds(1));
    store
        .create_enrollment_token(token("old", 5, expired))
        .await
        .unwrap();
    let revoked = store
        .create_enrollment_token(token("gone", 5, None))
        .await
        .unwrap();
    assert!(store.revoke_enrollment_token(revoked, now).await.unwrap());
    assert!(!store.revoke_enrollment_token(9999, now).await.unwrap());

    let enroll = |node_id: u64, hash: Option<&str>| {
        store.enroll_node(
            node_id,
            format!("SECRET{node_id}"),
            hash.map(Into::into),
            now,
            WINDOW,
        )
    };
    assert_eq!(
        enroll(1, Some("two")).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(1, Some("old")).await.unwrap(),
        EnrollmentOutcome::TokenExpired
    );
    // Once node 1 proved itself with a code, its credential is settled.
    assert!(store.use_totp_step(1, 10).await.unwrap());
    assert_eq!(
        enroll(1, Some("two")).await.unwrap(),
        EnrollmentOutcome::AlreadyEnrolled
    );
    assert_eq!(
        enroll(2, Some("two")).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(3, Some("two")).await.unwrap(),
        EnrollmentOutcome::TokenUsedUp
    );
    // A new secret for node 2, whose first one was never confirmed, costs a use too: the
    // spent token no longer gives one.
    assert_eq!(
        enroll(2, Some("two")).await.unwrap(),
        EnrollmentOutcome::TokenUsedUp
    );
    assert_eq!(
        enroll(3, Some("old")).await.unwrap(),
        EnrollmentOutcome::TokenExpired
    );
    assert_eq!(
        enroll(3, Some("gone")).await.unwrap(),
        EnrollmentOutcome::TokenRevoked
    );
    assert_eq!(
        enroll(3, Some("nope")).await.unwrap(),
        EnrollmentOutcome::TokenUnknown
    );
    assert_eq!(enroll(3, None).await.unwrap(), EnrollmentOutcome::Enrolled);

    let listed = store.list_enrollment_tokens().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!((listed[0].uses_total, listed[0].uses_left), (2, 0));
    assert_eq!(listed[2].revoked_at, Some(now));
    let credential = store.node_credential(1).await.unwrap().unwrap();
    assert_eq!(credential.totp_secret, "SECRET1");
    assert_eq!(credential.last_totp_step, 10);
    assert_eq!(store.node_credential(4).await.unwrap(), None);
}

/// How long an openly enrolled, unconfirmed id may be given a new secret without a token.
const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test]
async fn an_unconfirmed_secret_is_reissued_only_with_a_new_token_use_or_briefly_when_open() {
    use honeybee_store::{EnrollmentOutcome, NewEnrollmentToken};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let now = base_time();
    store
        .create_enrollment_token(NewEnrollmentToken {
            token_hash: "three".into(),
            name: "three".into(),
            uses: 3,
            expires_at: None,
            created_at: now,
        })
        .await
        .unwrap();
    let enroll = |node_id: u64, hash: Option<&str>, at| {
        store.enroll_node(
            node_id,
            format!("S{node_id}"),
            hash.map(Into::into),
            at,
            WINDOW,
        )
    };
    // Open enrollment: within the window the lost ack is made good; after it, never again,
    // and a later re-issue does not move the window.
    assert_eq!(
        enroll(5, None, now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    let inside = now + Duration::seconds(50);
    assert_eq!(
        enroll(5, None, inside).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    let after = now + Duration::seconds(61);
    assert_eq!(
        enroll(5, None, after).await.unwrap(),
        EnrollmentOutcome::ReissueWindowClosed
    );
    // A confirmed credential is settled even inside the window.
    assert_eq!(
        enroll(6, None, now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    // Confirming a secret the id no longer has changes nothing (a newer one was issued).
    store
        .confirm_node_credential(6, "older".into())
        .await
        .unwrap();
    assert!(!store.node_credential(6).await.unwrap().unwrap().confirmed);
    store.confirm_node_credential(6, "S6".into()).await.unwrap();
    assert!(store.node_credential(6).await.unwrap().unwrap().confirmed);
    assert_eq!(
        enroll(6, None, inside).await.unwrap(),
        EnrollmentOutcome::AlreadyEnrolled
    );
    // With a token, each new secret costs a use, window or not.
    assert_eq!(
        enroll(7, Some("three"), now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(7, Some("three"), after).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        store.node_credential(7).await.unwrap().unwrap().totp_secret,
        "S7"
    );
    let uses_left = store.list_enrollment_tokens().await.unwrap()[0].uses_left;
    assert_eq!(uses_left, 1);
}

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = SqliteStore::path_in(dir.path());
    // A database and a side file left world-readable by an older run are tightened too.
    let shared_memory = format!("{}-shm", path.display());
    for file in [path.display().to_string(), shared_memory] {
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = SqliteStore::open(&options(&dir)).unwrap();
    store
        .enroll_node(1, "S".into(), None, base_time(), WINDOW)
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
}

#[tokio::test]
async fn a_totp_step_is_used_once_and_a_revoked_node_uses_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let now = base_time();
    store
        .enroll_node(7, "S".into(), None, now, WINDOW)
        .await
        .unwrap();
    assert!(store.use_totp_step(7, 100).await.unwrap());
    assert!(!store.use_totp_step(7, 100).await.unwrap(), "replayed step");
    assert!(!store.use_totp_step(7, 99).await.unwrap(), "older step");
    assert!(store.use_totp_step(7, 101).await.unwrap());
    assert!(!store.use_totp_step(8, 101).await.unwrap(), "unknown node");

    let revoked_at = store.revoke_node(7, now).await.unwrap();
    assert_eq!(revoked_at, now);
    let later = now + Duration::seconds(5);
    assert_eq!(
        store.revoke_node(7, later).await.unwrap(),
        now,
        "first revocation kept"
    );
    assert!(!store.use_totp_step(7, 200).await.unwrap());
    assert_eq!(
        store.node_credential(7).await.unwrap().unwrap().revoked_at,
        Some(now)
    );
    // An id that never enrolled is revoked too and can no longer enroll.
    store.revoke_node(9, now).await.unwrap();
    assert_eq!(
        store
            .enroll_node(9, "S".into(), None, now, WINDOW)
            .await
            .unwrap(),
        honeybee_store::EnrollmentOutcome::AlreadyEnrolled
    );
}

#[tokio::test]
async fn an_event_resent_with_the_same_node_and_seq_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let numbered = |node_id, seq| NewEvent {
        seq: Some(seq),
        ..event(node_id, "p", "login", seq as i64, json!({}))
    };
    assert_eq!(store.last_event_seq(1).await.unwrap(), None);
    let first: Vec<NewEvent> = (1..=3).map(|seq| numbered(1, seq)).collect();
    assert_eq!(store.insert_events(Arc::from(first)).await.unwrap(), 3);
    // A resend overlapping the first batch, another node's same numbers, and events
    // without a seq (never de-duplicated).
    let mut second: Vec<NewEvent> = (2..=5).map(|seq| numbered(1, seq)).collect();
    second.push(numbered(2, 2));
    second.push(event(1, "p", "login", 0, json!({})));
    second.push(event(1, "p", "login", 0, json!({})));
    assert_eq!(store.insert_events(Arc::from(second)).await.unwrap(), 5);
    assert_eq!(store.last_event_seq(1).await.unwrap(), Some(5));
    assert_eq!(store.last_event_seq(2).await.unwrap(), Some(2));
    let page = store
        .query_events(EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 8);
}

#[tokio::test]
async fn committed_events_reach_the_database_file_without_a_checkpoint_in_any_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let path = SqliteStore::path_in(dir.path());
    let empty_size = std::fs::metadata(&path).unwrap().len();
    let batch: Vec<NewEvent> = (0..2000)
        .map(|n| {
            event(
                1,
                "pot",
                "cowrie.login.failed",
                n,
                json!({"padding": "x".repeat(400)}),
            )
        })
        .collect();
    store.insert_events(Arc::from(batch)).await.unwrap();
    // A megabyte is far below the writer's own checkpoint threshold: only the checkpointer
    // thread can have copied the pages into the database file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size > empty_size + 512 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {size} bytes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A page ends at its byte budget as well as at `limit`; `next_cursor` continues after the
/// last event returned, so paging by bytes still sees every event once and in order. The
/// same holds for a query by source across partitions and the events not yet indexed.
#[tokio::test]
async fn a_page_stops_at_its_byte_budget_and_the_next_page_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let small_partitions = SqliteOptions {
        source_partition_events: 3,
        source_index_lag_events: 2,
        ..options(&dir)
    };
    let store = SqliteStore::open(&small_partitions).unwrap();
    // Ten events of about 1,000 bytes of data each, one of them (second 4) of 5,000.
    let events: Vec<NewEvent> = (0..10)
        .map(|seconds| {
            let filler = "f".repeat(if seconds == 4 { 5_000 } else { 1_000 });
            event(
                1,
                "p",
                "big",
                seconds,
                json!({"src_ip": "203.0.113.7", "n": seconds, "filler": filler}),
            )
        })
        .collect();
    for event in events {
        store.insert_events(Arc::from(vec![event])).await.unwrap();
    }
    for source_ip in [None, Some("203.0.113.7".to_string())] {
        let query = EventQuery {
            source_ip: source_ip.clone(),
            limit: 100,
            max_bytes: 2_500,
            ..EventQuery::default()
        };
        let first = store.query_events(query.clone()).await.unwrap();
        let seconds = |events: &[StoredEvent]| -> Vec<i64> {
            events
                .iter()
                .map(|event| (event.timestamp - base_time()).num_seconds())
                .collect()
        };
        assert_eq!(
            seconds(&first.events),
            vec![9, 8],
            "two events of ~1,000 bytes fit in 2,500, a third does not ({source_ip:?})"
        );
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
            let bytes: usize = page.events.iter().map(|e| e.data_json.len()).sum();
            assert!(
                bytes <= 2_500 || page.events.len() == 1,
                "a page over its budget holds one event only"
            );
            all.extend(seconds(&page.events));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(all, (0..10).rev().collect::<Vec<_>>(), "{source_ip:?}");
        assert_eq!(
            sizes,
            vec![2, 2, 1, 1, 2, 2],
            "the 5,000-byte event is a page of its own ({source_ip:?})"
        );
    }
}

/// Follows the store in arrival order from `after_id`, page by page, as the live stream and
/// exports do: each page starts after the last id of the one before.
async fn follow(store: &SqliteStore, query: &EventQuery, after_id: i64) -> (Vec<StoredEvent>, i64) {
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
async fn arrival_order_pages_forward_from_any_id_without_gaps_or_repeats_whatever_the_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    // Stored in three batches; the last one is a node's spool delivered late: its events
    // carry timestamps older than everything stored before them.
    let batches = [
        (0..30)
            .map(|n| {
                event(
                    1,
                    "a",
                    "login",
                    100 + n,
                    json!({"n": n, "src_ip": "192.0.2.1"}),
                )
            })
            .collect::<Vec<_>>(),
        (30..50)
            .map(|n| event(2, "b", "command", 200 + n, json!({"n": n})))
            .collect(),
        (50..70)
            .map(|n| {
                event(
                    1,
                    "a",
                    "login",
                    n - 1000,
                    json!({"n": n, "src_ip": "192.0.2.1"}),
                )
            })
            .collect(),
    ];
    let small_pages = EventQuery {
        limit: 7,
        ..EventQuery::default()
    };
    let (first_two, position) = {
        for batch in &batches[..2] {
            store.insert_events(Arc::from(batch.clone())).await.unwrap();
        }
        follow(&store, &small_pages, 0).await
    };
    let number = |event: &StoredEvent| {
        serde_json::from_str::<Value>(&event.data_json).unwrap()["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        first_two.iter().map(number).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    // The late batch: a follower that has seen everything so far gets exactly it, although
    // newest-first by timestamp it sorts below every event seen before.
    store
        .insert_events(Arc::from(batches[2].clone()))
        .await
        .unwrap();
    let (late, end) = follow(&store, &small_pages, position).await;
    assert_eq!(
        late.iter().map(number).collect::<Vec<_>>(),
        (50..70).collect::<Vec<_>>()
    );
    let (nothing, same_end) = follow(&store, &small_pages, end).await;
    assert!(nothing.is_empty());
    assert_eq!(
        same_end, end,
        "an empty page leaves the position where it was"
    );

    // Filters apply in arrival order, the source address included.
    let by_source = EventQuery {
        source_ip: Some("192.0.2.1".into()),
        limit: 4,
        ..EventQuery::default()
    };
    let (from_source, _) = follow(&store, &by_source, 0).await;
    assert_eq!(
        from_source.iter().map(number).collect::<Vec<_>>(),
        (0..30).chain(50..70).collect::<Vec<_>>()
    );
    let by_node = EventQuery {
        node_id: Some(2),
        ..EventQuery::default()
    };
    assert_eq!(follow(&store, &by_node, 0).await.0.len(), 20);

    // A page that is full says so with a cursor, which continues after its last event.
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
    let next = store
        .query_events(EventQuery {
            order: EventOrder::Arrival,
            cursor: Some(cursor),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.events.iter().map(number).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );

    // Newest first, `after_id` keeps only what was stored after that id: here the late
    // batch, which sorts oldest by its timestamps.
    let after = every_page(
        &store,
        EventQuery {
            after_id: Some(position),
            ..EventQuery::default()
        },
    )
    .await;
    assert_eq!(
        after.iter().map(number).collect::<Vec<_>>(),
        (50..70).rev().collect::<Vec<_>>()
    );
}
