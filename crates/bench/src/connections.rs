//! Scenario (d): connection scale. Thousands of idle nodes, simulated at the protocol level
//! (a registration, then a `NodeStatusUpdate` heartbeat per interval, like a real node
//! with no pots), held against one real Core; the report is the Core's memory per
//! connected node and what registering and heartbeating them costs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use honeybee_protocol::{
    encode_envelope, EnvelopeDecoder, Message, NodeRegistration, NodeStatus, NodeStatusUpdate,
    NodeType, DEFAULT_MAX_ENVELOPE_BYTES,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::daemons::{self, ProcessUsage};

/// Registrations in flight at once: like a fleet coming back after a Core restart, but
/// without flooding the listen backlog.
const CONCURRENT_REGISTRATIONS: usize = 64;

/// First simulated node id (clear of the ids real nodes pick at random).
const FIRST_NODE_ID: u64 = 9_000_000_000;

#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub bin_dir: PathBuf,
    pub nodes: usize,
    /// Seconds between a simulated node's heartbeats.
    pub heartbeat_interval: f64,
    /// Heartbeat rounds to hold the nodes connected for after all registered.
    pub heartbeat_rounds: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub nodes: usize,
    pub registered: usize,
    pub registrations_per_second: f64,
    pub core_idle_rss_mib: f64,
    pub core_rss_with_nodes_mib: f64,
    /// (RSS with the nodes − RSS before) / nodes.
    pub core_kib_per_node: f64,
    /// Core CPU per second of wall time while the nodes only heartbeat.
    pub core_cpu_share_while_idle: f64,
}

impl ConnectionReport {
    pub fn print(&self) {
        println!(
            "connection scale: {} of {} simulated nodes registered at {:.0}/s",
            self.registered, self.nodes, self.registrations_per_second
        );
        println!(
            "  core RSS {:.1} MiB idle, {:.1} MiB with the nodes: {:.1} KiB per node; core CPU while they heartbeat {:.1}%",
            self.core_idle_rss_mib,
            self.core_rss_with_nodes_mib,
            self.core_kib_per_node,
            self.core_cpu_share_while_idle * 100.0
        );
    }
}

pub async fn run(settings: &ConnectionSettings, dir: &Path) -> anyhow::Result<ConnectionReport> {
    let (mut core, ports) = daemons::start_core(
        &settings.bin_dir,
        dir,
        &format!(
            // Every simulated node connects from 127.0.0.1: the per-address cap, which
            // keeps one host from taking every slot, must let all of them in here.
            "[server]\nmax_node_connections = {0}\nmax_node_connections_per_address = {0}\nheartbeat_interval = {1}\n",
            settings.nodes + 64,
            settings.heartbeat_interval
        ),
    )?;
    let node_address = format!("127.0.0.1:{}", ports.node_port);
    daemons::wait_for_port(
        ([127, 0, 0, 1], ports.api_port).into(),
        Duration::from_secs(30),
    )
    .await?;
    daemons::wait_for_port(node_address.parse()?, Duration::from_secs(30)).await?;
    let idle = core.usage()?;

    let (stop_sender, stop) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(CONCURRENT_REGISTRATIONS));
    let heartbeat = Duration::from_secs_f64(settings.heartbeat_interval);
    let started = Instant::now();
    let (outcome_sender, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut holders = Vec::with_capacity(settings.nodes);
    for index in 0..settings.nodes {
        let permit = permits.clone().acquire_owned().await?;
        let address = node_address.clone();
        let stop = stop.clone();
        let outcome_sender = outcome_sender.clone();
        holders.push(tokio::spawn(async move {
            let node_id = FIRST_NODE_ID + index as u64;
            let registered = register(&address, node_id).await;
            drop(permit);
            let _ = outcome_sender.send(registered.is_ok());
            match registered {
                Ok(stream) => hold(stream, node_id, heartbeat, index, stop).await,
                Err(error) => eprintln!("simulated node {node_id}: {error:#}"),
            }
        }));
    }
    let mut accepted = 0usize;
    for _ in 0..settings.nodes {
        accepted += usize::from(outcomes.recv().await.unwrap_or(false));
    }
    let registration_time = started.elapsed();
    if accepted == 0 {
        core.check_running()?;
        bail!("no simulated node was accepted");
    }
    daemons::wait_for_nodes(ports.api_port, accepted, Duration::from_secs(60)).await?;
    let loaded = core.usage()?;
    tokio::time::sleep(heartbeat * settings.heartbeat_rounds).await;
    let after_heartbeats = core.usage()?;
    let _ = stop_sender.send(true);
    for holder in holders {
        let _ = holder.await;
    }
    core.check_running()?;
    Ok(report(
        settings,
        accepted,
        registration_time,
        idle,
        loaded,
        after_heartbeats,
        heartbeat * settings.heartbeat_rounds,
    ))
}

