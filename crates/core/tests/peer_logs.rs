//! Peers flooding the Core's log: one node's flood of large `NodeEvent`s, or one host's
//! flood of bad messages, must neither fill the log nor hide another peer's warning. The
//! Core runs in this test's thread (a current-thread runtime), so a scoped subscriber
//! captures every line it logs.

mod other_user;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::{envelope, RawPeer, TestCore};

/// Every formatted log line, shared with the subscriber.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (CapturedLog, tracing::subscriber::DefaultGuard) {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

fn node_event(node_id: u64, kind: &str, message: &str) -> String {
    envelope(json!({"NodeEvent": {"node_id": node_id, "type": kind, "message": message}}))
}

#[tokio::test]
async fn a_node_flooding_large_events_neither_fills_the_log_nor_hides_another_node() {
    let (log, _guard) = capture_logs();
    let core = TestCore::start(|_| {}).await;
    let mut flooder = RawPeer::connect_from("127.0.0.2", &core).await;
    flooder.register(11, "flooder").await;
    let mut quiet = RawPeer::connect_from("127.0.0.3", &core).await;
    quiet.register(12, "quiet").await;

    let huge = "A".repeat(64 * 1024);
    let mut flood = String::new();
    for _ in 0..200 {
        flood.push_str(&node_event(11, "Error", &huge));
    }
    flooder.send(&flood).await;
    quiet
        .send(&node_event(12, "Alarm", "the quiet node's alarm"))
        .await;
    support::eventually("every NodeEvent counted", || async {
        core.metric("honeybee_core_node_events_total{type=\"Error\"}")
            .await
            .filter(|count| *count == 200)
    })
    .await;
    support::eventually("the quiet node's alarm in the log", || async {
        log.lines()
            .iter()
            .any(|line| line.contains("the quiet node's alarm"))
            .then_some(())
    })
    .await;
    let flooder_lines: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|line| line.contains("node_id=11") && line.contains("node reported an event"))
        .collect();
    assert!(
        !flooder_lines.is_empty() && flooder_lines.len() <= 10,
        "{} lines from the flooding node",
        flooder_lines.len()
    );
    for line in &flooder_lines {
        assert!(line.len() < 1024, "a {} byte log line", line.len());
        assert!(line.contains("more bytes not logged"), "{line}");
    }
    drop((flooder, quiet));
    core.stop().await;
}

#[tokio::test]
async fn one_host_flooding_bad_messages_does_not_hide_another_hosts_warning() {
    let (log, _guard) = capture_logs();
    let core = TestCore::start(|_| {}).await;
    // Messages before registration are dropped with a warning each (rate-limited).
    let early_event = |node_id: u64| node_event(node_id, "Error", "sent too early");
    // The flooding host is another local user (a pot's user on the sensor): a local peer's
    // lines count against its uid, so it must not be the test's own user.
    let flooding_user = other_user::OtherUser::relay_to(core.node_address).await;
    let mut flooder = RawPeer::over(flooding_user.connect_from("127.0.0.2").await);
    let mut flood = String::new();
    for _ in 0..100 {
        flood.push_str(&early_event(21));
    }
    flooder.send(&flood).await;
    support::eventually("the flood counted", || async {
        core.metric("honeybee_core_messages_rejected_total{reason=\"before_registration\"}")
            .await
            .filter(|count| *count == 100)
    })
    .await;
    let mut other = RawPeer::connect_from("127.0.0.3", &core).await;
    other.send(&early_event(22)).await;
    support::eventually("the other host's warning in the log", || async {
        log.lines()
            .iter()
            .any(|line| line.contains("127.0.0.3") && line.contains("before registration"))
            .then_some(())
    })
    .await;
    let flooder_lines = log
        .lines()
        .iter()
        .filter(|line| line.contains("127.0.0.2") && line.contains("before registration"))
        .count();
    assert!(
        flooder_lines <= 10,
        "{flooder_lines} lines about the flooding host"
    );
    drop((flooder, other));
    core.stop().await;
}
