//! HoneyBee Node: receives honeypot events on the ingest port (127.0.0.1:9100), normalises
//! them and forwards them to the Core over Protocol v2.
//!
//! [`start`] loads the node's identity, opens its durable spool, binds the ingest port and
//! connects to the Core in the background (the node accepts events into the spool while
//! the Core is unreachable). Cancelling the shutdown token stops ingest, spools what was
//! read, forwards the spool and waits for the Core's acknowledgement (bounded), and sends
//! `NodeDrop`.

pub mod config;
mod credentials;
mod data_dir;
mod embedded;
mod identity;
mod ingest;
mod ingest_queue;
mod metrics;
mod metrics_endpoint;
mod pot_base_dir;
mod pot_identities;
mod pots;
mod spool;
mod tls;
mod uplink;
mod user_namespace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use honeybee_byte_budget::ByteBudget;
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
pub use user_namespace::{enter_user_namespace_for_pots, UserNamespaceEntry};

use crate::config::NodeTypeSetting;
use crate::ingest::IngestContext;
use crate::metrics::NodeMetrics;
use crate::pot_identities::PotIdentities;
use crate::pots::{PotManager, PotPrivilege, PotSettings};
use crate::uplink::UplinkContext;

/// Messages about pots waiting for the uplink (statuses are re-sent in full on reconnect).
const OUTBOX_CAPACITY: usize = 1024;

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
    #[error("setting up TLS to the core: {0}")]
    Tls(String),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialError),
    #[error("opening the spool: {0}")]
    Spool(#[from] spool::SpoolError),
    #[error("setting up honeypot management: {0}")]
    Pots(String),
    #[error("node task failed: {0}")]
    Task(String),
}

/// A started Node.
pub struct RunningNode {
    pub node_id: u64,
    /// Where honeypots send their events.
    pub ingest_address: SocketAddr,
    /// Where installed pots live, when this node runs pots.
    pub pots_directory: Option<PathBuf>,
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
    // Children (pot installs, pots) run in other directories: they get absolute paths.
    let config = config.with_absolute_paths()?;
    // Everything the node creates is its own alone (0600/0700); what earlier versions left
    // readable is closed below, once the data directory exists.
    data_dir::private_umask();
    let node_id = identity::load_or_create_node_id(&config.node.data_dir)?;
    let data_dir = &config.node.data_dir;
    match data_dir::tighten(data_dir, &config.honeypot.base_dir(data_dir)) {
        Ok(0) => {}
        Ok(changed) => tracing::warn!(
            data_dir = %data_dir.display(),
            changed,
            "closed files and directories of the data directory that others could read (now 0600/0700)"
        ),
        Err(error) => tracing::error!(
            data_dir = %data_dir.display(),
            %error,
            "tightening the data directory's permissions failed"
        ),
    }
    let credentials = if config.auth.totp_enabled {
        let credentials = credentials::NodeCredentials::load(
            config.totp_secret_file(),
            config.auth.enrollment_token.clone(),
        )?;
        if !credentials.is_enrolled() && config.auth.enrollment_token.is_none() {
            tracing::info!("not enrolled yet and no enrollment token set: only a core with open enrollment will accept this node");
        }
        Some(Arc::new(credentials))
    } else {
        tracing::warn!("auth.totp_enabled is false: this node keeps no TOTP secret and a HoneyBee core will refuse it after its first registration");
        None
    };
    let registry = MetricsRegistry::new();
    let metrics = Arc::new(NodeMetrics::new(registry.clone()));
    let (spool, spool_writer, recovery) = spool::Spool::open(spool::SpoolOptions {
        directory: config.spool_directory(),
        max_bytes: config.spool.max_bytes,
        segment_bytes: config.spool.segment_bytes,
        full_policy: config.spool.full_policy,
    })?;
    tracing::info!(
        directory = %config.spool_directory().display(),
        unacknowledged = recovery.unacknowledged_events,
        torn_bytes_cut = recovery.torn_bytes_cut,
        "spool opened"
    );
    metrics.spool_size_bytes.set(spool.size_bytes() as i64);

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

