//! Hostile or broken peers against the real binaries: a honeypot flooding the ingest port,
//! and hundreds of silent connections on both the ingest port and the node port, while a
//! well-behaved honeypot keeps delivering.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_flooding_honeypot_is_slowed_down_reported_and_loses_nothing() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "");
    let _node = start_node_with(
        dir.path(),
        &ports,
        event_port,
        "ingest:\n  max_events_per_second: 100\n",
    );
    wait_for_online_node(&client, &ports.api_base()).await;

    let flood: Vec<String> = (0..300)
        .map(|n| json!({"pot_id": "flood", "event_type": "flood", "data": {"n": n}}).to_string())
        .collect();
    send_lines(event_port, &flood).await;
    let events = wait_for_events(&client, &ports.api_base(), "pot_id=flood", 300).await;
    assert_eq!(events.len(), 300, "a fast sender is slowed, never dropped");
    // The Core hears about it as an Alarm.
    eventually(
        Duration::from_secs(10),
        "the rate alarm at the core",
        || {
            let client = client.clone();
            let url = format!("{}/metrics", ports.api_base());
            async move {
                let text = client.get(&url).send().await.ok()?.text().await.ok()?;
                text.contains("honeybee_core_node_events_total{type=\"Alarm\"} 1")
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn hundreds_of_silent_connections_do_not_stop_a_well_behaved_node() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "[server]\nhandshake_timeout = 1\n");
    let _node = start_node_with(
        dir.path(),
        &ports,
        event_port,
        "ingest:\n  idle_timeout: 2\n",
    );
    wait_for_online_node(&client, &ports.api_base()).await;

    // Slowloris: connect and say nothing, on both ports.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(("127.0.0.1", event_port)).await.unwrap());
        silent.push(
            TcpStream::connect(("127.0.0.1", ports.node_port))
                .await
                .unwrap(),
        );
    }
    let lines: Vec<String> = (0..100)
        .map(|n| json!({"pot_id": "polite", "event_type": "polite", "data": {"n": n}}).to_string())
        .collect();
    send_lines(event_port, &lines).await;
    let events = wait_for_events(&client, &ports.api_base(), "pot_id=polite", 100).await;
    assert_eq!(events.len(), 100);
    let node = get_json(&client, &format!("{}/api/v1/nodes", ports.api_base()))
        .await
        .unwrap();
    assert_eq!(node["nodes"][0]["online"], true);

    // The silent ones are closed by the timeouts, not kept forever.
    for stream in silent.iter_mut() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("a silent connection is closed within 10 s");
        assert!(matches!(read, Ok(0) | Err(_)), "the peer closed it");
    }
}
