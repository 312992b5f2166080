//! Statistics of the event store against a count made here by hand: the same answers
//! whether the events are in the hot log, in sealed partitions read through their summaries
//! or through their columns, and after reopening.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use honeybee_store::{
    ColumnarEventStore, ColumnarOptions, EventFields, EventStats, EventStore, NewEvent,
    PotActivity, RetentionRule, StatField, StatsQuery,
};

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-15T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn open(dir: &std::path::Path, partition_max_events: usize) -> ColumnarEventStore {
    ColumnarEventStore::open(ColumnarOptions {
        partition_max_events,
        ..ColumnarOptions::new(ColumnarOptions::directory_in(dir))
    })
    .unwrap()
}

/// Stores `events` five to a batch, so that small partitions rotate between batches.
async fn insert_in_batches_of_five(store: &ColumnarEventStore, events: &[NewEvent]) {
    for chunk in events.chunks(5) {
        store
            .insert_events(Arc::from(chunk.to_vec()))
            .await
            .unwrap();
    }
}

fn pick(options: &[&'static str], k: u64) -> &'static str {
    options[(k % options.len() as u64) as usize]
}

/// 60 events over two hours, out of time order, with repeating sources and credentials.
fn events() -> Vec<NewEvent> {
    (0..60u64)
        .map(|n| {
            let minute = ((n * 37) % 120) as i64;
            let login = n % 3 != 0;
            NewEvent {
                node_id: n % 2 + 1,
                pot_id: pick(&["cowrie-a", "cowrie-b", "web"], n / 7).into(),
                pot_type: "cowrie".into(),
                event_type: if login { "login" } else { "command" }.into(),
                timestamp: base_time() + Duration::minutes(minute) + Duration::seconds(11),
                received_at: base_time(),
                fields: EventFields {
                    src_ip: Some(
                        pick(
                            &[
                                "203.0.113.7",
                                "198.51.100.4",
                                "192.0.2.1",
                                "192.0.2.2",
                                "192.0.2.3",
                            ],
                            n * 7 / 3,
                        )
                        .into(),
                    ),
                    username: login.then(|| pick(&["root", "admin", "pi"], n / 2).into()),
                    password: login
                        // A value with escapes in JSON: summaries decode it, not borrow it.
                        .then(|| pick(&["123456", "root", "", "pa\"ss\\wörd\t"], n / 2).into()),
                    command: (!login).then(|| pick(&["uname -a", "wget http://x/y"], n).into()),
                    country: (n % 5 != 0).then(|| pick(&["NL", "CN", "US"], n / 3).into()),
                    asn: (n % 4 == 0).then_some(64496 + (n % 8) as u32),
                    ..EventFields::default()
                },
                data_json: format!("{{\"n\":{n}}}"),
                seq: None,
            }
        })
        .collect()
}

fn field_value(event: &NewEvent, field: StatField) -> Option<String> {
    match field {
        StatField::SrcIp => event.fields.src_ip.clone(),
        StatField::Username => event.fields.username.clone(),
        StatField::Password => event.fields.password.clone(),
        StatField::Command => event.fields.command.clone(),
        StatField::Country => event.fields.country.clone(),
        StatField::Asn => event.fields.asn.map(|asn| asn.to_string()),
        StatField::EventType => Some(event.event_type.clone()),
        StatField::PotId => Some(event.pot_id.clone()),
        StatField::NodeId => Some(event.node_id.to_string()),
    }
}

/// The answer to `query` counted directly from the events.
fn counted_by_hand(events: &[NewEvent], query: &StatsQuery) -> EventStats {
    let selected: Vec<&NewEvent> = events
        .iter()
        .filter(|event| {
            query.since.is_none_or(|since| event.timestamp >= since)
                && query.until.is_none_or(|until| event.timestamp <= until)
                && query.node_id.is_none_or(|node| event.node_id == node)
                && query.pot_id.as_ref().is_none_or(|pot| &event.pot_id == pot)
                && query
                    .event_type
                    .as_ref()
                    .is_none_or(|kind| &event.event_type == kind)
        })
        .collect();
    let interval = Duration::from_std(query.interval).unwrap();
    let mut buckets: HashMap<DateTime<Utc>, u64> = HashMap::new();
    let mut pots: HashMap<(u64, String), (u64, DateTime<Utc>)> = HashMap::new();
    for event in &selected {
        *buckets
            .entry(event.timestamp.duration_trunc(interval).unwrap())
            .or_default() += 1;
        let pot = pots
            .entry((event.node_id, event.pot_id.clone()))
            .or_insert((0, event.timestamp));
        pot.0 += 1;
        pot.1 = pot.1.max(event.timestamp);
    }
    let mut histogram: Vec<_> = buckets.into_iter().collect();
    histogram.sort();
    let ranked = |field: StatField| {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for event in &selected {
            if let Some(value) = field_value(event, field) {
                *counts.entry(value).or_default() += 1;
            }
        }
        counts
    };
    let top = query
        .top
        .iter()
        .map(|field| {
            let mut values: Vec<(String, u64)> = ranked(*field).into_iter().collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            values.truncate(query.limit);
            (*field, values)
        })
        .collect();
    let mut pots: Vec<PotActivity> = pots
        .into_iter()
        .map(|((node_id, pot_id), (events, last_event))| PotActivity {
            node_id,
            pot_id,
            events,
            last_event,
        })
        .collect();
    pots.sort_by(|a, b| (a.node_id, &a.pot_id).cmp(&(b.node_id, &b.pot_id)));
    EventStats {
        total: selected.len() as u64,
        distinct_sources: ranked(StatField::SrcIp).len() as u64,
        histogram,
        top,
        pots,
    }
}

fn queries() -> Vec<StatsQuery> {
    let everything = StatsQuery {
        since: None,
        until: None,
        node_id: None,
        pot_id: None,
        event_type: None,
        top: StatField::ALL.to_vec(),
        limit: 3,
        interval: StdDuration::from_secs(15 * 60),
    };
    vec![
        everything.clone(),
        StatsQuery {
            since: Some(base_time() + Duration::minutes(20)),
            until: Some(base_time() + Duration::minutes(95) + Duration::seconds(11)),
            interval: StdDuration::from_secs(60),
            limit: 100,
            ..everything.clone()
        },
        StatsQuery {
            pot_id: Some("web".into()),
            top: vec![StatField::Command, StatField::SrcIp],
            ..everything.clone()
        },
        StatsQuery {
            node_id: Some(2),
            event_type: Some("login".into()),
            top: vec![StatField::Password, StatField::Username, StatField::Asn],
            interval: StdDuration::from_secs(3600),
            ..everything.clone()
        },
        StatsQuery {
            since: Some(base_time() + Duration::hours(3)),
            ..everything
        },
    ]
}

async fn assert_stats_match(store: &ColumnarEventStore, events: &[NewEvent], layout: &str) {
    for query in queries() {
        let expected = counted_by_hand(events, &query);
        let answered = store.event_stats(query.clone()).await.unwrap();
        assert_eq!(answered, expected, "{layout}: {query:?}");
    }
}

#[tokio::test]
async fn statistics_are_exact_in_every_layout_and_after_reopening() {
    let events = events();
    assert!(
        counted_by_hand(&events, &queries()[0]).distinct_sources > 3,
        "the data ranks more values than the limit shows"
    );
    for partition_max_events in [1_000_000, 7] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), partition_max_events);
        insert_in_batches_of_five(&store, &events).await;
        assert_stats_match(
            &store,
            &events,
            &format!("{partition_max_events}, before sealing"),
        )
        .await;
        store.seal_now().unwrap();
        let summaries = std::fs::read_dir(ColumnarOptions::directory_in(dir.path()))
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("part-")
                    && entry
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".summary.zst")
            })
            .count();
        let (sealed, _, _) = store.partition_counts();
        assert_eq!(summaries, sealed, "one summary per sealed partition");
        assert_stats_match(&store, &events, &format!("{partition_max_events}, sealed")).await;
        drop(store);
        let store = open(dir.path(), partition_max_events);
        assert_stats_match(
            &store,
            &events,
            &format!("{partition_max_events}, reopened"),
        )
        .await;
    }
}

