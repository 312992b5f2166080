//! No event lost, none stored twice, with the real binaries: the Core killed (-9) at random
//! moments and restarted under load, the Core away for a while, the node killed (-9) mid-delivery, the
//! link cut mid-write by a proxy, and a full spool. Each test numbers its events and checks
//! that the store holds every number exactly once.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use support::*;

/// A node with its `/metrics` endpoint on a port of its own.
struct TestNode {
    daemon: Daemon,
    event_port: u16,
    metrics_port: u16,
}

async fn start_metered_node(dir: &Path, core: &CorePorts, sections: &str) -> TestNode {
    start_metered_node_on(dir, core, free_port(), free_port(), sections).await
}

/// Starts a node and waits until it serves (its metrics answer once ingest listens).
async fn start_metered_node_on(
    dir: &Path,
    core: &CorePorts,
    event_port: u16,
    metrics_port: u16,
    sections: &str,
) -> TestNode {
    let daemon = start_node_with(
        dir,
        core,
        event_port,
        &format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n{sections}"),
    );
    let node = TestNode {
        daemon,
        event_port,
        metrics_port,
    };
    node.wait_for_metric("honeybee_node_spool_appended_total", 0)
        .await;
    node
}

impl TestNode {
    /// A counter of the node's, once its endpoint answers.
    async fn metric(&self, name: &str) -> Option<u64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    }

    async fn wait_for_metric(&self, name: &str, at_least: u64) -> u64 {
        // Generous: a reconnecting node may wait up to 30 s for a fresh TOTP step, and this
        // machine may be busy; the deadline only bounds a hung test.
        eventually(
            Duration::from_secs(180),
            &format!("{name} >= {at_least}"),
            || async move { self.metric(name).await.filter(|value| *value >= at_least) },
        )
        .await
    }
}

/// Lines numbered `from..to` for pot `pot_id`, about 250 bytes each like a Cowrie event.
fn numbered_lines(pot_id: &str, numbers: std::ops::Range<u64>) -> Vec<String> {
    numbers
        .map(|n| {
            serde_json::json!({
                "pot_id": pot_id,
                "pot_type": "cowrie",
                "event_type": "cowrie.login.failed",
                "data": {"n": n, "src_ip": "203.0.113.7", "username": "root", "password": "123456", "session": "a1b2c3d4e5f6", "sensor": "honeybee-test"}
            })
            .to_string()
        })
        .collect()
}

/// Every stored event of `pot_id`: asserts none is stored twice and returns the count.
async fn stored_exactly_once(api_base: &str, pot_id: &str) -> usize {
    let client = reqwest::Client::new();
    let events = all_events(&client, api_base, &format!("pot_id={pot_id}")).await;
    let distinct: HashSet<u64> = events
        .iter()
        .map(|event| event["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(distinct.len(), events.len(), "an event was stored twice");
    events.len()
}

/// Waits until the Core (not restarted meanwhile) counts `expected` stored events, then
/// checks the store holds each of them exactly once.
async fn wait_until_stored(api_base: &str, pot_id: &str, expected: usize) {
    let client = reqwest::Client::new();
    let url = format!("{api_base}/metrics");
    eventually(
        Duration::from_secs(120),
        &format!("{expected} events stored"),
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let text = client.get(&url).send().await.ok()?.text().await.ok()?;
                let stored: usize = text.lines().find_map(|line| {
                    line.strip_prefix("honeybee_core_events_stored_total")?
                        .trim()
                        .parse()
                        .ok()
                })?;
                (stored >= expected).then_some(())
            }
        },
    )
    .await;
    assert_eq!(stored_exactly_once(api_base, pot_id).await, expected);
}