fn report(
    settings: &ConnectionSettings,
    accepted: usize,
    registration_time: Duration,
    idle: ProcessUsage,
    loaded: ProcessUsage,
    after_heartbeats: ProcessUsage,
    idle_period: Duration,
) -> ConnectionReport {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let with_nodes = loaded.rss_bytes.max(after_heartbeats.rss_bytes);
    ConnectionReport {
        nodes: settings.nodes,
        registered: accepted,
        registrations_per_second: accepted as f64 / registration_time.as_secs_f64().max(1e-9),
        core_idle_rss_mib: mib(idle.rss_bytes),
        core_rss_with_nodes_mib: mib(with_nodes),
        core_kib_per_node: with_nodes.saturating_sub(idle.rss_bytes) as f64
            / 1024.0
            / accepted as f64,
        core_cpu_share_while_idle: (after_heartbeats.cpu_seconds - loaded.cpu_seconds)
            / idle_period.as_secs_f64().max(1e-9),
    }
}

/// Connects and registers as `node_id` (open enrollment: the Core issues a TOTP secret,
/// which a simulated node never needs because it never reconnects).
async fn register(address: &str, node_id: u64) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address)
        .await
        .context("connecting to the core")?;
    let mut buffer = Vec::new();
    let registration = Message::NodeRegistration(NodeRegistration {
        node_id,
        node_name: format!("idle-{node_id}"),
        address: "127.0.0.1".into(),
        port: 0,
        node_type: NodeType::Agent,
        totp_code: None,
        enrollment_token: None,
        capabilities: Vec::new(),
    });
    encode_envelope(&registration, &mut buffer);
    stream.write_all(&buffer).await?;
    let mut decoder = EnvelopeDecoder::new(DEFAULT_MAX_ENVELOPE_BYTES);
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut chunk))
            .await
            .context("no registration answer within 60 s")??;
        if read == 0 {
            bail!("the core closed the connection before answering the registration");
        }
        decoder.push(&chunk[..read]);
        while let Some(envelope) = decoder.next_envelope()? {
            if let Message::RegistrationAck(ack) = envelope.message {
                if ack.accepted {
                    return Ok(stream);
                }
                bail!("refused: {}", ack.message.unwrap_or_default());
            }
        }
    }
}

/// Keeps a registered connection: heartbeats on schedule (spread over the interval so the
/// fleet does not beat in step), reads and drops whatever the Core sends.
async fn hold(
    mut stream: TcpStream,
    node_id: u64,
    heartbeat: Duration,
    index: usize,
    mut stop: watch::Receiver<bool>,
) {
    let offset = heartbeat.mul_f64((index % 1000) as f64 / 1000.0);
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
    let mut beat = Vec::new();
    encode_envelope(
        &Message::NodeStatusUpdate(NodeStatusUpdate {
            node_id,
            status: NodeStatus::Running,
        }),
        &mut beat,
    );
    let mut chunk = [0u8; 1024];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = beats.tick() => {
                if stream.write_all(&beat).await.is_err() {
                    return;
                }
            }
            read = stream.read(&mut chunk) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}
