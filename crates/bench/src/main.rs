//! `honeybee-bench`: the benchmark harness. It starts the real release binaries on
//! loopback, drives them with simulated honeypots or nodes, and reports what was stored,
//! how fast, how late, and at what CPU and memory cost. See docs/performance.md.

mod connections;
mod daemons;
mod events;
mod load;
mod pipeline;
mod query;
mod report;
mod rsyslog;
mod store_watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::json;

/// HoneyBee benchmark harness (scenarios of docs/performance.md).
#[derive(Debug, Parser)]
struct Arguments {
    /// Directory with honeybee-core and honeybee-node (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Keep the work directory (logs, databases) here instead of a temporary one. It must
    /// be empty or absent: a database left by an earlier run would count its events again.
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// (a), (b), (c): M nodes x K honeypots into the Core's store; optionally the same
    /// load through rsyslog's two-hop forward for comparison.
    Pipeline {
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[arg(long, default_value_t = 16)]
        pots: usize,
        /// Events in all.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events per second in all (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Give up waiting for the store after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Run the rsyslog two-hop reference with the same events first.
        #[arg(long)]
        compare_rsyslog: bool,
        /// `[storage] sqlite_synchronous` of the Core (`full` is the shipped default).
        #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
        synchronous: String,
        /// Make the Core's retention drop partitions all through the run: partitions of
        /// 20,000 events, a 1-byte disk cap checked every second (scenario c's second run).
        #[arg(long)]
        retention_churn: bool,
    },
    /// (d): idle simulated nodes heartbeating against one Core.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 30.0)]
        heartbeat_interval: f64,
        /// Heartbeat rounds to hold after all registered.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
    /// (e): filtered queries and pagination over a big store.
    Query {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let bin_dir = match arguments.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("locating this binary's directory")?
            .to_path_buf(),
    };
    let temporary = tempfile::Builder::new()
        .prefix("honeybee-bench-")
        .tempdir()?;
    let work_dir = arguments
        .work_dir
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating the work directory {}", work_dir.display()))?;
    if std::fs::read_dir(&work_dir)?.next().is_some() {
        bail!(
            "work directory {} is not empty: a benchmark needs a fresh one (an earlier run's database would be counted again)",
            work_dir.display()
        );
    }
    let report = match arguments.scenario {
        Scenario::Pipeline {
            nodes,
            pots,
            events,
            rate,
            timeout,
            compare_rsyslog,
            synchronous,
            retention_churn,
        } => {
            let churn = if retention_churn {
                "partition_max_events = 20000\n[retention]\nmax_disk_bytes = 1\ncheck_interval = 1\n"
            } else {
                ""
            };
            let settings = pipeline::PipelineSettings {
                bin_dir,
                nodes,
                pots_per_node: pots,
                events,
                rate,
                timeout: Duration::from_secs(timeout),
                core_toml: format!("[storage]\nsqlite_synchronous = \"{synchronous}\"\n{churn}"),
            };
            let corpus = Arc::new(events::EventCorpus::new(pots));
            let mut reports = Vec::new();
            if compare_rsyslog {
                let dir = work_dir.join("rsyslog");
                std::fs::create_dir_all(&dir)?;
                let reference = rsyslog::run_rsyslog(&settings, corpus.clone(), &dir).await?;
                reference.print();
                reports.push(reference);
            }
            let dir = work_dir.join("honeybee");
            std::fs::create_dir_all(&dir)?;
            let measured = pipeline::run_honeybee(&settings, corpus, &dir).await?;
            measured.print();
            if let [reference, measured] = reports
                .as_slice()
                .iter()
                .chain([&measured])
                .collect::<Vec<_>>()[..]
            {
                println!(
                    "ratio: honeybee stores {:.2}x the events/s rsyslog forwards",
                    measured.events_per_second / reference.events_per_second
                );
            }
            reports.push(measured);
            json!({ "scenario": "pipeline", "runs": reports })
        }
        Scenario::Connections {
            nodes,
            heartbeat_interval,
            rounds,
        } => {
            let settings = connections::ConnectionSettings {
                bin_dir,
                nodes,
                heartbeat_interval,
                heartbeat_rounds: rounds,
            };
            let measured = connections::run(&settings, &work_dir).await?;
            measured.print();
            json!({ "scenario": "connections", "run": measured })
        }
        Scenario::Query { events } => {
            let settings = query::QuerySettings { bin_dir, events };
            let measured = query::run(&settings, &work_dir).await?;
            measured.print();
            json!({ "scenario": "query", "run": measured })
        }
    };
    if let Some(path) = arguments.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
