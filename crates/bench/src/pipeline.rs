//! Scenarios (a), (b) and (c): M nodes × K honeypots writing events that must end up
//! stored in the Core's SQLite file. Throughput and latency are measured at the store,
//! not at the sender; loss and duplicates are counted from the stored rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::daemons::{self, Daemon, ProcessUsage};
use crate::events::EventCorpus;
use crate::load::{self, PotLoad};
use crate::report::{Latency, PipelineReport, ProcessCost};
use crate::store_watch::{count_benchmark_events, StoreWatch, StoredCount, WatchOutcome};

/// Latency samples to aim for in a run at full speed (every event in a fixed-rate run).
const TARGET_LATENCY_SAMPLES: u64 = 200_000;

/// How one pipeline run is shaped.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Directory holding `honeybee-core` and `honeybee-node`.
    pub bin_dir: PathBuf,
    pub nodes: usize,
    pub pots_per_node: usize,
    /// Events in all, spread evenly over the pots.
    pub events: u64,
    /// Events per second in all, or as fast as possible.
    pub rate: Option<f64>,
    /// Longest wait for everything to be stored, counted from the first write.
    pub timeout: Duration,
    /// Extra `bee_config.toml` text for the Core.
    pub core_toml: String,
}

impl PipelineSettings {
    pub fn pot_count(&self) -> usize {
        self.nodes * self.pots_per_node
    }

    /// The per-pot loads against ingest ports `ports` (one per node, or one shared).
    pub fn pot_loads(&self, ports: &[u16]) -> Vec<PotLoad> {
        let pot_count = self.pot_count() as u64;
        let mut loads = Vec::new();
        let mut first_id = 1;
        for pot in 0..pot_count {
            let events = self.events / pot_count + u64::from(pot < self.events % pot_count);
            loads.push(PotLoad {
                port: ports[(pot as usize / self.pots_per_node) % ports.len()],
                pot_index: pot as usize % self.pots_per_node,
                pot_count: self.pots_per_node,
                events,
                first_id,
                rate: self.rate.map(|rate| rate / pot_count as f64),
            });
            first_id += events;
        }
        loads
    }

    /// Every n-th event gives a latency sample.
    pub fn sample_every(&self) -> u64 {
        if self.rate.is_some() {
            1
        } else {
            (self.events / TARGET_LATENCY_SAMPLES).max(1)
        }
    }

    fn poll_interval(&self) -> Duration {
        if self.rate.is_some() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(2)
        }
    }
}

