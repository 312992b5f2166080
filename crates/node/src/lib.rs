//! HoneyBee Node: receives honeypot events on the ingest port (127.0.0.1:9100), normalises
//! them and forwards them to the Core over Protocol v2.
//!
//! [`start`] loads the node's identity, binds the ingest port and connects to the Core in
//! the background (the node works, and buffers, while the Core is unreachable). Cancelling
//! the shutdown token stops ingest, forwards what is queued and sends `NodeDrop`.

pub mod config;
mod identity;
mod ingest;
mod metrics;
mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use honeybee_protocol::NodeType;
use honeybee_telemetry::{LogRateLimiter, MetricsRegistry};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, NodeConfig};
pub use identity::IdentityError;
pub use uplink::UplinkError;

use crate::config::NodeTypeSetting;
use crate::ingest::IngestContext;
use crate::metrics::NodeMetrics;
use crate::uplink::UplinkContext;

/// How often a summary of the node's counters is logged.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("binding the ingest port on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node task failed: {0}")]
    Task(String),
}

/// A started Node.
pub struct RunningNode {
    pub node_id: u64,
    /// Where honeypots send their events.
    pub ingest_address: SocketAddr,
    metrics: Arc<NodeMetrics>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Waits until the node has stopped after its shutdown token was cancelled.
    pub async fn wait(self) -> Result<(), NodeError> {
        for task in self.tasks {
            task.await
                .map_err(|error| NodeError::Task(error.to_string()))?;
        }
        log_counters(&self.metrics, "node stopped");
        Ok(())
    }
}

pub async fn start(
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<RunningNode, NodeError> {
    config.validate()?;
    let node_id = identity::load_or_create_node_id(&config.node.data_dir)?;
    let registry = MetricsRegistry::new();
    let metrics = Arc::new(NodeMetrics::new(registry.clone()));

    let address = format!("{}:{}", config.ingest.host, config.ingest.port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| NodeError::Bind {
            address: address.clone(),
            source,
        })?;
    let ingest_address = listener.local_addr().map_err(|source| NodeError::Bind {
        address: address.clone(),
        source,
    })?;

    let (queue_sender, queue_receiver) = mpsc::channel(config.ingest.queue_capacity);
    let ingest_context = Arc::new(IngestContext {
        queue: queue_sender,
        metrics: metrics.clone(),
        max_line_bytes: config.ingest.max_line_bytes,
        log_limiter: LogRateLimiter::default(),
    });
    let ingest = tokio::spawn(ingest::run_ingest_listener(
        listener,
        ingest_context,
        config.ingest.max_connections,
        shutdown.clone(),
    ));
    let uplink_context = Arc::new(UplinkContext {
        node_id,
        node_name: config.node.name.clone(),
        node_type: match config.node.node_type {
            NodeTypeSetting::Full => NodeType::Full,
            NodeTypeSetting::Agent => NodeType::Agent,
        },
        server: config.server.clone(),
        metrics: metrics.clone(),
        log_limiter: LogRateLimiter::default(),
    });
    let uplink = tokio::spawn(uplink::run_uplink(
        uplink_context,
        queue_receiver,
        shutdown.clone(),
    ));
    let summary = tokio::spawn(log_summaries(metrics.clone(), shutdown));
    tracing::info!(node_id, %ingest_address, core = %config.server.address, "node started");
    Ok(RunningNode {
        node_id,
        ingest_address,
        metrics,
        tasks: vec![ingest, uplink, summary],
    })
}

/// Logs the counters every [`SUMMARY_INTERVAL`] while there is traffic.
async fn log_summaries(metrics: Arc<NodeMetrics>, shutdown: CancellationToken) {
    let mut last_accepted = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SUMMARY_INTERVAL) => {}
        }
        let accepted = metrics.events_accepted.get();
        if accepted != last_accepted {
            last_accepted = accepted;
            log_counters(&metrics, "node activity");
        }
    }
}

fn log_counters(metrics: &NodeMetrics, what: &str) {
    tracing::info!(
        events_accepted = metrics.events_accepted.get(),
        events_forwarded = metrics.events_forwarded.get(),
        lines_rejected = metrics.lines_rejected.get(),
        events_too_large = metrics.events_too_large.get(),
        commands_received = metrics.commands_received.get(),
        core_sessions = metrics.core_connections.get(),
        core_connection_failures = metrics.core_connection_failures.get(),
        "{what}"
    );
}
