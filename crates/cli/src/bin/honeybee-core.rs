//! `honeybee-core`: the central server. Parses flags and config, starts the Core, runs
//! until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use honeybee::{init_tracing, shutdown_on_signals, LogSettings};
use honeybee_core::config::LogFormat;
use honeybee_core::{ApiRole, CoreConfig};

/// HoneyBee Core: accepts nodes (Protocol v2), stores their events, serves the REST API.
#[derive(Debug, Parser)]
#[command(version)]
struct Arguments {
    /// Configuration file (bee_config.toml shape). Without it, defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the Core's state (overrides storage.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address the node port binds to (overrides server.host).
    #[arg(long)]
    host: Option<String>,
    /// Address the REST API binds to (overrides server.api_host).
    #[arg(long)]
    api_host: Option<String>,
    /// Node port (overrides server.node_port).
    #[arg(long)]
    node_port: Option<u16>,
    /// REST API port (overrides server.backend_port).
    #[arg(long)]
    api_port: Option<u16>,
    #[command(subcommand)]
    command: Option<CoreCommand>,
}

#[derive(Debug, Subcommand)]
enum CoreCommand {
    /// Manage REST API tokens (in the Core's store; the Core may be running).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// `read` (GET requests) or `admin` (everything).
        #[arg(long, value_parser = ["read", "admin"])]
        role: String,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let mut config = match &arguments.config {
        Some(path) => CoreConfig::load(path)?,
        None => CoreConfig::default(),
    };
    if let Some(data_dir) = arguments.data_dir {
        config.storage.data_dir = data_dir;
    }
    if let Some(host) = arguments.host {
        config.server.host = host;
    }
    if let Some(api_host) = arguments.api_host {
        config.server.api_host = api_host;
    }
    if let Some(port) = arguments.node_port {
        config.server.node_port = port;
    }
    if let Some(port) = arguments.api_port {
        config.server.backend_port = port;
    }
    config.validate()?;
    let log_file = config
        .logging
        .folder
        .as_ref()
        .map(|folder| folder.join("honeybee-core.log"));
    init_tracing(LogSettings {
        filter: &config.log_filter(),
        json: config.logging.format == LogFormat::Json,
        force_color: config.logging.force_color,
        file: log_file.as_deref(),
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(CoreCommand::Token {
        action: TokenAction::Create { role, name },
    }) = arguments.command
    {
        let role = if role == "admin" {
            ApiRole::Admin
        } else {
            ApiRole::Read
        };
        let token = runtime.block_on(honeybee_core::create_api_token(&config, &name, role))?;
        println!("{token}");
        return Ok(());
    }
    runtime.block_on(async {
        let shutdown = shutdown_on_signals()?;
        let core = honeybee_core::start(config, shutdown).await?;
        core.wait().await?;
        Ok(())
    })
}