#[tokio::test]
async fn statistics_past_their_memory_limit_stop_with_a_clear_error() {
    // In memory, and sealed (counted from partition summaries).
    for sealed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = ColumnarEventStore::open(ColumnarOptions {
            stats_max_bytes: 1_500,
            partition_max_events: 7,
            ..ColumnarOptions::new(ColumnarOptions::directory_in(dir.path()))
        })
        .unwrap();
        insert_in_batches_of_five(&store, &events()).await;
        if sealed {
            store.seal_now().unwrap();
        }
        let error = store.event_stats(queries()[0].clone()).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("more distinct values than 1500 bytes"),
            "sealed {sealed}: {error}"
        );
        let narrow = StatsQuery {
            pot_id: Some("web".into()),
            event_type: Some("command".into()),
            ..queries()[0].clone()
        };
        assert!(
            store.event_stats(narrow).await.is_ok(),
            "sealed {sealed}: a narrower window fits"
        );
    }
}

#[tokio::test]
async fn a_missing_or_damaged_summary_is_counted_from_the_columns() {
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    insert_in_batches_of_five(&store, &events).await;
    store.seal_now().unwrap();
    drop(store);
    let directory = ColumnarOptions::directory_in(dir.path());
    let mut summaries: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".summary.zst"))
        .collect();
    summaries.sort();
    assert!(summaries.len() >= 2);
    std::fs::remove_file(&summaries[0]).unwrap();
    std::fs::write(&summaries[1], b"not zstd").unwrap();
    let store = open(dir.path(), 10);
    assert_stats_match(&store, &events, "summaries missing or damaged").await;
}