    let (queue_sender, queue_receiver) = ingest_queue::ingest_queue(
        config.ingest.queue_capacity,
        ByteBudget::new(
            config.ingest.queue_max_bytes,
            metrics.ingest_queue_budget.clone(),
        ),
    );
    let (outbox_sender, outbox) = mpsc::channel(OUTBOX_CAPACITY);
    // Ends when ingest has stopped and everything it read is spooled.
    let spool_writer = tokio::spawn(spool::run_spool_writer(
        spool_writer,
        queue_receiver,
        spool::WriterContext {
            metrics: metrics.clone(),
            sync_interval: Duration::from_millis(config.spool.sync_interval_ms),
            alarms: outbox_sender.clone(),
        },
    ));
    let identities = Arc::new(PotIdentities::default());
    let ingest_context = Arc::new(IngestContext {
        queue: queue_sender,
        metrics: metrics.clone(),
        max_line_bytes: config.ingest.max_line_bytes,
        idle_timeout: config.ingest.idle_timeout(),
        max_events_per_second: config.ingest.max_events_per_second,
        alarms: outbox_sender.clone(),
        log_limiter: ingest::ingest_log_limiter(),
        identities: Some(identities.clone()),
        pot_pacers: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    let ingest = tokio::spawn(ingest::run_ingest_listener(
        listener,
        ingest_context,
        honeybee_accept::ConnectionLimiter::new(
            config.ingest.max_connections,
            config.ingest.max_connections_per_sender,
        ),
        shutdown.clone(),
    ));
    // A node whose pots cannot run still forwards events: the reason is logged, reported to
    // the Core, and given in the answer to every pot command.
    let (pots, pots_unavailable) =
        if config.node.node_type == NodeTypeSetting::Full && config.honeypot.enabled {
            match start_pot_manager(
                &config,
                node_id,
                ingest_address.port(),
                identities,
                outbox_sender.clone(),
                metrics.pot_processes_survived.clone(),
            ) {
                Ok(manager) => (Some(manager), None),
                Err(error) => {
                    tracing::error!(%error, "honeypot management is unavailable on this node");
                    let _ = outbox_sender.try_send(honeybee_protocol::Message::NodeEvent(
                        honeybee_protocol::NodeEvent {
                            kind: honeybee_protocol::NodeEventKind::Error,
                            message: Some(error.to_string()),
                        },
                    ));
                    (None, Some(error.to_string()))
                }
            }
        } else {
            (None, None)
        };
    let pots_directory = pots
        .as_ref()
        .map(|manager| manager.base_dir().to_path_buf());
    let mut tasks = Vec::new();
    if let Some(manager) = pots.clone() {
        // Pots are the node's children: they stop with it (and come back with it).
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            shutdown.cancelled().await;
            manager.stop_all().await;
        }));
    }
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
        pots,
        pots_unavailable,
        spool,
        credentials,
        tls: match tls::connector(&config.tls).map_err(NodeError::Tls)? {
            Some(connector) => Some((
                connector,
                tls::server_name(&config.tls, &config.server.address).map_err(NodeError::Tls)?,
            )),
            None => None,
        },
    });
    let uplink = tokio::spawn(uplink::run_uplink(uplink_context, outbox, shutdown.clone()));
    if let Some(listen) = &config.metrics.listen {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| NodeError::Bind {
                address: listen.clone(),
                source,
            })?;
        tasks.push(tokio::spawn(metrics_endpoint::serve_metrics(
            listener,
            registry.clone(),
            shutdown.clone(),
        )));
    }
    let summary = tokio::spawn(log_summaries(metrics.clone(), shutdown));
    tracing::info!(node_id, %ingest_address, core = %config.server.address, "node started");
    Ok(RunningNode {
        pots_directory,
        node_id,
        ingest_address,
        metrics,
        tasks: {
            tasks.extend([ingest, spool_writer, uplink, summary]);
            tasks
        },
    })
}

