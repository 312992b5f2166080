//! Postings against real files: searches for an address or a credential in sealed
//! partitions give exactly what a scan of every event gives — rare, common and absent
//! values, combined with other conditions, in both page orders — also when a postings
//! file is damaged or missing, and postings never outlive their partition.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use honeybee_store::{
    ColumnarEventStore, ColumnarOptions, EventFields, EventOrder, EventQuery, EventStore, NewEvent,
};

const EVENTS: u64 = 6_000;
/// Events of the hot partition left unsealed after the sealed ones.
const HOT_EVENTS: u64 = 300;
const PARTITION_EVENTS: usize = 700;
const RARE_ADDRESS: &str = "198.51.100.1";
const ABSENT_ADDRESS: &str = "192.0.2.99";

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn open(dir: &std::path::Path) -> ColumnarEventStore {
    ColumnarEventStore::open(ColumnarOptions {
        partition_max_events: PARTITION_EVENTS,
        ..ColumnarOptions::new(ColumnarOptions::directory_in(dir))
    })
    .unwrap()
}

/// What the test knows of event number `n` (its id is `n + 1`).
#[derive(Debug, Clone)]
struct Known {
    id: i64,
    node_id: u64,
    seconds: i64,
    src_ip: String,
    username: Option<String>,
    password: Option<String>,
}

/// Event `n`: a few hundred addresses (one of them rare), five usernames, passwords from
/// a long tail or none, four nodes; a deterministic scramble, no randomness to reproduce.
fn known(n: u64) -> Known {
    let mixed = n.wrapping_mul(2_654_435_761) % 1_000_003;
    let src_ip = if n % 1_000 == 7 {
        RARE_ADDRESS.to_owned()
    } else {
        format!("10.{}.{}.{}", mixed % 3, (mixed / 3) % 17, (mixed / 51) % 9)
    };
    let usernames = ["root", "admin", "oracle", "pi", "ubnt"];
    Known {
        id: n as i64 + 1,
        node_id: 1 + mixed % 4,
        seconds: n as i64,
        src_ip,
        username: (!mixed.is_multiple_of(11)).then(|| usernames[(mixed % 5) as usize].to_owned()),
        password: (!mixed.is_multiple_of(3)).then(|| format!("pw{}", (mixed / 7) % 150)),
    }
}

fn new_event(known: &Known) -> NewEvent {
    NewEvent {
        node_id: known.node_id,
        pot_id: "cowrie-1".into(),
        pot_type: "cowrie".into(),
        event_type: "cowrie.login.failed".into(),
        timestamp: base_time() + Duration::seconds(known.seconds),
        received_at: base_time(),
        fields: EventFields {
            src_ip: Some(known.src_ip.clone()),
            username: known.username.clone(),
            password: known.password.clone(),
            ..EventFields::default()
        },
        data_json: format!(r#"{{"n":{}}}"#, known.id),
        seq: None,
    }
}

/// A store of `EVENTS` events, all sealed but the last `HOT_EVENTS`.
async fn filled_store(dir: &std::path::Path) -> (ColumnarEventStore, Vec<Known>) {
    let store = open(dir);
    let all: Vec<Known> = (0..EVENTS).map(known).collect();
    let (sealed, hot) = all.split_at((EVENTS - HOT_EVENTS) as usize);
    for chunk in sealed.chunks(100) {
        let batch: Vec<NewEvent> = chunk.iter().map(new_event).collect();
        store.insert_events(Arc::from(batch)).await.unwrap();
    }
    store.seal_now().unwrap();
    let batch: Vec<NewEvent> = hot.iter().map(new_event).collect();
    store.insert_events(Arc::from(batch)).await.unwrap();
    (store, all)
}

fn postings_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(ColumnarOptions::directory_in(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".postings"))
        .collect();
    files.sort();
    files
}

/// A search and the condition it stands for.
struct Search {
    name: &'static str,
    query: EventQuery,
    matches: Box<dyn Fn(&Known) -> bool>,
}

