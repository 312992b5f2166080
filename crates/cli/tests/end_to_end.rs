//! End-to-end tests with the real binaries: `honeybee-core`, `honeybee-node` and
//! `honeybee up`, real TCP and HTTP on loopback, a real SQLite file and real Python.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use honeybee_store::{ColumnarEventStore, ColumnarOptions, EventQuery, EventStore};
use serde_json::{json, Value};
use support::*;

const INGEST_VECTORS: &str = include_str!("../../../testdata/vectors/ingest/valid.jsonl");
const INVALID_INGEST_VECTORS: &str = include_str!("../../../testdata/vectors/ingest/invalid.jsonl");

/// Runs the integration guide's test snippet, unchanged (it writes to localhost:9100).
fn run_guide_snippet() {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/integration_guide_test_event.py");
    let output = std::process::Command::new("python3")
        .arg(&snippet)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "snippet failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn wait_for_guide_event(client: &reqwest::Client, api_base: &str) {
    let url = format!("{api_base}/api/v1/events?pot_id=test-01");
    let event = eventually(
        Duration::from_secs(30),
        "the snippet's event in the API",
        || {
            let url = url.clone();
            async move {
                let page = get_json(client, &url).await?;
                page["events"].as_array()?.first().cloned()
            }
        },
    )
    .await;
    assert_eq!(event["pot_type"], "test");
    assert_eq!(event["event_type"], "test.event");
    assert_eq!(event["timestamp"], "2024-01-15T10:30:00Z");
    assert_eq!(event["data"], json!({"test": "data"}));
    assert!(event["id"].as_i64().is_some());
    assert!(event["node_id"].as_u64().unwrap() > 0);
}

/// Both ways of running HoneyBee on the default ingest port 9100, one after the other
/// (they cannot share the port): separate daemons, then `honeybee up`.
#[tokio::test]
async fn the_integration_guide_snippet_reaches_the_api() {
    let client = reqwest::Client::new();

    // Separate daemons.
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let mut core = start_core(dir.path(), &ports, "");
    let mut node = start_node(dir.path(), &ports, 9100);
    wait_for_online_node(&client, &ports.api_base()).await;
    wait_for_port("127.0.0.1:9100".parse().unwrap()).await;
    run_guide_snippet();
    wait_for_guide_event(&client, &ports.api_base()).await;
    assert!(
        node.stop_with("TERM").await.success(),
        "node exits cleanly on SIGTERM"
    );
    assert!(
        core.stop_with("TERM").await.success(),
        "core exits cleanly on SIGTERM"
    );
    assert!(
        core.log().contains("NodeDrop"),
        "the node said goodbye:\n{}",
        core.log()
    );

    // `honeybee up`.
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let mut up = Daemon::spawn(
        "honeybee-up",
        env!("CARGO_BIN_EXE_honeybee"),
        &[
            "up".into(),
            "--data-dir".into(),
            dir.path().join("state").display().to_string(),
            "--node-port".into(),
            ports.node_port.to_string(),
            "--api-port".into(),
            ports.api_port.to_string(),
        ],
        dir.path(),
    );
    // `up` is secure by default: its API wants the admin token it created and printed.
    let token =
        file_text_when_written(dir.path().join("state/core/admin-token"), "the admin token").await;
    let anonymous = client
        .get(format!("{}/api/v1/nodes", ports.api_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let client = authorized_client(&token);
    wait_for_online_node(&client, &ports.api_base()).await;
    assert!(
        up.log().contains(&token),
        "the admin token is printed:\n{}",
        up.log()
    );
    // The local node enrolled with a token made for it: nothing else on the machine (a
    // honeypot's user included) can enroll a node on `up`'s Core.
    let refusal = register_raw(ports.node_port, 424_242).await;
    assert!(
        refusal.contains("\"accepted\":false") && refusal.contains("requires an enrollment token"),
        "{refusal}"
    );
    wait_for_port("127.0.0.1:9100".parse().unwrap()).await;
    run_guide_snippet();
    wait_for_guide_event(&client, &ports.api_base()).await;

    // Ctrl-C right after a burst: what the node accepted is stored before `up` exits.
    let burst: Vec<String> = (0..500)
        .map(|n| json!({"pot_id": "burst", "event_type": "burst", "data": {"n": n}}).to_string())
        .collect();
    send_lines(9100, &burst).await;
    assert!(
        up.stop_with("INT").await.success(),
        "honeybee up exits cleanly on Ctrl-C"
    );
    assert!(up.log().contains("HoneyBee is up"), "{}", up.log());
    assert!(dir.path().join("state/node/node_id").exists());
    let store = ColumnarEventStore::open(ColumnarOptions::new(ColumnarOptions::directory_in(
        &dir.path().join("state/core"),
    )))
    .unwrap();
    let stored = store
        .query_events(EventQuery {
            pot_id: Some("burst".into()),
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        stored.events.len(),
        500,
        "events accepted before Ctrl-C were lost"
    );
}

#[tokio::test]
async fn every_ingest_vector_arrives_as_expected_and_bad_lines_do_not_break_the_connection() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "");
    let _node = start_node(dir.path(), &ports, event_port);
    wait_for_online_node(&client, &ports.api_base()).await;

    let valid: Vec<Value> = INGEST_VECTORS
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let invalid: Vec<String> = INVALID_INGEST_VECTORS
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            row["line"].as_str().unwrap().to_owned()
        })
        .collect();
    // Every valid line follows an invalid one on the same connection, plus an over-long line.
    let mut lines = Vec::new();
    for (index, row) in valid.iter().enumerate() {
        lines.push(invalid[index % invalid.len()].clone());
        if index == 3 {
            lines.push(format!(
                "{{\"event_type\":\"huge\",\"data\":\"{}\"}}",
                "x".repeat(70 * 1024)
            ));
        }
        lines.push(row["line"].as_str().unwrap().to_owned());
    }
    let sent_at = chrono::Utc::now();
    send_lines(event_port, &lines).await;

    let events = wait_for_events(&client, &ports.api_base(), "", valid.len()).await;
    assert_eq!(
        events.len(),
        valid.len(),
        "invalid lines must not be stored"
    );
    for row in &valid {
        let expect = &row["expect"];
        let found = events.iter().find(|event| {
            event["pot_id"] == expect["pot_id"]
                && event["pot_type"] == expect["pot_type"]
                && event["event_type"] == expect["event_type"]
                && event["data"] == expect["data"]
        });
        let event = found.unwrap_or_else(|| panic!("vector not stored: {expect}"));
        match expect["timestamp"].as_str() {
            Some(timestamp) => assert_eq!(event["timestamp"], timestamp, "{expect}"),
            None => {
                let stored: chrono::DateTime<chrono::Utc> =
                    event["timestamp"].as_str().unwrap().parse().unwrap();
                let lag = stored.signed_duration_since(sent_at).num_seconds();
                assert!(
                    (-1..=10).contains(&lag),
                    "receipt time {stored} vs {sent_at}"
                );
            }
        }
    }
}

