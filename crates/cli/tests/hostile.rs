//! Hostile or broken peers against the real binaries: a honeypot flooding the ingest port,
//! hundreds of silent connections on both the ingest port and the node port, and one sender
//! holding its whole share of ingest connections, while a well-behaved honeypot (another
//! unix user) keeps delivering.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    // The polite honeypot is another unix user: the silent connections' sender holds no
    // more than its share (`ingest.max_connections_per_sender`), the rest of its
    // connections were closed at once.
    let lines: Vec<String> = (0..100)
        .map(|n| json!({"pot_id": "polite", "event_type": "polite", "data": {"n": n}}).to_string())
        .collect();
    send_lines_as_nobody(event_port, &lines);
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

/// A broken or hostile Core that acknowledges a seq the node never sent (here `u64::MAX`)
/// is a protocol error: the node drops the connection, keeps its spool, and sends the event
/// again on its next connection.
#[tokio::test]
async fn an_acknowledgement_beyond_what_was_sent_is_a_protocol_error_and_loses_nothing() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let fake_core = tokio::net::TcpListener::bind(("127.0.0.1", ports.node_port))
        .await
        .unwrap();
    let event_port = free_port();
    let node = start_node(dir.path(), &ports, event_port);
    let secret = honeybee_protocol::base32_encode(&[9u8; 20]);

    // Accepts one connection, registers the node with acknowledged delivery and returns the
    // connection once the node has sent its first numbered event (its seq).
    let accept_until_first_event = || async {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(15), fake_core.accept())
            .await
            .expect("the node connects")
            .unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let registration: serde_json::Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let node_id = registration["message"]["NodeRegistration"]["node_id"].clone();
        let mut ack = json!({"version": 2, "message": {"RegistrationAck": {
            "node_id": node_id, "accepted": true,
            "capabilities": ["acked_delivery"], "acked_seq": 0}}});
        // A secret only for a node that has none (a node refuses one it did not ask for).
        if registration["message"]["NodeRegistration"]["totp_code"].is_null() {
            ack["message"]["RegistrationAck"]["totp_key"] = json!(secret);
        }
        writer
            .write_all(format!("{ack}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
                .await
                .expect("the node sends its event")
                .unwrap()
                .expect("the connection stays open");
            let message: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(seq) = message["message"]["PotEvent"]["seq"].as_u64() {
                return (node_id, seq, lines, writer);
            }
        }
    };

    wait_for_port(format!("127.0.0.1:{event_port}").parse().unwrap()).await;
    send_lines(
        event_port,
        &[json!({"pot_id": "p", "event_type": "kept", "data": {}}).to_string()],
    )
    .await;
    let (node_id, seq, mut lines, mut writer) = accept_until_first_event().await;
    let bogus =
        json!({"version": 2, "message": {"EventAck": {"node_id": node_id, "seq": u64::MAX}}});
    writer
        .write_all(format!("{bogus}\n").as_bytes())
        .await
        .unwrap();
    // The node hangs up on the broken Core ...
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = lines.next_line().await {}
    })
    .await;
    assert!(closed.is_ok(), "the node kept the connection");
    // ... and, reconnecting, sends the same event again: nothing was deleted.
    let (_, seq_again, _, _) = accept_until_first_event().await;
    assert_eq!(seq_again, seq, "the event the bogus ack named was lost");
    assert!(
        node.log().contains("beyond the last seq sent"),
        "{}",
        node.log()
    );
}

