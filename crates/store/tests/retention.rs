//! Dropping whole partitions against real files: by arrival time, by disk use, a purge up
//! to now; ids and resend marks outlive what was dropped, also across reopening.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use honeybee_store::{
    ColumnarEventStore, ColumnarOptions, EventOrder, EventQuery, EventStore, NewEvent,
    RetentionRule,
};

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-15T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn open(dir: &std::path::Path) -> ColumnarEventStore {
    ColumnarEventStore::open(ColumnarOptions::new(ColumnarOptions::directory_in(dir))).unwrap()
}

/// An event of node 1 that arrived `minutes` after the base time.
fn arriving(minutes: i64, seq: Option<u64>) -> NewEvent {
    NewEvent {
        node_id: 1,
        pot_id: "p".into(),
        pot_type: "cowrie".into(),
        event_type: "login".into(),
        timestamp: base_time(),
        received_at: base_time() + Duration::minutes(minutes),
        fields: Default::default(),
        data_json: format!("{{\"arrived\":{minutes}}}"),
        seq,
    }
}

/// Four hours of arrivals, ten events an hour, each hour its own sealed partition.
async fn four_sealed_hours(dir: &std::path::Path) -> ColumnarEventStore {
    let store = open(dir);
    for hour in 0..4 {
        let batch: Vec<NewEvent> = (0..10).map(|n| arriving(hour * 60 + n, None)).collect();
        store.insert_events(Arc::from(batch)).await.unwrap();
    }
    store.seal_now().unwrap();
    assert_eq!(store.partition_counts(), (4, 40, 0));
    store
}

async fn stored_ids(store: &ColumnarEventStore) -> Vec<i64> {
    store
        .query_events(EventQuery {
            order: EventOrder::Arrival,
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events
        .iter()
        .map(|event| event.id)
        .collect()
}

fn files(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(ColumnarOptions::directory_in(dir))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

#[tokio::test]
async fn partitions_that_arrived_before_the_cutoff_are_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = four_sealed_hours(dir.path()).await;
    // Through the middle of the third hour: that hour's partition holds later arrivals.
    let dropped = store
        .drop_events(RetentionRule {
            arrived_through: Some(base_time() + Duration::minutes(125)),
            ..RetentionRule::default()
        })
        .await
        .unwrap();
    assert_eq!((dropped.partitions, dropped.events), (2, 20));
    assert!(dropped.bytes > 0 && dropped.remaining_bytes > 0);
    assert_eq!(dropped.oldest_id, Some(21));
    assert_eq!(stored_ids(&store).await, (21..=40).collect::<Vec<_>>());
    assert_eq!(
        (
            files(dir.path(), ".parquet"),
            files(dir.path(), ".summary.zst"),
            files(dir.path(), ".postings")
        ),
        (2, 2, 2),
        "a dropped partition's summary and postings go with it"
    );
    let again = store
        .drop_events(RetentionRule {
            arrived_through: Some(base_time() + Duration::minutes(125)),
            ..RetentionRule::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (again.partitions, again.events),
        (0, 0),
        "nothing more to drop"
    );
    let stats = store
        .event_stats(honeybee_store::StatsQuery {
            since: None,
            until: None,
            node_id: None,
            pot_id: None,
            event_type: None,
            top: vec![],
            limit: 1,
            interval: std::time::Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(stats.total, 20, "statistics forget dropped events");
}

#[tokio::test]
async fn the_oldest_partitions_go_until_the_files_fit_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = four_sealed_hours(dir.path()).await;
    let total = store
        .drop_events(RetentionRule::default())
        .await
        .unwrap()
        .remaining_bytes;
    // A cap just under the total: only the oldest partition has to go.
    let dropped = store
        .drop_events(RetentionRule {
            max_disk_bytes: Some(total - 1),
            ..RetentionRule::default()
        })
        .await
        .unwrap();
    assert_eq!((dropped.partitions, dropped.events), (1, 10));
    assert_eq!(dropped.remaining_bytes, total - dropped.bytes);
    assert_eq!(stored_ids(&store).await, (11..=40).collect::<Vec<_>>());
    let dropped = store
        .drop_events(RetentionRule {
            max_disk_bytes: Some(0),
            ..RetentionRule::default()
        })
        .await
        .unwrap();
    assert_eq!(
        dropped.events, 30,
        "a zero cap leaves only what is not sealed"
    );
    assert_eq!(dropped.oldest_id, None);
}

#[tokio::test]
async fn a_purge_up_to_now_empties_the_store_and_ids_and_marks_live_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let batch: Vec<NewEvent> = (0..5).map(|n| arriving(n, Some(n as u64 + 1))).collect();
        store.insert_events(Arc::from(batch)).await.unwrap();
        // Retention alone leaves the partition taking appends.
        let kept = store
            .drop_events(RetentionRule {
                arrived_through: Some(base_time() + Duration::hours(1)),
                ..RetentionRule::default()
            })
            .await
            .unwrap();
        assert_eq!((kept.events, kept.oldest_id), (0, Some(1)));
        let purged = store
            .drop_events(RetentionRule {
                arrived_through: Some(base_time() + Duration::hours(1)),
                include_hot: true,
                ..RetentionRule::default()
            })
            .await
            .unwrap();
        assert_eq!((purged.events, purged.oldest_id), (5, None));
        assert!(stored_ids(&store).await.is_empty());
        assert_eq!(store.last_event_seq(1).await.unwrap(), Some(5));
    }
    let store = open(dir.path());
    assert!(stored_ids(&store).await.is_empty());
    assert_eq!(
        store.last_event_seq(1).await.unwrap(),
        Some(5),
        "a resend of a purged event is still known"
    );
    store
        .insert_events(Arc::from(vec![
            arriving(90, Some(5)),
            arriving(91, Some(6)),
        ]))
        .await
        .unwrap();
    assert_eq!(
        stored_ids(&store).await,
        vec![6],
        "seq 5 is a resend; ids go on from 6"
    );
}
