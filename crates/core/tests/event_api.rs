//! The events API over a real event store: statistics of what a node sent, the fields each
//! event carries, retention dropping partitions for space while ingest goes on, and an
//! admin purge up to now.

mod support;

use serde_json::{json, Value};
use support::{envelope, eventually, RawPeer, TestCore};

fn api_base(core: &TestCore) -> String {
    format!("http://{}", core.api_address)
}

async fn get(core: &TestCore, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}{path}", api_base(core)))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Cowrie-like events of node `node_id`: numbered, from two sources and with credentials.
fn pot_events(node_id: u64, count: usize) -> String {
    (0..count)
        .map(|n| {
            let source = if n % 4 == 0 { "203.0.113.7" } else { "198.51.100.4" };
            envelope(json!({"PotEvent": {
                "node_id": node_id, "pot_id": "cowrie-01", "pot_type": "cowrie",
                "event_type": "cowrie.login.failed", "timestamp": "2024-01-15T10:30:00Z",
                "data": {"n": n, "src_ip": source, "username": "root", "password": format!("pw{}", n % 3)}}}))
        })
        .collect()
}

#[tokio::test]
async fn statistics_count_what_nodes_sent() {
    let core = TestCore::start(|_| {}).await;
    let mut peer = RawPeer::connect_from("127.0.0.1", &core).await;
    peer.register(41, "counted").await;
    peer.send(&pot_events(41, 120)).await;
    let stats = eventually("120 events counted", || async {
        let (status, stats) = get(
            &core,
            "/api/v1/stats?top=src_ip,password&limit=2&since=2024-01-15T00:00:00Z&until=2024-01-16T00:00:00Z",
        )
        .await;
        (status == 200 && stats["total"] == 120).then_some(stats)
    })
    .await;
    assert_eq!(stats["distinct_sources"], 2);
    assert_eq!(stats["interval_seconds"], 300, "a day in 5-minute buckets");
    assert_eq!(
        stats["histogram"],
        json!([{"start": "2024-01-15T10:30:00Z", "count": 120}])
    );
    assert_eq!(
        stats["top"],
        json!({
            "src_ip": [{"value": "198.51.100.4", "count": 90}, {"value": "203.0.113.7", "count": 30}],
            "password": [{"value": "pw0", "count": 40}, {"value": "pw1", "count": 40}],
        })
    );
    assert_eq!(
        stats["pots"],
        json!([{"node_id": 41, "pot_id": "cowrie-01", "events": 120, "last_event": "2024-01-15T10:30:00Z"}])
    );
    let (_, other_day) = get(&core, "/api/v1/stats?since=2024-01-16T00:00:00Z").await;
    assert_eq!(other_day["total"], 0);
    // Each event carries the fields taken at ingest; those it lacks are left out (a
    // documentation address has no country).
    let (_, first) = get(&core, "/api/v1/events?order=asc&limit=1").await;
    assert_eq!(
        first["events"][0]["fields"],
        json!({"src_ip": "203.0.113.7", "username": "root", "password": "pw0"})
    );
    core.stop().await;
}

#[tokio::test]
async fn old_partitions_are_dropped_for_space_and_a_purge_empties_the_store() {
    let core = TestCore::start(|config| {
        // Sealed every 50 events or so, and no sealed partition fits the cap.
        config.storage.partition_max_events = 50;
        config.retention.max_disk_bytes = 1;
        config.retention.check_interval = 1.0;
    })
    .await;
    let mut peer = RawPeer::connect_from("127.0.0.1", &core).await;
    peer.register(77, "busy").await;
    peer.send(&pot_events(77, 500)).await;
    // Dropped from the oldest on, whole partitions, and the rest still served.
    let (dropped, ids) = eventually("retention to drop sealed partitions", || async {
        let before = core.metric("honeybee_core_events_dropped_total ").await? as i64;
        let (_, page) = get(&core, "/api/v1/events?order=asc&limit=1000").await;
        let ids: Vec<i64> = page["events"]
            .as_array()?
            .iter()
            .map(|event| event["id"].as_i64().unwrap())
            .collect();
        // Settled: no drop between the two reads, and the page starts past what went.
        let after = core.metric("honeybee_core_events_dropped_total ").await? as i64;
        let settled = after == before && ids.first() == Some(&(before + 1));
        (before > 0 && settled).then_some((before, ids))
    })
    .await;
    assert_eq!(ids, (dropped + 1..=500).collect::<Vec<_>>());
    assert!(
        dropped < 500,
        "the partition taking appends is never dropped for space"
    );

    let until = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let purged = reqwest::Client::new()
        .delete(format!("{}/api/v1/events?until={until}", api_base(&core)))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status().as_u16(), 200);
    let purged: Value = purged.json().await.unwrap();
    assert_eq!(purged["deleted_events"], 500 - dropped);
    assert_eq!(purged["oldest_id"], Value::Null);
    let (_, page) = get(&core, "/api/v1/events").await;
    assert_eq!(page["events"], json!([]));
    let (_, stats) = get(&core, "/api/v1/stats?top=src_ip").await;
    assert_eq!(stats["total"], 0);
    core.stop().await;
}
