//! Signals with the real binaries: a second Ctrl-C (or SIGTERM) during a shutdown that is
//! still waiting for something ends the process at once, as people expect.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The Core's shutdown waits (up to its drain deadline) for registered nodes to hang up;
/// a node that never does keeps it waiting. A second signal then ends it at once.
#[tokio::test]
async fn a_second_signal_during_a_waiting_shutdown_exits_at_once() {
    // If the drain deadline passed between the two signals (a very slow machine), the Core
    // exited on its own and there was no waiting shutdown to cut short: try again.
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let ports = CorePorts::free();
        let mut core = start_core(dir.path(), &ports, "");
        wait_for_port(ports.node_address().parse().unwrap()).await;
        let stream = tokio::net::TcpStream::connect(ports.node_address())
            .await
            .unwrap();
        let (reader, mut writer) = stream.into_split();
        let registration = json!({"version": 2, "message": {"NodeRegistration": {
            "node_id": 4242, "node_name": "stubborn", "address": "127.0.0.1", "port": 0,
            "node_type": "Agent"}}});
        writer
            .write_all(format!("{registration}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(reader).lines();
        let ack = lines.next_line().await.unwrap().unwrap();
        assert!(ack.contains("\"accepted\":true"), "{ack}");

        core.signal("INT");
        // The Core asks the node to leave; the node stays.
        let goodbye = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the core tells the node it is stopping");
        assert!(goodbye
            .unwrap()
            .is_some_and(|line| line.contains("shutting down")));
        core.signal("INT");
        let status = core.exit_status().await;
        let log = core.log();
        if status.code() == Some(0) && !log.contains("second signal") {
            continue;
        }
        assert_eq!(status.code(), Some(130), "{log}");
        assert!(log.contains("second signal during shutdown"), "{log}");
        drop(writer);
        return;
    }
    panic!("the core never was still shutting down at the second signal");
}