/// Warnings about bad ingest lines are limited per sender: a pot flooding the port with
/// garbage silences only its own warnings, never those about another sender (here a
/// different unix user).
#[tokio::test]
async fn a_sender_flooding_bad_lines_does_not_hide_warnings_about_another_sender() {
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "");
    let node = start_node(dir.path(), &ports, event_port);
    wait_for_port(format!("127.0.0.1:{event_port}").parse().unwrap()).await;

    let garbage: Vec<String> = (0..200).map(|n| format!("not json {n}")).collect();
    send_lines(event_port, &garbage).await;
    eventually(
        Duration::from_secs(10),
        "the flood's first warnings",
        || {
            let log = node.log();
            async move { log.contains("rejected an ingest line").then_some(()) }
        },
    )
    .await;
    // Another user's single bad line, on a connection it keeps open (a sender that closes
    // at once is "owner unknown": the node only trusts live sockets) until it is killed.
    let script = format!(
        "import socket; s = socket.create_connection(('127.0.0.1', {event_port})); s.sendall(b'marker-from-another-user\\n'); s.recv(1)"
    );
    let mut other_sender = python_as_nobody(&script, &[]).spawn().unwrap();
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody = String::from_utf8(nobody.stdout).unwrap().trim().to_owned();
    eventually(
        Duration::from_secs(10),
        "the other sender's warning",
        || {
            let log = node.log();
            let key = format!("User({nobody})");
            async move {
                log.lines()
                    .any(|line| line.contains("rejected an ingest line") && line.contains(&key))
                    .then_some(())
            }
        },
    )
    .await;
    let _ = other_sender.kill();
    let _ = other_sender.wait();
}

/// Writes `lines` to the ingest port from a process of the unix user `nobody`, then closes.
fn send_lines_as_nobody(event_port: u16, lines: &[String]) {
    let script = format!(
        "import socket, sys; s = socket.create_connection(('127.0.0.1', {event_port})); s.sendall(sys.argv[1].encode()); s.close()"
    );
    let mut text = lines.join("\n");
    text.push('\n');
    let status = python_as_nobody(&script, &[&text]).status().unwrap();
    assert!(status.success());
}

/// One sender holding its share of ingest connections (here the test, as root) has every
/// further connection closed at once — not left waiting for a slot — while the ones it
/// holds are still served, and another unix user still connects and delivers.
#[tokio::test]
async fn one_sender_cannot_hold_every_ingest_connection() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let event_port = free_port();
    let _core = start_core(dir.path(), &ports, "");
    let node = start_node_with(
        dir.path(),
        &ports,
        event_port,
        "ingest:\n  max_connections_per_sender: 4\n",
    );
    wait_for_online_node(&client, &ports.api_base()).await;

    // Connections are admitted concurrently: the four held ones prove they are in by
    // delivering an event each before the extra ones come.
    let mut held = Vec::new();
    for n in 0..4 {
        let mut connection = TcpStream::connect(("127.0.0.1", event_port)).await.unwrap();
        let line =
            json!({"pot_id": "holder", "event_type": "admitted", "data": {"n": n}}).to_string();
        connection
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        held.push(connection);
    }
    wait_for_events(&client, &ports.api_base(), "pot_id=holder", 4).await;
    for _ in 0..3 {
        let mut extra = TcpStream::connect(("127.0.0.1", event_port)).await.unwrap();
        let mut byte = [0u8; 1];
        // Well before `ingest.idle_timeout` (300 s): closed when accepted.
        let read = tokio::time::timeout(Duration::from_secs(20), extra.read(&mut byte))
            .await
            .expect("a connection over the sender's share is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "the node closed it");
    }
    let line = json!({"pot_id": "holder", "event_type": "held", "data": {}}).to_string() + "\n";
    held[3].write_all(line.as_bytes()).await.unwrap();
    let events = wait_for_events(&client, &ports.api_base(), "event_type=held", 1).await;
    assert_eq!(
        events.len(),
        1,
        "the connections within the share are still served"
    );

    let other = json!({"pot_id": "other-user", "event_type": "delivered", "data": {}}).to_string();
    send_lines_as_nobody(event_port, &[other]);
    let events = wait_for_events(&client, &ports.api_base(), "pot_id=other-user", 1).await;
    assert_eq!(events.len(), 1, "another sender still delivers");
    assert!(
        node.log().contains("ingest.max_connections_per_sender"),
        "the refusals are logged"
    );
    drop(held);
}