/// Lays out the built-in potstore and kit, resolves the pot user and loads the installed
/// pots (starting those that were running).
fn start_pot_manager(
    config: &NodeConfig,
    node_id: u64,
    event_port: u16,
    identities: Arc<PotIdentities>,
    outbox: mpsc::Sender<honeybee_protocol::Message>,
    processes_survived: Arc<honeybee_telemetry::Counter>,
) -> Result<Arc<PotManager>, NodeError> {
    let data_dir = &config.node.data_dir;
    let setup = |what: &str, path: &Path, error: std::io::Error| {
        NodeError::Pots(format!("{what} {}: {error}", path.display()))
    };
    let privilege = pots::decide_pot_privilege(
        &config.honeypot.run_as,
        config.honeypot.allow_unprivileged,
        user_namespace::why_not_entered(),
    )
    .map_err(NodeError::Pots)?;
    if let PotPrivilege::SubordinateIds { ids, .. } = &privilege {
        tracing::info!(
            first_id = user_namespace::FIRST_POT_ID,
            ids = ids.pot_id_span,
            "the node is root in a user namespace of its own: each pot runs as one of this user's subordinate ids"
        );
    }
    // Pot users pass through to their own directories; nobody lists the others.
    let per_pot_users = !matches!(privilege, PotPrivilege::NodeUser);
    // Only real root can make the system location; in its own user namespace the node
    // owns nothing outside the user's files.
    let system_root = matches!(privilege, PotPrivilege::PerPotUsers { .. })
        .then(|| Path::new(pot_base_dir::SYSTEM_POT_ROOT));
    let (base_dir, moved) =
        pot_base_dir::resolve_pot_base_dir(config, node_id, per_pot_users, system_root)
            .map_err(NodeError::Pots)?;
    if let Some(reason) = moved {
        tracing::info!(base_dir = %base_dir.display(), "{reason}");
    }
    let kit_dir = data_dir.join("kit");
    embedded::materialize(embedded::PYTHON_KIT, &kit_dir)
        .map_err(|e| setup("writing", &kit_dir, e))?;
    let potstore_dir = match &config.honeypot.potstore {
        Some(directory) => directory.clone(),
        None => {
            let directory = data_dir.join("potstore-builtin");
            embedded::materialize(embedded::BUILTIN_POTSTORE, &directory)
                .map_err(|e| setup("writing", &directory, e))?;
            directory
        }
    };
    let default_config = BTreeMap::from([
        (
            "ssh_port".to_owned(),
            config.honeypot.default_ssh_port.to_string(),
        ),
        (
            "telnet_port".to_owned(),
            config.honeypot.default_telnet_port.to_string(),
        ),
    ]);
    let settings = PotSettings {
        node_id,
        base_dir,
        control_base: data_dir.join("pot-state"),
        state_file: data_dir.join("pots.json"),
        potstore_dir,
        kit_dir,
        python: config.honeypot.python.clone(),
        event_port,
        privilege,
        identities,
        git: pots::GitPolicy {
            allow_ssh: config.honeypot.git_allow_ssh,
            ca_file: config.honeypot.git_ca_file.clone(),
        },
        stop_grace: config.honeypot.stop_grace(),
        restart_backoff: config.honeypot.restart_backoff(),
        log_max_bytes: config.honeypot.log_max_bytes,
        log_files: config.honeypot.log_files,
        default_config,
        processes_survived,
    };
    PotManager::start(settings, outbox).map_err(NodeError::Pots)
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
        events_spooled = metrics.spool_appended.get(),
        spool_refused = metrics.spool_refused.get(),
        spool_dropped = metrics.spool_dropped.get(),
        ingest_queue_byte_waits = metrics.ingest_queue_budget.producer_waits.get(),
        events_forwarded = metrics.events_forwarded.get(),
        events_acknowledged = metrics.events_acknowledged.get(),
        lines_rejected = metrics.lines_rejected.get(),
        events_too_large = metrics.events_too_large.get(),
        commands_received = metrics.commands_received.get(),
        core_sessions = metrics.core_connections.get(),
        core_connection_failures = metrics.core_connection_failures.get(),
        "{what}"
    );
}
