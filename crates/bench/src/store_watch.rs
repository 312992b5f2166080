//! Watches the Core from outside, through its API as any client would: how many benchmark
//! events are stored, and when sampled ones became visible, which is the end of their
//! latency. The API shows only what the store made durable, so "stored" here means that.
//!
//! Two ways, by load: at a fixed rate the watcher follows every event in arrival order
//! (`order=asc&after_id=`, the cursor a live stream or an export follows) and samples each;
//! flat out, following everything would spend the Core's CPU on serving pages, so it reads
//! the stored-events counter and samples the newest event of each poll instead.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::report::unix_micros;

/// Events per page when following.
const PAGE: usize = 1000;

/// What the watcher saw until it was told to stop or everything arrived.
#[derive(Debug, Default)]
pub struct WatchOutcome {
    /// Events seen stored.
    pub rows: u64,
    /// When the last expected event became visible.
    pub all_stored_after: Option<Duration>,
    /// Latency samples in microseconds: time seen stored minus `bench_sent_us`.
    pub latencies_micros: Vec<u64>,
    /// The first stage of the same samples: the Core's `received_at` minus `bench_sent_us`
    /// (the honeypot's write, the node, and the link). The rest is the Core's queue and commit.
    pub to_core_micros: Vec<u64>,
}

/// Settings of one watch.
pub struct StoreWatch {
    /// `http://127.0.0.1:<api port>`.
    pub api_base: String,
    /// Events to wait for.
    pub expected_rows: u64,
    /// Follow every event (fixed rate) or sample the newest (flat out).
    pub follow_every_event: bool,
    pub poll_interval: Duration,
    pub started: Instant,
}

impl StoreWatch {
    /// Polls until `expected_rows` events are stored or `stop` is set. Runs on its own
    /// thread with its own runtime: it must not wait behind the load generator.
    pub fn run(self, stop: &AtomicBool) -> anyhow::Result<WatchOutcome> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.watch(stop))
    }

    async fn watch(self, stop: &AtomicBool) -> anyhow::Result<WatchOutcome> {
        let client = reqwest::Client::new();
        let mut outcome = WatchOutcome::default();
        let mut after_id = 0i64;
        let mut newest_sampled = 0i64;
        while !stop.load(Ordering::Relaxed) {
            if self.follow_every_event {
                let url = format!(
                    "{}/api/v1/events?order=asc&limit={PAGE}&after_id={after_id}",
                    self.api_base
                );
                let page = get_json(&client, &url).await?;
                let now = unix_micros();
                let events = page["events"].as_array().context("no events in a page")?;
                for event in events {
                    outcome.rows += 1;
                    sample(event, now, &mut outcome);
                }
                after_id = page["next_after_id"].as_i64().unwrap_or(after_id);
                if events.len() == PAGE && outcome.rows < self.expected_rows {
                    continue;
                }
            } else {
                outcome.rows = stored_events(&client, &self.api_base)
                    .await
                    .unwrap_or(outcome.rows);
                let url = format!("{}/api/v1/events?limit=1", self.api_base);
                let page = get_json(&client, &url).await?;
                let now = unix_micros();
                if let Some(newest) = page["events"].get(0) {
                    let id = newest["id"].as_i64().unwrap_or(0);
                    if id > newest_sampled {
                        newest_sampled = id;
                        sample(newest, now, &mut outcome);
                    }
                }
            }
            if outcome.rows >= self.expected_rows {
                outcome.all_stored_after = Some(self.started.elapsed());
                break;
            }
            tokio::time::sleep(self.poll_interval).await;
        }
        Ok(outcome)
    }
}

/// Adds the latency of a benchmark event seen at `now`.
fn sample(event: &Value, now: u64, outcome: &mut WatchOutcome) {
    let Some(sent) = event["data"]["bench_sent_us"].as_u64() else {
        return;
    };
    outcome.latencies_micros.push(now.saturating_sub(sent));
    let received = event["received_at"]
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map_or(sent, |time| time.timestamp_micros().max(0) as u64);
    outcome.to_core_micros.push(received.saturating_sub(sent));
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("reading GET {url}"))
}

/// `honeybee_core_events_stored_total` from the Core's metrics.
async fn stored_events(client: &reqwest::Client, api_base: &str) -> Option<u64> {
    let text = client
        .get(format!("{api_base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix("honeybee_core_events_stored_total ")?
            .trim()
            .parse()
            .ok()
    })
}

/// The final count: benchmark events stored, and how many distinct ones (the difference
/// is duplicates), read by following every stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCount {
    pub rows: u64,
    pub distinct: u64,
}

pub async fn count_benchmark_events(api_base: &str) -> anyhow::Result<StoredCount> {
    let client = reqwest::Client::new();
    let mut distinct = HashSet::new();
    let mut rows = 0u64;
    let mut after_id = 0i64;
    loop {
        let url = format!("{api_base}/api/v1/events?order=asc&limit={PAGE}&after_id={after_id}");
        let page = get_json(&client, &url).await?;
        let events = page["events"].as_array().context("no events in a page")?;
        for event in events {
            if let Some(id) = event["data"]["bench_id"].as_u64() {
                rows += 1;
                distinct.insert(id);
            }
        }
        if events.is_empty() {
            return Ok(StoredCount {
                rows,
                distinct: distinct.len() as u64,
            });
        }
        after_id = page["next_after_id"].as_i64().unwrap_or(after_id);
    }
}
