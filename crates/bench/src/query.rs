//! Scenario (e): queries over a big store. The harness fills a Core's store through the
//! store crate (realistic spread: 100 nodes, 400 pots, eight event types, 50,000 attacker
//! addresses, 30 days), starts the real Core on it and times `/api/v1/events` first pages
//! for each filter, pages deep into one result with the cursor, pages forward from random
//! ids, and asks `/api/v1/stats` for a day and for everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use honeybee_store::{ColumnarEventStore, ColumnarOptions, EventFields, EventStore, NewEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::daemons;
use crate::events::EVENT_IDS;
use crate::pipeline::directory_bytes;
use crate::report::Latency;

const NODES: u64 = 100;
const POTS_PER_NODE: u64 = 4;
const SOURCES: u32 = 50_000;
const SPAN_SECONDS: i64 = 30 * 24 * 3600;
/// Events per insert transaction while filling.
const FILL_BATCH: usize = 10_000;
/// Times each query is repeated; the report gives its percentiles.
const REPETITIONS: usize = 20;
/// Pages followed with the cursor in the pagination query.
const DEEP_PAGES: usize = 50;

#[derive(Debug, Clone)]
pub struct QuerySettings {
    pub bin_dir: PathBuf,
    pub events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryTiming {
    pub query: String,
    pub results_on_first_page: usize,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    pub events: u64,
    pub fill_events_per_second: f64,
    pub database_mib: f64,
    pub queries: Vec<QueryTiming>,
    /// Per-page latency while following the cursor `DEEP_PAGES` pages deep.
    pub deep_pagination: Latency,
    /// `order=asc&after_id=` pages from random ids (the tail a stream follows).
    pub after_id_pages: Latency,
    /// `/api/v1/stats`, every field's top 10.
    pub stats: Vec<QueryTiming>,
    /// Bytes of the event files per event (sealed partitions and their summaries).
    pub disk_bytes_per_event: f64,
}

impl QueryReport {
    pub fn print(&self) {
        println!(
            "query: {} events stored ({:.0} MiB, filled at {:.0} events/s)",
            self.events, self.database_mib, self.fill_events_per_second
        );
        for timing in &self.queries {
            println!(
                "  {:<58} first page p50 {:>7.2} ms, p99 {:>7.2} ms ({} results)",
                timing.query,
                timing.latency.p50_ms,
                timing.latency.p99_ms,
                timing.results_on_first_page
            );
        }
        println!(
            "  {:<58} per page  p50 {:>7.2} ms, p99 {:>7.2} ms",
            format!("{DEEP_PAGES} pages deep with the cursor"),
            self.deep_pagination.p50_ms,
            self.deep_pagination.p99_ms
        );
        println!(
            "  {:<58} per page  p50 {:>7.2} ms, p99 {:>7.2} ms",
            format!("{REPETITIONS} order=asc&after_id= pages from random ids"),
            self.after_id_pages.p50_ms,
            self.after_id_pages.p99_ms
        );
        for timing in &self.stats {
            println!(
                "  {:<58} p50 {:>7.2} ms, p99 {:>7.2} ms",
                timing.query, timing.latency.p50_ms, timing.latency.p99_ms
            );
        }
        println!(
            "  disk {:.1} bytes per event (event files)",
            self.disk_bytes_per_event
        );
    }
}

pub async fn run(settings: &QuerySettings, dir: &Path) -> anyhow::Result<QueryReport> {
    let data_dir = dir.join("core-data");
    let filled = Instant::now();
    fill(&data_dir, settings.events).await?;
    let fill_events_per_second = settings.events as f64 / filled.elapsed().as_secs_f64();
    let database_mib = directory_bytes(&data_dir)? as f64 / (1024.0 * 1024.0);
    let disk_bytes_per_event = directory_bytes(&ColumnarOptions::directory_in(&data_dir))? as f64
        / settings.events.max(1) as f64;

    let (mut core, ports) = daemons::start_core(&settings.bin_dir, dir, "")?;
    daemons::wait_for_port(
        ([127, 0, 0, 1], ports.api_port).into(),
        Duration::from_secs(60),
    )
    .await?;
    let base = format!("http://127.0.0.1:{}/api/v1/events", ports.api_port);
    let client = reqwest::Client::new();
    let middle = start_time() + chrono::Duration::seconds(SPAN_SECONDS / 2);
    let hour_later = middle + chrono::Duration::hours(1);
    let queries = [
        "limit=100".to_owned(),
        format!("limit=100&pot_id={}", pot_id(42)),
        "limit=100&event_type=cowrie.session.file_download".to_owned(),
        format!("limit=100&src_ip={}", source_ip(12_345)),
        "limit=100&node_id=17".to_owned(),
        format!(
            "limit=100&since={}&until={}",
            middle.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hour_later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        format!(
            "limit=100&event_type=cowrie.login.success&since={}",
            middle.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        format!(
            "limit=100&node_id=17&event_type=cowrie.command.input&src_ip={}",
            source_ip(7)
        ),
        "limit=100&country=NL".to_owned(),
        "limit=100&username=oracle".to_owned(),
        "limit=100&password=pw1234".to_owned(),
        "limit=100&country=NL&username=oracle".to_owned(),
    ];
    let mut timings = Vec::new();
    for query in queries {
        let url = format!("{base}?{query}");
        let mut samples = Vec::new();
        let mut results = 0;
        for _ in 0..REPETITIONS {
            let (elapsed, body) = timed_get(&client, &url).await?;
            results = body["events"].as_array().map(Vec::len).unwrap_or(0);
            samples.push(elapsed.as_micros() as u64);
        }
        timings.push(QueryTiming {
            query,
            results_on_first_page: results,
            latency: Latency::from_micros(samples),
        });
    }
    let mut page_samples = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..DEEP_PAGES {
        let url = match &cursor {
            Some(cursor) => {
                format!("{base}?limit=100&event_type=cowrie.login.failed&cursor={cursor}")
            }
            None => format!("{base}?limit=100&event_type=cowrie.login.failed"),
        };
        let (elapsed, body) = timed_get(&client, &url).await?;
        page_samples.push(elapsed.as_micros() as u64);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut random = StdRng::seed_from_u64(7);
    let mut after_id_samples = Vec::new();
    for _ in 0..REPETITIONS {
        let after_id = random.gen_range(0..settings.events);
        let url = format!("{base}?order=asc&limit=100&after_id={after_id}");
        let (elapsed, _) = timed_get(&client, &url).await?;
        after_id_samples.push(elapsed.as_micros() as u64);
    }
    let end = start_time() + chrono::Duration::seconds(SPAN_SECONDS);
    let day_before_end = end - chrono::Duration::hours(24);
    let stats_base = format!("http://127.0.0.1:{}/api/v1/stats", ports.api_port);
    let mut stats = Vec::new();
    for query in [
        format!(
            "limit=10&since={}&until={}",
            day_before_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        "limit=10".to_owned(),
    ] {
        let url = format!("{stats_base}?{query}");
        let mut samples = Vec::new();
        let mut total = 0;
        for _ in 0..REPETITIONS {
            let (elapsed, body) = timed_get(&client, &url).await?;
            total = body["total"].as_u64().unwrap_or(0) as usize;
            samples.push(elapsed.as_micros() as u64);
        }
        stats.push(QueryTiming {
            query: format!("stats {query}"),
            results_on_first_page: total,
            latency: Latency::from_micros(samples),
        });
    }
    core.check_running()?;
    Ok(QueryReport {
        events: settings.events,
        fill_events_per_second,
        database_mib,
        queries: timings,
        deep_pagination: Latency::from_micros(page_samples),
        after_id_pages: Latency::from_micros(after_id_samples),
        stats,
        disk_bytes_per_event,
    })
}

async fn timed_get(client: &reqwest::Client, url: &str) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("reading GET {url}"))?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}: {body}");
    }
    Ok((elapsed, body))
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

fn pot_id(index: u64) -> String {
    format!(
        "cowrie-{:03}-{}",
        index / POTS_PER_NODE,
        index % POTS_PER_NODE
    )
}

fn source_ip(index: u32) -> String {
    format!(
        "198.{}.{}.{}",
        18 + index / 65_536,
        (index / 256) % 256,
        index % 256
    )
}

/// Writes `events` events in time order through the store crate, in big batches, then
/// seals them and builds their day summaries: the Core then opens a store at rest.
async fn fill(data_dir: &Path, events: u64) -> anyhow::Result<()> {
    let store = ColumnarEventStore::open(ColumnarOptions {
        sync_each_batch: false,
        ..ColumnarOptions::new(ColumnarOptions::directory_in(data_dir))
    })
    .context("opening the store to fill")?;
    let mut random = StdRng::seed_from_u64(0x0071_7565_7279);
    let start = start_time();
    let step_micros = (SPAN_SECONDS * 1_000_000) / events.max(1) as i64;
    let mut written = 0u64;
    while written < events {
        let count = (events - written).min(FILL_BATCH as u64);
        let batch: Vec<NewEvent> = (0..count)
            .map(|offset| {
                let sequence = written + offset;
                let timestamp =
                    start + chrono::Duration::microseconds(step_micros * sequence as i64);
                synthetic_event(&mut random, timestamp)
            })
            .collect();
        store
            .insert_events(Arc::from(batch))
            .await
            .context("filling the store")?;
        written += count;
    }
    store.seal_now().context("sealing the filled store")?;
    store.summarize_due_days();
    Ok(())
}

/// Usernames and command stems attackers try, for realistic spreads of values.
const USERNAMES: [&str; 8] = [
    "root", "admin", "ubuntu", "pi", "test", "oracle", "user", "guest",
];
const COMMANDS: [&str; 6] = [
    "uname -a",
    "cat /proc/cpuinfo",
    "wget",
    "curl",
    "ls -la",
    "echo",
];
const COUNTRIES: [&str; 12] = [
    "CN", "US", "RU", "BR", "IN", "DE", "NL", "VN", "KR", "ID", "FR", "GB",
];

/// A fixed country per source address, as GeoIP would give.
fn country_of(source: &str) -> &'static str {
    let sum: usize = source.bytes().map(usize::from).sum();
    COUNTRIES[sum % COUNTRIES.len()]
}

fn synthetic_event(random: &mut StdRng, timestamp: DateTime<Utc>) -> NewEvent {
    let pot = random.gen_range(0..NODES * POTS_PER_NODE);
    let event_type = EVENT_IDS[random.gen_range(0..EVENT_IDS.len())];
    let source = source_ip(random.gen_range(0..SOURCES));
    let country = country_of(&source);
    let src_port: u16 = random.gen_range(1024..65535);
    let session = format!("{:012x}", random.gen::<u64>() & 0xffff_ffff_ffff);
    let username = USERNAMES[random.gen_range(0..USERNAMES.len())];
    let command = (event_type == "cowrie.command.input").then(|| {
        format!(
            "{} {}",
            COMMANDS[random.gen_range(0..COMMANDS.len())],
            random.gen_range(0..50)
        )
    });
    let password = format!("pw{}", random.gen_range(0..10_000));
    let mut data = Map::new();
    data.insert("src_ip".into(), Value::String(source.clone()));
    data.insert("src_port".into(), json!(src_port));
    data.insert("dst_port".into(), json!(22));
    data.insert("session".into(), Value::String(session.clone()));
    data.insert("protocol".into(), Value::String("ssh".into()));
    data.insert(
        "message".into(),
        Value::String(format!("{event_type} from {source}")),
    );
    data.insert("username".into(), Value::String(username.into()));
    if let Some(command) = &command {
        data.insert("input".into(), Value::String(command.clone()));
    }
    data.insert("password".into(), Value::String(password.clone()));
    NewEvent {
        node_id: pot / POTS_PER_NODE + 1,
        pot_id: pot_id(pot),
        pot_type: "cowrie".into(),
        event_type: event_type.into(),
        timestamp,
        received_at: timestamp,
        data_json: Value::Object(data).to_string(),
        // What the Core's ingest takes from the payload above.
        fields: EventFields {
            src_ip: Some(source),
            src_port: Some(src_port),
            dst_port: Some(22),
            username: Some(username.into()),
            command,
            country: Some(country.into()),
            password: Some(password),
            session: Some(session),
            protocol: Some("ssh".into()),
            ..EventFields::default()
        },
        seq: None,
    }
}