/// A seed for the kill moments, printed so a failing run can be repeated
/// (`HONEYBEE_TEST_KILL_SEED`).
fn kill_seed() -> u64 {
    let seed = std::env::var("HONEYBEE_TEST_KILL_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("kill moments from HONEYBEE_TEST_KILL_SEED={seed}");
    seed
}

/// The next of a small pseudo-random sequence (xorshift): milliseconds to wait before a kill.
fn next_kill_delay(state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(*state % 150)
}

/// The Core killed (-9) three times at random moments while events stream in, with
/// partitions small enough that kills also land while partitions are sealed and while a
/// restarted Core replays its logs.
#[tokio::test]
async fn a_core_killed_at_random_moments_under_load_loses_and_repeats_nothing() {
    const TOTAL: u64 = 100_000;
    const CHUNK: u64 = 10_000;
    const SMALL_PARTITIONS: &str = "partition_max_events = 7000\n";
    let mut kill_state = kill_seed() | 1;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let mut core = start_core_with_storage(dir.path(), &ports, SMALL_PARTITIONS, "");
    let node = start_metered_node(dir.path(), &ports, "").await;
    node.wait_for_metric("honeybee_node_core_sessions_total", 1)
        .await;
    for chunk in 0..TOTAL / CHUNK {
        let start = chunk * CHUNK;
        send_lines(
            node.event_port,
            &numbered_lines("kill-core", start..start + CHUNK),
        )
        .await;
        if chunk == 2 || chunk == 5 || chunk == 8 {
            // Not a synchronisation: the kill lands wherever delivery is at that moment.
            tokio::time::sleep(next_kill_delay(&mut kill_state)).await;
            core.kill_hard();
            core = start_core_with_storage(dir.path(), &ports, SMALL_PARTITIONS, "");
        }
    }
    node.wait_for_metric("honeybee_node_events_acknowledged_total", TOTAL)
        .await;
    // The restarted Core's counters start at zero: the store itself is the witness.
    assert_eq!(
        stored_exactly_once(&ports.api_base(), "kill-core").await,
        TOTAL as usize
    );
    drop(node);
    drop(core);
}

#[tokio::test]
async fn events_taken_while_the_core_is_away_are_delivered_when_it_returns() {
    const TOTAL: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let node = start_metered_node(dir.path(), &ports, "").await;
    send_lines(node.event_port, &numbered_lines("core-away", 0..TOTAL)).await;
    node.wait_for_metric("honeybee_node_spool_appended_total", TOTAL)
        .await;
    assert_eq!(
        node.metric("honeybee_node_events_acknowledged_total").await,
        Some(0)
    );
    let _core = start_core(dir.path(), &ports, "");
    wait_until_stored(&ports.api_base(), "core-away", TOTAL as usize).await;
    node.wait_for_metric("honeybee_node_events_acknowledged_total", TOTAL)
        .await;
    assert!(
        node.metric("honeybee_node_spool_size_bytes").await.unwrap() < 16 << 20,
        "acknowledged segments are deleted"
    );
}

#[tokio::test]
async fn a_node_killed_mid_delivery_delivers_everything_it_accepted_after_a_restart() {
    const TOTAL: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "");
    let (event_port, metrics_port) = (free_port(), free_port());
    let mut node = start_metered_node_on(dir.path(), &ports, event_port, metrics_port, "").await;
    node.wait_for_metric("honeybee_node_core_sessions_total", 1)
        .await;
    send_lines(node.event_port, &numbered_lines("kill-node", 0..TOTAL)).await;
    node.wait_for_metric("honeybee_node_spool_appended_total", TOTAL)
        .await;
    let acknowledged = node
        .metric("honeybee_node_events_acknowledged_total")
        .await
        .unwrap();
    node.daemon.kill_hard();
    assert!(
        acknowledged < TOTAL,
        "the kill came mid-delivery ({acknowledged} acknowledged)"
    );
    let _node = start_metered_node_on(dir.path(), &ports, event_port, metrics_port, "").await;
    wait_until_stored(&ports.api_base(), "kill-node", TOTAL as usize).await;
}

