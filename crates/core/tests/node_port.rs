//! The Core in-process on loopback ports, driven by raw TCP clients that speak Protocol v2
//! the way other implementations (the Go node) and hostile peers do, plus the REST API's
//! answers to bad requests.

mod other_user;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use honeybee_core::CoreConfig;
use honeybee_protocol::{base32_decode, totp_code, totp_step_at, EnvelopeDecoder, Message};
use honeybee_store::{ColumnarEventStore, ColumnarOptions, EventQuery, EventStore};
use serde_json::{json, Value};
use support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What a test node remembers of its enrollment: the secret and the newest TOTP step used.
type NodeSecrets = Arc<Mutex<HashMap<u64, (Vec<u8>, u64)>>>;

struct TestCore {
    node_address: std::net::SocketAddr,
    secrets: NodeSecrets,
    api_base: String,
    shutdown: CancellationToken,
    running: Option<honeybee_core::RunningCore>,
    _dir: tempfile::TempDir,
}

impl TestCore {
    async fn start(adjust: impl FnOnce(&mut CoreConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = CoreConfig::default();
        config.server.node_port = 0;
        config.server.backend_port = 0;
        config.storage.data_dir = dir.path().to_path_buf();
        // These tests are about the node port; the API's authentication has its own test.
        config.api.auth = honeybee_core::config::ApiAuth::None;
        adjust(&mut config);
        // Enrollment has its own tests (which ask for tokens): here any node may enroll,
        // where the Core allows that at all (on loopback).
        if config.server.enrollment.is_none() && config.server.is_loopback() {
            config.server.enrollment = Some(honeybee_core::config::EnrollmentPolicy::Open);
        }
        let shutdown = CancellationToken::new();
        let running = honeybee_core::start(config, shutdown.clone())
            .await
            .unwrap();
        TestCore {
            node_address: running.node_address,
            secrets: NodeSecrets::default(),
            api_base: format!("http://{}", running.api_address),
            shutdown,
            running: Some(running),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.stop_in_place().await;
    }

    /// Stops the Core but keeps its data directory for inspection.
    async fn stop_in_place(&mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.take().unwrap().wait())
            .await
            .expect("core stops within 10 s")
            .unwrap();
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.api_base))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.api_base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every event in the Core's database, read with a store of its own (after a stop).
    async fn stored_event_count(&self) -> usize {
        let store = ColumnarEventStore::open(ColumnarOptions::new(ColumnarOptions::directory_in(
            self._dir.path(),
        )))
        .unwrap();
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = store
                .query_events(EventQuery {
                    limit: 1000,
                    cursor,
                    ..EventQuery::default()
                })
                .await
                .unwrap();
            count += page.events.len();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return count,
            }
        }
    }

    async fn metric(&self, line_prefix: &str) -> Option<String> {
        let text = reqwest::get(format!("{}/metrics", self.api_base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|line| line.starts_with(line_prefix))
            .map(str::to_owned)
    }

    async fn node(&self, node_id: u64) -> Value {
        let (status, body) = self.get(&format!("/api/v1/nodes/{node_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A raw Protocol v2 peer.
struct RawPeer {
    stream: TcpStream,
    decoder: EnvelopeDecoder,
    secrets: NodeSecrets,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A TOTP code for a step the node has not used yet: the oldest still accepted (one step
/// back), so three registrations fit in one step; a fourth waits for the next step.
async fn next_totp_code(secrets: &NodeSecrets, node_id: u64) -> Option<String> {
    loop {
        let (secret, last_step) = secrets.lock().unwrap().get(&node_id).cloned()?;
        let now_step = totp_step_at(unix_now());
        let step = (now_step - 1).max(last_step + 1);
        if step <= now_step + 1 {
            secrets.lock().unwrap().get_mut(&node_id).unwrap().1 = step;
            return Some(totp_code(&secret, step));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl RawPeer {
    /// A peer speaking over an already open connection (e.g. one made by another user).
    fn over(core: &TestCore, stream: TcpStream) -> Self {
        RawPeer {
            stream,
            decoder: EnvelopeDecoder::default(),
            secrets: core.secrets.clone(),
        }
    }

    async fn connect(core: &TestCore) -> Self {
        RawPeer {
            stream: TcpStream::connect(core.node_address).await.unwrap(),
            decoder: EnvelopeDecoder::default(),
            secrets: core.secrets.clone(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next message from the core, or `None` when it closed the connection.
    async fn receive(&mut self) -> Option<Message> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(envelope) = self.decoder.next_envelope().unwrap() {
                return Some(envelope.message);
            }
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                .await
                .expect("the core answers within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(count) => self.decoder.push(&buffer[..count]),
            }
        }
    }

    /// Registers with a TOTP code when this node enrolled before, and remembers the secret
    /// the Core issues on enrollment.
    async fn register(&mut self, node_id: u64, name: &str) {
        let code = next_totp_code(&self.secrets, node_id).await;
        self.send(&registration_with(node_id, name, code.as_deref(), None))
            .await;
        self.expect_accepted(node_id).await;
    }

    async fn expect_accepted(&mut self, node_id: u64) {
        match self.receive().await {
            Some(Message::RegistrationAck(ack)) => {
                assert!(ack.accepted, "{ack:?}");
                assert_eq!(ack.node_id, node_id);
                if let Some(key) = ack.totp_key {
                    let secret = base32_decode(&key).expect("totp_key is base32");
                    self.secrets.lock().unwrap().insert(node_id, (secret, 0));
                }
            }
            other => panic!("expected an accepting RegistrationAck, got {other:?}"),
        }
    }

    /// Expects a refusal whose message contains `needle`, then the connection's end;
    /// returns the refusal's text.
    async fn expect_refused(&mut self, needle: &str) -> String {
        let message = match self.receive().await {
            Some(Message::RegistrationAck(ack)) => {
                assert!(!ack.accepted, "{ack:?}");
                let message = ack.message.unwrap_or_default();
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                message
            }
            other => panic!("expected a refusing RegistrationAck, got {other:?}"),
        };
        self.expect_closed().await;
        message
    }

    async fn expect_closed(&mut self) {
        while let Some(message) = self.receive().await {
            assert!(
                matches!(message, Message::RegistrationAck(ref ack) if !ack.accepted),
                "unexpected {message:?}"
            );
        }
    }
}

fn registration(node_id: u64, name: &str) -> String {
    registration_with(node_id, name, None, None)
}

fn registration_with(
    node_id: u64,
    name: &str,
    totp_code: Option<&str>,
    enrollment_token: Option<&str>,
) -> String {
    let mut fields = json!({
        "node_id": node_id, "node_name": name, "address": "10.0.0.5", "port": 0,
        "node_type": "Agent",
    });
    if let Some(code) = totp_code {
        fields["totp_code"] = json!(code);
    }
    if let Some(token) = enrollment_token {
        fields["enrollment_token"] = json!(token);
    }
    json!({"version": 2, "message": {"NodeRegistration": fields}}).to_string() + "\n"
}

#[tokio::test]
async fn a_go_style_node_registers_reports_and_leaves() {
    let core = TestCore::start(|_| {}).await;
    let mut peer = RawPeer::connect(&core).await;
    peer.register(4242, "go-node").await;
    // The Go node's shapes, written back to back without separators.
    peer.send(concat!(
        r#"{"version":2,"message":{"NodeEvent":{"type":"Started","message":"Node started successfully"}}}"#,
        r#"{"version":2,"message":{"NodeStatusUpdate":{"node_id":4242,"status":"Running"}}}"#,
        r#"{"version":2,"message":{"PotStatusUpdate":{"node_id":4242,"pot_id":"cowrie-01","pot_type":"cowrie","status":"Running"}}}"#,
        r#"{"version":2,"message":{"PotEvent":{"node_id":4242,"pot_id":"cowrie-01","pot_type":"cowrie","event_type":"login","timestamp":"2024-01-15T10:30:00Z","data":{"username":"admin","ip":"192.168.1.100"}}}}"#,
    ))
    .await;
    let events = eventually("the Go node's event", || async {
        let (_, body) = core.get("/api/v1/events?src_ip=192.168.1.100").await;
        let events = body["events"].as_array()?.clone();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events[0]["node_id"], 4242);
    assert_eq!(events[0]["data"]["username"], "admin");
    let (status, stats) = core
        .get("/api/v1/stats?top=src_ip,username,country&interval=1h")
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats,
        json!({
            "total": 1,
            "distinct_sources": 1,
            "interval_seconds": 3600,
            "histogram": [{"start": "2024-01-15T10:00:00Z", "count": 1}],
            "histogram_truncated": false,
            "top": {
                "src_ip": [{"value": "192.168.1.100", "count": 1}],
                "username": [{"value": "admin", "count": 1}],
                "country": [],
            },
            "pots": [{"node_id": 4242, "pot_id": "cowrie-01", "events": 1, "last_event": "2024-01-15T10:30:00Z"}],
        })
    );

    let (status, nodes) = core.get("/api/v1/nodes").await;
    assert_eq!(status, 200);
    let node = &nodes["nodes"][0];
    assert_eq!(node["node_id"], 4242);
    assert_eq!(node["node_name"], "go-node");
    assert_eq!(node["node_type"], "Agent");
    assert_eq!(node["status"], "Running");
    let (_, pots) = core.get("/api/v1/honeypots").await;
    assert_eq!(
        pots["honeypots"][0],
        json!({"node_id": 4242, "pot_id": "cowrie-01", "pot_type": "cowrie", "status": "Running", "updated_at": pots["honeypots"][0]["updated_at"]})
    );

    peer.send(r#"{"version":2,"message":{"NodeDrop":{}}}"#)
        .await;
    peer.expect_closed().await;
    let node = eventually("the node to be offline", || async {
        let node = core.node(4242).await;
        (node["status"] == "Offline").then_some(node)
    })
    .await;
    assert_eq!(node["connected"], false);
    assert_eq!(
        node["reported_status"], "Running",
        "the last report is kept"
    );
    core.stop().await;
}

#[tokio::test]
async fn a_silent_node_is_shown_offline_after_three_missed_heartbeats_and_back_when_it_speaks() {
    let core = TestCore::start(|config| config.server.heartbeat_interval = 0.2).await;
    let mut peer = RawPeer::connect(&core).await;
    // last_seen is set while registering, so the silence is measured from before it.
    let registered_at = Instant::now();
    peer.register(77, "quiet").await;
    assert_eq!(core.node(77).await["online"], true);
    eventually("the silent node to be offline", || async {
        (core.node(77).await["status"] == "Offline").then_some(())
    })
    .await;
    assert!(
        registered_at.elapsed() >= Duration::from_millis(600),
        "not before 3 heartbeats"
    );
    let node = core.node(77).await;
    assert_eq!(
        node["connected"], true,
        "offline, but not forgotten or disconnected"
    );

    peer.send(r#"{"version":2,"message":{"NodeStatusUpdate":{"node_id":77,"status":"Running"}}}"#)
        .await;
    eventually("the node to be online again", || async {
        (core.node(77).await["status"] == "Running").then_some(())
    })
    .await;
    drop(peer);
    core.stop().await;
}

#[tokio::test]
async fn hostile_peers_are_refused_without_disturbing_a_healthy_node() {
    let core = TestCore::start(|config| {
        config.server.max_envelope_bytes = 4096;
        config.server.handshake_timeout = 0.5;
    })
    .await;
    let mut healthy = RawPeer::connect(&core).await;
    healthy.register(1, "healthy").await;

    // Wrong version on registration: refused with a reason, then closed.
    let mut old = RawPeer::connect(&core).await;
    old.send(&registration(2, "old").replace("\"version\":2", "\"version\":1"))
        .await;
    match old.receive().await {
        Some(Message::RegistrationAck(ack)) => {
            assert!(!ack.accepted);
            assert!(ack.message.unwrap().contains("version 1"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    old.expect_closed().await;

    // Oversized envelope: refused and disconnected.
    let mut flooder = RawPeer::connect(&core).await;
    flooder.register(3, "flooder").await;
    let huge = format!(
        r#"{{"version":2,"message":{{"NodeEvent":{{"type":"Alarm","message":"{}"}}}}}}"#,
        "a".repeat(8000)
    );
    flooder.send(&huge).await;
    match flooder.receive().await {
        Some(Message::RegistrationAck(ack)) => {
            assert!(!ack.accepted);
            assert!(ack.message.unwrap().contains("4096 bytes"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    flooder.expect_closed().await;

    // Garbage, messages before registration and then silence: closed at the handshake timeout.
    let mut silent = RawPeer::connect(&core).await;
    silent.send("GET / HTTP/1.1\r\n\r\n").await;
    silent.send(r#"{"version":2,"message":{"PotEvent":{"node_id":9,"pot_id":"p","pot_type":"t","event_type":"e","timestamp":"2024-01-15T10:30:00Z","data":{}}}}"#).await;
    let started = Instant::now();
    silent.expect_closed().await;
    assert!(started.elapsed() < Duration::from_secs(5));

    // A registered node speaking for someone else, an unknown variant, and a bad status
    // are dropped; the same connection's next event still arrives.
    healthy.send(concat!(
        r#"{"version":2,"message":{"PotEvent":{"node_id":999,"pot_id":"spoof","pot_type":"t","event_type":"spoofed","timestamp":"2024-01-15T10:30:00Z","data":{}}}}"#, "\n",
        r#"{"version":2,"message":{"Teleport":{"node_id":1}}}"#, "\n",
        r#"{"version":2,"message":{"NodeStatusUpdate":{"node_id":1,"status":"Sleeping"}}}"#, "\n",
        r#"{"version":2,"message":{"PotEvent":{"node_id":1,"pot_id":"real","pot_type":"t","event_type":"genuine","timestamp":"not a time","data":{"k":1}}}}"#, "\n",
    ))
    .await;
    let event = eventually("the healthy node's event", || async {
        let (_, body) = core.get("/api/v1/events?node_id=1").await;
        body["events"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(event["event_type"], "genuine");
    let (_, spoofed) = core.get("/api/v1/events?event_type=spoofed").await;
    assert_eq!(spoofed["events"], json!([]));
    assert_eq!(core.node(1).await["online"], true);
    let (_, nodes) = core.get("/api/v1/nodes").await;
    let ids: Vec<u64> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 3], "only registered nodes are known");

    // Every refusal was counted.
    let metrics = reqwest::get(format!("{}/metrics", core.api_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "honeybee_core_registrations_refused_total{reason=\"unsupported_version\"} 1",
        "honeybee_core_registrations_refused_total{reason=\"handshake_timeout\"} 1",
        "honeybee_core_messages_rejected_total{reason=\"too_large\"} 1",
        "honeybee_core_messages_rejected_total{reason=\"foreign_node_id\"} 1",
        "honeybee_core_messages_rejected_total{reason=\"before_registration\"} 1",
        "honeybee_core_events_bad_timestamp_total 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    drop(healthy);
    core.stop().await;
}

#[tokio::test]
async fn a_node_whose_old_connection_closes_while_it_reconnects_stays_connected() {
    let core = TestCore::start(|_| {}).await;
    // The old connection's end races with the new registration; repeat to hit both orders.
    const NODES: u64 = 50;
    let mut current = Vec::new();
    for node_id in 1000..1000 + NODES {
        let mut old = RawPeer::connect(&core).await;
        old.register(node_id, "racer").await;
        drop(old);
        let mut new = RawPeer::connect(&core).await;
        new.register(node_id, "racer").await;
        current.push(new);
    }
    let settled = format!("honeybee_core_node_sessions_active {NODES}");
    eventually("every old session to end", || async {
        (core
            .metric("honeybee_core_node_sessions_active")
            .await
            .as_deref()
            == Some(settled.as_str()))
        .then_some(())
    })
    .await;
    for node_id in 1000..1000 + NODES {
        assert_eq!(
            core.node(node_id).await["connected"],
            true,
            "node {node_id}"
        );
    }
    drop(current);
    core.stop().await;
}

fn pot_events(node_id: u64, count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"version":2,"message":{{"PotEvent":{{"node_id":{node_id},"pot_id":"drain","pot_type":"t","event_type":"e","timestamp":"2024-01-15T10:30:00Z","data":{{"n":{n}}}}}}}}}"#
            ) + "\n"
        })
        .collect()
}

#[tokio::test]
async fn events_a_node_sent_before_its_goodbye_are_stored_even_when_the_core_stops_at_once() {
    let mut core = TestCore::start(|_| {}).await;
    let mut peer = RawPeer::connect(&core).await;
    peer.register(31, "leaving").await;
    peer.send(&(pot_events(31, 2000) + r#"{"version":2,"message":{"NodeDrop":{}}}"#))
        .await;
    core.stop_in_place().await;
    assert_eq!(core.stored_event_count().await, 2000);
}

#[tokio::test]
async fn a_stopping_core_tells_its_nodes_and_stores_what_they_already_sent() {
    let mut core = TestCore::start(|_| {}).await;
    let mut peer = RawPeer::connect(&core).await;
    peer.register(32, "surprised").await;
    peer.send(&pot_events(32, 2000)).await;
    core.shutdown.cancel();
    // The node is told why, then closes its side; the Core reads up to that close.
    match peer.receive().await {
        Some(Message::RegistrationAck(ack)) => {
            assert!(!ack.accepted);
            assert!(ack.message.unwrap().contains("shutting down"));
        }
        other => panic!("expected a shutdown notice, got {other:?}"),
    }
    drop(peer);
    core.stop_in_place().await;
    assert_eq!(core.stored_event_count().await, 2000);
}

#[tokio::test]
async fn a_reconnecting_node_replaces_its_old_connection() {
    let core = TestCore::start(|_| {}).await;
    let mut first = RawPeer::connect(&core).await;
    first.register(5, "twice").await;
    let mut second = RawPeer::connect(&core).await;
    second.register(5, "twice").await;
    first.expect_closed().await;
    let node = core.node(5).await;
    assert_eq!(
        node["connected"], true,
        "the replaced session must not disconnect the node"
    );
    drop(second);
    core.stop().await;
}

#[tokio::test]
async fn the_api_answers_bad_requests_with_json_errors() {
    let core = TestCore::start(|_| {}).await;
    let (status, body) = core.get("/health").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    for (path, expected_status, fragment) in [
        ("/api/v1/nodes/12345", 404, "node 12345 not found"),
        ("/api/v1/nodes/abc", 400, "invalid node id \"abc\""),
        ("/api/v1/events?limit=0", 400, "invalid limit"),
        ("/api/v1/events?since=yesterday", 400, "invalid since"),
        ("/api/v1/events?cursor=nope", 400, "invalid event cursor"),
        ("/api/v1/events?colour=red", 400, "unknown query parameter"),
        ("/api/v1/events?until=", 400, "empty until"),
        ("/api/v1/events?order=sideways", 400, "invalid order"),
        ("/api/v1/events?after_id=-1", 400, "invalid after_id"),
        (
            "/api/v1/stats?top=colour",
            400,
            "invalid top field \"colour\"",
        ),
        ("/api/v1/stats?interval=5s", 400, "invalid interval \"5s\""),
        ("/api/v1/stats?limit=1001", 400, "invalid limit \"1001\""),
        ("/api/v1/commands/-1", 400, "invalid command id \"-1\""),
        ("/api/v1/nodes/+7", 400, "invalid node id \"+7\""),
        ("/api/v1/nowhere", 404, "no such endpoint"),
    ] {
        let (status, body) = core.get(path).await;
        assert_eq!(status, expected_status, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(fragment),
            "{path}: {body}"
        );
    }
    let (status, body) = core.get("/api/v1/events").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"events": [], "next_cursor": null, "next_after_id": null})
        )
    );
    let (status, body) = core.get("/api/v1/events?order=asc&after_id=41").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"events": [], "next_cursor": null, "next_after_id": 41})
        )
    );
    let (status, body) = core
        .send_json(reqwest::Method::DELETE, "/api/v1/events", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("until is required"));
    let (status, body) = core
        .send_json(reqwest::Method::PUT, "/api/v1/events", json!({}))
        .await;
    assert_eq!(
        (status, body),
        (
            405,
            json!({"error": "method PUT not allowed on /api/v1/events"})
        )
    );
    let (status, openapi) = core.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(openapi["openapi"], "3.0.3");
    core.stop().await;
}

#[tokio::test]
async fn the_api_needs_a_token_with_the_right_role() {
    use honeybee_core::ApiRole;
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoreConfig::default();
    config.server.node_port = 0;
    config.server.backend_port = 0;
    config.storage.data_dir = dir.path().to_path_buf();
    let shutdown = CancellationToken::new();
    let running = honeybee_core::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.api_address);
    let admin = running
        .initial_admin_token
        .clone()
        .expect("a first admin token");
    assert!(admin.starts_with("hb_"));
    let file = dir.path().join("admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), admin);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let reader = honeybee_core::create_api_token(&config, "dashboard", ApiRole::Read)
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = client.request(method, format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if path.ends_with("/commands") {
            request = request.json(&json!("GetInstalledPots"));
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    for (method, path, token, expected) in [
        (get.clone(), "/health", None, 200),
        (get.clone(), "/api/v1/nodes", None, 401),
        (get.clone(), "/api/v1/nodes", Some("hb_not-a-token"), 401),
        (get.clone(), "/api/v1/nodes", Some(reader.as_str()), 200),
        (get.clone(), "/api/v1/events", Some(reader.as_str()), 200),
        (get.clone(), "/metrics", None, 401),
        (get.clone(), "/api/v1/nodes", Some(admin.as_str()), 200),
        // Enrollment tokens admit nodes: admin only, even to list them.
        (
            get.clone(),
            "/api/v1/enrollment-tokens",
            Some(reader.as_str()),
            403,
        ),
        (
            get.clone(),
            "/api/v1/enrollment-tokens",
            Some(admin.as_str()),
            200,
        ),
        (
            post.clone(),
            "/api/v1/nodes/1/revoke",
            Some(reader.as_str()),
            403,
        ),
        (
            post.clone(),
            "/api/v1/nodes/1/revoke",
            Some(admin.as_str()),
            404,
        ),
        // Command answers carry pot configuration and install output: admin only.
        (
            get.clone(),
            "/api/v1/commands/1",
            Some(reader.as_str()),
            403,
        ),
        (get.clone(), "/api/v1/commands/1", Some(admin.as_str()), 404),
        (post.clone(), "/api/v1/nodes/1/commands", None, 401),
        (
            post.clone(),
            "/api/v1/nodes/1/commands",
            Some(reader.as_str()),
            403,
        ),
        // Past authentication: the node does not exist.
        (
            post.clone(),
            "/api/v1/nodes/1/commands",
            Some(admin.as_str()),
            404,
        ),
        // Deleting events: admin only.
        (
            reqwest::Method::DELETE,
            "/api/v1/events?until=2024-01-15T10:30:00Z",
            Some(reader.as_str()),
            403,
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/events?until=2024-01-15T10:30:00Z",
            Some(admin.as_str()),
            200,
        ),
    ] {
        let (status, body) = call(method.clone(), path, token).await;
        assert_eq!(status, expected, "{method} {path} with {token:?}: {body}");
        if status == 401 || status == 403 {
            assert!(body["error"].as_str().is_some(), "{body}");
        }
    }
    let (_, body) = call(post, "/api/v1/nodes/1/commands", Some(reader.as_str())).await;
    assert!(
        body["error"].as_str().unwrap().contains("needs admin"),
        "{body}"
    );

    // A restarted Core keeps its tokens and creates no new one.
    shutdown.cancel();
    running.wait().await.unwrap();
    let again = honeybee_core::start(config, CancellationToken::new())
        .await
        .unwrap();
    assert!(again.initial_admin_token.is_none());
    let (status, _) = {
        let response = client
            .get(format!("http://{}/api/v1/nodes", again.api_address))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 200);
}

#[tokio::test]
async fn nodes_enroll_with_a_token_then_prove_themselves_with_unreplayable_totp_codes() {
    let core = TestCore::start(|config| {
        config.server.enrollment = Some(honeybee_core::config::EnrollmentPolicy::Token);
    })
    .await;
    let post = reqwest::Method::POST;

    let mut stranger = RawPeer::connect(&core).await;
    stranger.send(&registration(501, "no-token")).await;
    stranger
        .expect_refused("requires an enrollment token")
        .await;

    let (status, created) = core
        .send_json(
            post.clone(),
            "/api/v1/enrollment-tokens",
            json!({"uses": 1, "ttl_seconds": 600, "name": "sensor-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hbe_"), "{token}");
    assert_eq!(created["status"], "usable");

    let mut first = RawPeer::connect(&core).await;
    first
        .send(&registration_with(501, "sensor-a", None, Some(&token)))
        .await;
    first.expect_accepted(501).await;
    assert!(
        core.secrets.lock().unwrap().contains_key(&501),
        "the ack carried a totp_key"
    );

    // A one-time token enrolls one node only.
    let mut second = RawPeer::connect(&core).await;
    second
        .send(&registration_with(502, "sensor-b", None, Some(&token)))
        .await;
    second.expect_refused("used up").await;
    let (_, listed) = core.get("/api/v1/enrollment-tokens").await;
    let listed = &listed["enrollment_tokens"][0];
    assert_eq!(
        (listed["status"].as_str(), listed["uses_left"].as_u64()),
        (Some("used_up"), Some(0))
    );
    assert!(
        listed.get("token").is_none(),
        "a token's secret is shown once: {listed}"
    );

    // Until the node has used its secret, a registration without code is asked for one or
    // for a usable token: the spent one no longer gives anybody a new secret for its id.
    let mut unconfirmed = RawPeer::connect(&core).await;
    unconfirmed.send(&registration(501, "sensor-a")).await;
    unconfirmed
        .expect_refused("has not yet registered with a totp_code")
        .await;
    let mut spent_token = RawPeer::connect(&core).await;
    spent_token
        .send(&registration_with(501, "sensor-a", None, Some(&token)))
        .await;
    spent_token.expect_refused("used up").await;
    // A new secret (the ack carrying the first one was lost) costs a use of a live token.
    let (_, second_token) = core
        .send_json(
            post.clone(),
            "/api/v1/enrollment-tokens",
            json!({"uses": 1}),
        )
        .await;
    let second_token = second_token["token"].as_str().unwrap().to_owned();
    let first_secret = core.secrets.lock().unwrap()[&501].0.clone();
    let mut enrolls_again = RawPeer::connect(&core).await;
    enrolls_again
        .send(&registration_with(
            501,
            "sensor-a",
            None,
            Some(&second_token),
        ))
        .await;
    enrolls_again.expect_accepted(501).await;
    assert_ne!(
        core.secrets.lock().unwrap()[&501].0,
        first_secret,
        "a repeated enrollment issues a new secret"
    );
    // An enrolled node needs a code: a wrong one, a replayed one, or none are refused.
    let mut wrong_code = RawPeer::connect(&core).await;
    wrong_code
        .send(&registration_with(501, "sensor-a", Some("123456"), None))
        .await;
    // A code is never repeated back (refusals reach the logs).
    let refusal = wrong_code.expect_refused("not valid").await;
    assert!(!refusal.contains("123456"), "{refusal}");
    let code = next_totp_code(&core.secrets, 501).await.unwrap();
    let mut reconnected = RawPeer::connect(&core).await;
    reconnected
        .send(&registration_with(501, "sensor-a", Some(&code), None))
        .await;
    reconnected.expect_accepted(501).await;
    let mut replay = RawPeer::connect(&core).await;
    replay
        .send(&registration_with(501, "sensor-a", Some(&code), None))
        .await;
    let refusal = replay.expect_refused("already used").await;
    assert!(!refusal.contains(&code), "{refusal}");
    let mut no_code = RawPeer::connect(&core).await;
    no_code.send(&registration(501, "sensor-a")).await;
    no_code.expect_refused("needs a totp_code").await;
    // The replay did not disturb the node's live session.
    reconnected
        .send(r#"{"version":2,"message":{"NodeStatusUpdate":{"node_id":501,"status":"Running"}}}"#)
        .await;
    reconnected.send("\n").await;
    eventually("the node online and running", || async {
        let node = core.node(501).await;
        (node["status"] == "Running").then_some(())
    })
    .await;

    let refused = core
        .metric("honeybee_core_registrations_refused_total{reason=\"totp_replayed\"}")
        .await;
    assert!(
        refused.is_some_and(|line| line.ends_with(" 1")),
        "replays are counted"
    );
    core.stop().await;
}

#[tokio::test]
async fn a_revoked_node_is_cut_off_within_a_second_and_refused_afterwards() {
    let core = TestCore::start(|_| {}).await;
    let post = reqwest::Method::POST;
    let mut node = RawPeer::connect(&core).await;
    node.register(601, "doomed").await;
    let mut bystander = RawPeer::connect(&core).await;
    bystander.register(602, "bystander").await;

    let started = Instant::now();
    let (status, body) = core
        .send_json(post.clone(), "/api/v1/nodes/601/revoke", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], true);
    node.expect_refused("revoked").await;
    let cut_off_after = started.elapsed();
    assert!(
        cut_off_after < Duration::from_secs(1),
        "cut off after {cut_off_after:?}"
    );

    let mut again = RawPeer::connect(&core).await;
    let code = next_totp_code(&core.secrets, 601).await;
    again
        .send(&registration_with(601, "doomed", code.as_deref(), None))
        .await;
    again.expect_refused("revoked").await;
    let shown = core.node(601).await;
    assert_eq!(
        (shown["revoked"].as_bool(), shown["connected"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        core.node(602).await["connected"],
        true,
        "other nodes are untouched"
    );
    let (status, _) = core
        .send_json(post.clone(), "/api/v1/nodes/999/revoke", json!({}))
        .await;
    assert_eq!(status, 404);

    // Enrollment tokens can be revoked too; bad requests are refused with the value.
    let (_, created) = core
        .send_json(
            post.clone(),
            "/api/v1/enrollment-tokens",
            json!({"uses": 5}),
        )
        .await;
    let id = created["id"].as_u64().unwrap();
    let (status, _) = core
        .send_json(
            reqwest::Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = core
        .send_json(
            reqwest::Method::DELETE,
            "/api/v1/enrollment-tokens/777",
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = core
        .send_json(post, "/api/v1/enrollment-tokens", json!({"uses": 0}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid uses 0"),
        "{body}"
    );
    core.stop().await;
}

#[tokio::test]
async fn numbered_events_are_acknowledged_once_stored_and_repeats_are_stored_once() {
    let core = TestCore::start(|_| {}).await;
    let register = |code: Option<String>| {
        let mut fields = json!({
            "node_id": 701, "node_name": "spooler", "address": "10.0.0.5", "port": 0,
            "node_type": "Agent", "capabilities": ["acked_delivery"],
        });
        if let Some(code) = code {
            fields["totp_code"] = json!(code);
        }
        json!({"version": 2, "message": {"NodeRegistration": fields}}).to_string() + "\n"
    };
    let event = |seq: u64| {
        json!({"version": 2, "message": {"PotEvent": {
            "node_id": 701, "pot_id": "p", "pot_type": "cowrie", "event_type": "login",
            "timestamp": "2024-01-15T10:30:00Z", "data": {"n": seq}, "seq": seq,
        }}})
        .to_string()
            + "\n"
    };
    let mut peer = RawPeer::connect(&core).await;
    peer.send(&register(None)).await;
    match peer.receive().await {
        Some(Message::RegistrationAck(ack)) => {
            assert!(ack.accepted, "{ack:?}");
            assert!(ack.capabilities.contains(&"acked_delivery".to_owned()));
            assert_eq!(ack.acked_seq, Some(0));
            let secret = base32_decode(&ack.totp_key.unwrap()).unwrap();
            core.secrets.lock().unwrap().insert(701, (secret, 0));
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    // 1..=100, then 50..=100 again (a resend after a lost ack).
    let batch: String = (1..=100).chain(50..=100).map(event).collect();
    peer.send(&batch).await;
    let acknowledged = loop {
        match peer.receive().await {
            Some(Message::EventAck(ack)) if ack.seq == 100 => break ack,
            Some(Message::EventAck(ack)) => assert!(ack.seq < 100 && ack.node_id == 701),
            other => panic!("expected EventAcks, got {other:?}"),
        }
    };
    assert_eq!(acknowledged.node_id, 701);
    let duplicates = core.metric("honeybee_core_events_duplicate_total").await;
    assert!(
        duplicates.is_some_and(|line| line.ends_with(" 51")),
        "51 repeats counted"
    );

    // A new session learns where to resume.
    let code = next_totp_code(&core.secrets, 701).await;
    let mut again = RawPeer::connect(&core).await;
    again.send(&register(code)).await;
    match again.receive().await {
        Some(Message::RegistrationAck(ack)) => assert_eq!(ack.acked_seq, Some(100), "{ack:?}"),
        other => panic!("expected an ack, got {other:?}"),
    }
    drop((peer, again));
    let mut core = core;
    core.stop_in_place().await;
    assert_eq!(core.stored_event_count().await, 100);
}

#[tokio::test]
async fn a_peer_that_read_a_running_nodes_id_cannot_take_it_over_without_its_secret() {
    // Open enrollment, as on a loopback Core: the attacker owns a pot on the sensor and read
    // the node's id from its data directory.
    let core = TestCore::start(|_| {}).await;
    let mut node = RawPeer::connect(&core).await;
    node.send(&registration(601, "sensor")).await;
    node.expect_accepted(601).await;
    // The node goes on talking after the ack that carried its secret.
    node.send(
        "{\"version\":2,\"message\":{\"NodeStatusUpdate\":{\"node_id\":601,\"status\":\"Running\"}}}\n",
    )
    .await;
    eventually("the node running", || async {
        (core.node(601).await["status"] == "Running").then_some(())
    })
    .await;

    let mut attacker = RawPeer::connect(&core).await;
    attacker.send(&registration(601, "sensor")).await;
    attacker.expect_refused("needs a totp_code").await;
    // The real node's session was not replaced: it still speaks and is still connected.
    node.send(
        "{\"version\":2,\"message\":{\"NodeStatusUpdate\":{\"node_id\":601,\"status\":\"Deploying\"}}}\n",
    )
    .await;
    eventually("the node's next status", || async {
        let node = core.node(601).await;
        (node["status"] == "Deploying" && node["connected"] == true).then_some(())
    })
    .await;
    drop(node);
    core.stop().await;
}

#[tokio::test]
async fn a_local_user_guessing_codes_from_many_loopback_addresses_is_one_source() {
    let core = TestCore::start(|_| {}).await;
    let mut node = RawPeer::connect(&core).await;
    node.send(&registration(701, "sensor")).await;
    node.expect_accepted(701).await;
    drop(node);
    // The node registers with a code from its address: that address is its own from now on.
    let mut node = RawPeer::connect(&core).await;
    node.register(701, "sensor").await;
    drop(node);

    // Another local user (a pot's user on the sensor) guessing from many loopback
    // addresses is one source: after its free tries it waits, however many addresses it
    // binds.
    let pot_user = other_user::OtherUser::relay_to(core.node_address).await;
    for n in 0..3 {
        let mut guesser = RawPeer::over(
            &core,
            pot_user.connect_from(&format!("127.0.8.{}", n + 1)).await,
        );
        guesser
            .send(&registration_with(701, "sensor", Some("000000"), None))
            .await;
        guesser.expect_refused("not valid").await;
    }
    let mut guesser = RawPeer::over(&core, pot_user.connect_from("127.0.8.100").await);
    guesser
        .send(&registration_with(701, "sensor", Some("000000"), None))
        .await;
    guesser.expect_refused("too many invalid totp codes").await;

    // The node-wide budget over many remote sources is the guess limiter's unit test: on
    // loopback every address of one user is one source.
    // The real node, another user on the same machine, still registers.
    let mut node = RawPeer::connect(&core).await;
    node.register(701, "sensor").await;
    core.stop().await;
}