#[tokio::test]
async fn twenty_concurrent_honeypots_store_ten_thousand_events_exactly_once() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "");
    let _node = start_node(dir.path(), &ports, event_port);
    wait_for_online_node(&client, &ports.api_base()).await;

    // A follower in arrival order, as the live stream and exports follow the store: from
    // before the first event, while they are being stored.
    let follower = tokio::spawn(follow_in_arrival_order(
        client.clone(),
        ports.api_base(),
        10_000,
    ));
    let senders: Vec<_> = (0..20)
        .map(|connection| {
            tokio::spawn(async move {
                let lines: Vec<String> = (0..500)
                    .map(|sequence| {
                        json!({
                            "pot_id": format!("pot-{connection}"),
                            "pot_type": "load",
                            "event_type": "load.event",
                            "data": {"connection": connection, "sequence": sequence, "src_ip": "192.0.2.1"},
                        })
                        .to_string()
                    })
                    .collect();
                send_lines(event_port, &lines).await;
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }

    let events = wait_for_events(&client, &ports.api_base(), "event_type=load.event", 10_000).await;
    assert_eq!(events.len(), 10_000);
    let unique: HashSet<(i64, i64)> = events
        .iter()
        .map(|event| {
            (
                event["data"]["connection"].as_i64().unwrap(),
                event["data"]["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(unique.len(), 10_000, "no event stored twice");
    let ids: HashSet<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    // The src_ip filter and a pot filter see the same events.
    let one_pot = all_events(&client, &ports.api_base(), "pot_id=pot-7&src_ip=192.0.2.1").await;
    assert_eq!(one_pot.len(), 500);
    // The follower saw every event once, in increasing ids, while they were being stored.
    let followed = follower.await.unwrap();
    let followed_ids: Vec<i64> = followed.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(followed_ids.windows(2).all(|pair| pair[0] < pair[1]));
    let followed_ids: HashSet<i64> = followed_ids.into_iter().collect();
    assert_eq!(
        followed_ids, ids,
        "the follower saw exactly the stored events"
    );
}

/// Pages through `/api/v1/events?order=asc` from the start, each page after the one
/// before's `next_after_id`, until `count` events were seen (or a deadline).
async fn follow_in_arrival_order(
    client: reqwest::Client,
    api_base: String,
    count: usize,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut after_id = 0;
    while seen.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower saw {} of {count} events",
            seen.len()
        );
        let url = format!("{api_base}/api/v1/events?order=asc&after_id={after_id}&limit=1000");
        let Some(page) = get_json(&client, &url).await else {
            continue;
        };
        let events = page["events"].as_array().unwrap();
        after_id = page["next_after_id"]
            .as_i64()
            .expect("next_after_id with order=asc");
        if events.is_empty() {
            // Nothing new yet: poll again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.extend(events.iter().cloned());
    }
    seen
}

#[tokio::test]
async fn after_the_core_is_killed_and_restarted_the_node_reconnects_and_nothing_stored_is_lost() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let mut core = start_core(dir.path(), &ports, "");
    let _node = start_node(dir.path(), &ports, event_port);
    let node_id = wait_for_online_node(&client, &ports.api_base()).await;

    let batch = |phase: &str| -> Vec<String> {
        (0..10)
            .map(|n| {
                json!({"pot_id": "restart-pot", "event_type": phase, "data": {"n": n}}).to_string()
            })
            .collect()
    };
    send_lines(event_port, &batch("before")).await;
    wait_for_events(&client, &ports.api_base(), "event_type=before", 10).await;

    core.kill_hard();
    // Events keep coming while the Core is away: the node holds them.
    send_lines(event_port, &batch("during")).await;
    let _core = start_core(dir.path(), &ports, "");
    // The same node id comes back by itself.
    let reconnected = wait_for_online_node(&client, &ports.api_base()).await;
    assert_eq!(reconnected, node_id);
    let nodes = get_json(&client, &format!("{}/api/v1/nodes", ports.api_base()))
        .await
        .unwrap();
    assert_eq!(
        nodes["nodes"].as_array().unwrap().len(),
        1,
        "node list survived: {nodes}"
    );
    assert_eq!(
        all_events(&client, &ports.api_base(), "event_type=before")
            .await
            .len(),
        10
    );

    send_lines(event_port, &batch("after")).await;
    wait_for_events(&client, &ports.api_base(), "event_type=after", 10).await;
    wait_for_events(&client, &ports.api_base(), "event_type=during", 10).await;
    assert_eq!(
        all_events(&client, &ports.api_base(), "pot_id=restart-pot")
            .await
            .len(),
        30
    );
}

#[tokio::test]
async fn a_command_sent_through_the_api_is_answered_by_the_node() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "");
    let _node = start_node(dir.path(), &ports, free_port());
    let node_id = wait_for_online_node(&client, &ports.api_base()).await;

    let url = format!("{}/api/v1/nodes/{node_id}/commands", ports.api_base());
    let response = client
        .post(&url)
        .json(&json!({"StopPot": "cowrie-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["command"], "StopPot");
    assert_eq!(body["status"], "pending", "answers are correlated: {body}");

    // Waiting for the answer: the pot does not exist, so the command fails with a reason.
    let response = client
        .post(format!("{url}?wait=10"))
        .json(&json!({"StopPot": "cowrie-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered["status"], "answered", "{answered}");
    assert_eq!(answered["answer"]["success"], false);
    assert!(
        answered["answer"]["message"]
            .as_str()
            .unwrap()
            .contains("not installed"),
        "{answered}"
    );
    let again = get_json(
        &client,
        &format!(
            "{}/api/v1/commands/{}",
            ports.api_base(),
            answered["command_id"]
        ),
    )
    .await
    .unwrap();
    assert_eq!(again["answer"], answered["answer"]);

    // No phantom pot is recorded for an id the node does not have, and the node lives on.
    let pots = get_json(&client, &format!("{}/api/v1/honeypots", ports.api_base()))
        .await
        .unwrap();
    assert_eq!(pots["honeypots"], json!([]), "{pots}");
    let node = get_json(
        &client,
        &format!("{}/api/v1/nodes/{node_id}", ports.api_base()),
    )
    .await
    .unwrap();
    assert_eq!(
        node["online"], true,
        "the node survived the command: {node}"
    );

    let unknown = client
        .post(format!(
            "{}/api/v1/nodes/{node_id}/commands",
            ports.api_base()
        ))
        .json(&json!({"Teleport": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let missing = client
        .post(format!("{}/api/v1/nodes/42/commands", ports.api_base()))
        .json(&json!("Restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn tokens_are_created_with_the_core_binary_and_used_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "[api]\nauth = \"tokens\"\n");
    wait_for_port(format!("127.0.0.1:{}", ports.api_port).parse().unwrap()).await;
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_honeybee-core"))
        .arg("--config")
        .arg(dir.path().join("bee_config.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("core-data"))
        .args([
            "token",
            "create",
            "--role",
            "read",
            "--name",
            "soc-dashboard",
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("hb_"), "{token}");

    let cli = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_honeybee"));
        command
            .args(["--api", &ports.api_base()])
            .env_remove("HONEYBEE_TOKEN");
        if let Some(token) = token {
            command.env("HONEYBEE_TOKEN", token);
        }
        let output = command.arg("pots").output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, output) = cli(Some(&token));
    assert!(ok && output.contains("NODE"), "{output}");
    let (ok, output) = cli(None);
    assert!(
        !ok && output.contains("401") && output.contains("missing API token"),
        "{output}"
    );
}

/// Sends a `NodeRegistration` without code or token for `node_id` and returns the Core's
/// first answer line.
async fn register_raw(node_port: u16, node_id: u64) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node_port))
        .await
        .unwrap();
    let registration = json!({"version": 2, "message": {"NodeRegistration": {
        "node_id": node_id, "node_name": "intruder", "address": "127.0.0.1", "port": 0,
        "node_type": "Agent"}}});
    stream
        .write_all(format!("{registration}\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stream).read_line(&mut answer),
    )
    .await
    .expect("the core answers within 10 s")
    .unwrap();
    answer
}