/// A TCP proxy between node and Core that cuts the link (both directions, mid-write) once
/// `cut_after` bytes from the node went through a connection, `cuts` times in all.
async fn run_cutting_proxy(
    listener: tokio::net::TcpListener,
    upstream: String,
    cut_after: usize,
    cuts: usize,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let remaining_cuts = Arc::new(AtomicUsize::new(cuts));
    loop {
        let Ok((mut downstream, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let remaining_cuts = remaining_cuts.clone();
        tokio::spawn(async move {
            let Ok(mut core) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut from_node, mut to_node) = downstream.split();
            let (mut from_core, mut to_core) = core.split();
            let upward = async {
                let mut buffer = vec![0u8; 4096];
                let mut forwarded = 0;
                let mut cutting = None;
                loop {
                    let read = from_node.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    let mut allowed = read;
                    if forwarded + read > cut_after {
                        // Decided once per connection: cut it, or let it run for good.
                        let cut = *cutting.get_or_insert_with(|| {
                            remaining_cuts
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                                    left.checked_sub(1)
                                })
                                .is_ok()
                        });
                        if cut {
                            // Inside a buffer: a half-written envelope is left behind.
                            allowed = cut_after.saturating_sub(forwarded);
                        }
                    }
                    if to_core.write_all(&buffer[..allowed]).await.is_err() || allowed < read {
                        return;
                    }
                    forwarded += allowed;
                }
            };
            let downward = tokio::io::copy(&mut from_core, &mut to_node);
            tokio::select! {
                _ = upward => {}
                _ = downward => {}
            }
        });
    }
}

#[tokio::test]
async fn a_link_cut_mid_write_loses_and_repeats_nothing() {
    const TOTAL: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let core_ports = CorePorts::free();
    let _core = start_core(dir.path(), &core_ports, "");
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_ports = CorePorts {
        node_port: proxy.local_addr().unwrap().port(),
        api_port: core_ports.api_port,
    };
    tokio::spawn(run_cutting_proxy(
        proxy,
        core_ports.node_address(),
        700_000,
        4,
    ));
    let node = start_metered_node(dir.path(), &proxy_ports, "").await;
    send_lines(node.event_port, &numbered_lines("cut-link", 0..TOTAL)).await;
    node.wait_for_metric("honeybee_node_events_acknowledged_total", TOTAL)
        .await;
    let sessions = node
        .metric("honeybee_node_core_sessions_total")
        .await
        .unwrap();
    assert!(
        sessions >= 5,
        "the link was cut four times ({sessions} sessions)"
    );
    wait_until_stored(&core_ports.api_base(), "cut-link", TOTAL as usize).await;
}

#[tokio::test]
async fn a_full_spool_refuses_events_and_the_core_hears_the_exact_count() {
    const TOTAL: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let node = start_metered_node(
        dir.path(),
        &ports,
        "spool:\n  max_bytes: 65536\n  segment_bytes: 16384\n",
    )
    .await;
    send_lines(node.event_port, &numbered_lines("spool-full", 0..TOTAL)).await;
    let appended = eventually(
        Duration::from_secs(30),
        "every line appended or refused",
        || async {
            let appended = node.metric("honeybee_node_spool_appended_total").await?;
            let refused = node.metric("honeybee_node_spool_refused_total").await?;
            (appended + refused == TOTAL).then_some(appended)
        },
    )
    .await;
    let refused = TOTAL - appended;
    assert!(
        refused > 0 && appended > 0,
        "{appended} appended, {refused} refused"
    );
    let core = start_core(dir.path(), &ports, "");
    wait_until_stored(&ports.api_base(), "spool-full", appended as usize).await;
    let expected = format!("{refused} events refused and 0 dropped in total");
    eventually(
        Duration::from_secs(30),
        "the alarm with the exact count at the core",
        || {
            let log = core.log();
            let expected = expected.clone();
            async move { log.contains(&expected).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_stopping_node_delivers_and_has_acknowledged_what_it_accepted() {
    const TOTAL: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "");
    let mut node = start_metered_node(dir.path(), &ports, "").await;
    node.wait_for_metric("honeybee_node_core_sessions_total", 1)
        .await;
    send_lines(node.event_port, &numbered_lines("sigterm", 0..TOTAL)).await;
    node.wait_for_metric("honeybee_node_spool_appended_total", TOTAL)
        .await;
    let status = node.daemon.stop_with("TERM").await;
    assert!(status.success(), "the node exits cleanly: {status:?}");
    let log = node.daemon.log();
    assert!(!log.contains("shutdown deadline reached"), "{log}");
    wait_until_stored(&ports.api_base(), "sigterm", TOTAL as usize).await;
    // The node was not restarted: it delivered and saw acknowledged everything before
    // it left, within its shutdown deadline.
    assert!(log.contains("left the core (NodeDrop)"), "{log}");
}
