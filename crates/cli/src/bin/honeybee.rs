//! `honeybee`: the operator CLI. `honeybee up` runs a Core and a local Node in one process
//! for a first look.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use honeybee::{init_tracing, shutdown_on_signals, LogSettings};
use honeybee_core::CoreConfig;
use honeybee_node::NodeConfig;

/// HoneyBee operator CLI.
#[derive(Debug, Parser)]
#[command(version)]
struct Arguments {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run a Core (embedded SQLite store) and a local Node in this process until Ctrl-C.
    Up {
        /// Directory for all state (`core/` and `node/` inside).
        #[arg(long, default_value = "honeybee-data")]
        data_dir: PathBuf,
        /// Core node port.
        #[arg(long, default_value_t = 9001)]
        node_port: u16,
        /// REST API port.
        #[arg(long, default_value_t = 9002)]
        api_port: u16,
        /// Ingest port honeypots send events to.
        #[arg(long, default_value_t = 9100)]
        event_port: u16,
        /// Log level or tracing filter.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    match arguments.command {
        CliCommand::Up {
            data_dir,
            node_port,
            api_port,
            event_port,
            log_level,
        } => {
            init_tracing(LogSettings {
                filter: &log_level,
                json: false,
                force_color: false,
                file: None,
            })?;
            let mut core_config = CoreConfig::default();
            core_config.storage.data_dir = data_dir.join("core");
            core_config.server.node_port = node_port;
            core_config.server.backend_port = api_port;
            let mut node_config = NodeConfig::default();
            node_config.node.data_dir = data_dir.join("node");
            node_config.ingest.port = event_port;
            // The local node should find the core at once, and again quickly after a restart.
            node_config.server.reconnect_delay = 0.5;
            node_config.server.max_reconnect_delay = 5.0;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_up(core_config, node_config))
        }
    }
}

async fn run_up(core_config: CoreConfig, mut node_config: NodeConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals()?;
    // The core stops only after the node has forwarded what it holds and said goodbye.
    let core_shutdown = tokio_util::sync::CancellationToken::new();
    let core = honeybee_core::start(core_config, core_shutdown.clone())
        .await
        .context("starting the core")?;
    node_config.server.address = core.node_address.to_string();
    let node = honeybee_node::start(node_config, shutdown)
        .await
        .context("starting the node")?;
    println!(
        "HoneyBee is up.\n  REST API:      http://{api}/api/v1/events\n  node port:     {nodes}\n  honeypot port: {ingest} (JSON lines; HONEYBEE_EVENT_PORT={port})\n  local node id: {node_id}\nPress Ctrl-C to stop.",
        api = core.api_address,
        nodes = core.node_address,
        ingest = node.ingest_address,
        port = node.ingest_address.port(),
        node_id = node.node_id,
    );
    node.wait().await?;
    core_shutdown.cancel();
    core.wait().await?;
    Ok(())
}