/// The day summaries in `dir`'s event directory, oldest day first.
fn day_summaries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut days: Vec<_> = std::fs::read_dir(ColumnarOptions::directory_in(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("day-") && name.ends_with(".summary.zst")
        })
        .collect();
    days.sort();
    days
}

fn wait_for_day_summaries(dir: &std::path::Path, count: usize) {
    let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
    while day_summaries(dir).len() != count {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} day summaries were not built: {:?}",
            day_summaries(dir)
        );
        std::thread::sleep(StdDuration::from_millis(10));
    }
}

/// The same 60 events arriving over three days, 20 a day.
fn events_over_three_days() -> Vec<NewEvent> {
    events()
        .into_iter()
        .enumerate()
        .map(|(n, event)| NewEvent {
            received_at: base_time() + Duration::days(n as i64 / 20) + Duration::seconds(n as i64),
            ..event
        })
        .collect()
}

#[tokio::test]
async fn days_that_are_over_are_summarized_and_answer_exactly_until_retention_drops_a_part() {
    let events = events_over_three_days();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 7);
    insert_in_batches_of_five(&store, &events).await;
    store.seal_now().unwrap();
    // Two days are over; the third is the newest and may get more arrivals.
    wait_for_day_summaries(dir.path(), 2);
    assert_eq!(
        store.summarize_due_days(),
        0,
        "the sealing thread built them all"
    );
    assert_stats_match(&store, &events, "with day summaries").await;
    drop(store);
    let store = open(dir.path(), 7);
    assert_stats_match(&store, &events, "day summaries, reopened").await;

    // The summary of a day is what answers for its partitions: given the first day's
    // counts in place of the second's, the answer over everything changes accordingly.
    let days = day_summaries(dir.path());
    let body = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        let end = bytes.iter().position(|byte| *byte == b'\n').unwrap();
        (bytes[..=end].to_vec(), bytes[end + 1..].to_vec())
    };
    let (second_header, second_body) = body(&days[1]);
    let (_, first_body) = body(&days[0]);
    std::fs::write(&days[1], [second_header.clone(), first_body].concat()).unwrap();
    let everything = queries()[0].clone();
    let first_day_twice: Vec<NewEvent> = [&events[..20], &events[..20], &events[40..]].concat();
    assert_eq!(
        store.event_stats(everything.clone()).await.unwrap(),
        counted_by_hand(&first_day_twice, &everything),
        "the first day counted twice, the second not at all"
    );
    // A damaged day summary is passed over: its partitions are counted one by one.
    std::fs::write(&days[1], [second_header, b"not zstd".to_vec()].concat()).unwrap();
    assert_stats_match(&store, &events, "a damaged day summary").await;
    std::fs::write(&days[1], [body(&days[1]).0, second_body].concat()).unwrap();

    // Retention drops the first day's partitions (and its summary with them): the rest is
    // still answered exactly.
    let dropped = store
        .drop_events(RetentionRule {
            arrived_through: Some(base_time() + Duration::hours(23)),
            ..RetentionRule::default()
        })
        .await
        .unwrap();
    assert_eq!(dropped.events, 20);
    assert_eq!(
        day_summaries(dir.path()).len(),
        1,
        "the first day's summary went with it"
    );
    assert_stats_match(&store, &events[20..], "after a day was dropped").await;
    drop(store);
    let store = open(dir.path(), 7);
    assert_stats_match(&store, &events[20..], "after a day was dropped, reopened").await;
}