/// Runs HoneyBee: one Core, `nodes` nodes, the load, until everything is stored.
pub async fn run_honeybee(
    settings: &PipelineSettings,
    corpus: Arc<EventCorpus>,
    dir: &Path,
) -> anyhow::Result<PipelineReport> {
    let (mut core, core_ports) = daemons::start_core(&settings.bin_dir, dir, &settings.core_toml)?;
    let startup = Duration::from_secs(30);
    daemons::wait_for_port(([127, 0, 0, 1], core_ports.api_port).into(), startup)
        .await
        .context("waiting for the core")?;
    let mut nodes: Vec<Daemon> = Vec::new();
    let mut ingest_ports = Vec::new();
    for index in 0..settings.nodes {
        let (node, port) = daemons::start_node(&settings.bin_dir, dir, index, core_ports)?;
        nodes.push(node);
        ingest_ports.push(port);
    }
    for port in &ingest_ports {
        daemons::wait_for_port(([127, 0, 0, 1], *port).into(), startup)
            .await
            .context("waiting for a node's ingest port")?;
    }
    daemons::wait_for_nodes(
        core_ports.api_port,
        settings.nodes,
        startup + Duration::from_secs(settings.nodes as u64 / 4),
    )
    .await?;

    let usage =
        |core: &Daemon, nodes: &[Daemon]| -> anyhow::Result<(ProcessUsage, Vec<ProcessUsage>)> {
            Ok((
                core.usage()?,
                nodes.iter().map(Daemon::usage).collect::<Result<_, _>>()?,
            ))
        };
    let (core_before, nodes_before) = usage(&core, &nodes)?;

    let api_base = format!("http://127.0.0.1:{}", core_ports.api_port);
    let started = Instant::now();
    let watched = watch_store(api_base.clone(), settings, started);
    let sent = match load::run(corpus.clone(), settings.pot_loads(&ingest_ports)).await {
        Ok(sent) => sent,
        Err(error) => {
            watched.abandon();
            return Err(error);
        }
    };
    let watch = watched
        .finish(settings.timeout.saturating_sub(started.elapsed()))
        .await?;
    if watch.all_stored_after.is_none() && watch.rows == 0 {
        bail!("no event was stored before the timeout; see the logs in the work directory");
    }
    core.check_running()?;
    for node in &mut nodes {
        node.check_running()?;
    }
    let (core_after, nodes_after) = usage(&core, &nodes)?;
    let dropped = core_metric(&api_base, "honeybee_core_events_dropped_total").await;
    // With retention deleting during the run the store cannot witness every event: the
    // Core's stored counter (acknowledged events) does, and duplicates go unchecked.
    let stored = if dropped > 0 {
        let acknowledged = core_metric(&api_base, "honeybee_core_events_stored_total").await;
        StoredCount {
            rows: acknowledged,
            distinct: acknowledged,
        }
    } else {
        count_benchmark_events(&api_base).await?
    };
    // Disk once every partition is sealed (the newest one is still a plain log when the
    // load ends): the Core stopped, the store opened here seals what it replays.
    drop(core);
    let events_dir = honeybee_store::ColumnarOptions::directory_in(&dir.join("core-data"));
    let sealing_dir = events_dir.clone();
    tokio::task::spawn_blocking(move || {
        honeybee_store::ColumnarEventStore::open(honeybee_store::ColumnarOptions::new(sealing_dir))?
            .seal_now()
    })
    .await?
    .context("sealing the stored events after the run")?;
    let disk_bytes = directory_bytes(&events_dir)?;
    Ok(PipelineReport {
        system: "honeybee".into(),
        nodes: settings.nodes,
        pots_per_node: settings.pots_per_node,
        events_sent: sent.events,
        events_stored: stored.rows,
        duplicates: stored.rows - stored.distinct,
        lost: sent.events.saturating_sub(stored.distinct),
        dropped_by_retention: dropped,
        disk_bytes_per_event: Some(
            disk_bytes as f64 / (stored.distinct - dropped.min(stored.distinct)).max(1) as f64,
        ),
        mean_line_bytes: sent.bytes as f64 / sent.events.max(1) as f64,
        target_rate: settings.rate,
        events_per_second: rate_of(stored.distinct, watch.all_stored_after, started),
        latency: Latency::from_micros(watch.latencies_micros),
        latency_to_core: Some(Latency::from_micros(watch.to_core_micros)),
        processes: vec![
            ProcessCost::between(
                "honeybee-core",
                &[core_before],
                &[core_after],
                stored.distinct,
            ),
            ProcessCost::between(
                "honeybee-node",
                &nodes_before,
                &nodes_after,
                stored.distinct,
            ),
        ],
    })
}

/// Events per second from the first write to the moment all were seen stored (or now, if
/// they never all were).
pub fn rate_of(events: u64, all_stored_after: Option<Duration>, started: Instant) -> f64 {
    let elapsed = all_stored_after.unwrap_or_else(|| started.elapsed());
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A watcher (of the store, or of rsyslog's output file) running on a blocking thread until
/// it has seen everything or its stop flag is set.
pub struct BlockingWatch<T> {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<anyhow::Result<T>>,
}

impl<T: Send + 'static> BlockingWatch<T> {
    pub fn spawn<F>(watch: F) -> Self
    where
        F: FnOnce(&AtomicBool) -> anyhow::Result<T> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::task::spawn_blocking(move || watch(&flag));
        BlockingWatch { stop, handle }
    }

    /// Stops the watcher at once (the load failed: what it waits for will not come).
    pub fn abandon(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits at most `timeout` for the watcher to see everything, then stops it; either way
    /// returns what it saw.
    pub async fn finish(mut self, timeout: Duration) -> anyhow::Result<T> {
        let outcome = match tokio::time::timeout(timeout, &mut self.handle).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.abandon();
                self.handle.await
            }
        };
        outcome.context("a watcher thread panicked")?
    }
}

fn watch_store(
    api_base: String,
    settings: &PipelineSettings,
    started: Instant,
) -> BlockingWatch<WatchOutcome> {
    let watch = StoreWatch {
        api_base,
        expected_rows: settings.events,
        follow_every_event: settings.rate.is_some(),
        poll_interval: settings.poll_interval(),
        started,
    };
    BlockingWatch::spawn(move |stop| watch.run(stop))
}

/// A counter of the Core's metrics; 0 when absent.
async fn core_metric(api_base: &str, name: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("{api_base}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes of the files below `directory`.
pub fn directory_bytes(directory: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in
        std::fs::read_dir(directory).with_context(|| format!("listing {}", directory.display()))?
    {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}