fn searches() -> Vec<Search> {
    let fields =
        |src_ip: Option<&str>, username: Option<&str>, password: Option<&str>| EventFields {
            src_ip: src_ip.map(String::from),
            username: username.map(String::from),
            password: password.map(String::from),
            ..EventFields::default()
        };
    let common_address = known(1).src_ip;
    let common_for_query = common_address.clone();
    vec![
        Search {
            name: "rare address",
            query: EventQuery {
                fields: fields(Some(RARE_ADDRESS), None, None),
                ..EventQuery::default()
            },
            matches: Box::new(|known| known.src_ip == RARE_ADDRESS),
        },
        Search {
            name: "absent address",
            query: EventQuery {
                fields: fields(Some(ABSENT_ADDRESS), None, None),
                ..EventQuery::default()
            },
            matches: Box::new(|_| false),
        },
        Search {
            name: "common address",
            query: EventQuery {
                fields: fields(Some(&common_for_query), None, None),
                ..EventQuery::default()
            },
            matches: Box::new(move |known| known.src_ip == common_address),
        },
        Search {
            name: "username and password (two postings intersected)",
            query: EventQuery {
                fields: fields(None, Some("admin"), Some("pw17")),
                ..EventQuery::default()
            },
            matches: Box::new(|known| {
                known.username.as_deref() == Some("admin")
                    && known.password.as_deref() == Some("pw17")
            }),
        },
        Search {
            name: "password and node (postings, then the node column)",
            query: EventQuery {
                node_id: Some(3),
                fields: fields(None, None, Some("pw42")),
                ..EventQuery::default()
            },
            matches: Box::new(|known| {
                known.node_id == 3 && known.password.as_deref() == Some("pw42")
            }),
        },
        Search {
            name: "rare address in a time window",
            query: EventQuery {
                since: Some(base_time() + Duration::seconds(1_500)),
                until: Some(base_time() + Duration::seconds(4_007)),
                fields: fields(Some(RARE_ADDRESS), None, None),
                ..EventQuery::default()
            },
            matches: Box::new(|known| {
                known.src_ip == RARE_ADDRESS && (1_500..=4_007).contains(&known.seconds)
            }),
        },
        Search {
            name: "address and username that never meet",
            query: EventQuery {
                fields: fields(Some(RARE_ADDRESS), Some("nobody"), None),
                ..EventQuery::default()
            },
            matches: Box::new(|_| false),
        },
    ]
}

/// Every id `query` gives, newest first (following the cursor) and in arrival order
/// (following `after_id`), with small pages so they cross partitions.
async fn ids_both_ways(store: &ColumnarEventStore, query: &EventQuery) -> (Vec<i64>, Vec<i64>) {
    let mut newest_first = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query_events(EventQuery {
                limit: 7,
                cursor,
                ..query.clone()
            })
            .await
            .unwrap();
        newest_first.extend(page.events.iter().map(|event| event.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut arrival = Vec::new();
    let mut after_id = Some(0);
    loop {
        let page = store
            .query_events(EventQuery {
                limit: 9,
                order: EventOrder::Arrival,
                after_id,
                ..query.clone()
            })
            .await
            .unwrap();
        let Some(last) = page.events.last() else {
            break;
        };
        after_id = Some(last.id);
        arrival.extend(page.events.iter().map(|event| event.id));
    }
    (newest_first, arrival)
}

async fn assert_every_search_matches_a_scan(store: &ColumnarEventStore, all: &[Known], when: &str) {
    for search in searches() {
        let expected: Vec<i64> = all
            .iter()
            .filter(|known| (search.matches)(known))
            .map(|known| known.id)
            .collect();
        let (newest_first, arrival) = ids_both_ways(store, &search.query).await;
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(
            newest_first, reversed,
            "{}, newest first, {when}",
            search.name
        );
        assert_eq!(arrival, expected, "{}, arrival order, {when}", search.name);
    }
}

#[tokio::test]
async fn searches_through_postings_give_exactly_what_a_scan_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (store, all) = filled_store(dir.path()).await;
    let sealed_partitions = store.partition_counts().0;
    assert!(
        sealed_partitions >= 8,
        "{sealed_partitions} sealed partitions"
    );
    assert_eq!(
        postings_files(dir.path()).len(),
        sealed_partitions,
        "one postings file per sealed partition"
    );
    assert!(
        all.iter().filter(|k| k.src_ip == RARE_ADDRESS).count() == 6,
        "the rare address is in six partitions"
    );
    assert_every_search_matches_a_scan(&store, &all, "as sealed").await;
    drop(store);
    let store = open(dir.path());
    assert_every_search_matches_a_scan(&store, &all, "after reopening").await;
}

#[tokio::test]
async fn damaged_or_missing_postings_are_passed_over_and_the_partitions_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let (store, all) = filled_store(dir.path()).await;
    let files = postings_files(dir.path());
    // Damage while open: a flipped byte in the middle of the blocks fails its checksum at
    // the next lookup.
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x5a;
    std::fs::write(&files[1], &bytes).unwrap();
    assert_every_search_matches_a_scan(&store, &all, "with a block damaged").await;
    drop(store);
    // Damage found at open: a cut trailer, and a file that is gone.
    std::fs::write(&files[2], b"HBPOST01").unwrap();
    std::fs::remove_file(&files[3]).unwrap();
    let store = open(dir.path());
    assert_every_search_matches_a_scan(&store, &all, "with postings cut and missing").await;
}

#[tokio::test]
async fn postings_without_their_partition_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = filled_store(dir.path()).await;
    drop(store);
    let orphan =
        ColumnarOptions::directory_in(dir.path()).join("part-00000000000099999999.postings");
    std::fs::write(&orphan, b"left by a seal that stopped half-way").unwrap();
    let kept = postings_files(dir.path()).len() - 1;
    let store = open(dir.path());
    assert!(!orphan.exists(), "the orphan postings file is removed");
    assert_eq!(postings_files(dir.path()).len(), kept);
    let page = store
        .query_events(EventQuery {
            fields: EventFields {
                src_ip: Some(RARE_ADDRESS.into()),
                ..EventFields::default()
            },
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 6);
}
