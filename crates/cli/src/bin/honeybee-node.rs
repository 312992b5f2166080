//! `honeybee-node`: the sensor agent. Parses flags and config, starts the Node, runs until
//! SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use honeybee::{init_tracing, shutdown_on_signals, LogSettings};
use honeybee_node::config::LogFormat;
use honeybee_node::NodeConfig;

/// HoneyBee Node: receives honeypot events on the ingest port and forwards them to the Core.
#[derive(Debug, Parser)]
#[command(version)]
struct Arguments {
    /// Configuration file (config.yaml shape). Without it, defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the node's state (overrides node.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The Core's node port as HOST:PORT (overrides server.address).
    #[arg(long)]
    core: Option<String>,
    /// Ingest port for honeypot events (overrides ingest.port).
    #[arg(long)]
    event_port: Option<u16>,
    /// Node name shown in the Core (overrides node.name).
    #[arg(long)]
    name: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let mut config = match &arguments.config {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::default(),
    };
    if let Some(data_dir) = arguments.data_dir {
        config.node.data_dir = data_dir;
    }
    if let Some(core) = arguments.core {
        config.server.address = core;
    }
    if let Some(port) = arguments.event_port {
        config.ingest.port = port;
    }
    if let Some(name) = arguments.name {
        config.node.name = name;
    }
    // From the environment only: a command line is visible to every user of the machine
    // for the node's whole life, a honeypot's user included.
    if let Some(token) = std::env::var("HONEYBEE_ENROLLMENT_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty())
    {
        config.auth.enrollment_token = Some(token);
    }
    config.validate()?;
    // Not root: pots get subordinate ids of their own in a user namespace, where the
    // machine allows one (this process is started again inside it and does not return).
    let wants_pots = config.node.node_type == honeybee_node::config::NodeTypeSetting::Full
        && config.honeypot.enabled
        && !config.honeypot.allow_unprivileged;
    if wants_pots {
        honeybee_node::enter_user_namespace_for_pots();
    }
    init_tracing(LogSettings {
        filter: &config.log.level,
        json: config.log.format == LogFormat::Json,
        force_color: false,
        file: None,
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_on_signals()?;
        let node = honeybee_node::start(config, shutdown).await?;
        node.wait().await?;
        Ok(())
    })
}
