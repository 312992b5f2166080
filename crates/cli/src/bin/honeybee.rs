//! `honeybee`: the operator CLI. `honeybee up` runs a Core and a local Node in one process
//! for a first look; the other commands manage pots through a Core's REST API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use honeybee::{init_tracing, parse_duration_seconds, shutdown_on_signals, LogSettings, Operator};
use honeybee_core::CoreConfig;
use honeybee_node::NodeConfig;

/// HoneyBee operator CLI.
#[derive(Debug, Parser)]
#[command(version)]
struct Arguments {
    /// The Core's REST API.
    #[arg(
        long,
        global = true,
        env = "HONEYBEE_API",
        default_value = "http://127.0.0.1:9002"
    )]
    api: String,
    /// CA certificate(s) to trust for an https:// API (the core's `tls/ca.pem`).
    #[arg(long, global = true, env = "HONEYBEE_CA_FILE")]
    ca_file: Option<PathBuf>,
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
    #[command(flatten)]
    Operator(OperatorCommand),
}

/// Commands that go through a Core's REST API.
#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// List every pot of every node with its status.
    Pots,
    /// Install a pot on a node (NODE is a node id or name) and show the progress.
    Install {
        node: String,
        /// Pot type from the potstore (e.g. cowrie, tcp-banner).
        pot_type: String,
        /// Id for the new pot, unique on the node.
        pot_id: String,
        /// A config value, e.g. --set ssh_port=2222 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Install from this git repository (with its own manifest.toml).
        #[arg(long)]
        git_url: Option<String>,
        /// Branch of --git-url.
        #[arg(long, requires = "git_url")]
        git_branch: Option<String>,
        /// Install only; do not start it.
        #[arg(long)]
        no_start: bool,
    },
    /// Start an installed pot.
    Start { node: String, pot_id: String },
    /// Stop a pot (SIGTERM, then SIGKILL after the grace period).
    Stop { node: String, pot_id: String },
    /// Restart a pot.
    Restart { node: String, pot_id: String },
    /// Uninstall a pot: stop it, end everything its user runs, remove its files (and its
    /// user, on a root node).
    Uninstall { node: String, pot_id: String },
    /// Show a pot's recent output.
    Logs { node: String, pot_id: String },
    /// Show a pot's CPU, memory, uptime and restarts.
    Metrics { node: String, pot_id: String },
    /// List nodes, or revoke one.
    Nodes {
        #[command(subcommand)]
        action: Option<NodesAction>,
    },
    /// Enrollment tokens that let new nodes join (admin token needed).
    Enroll {
        #[command(subcommand)]
        action: EnrollAction,
    },
}

#[derive(Debug, Subcommand)]
enum NodesAction {
    /// Disconnect a node at once and refuse it from now on (NODE is an id or a name).
    Revoke { node: String },
}

#[derive(Debug, Subcommand)]
enum EnrollAction {
    /// Create a token; it is printed once.
    Create {
        /// How many nodes may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration_seconds)]
        ttl: u64,
        /// A label for the token.
        #[arg(long, default_value = "enrollment")]
        name: String,
    },
    /// List tokens (without their secrets).
    List,
    /// Revoke a token by id.
    Revoke { token_id: u64 },
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
            // Not root: the local node's pots get subordinate ids of their own in a user
            // namespace, where the machine allows one (this process is started again
            // inside it, Core included, and does not return).
            honeybee_node::enter_user_namespace_for_pots();
            init_tracing(LogSettings {
                filter: &log_level,
                json: false,
                force_color: false,
                file: None,
            })?;
            let mut core_config = CoreConfig::default();
            core_config.storage.data_dir = data_dir.join("core");
            // Enrollment by token even on loopback: the local node gets one below, and
            // nothing else on this machine (a honeypot's user, say) can enroll a node.
            core_config.server.enrollment = Some(honeybee_core::config::EnrollmentPolicy::Token);
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
        CliCommand::Operator(operator_command) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_operator(
                Operator::new(
                    &arguments.api,
                    api_token_from_environment().as_deref(),
                    arguments.ca_file.as_deref(),
                )?,
                operator_command,
            ))
        }
    }
}

/// The API token, from `HONEYBEE_TOKEN` only: a command line is visible to every user of
/// the machine (`/proc/<pid>/cmdline`), a honeypot's user included; the environment is not.
fn api_token_from_environment() -> Option<String> {
    std::env::var(API_TOKEN_VARIABLE)
        .ok()
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

const API_TOKEN_VARIABLE: &str = "HONEYBEE_TOKEN";

async fn run_operator(operator: Operator, command: OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Pots => operator.list_pots().await,
        OperatorCommand::Install {
            node,
            pot_type,
            pot_id,
            settings,
            git_url,
            git_branch,
            no_start,
        } => {
            let git = git_url.map(|url| (url, git_branch));
            operator
                .install(&node, &pot_type, &pot_id, &settings, git, !no_start)
                .await
        }
        OperatorCommand::Start { node, pot_id } => {
            operator.lifecycle("DeployPot", &node, &pot_id).await
        }
        OperatorCommand::Stop { node, pot_id } => {
            operator.lifecycle("StopPot", &node, &pot_id).await
        }
        OperatorCommand::Restart { node, pot_id } => {
            operator.lifecycle("RestartPot", &node, &pot_id).await
        }
        OperatorCommand::Uninstall { node, pot_id } => {
            operator.lifecycle("UninstallPot", &node, &pot_id).await
        }
        OperatorCommand::Logs { node, pot_id } => operator.logs(&node, &pot_id).await,
        OperatorCommand::Metrics { node, pot_id } => operator.metrics(&node, &pot_id).await,
        OperatorCommand::Nodes { action: None } => operator.list_nodes().await,
        OperatorCommand::Nodes {
            action: Some(NodesAction::Revoke { node }),
        } => operator.revoke_node(&node).await,
        OperatorCommand::Enroll { action } => match action {
            EnrollAction::Create { uses, ttl, name } => {
                operator.create_enrollment_token(&name, uses, ttl).await
            }
            EnrollAction::List => operator.list_enrollment_tokens().await,
            EnrollAction::Revoke { token_id } => operator.revoke_enrollment_token(token_id).await,
        },
    }
}

/// How long the local node of `honeybee up` has to enroll with the token made for it.
const LOCAL_ENROLLMENT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

async fn run_up(core_config: CoreConfig, mut node_config: NodeConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals()?;
    // The core stops only after the node has forwarded what it holds and said goodbye.
    let core_shutdown = tokio_util::sync::CancellationToken::new();
    let core = honeybee_core::start(core_config, core_shutdown.clone())
        .await
        .context("starting the core")?;
    node_config.server.address = core.node_address.to_string();
    if !node_config.totp_secret_file().exists() {
        let token = core
            .create_enrollment_token("honeybee up: local node", LOCAL_ENROLLMENT_TTL)
            .await
            .context("creating the local node's enrollment token")?;
        node_config.auth.enrollment_token = Some(token);
    }
    let node = honeybee_node::start(node_config, shutdown)
        .await
        .context("starting the node")?;
    match &core.initial_admin_token {
        Some(token) => println!("Admin API token (shown once; also in the data directory's core/admin-token):\n  {token}"),
        None => println!("API tokens: see core/admin-token in the data directory, or `honeybee-core token create`."),
    }
    println!(
        "HoneyBee is up.\n  REST API:      http://{api}/api/v1/events\n  node port:     {nodes}\n  honeypot port: {ingest} (JSON lines; HONEYBEE_EVENT_PORT={port})\n  local node id: {node_id}\n  pots:          {pots}\nPress Ctrl-C to stop.",
        api = core.api_address,
        nodes = core.node_address,
        ingest = node.ingest_address,
        port = node.ingest_address.port(),
        node_id = node.node_id,
        pots = node.pots_directory.as_ref().map_or_else(
            || "not available (see the log)".to_owned(),
            |directory| directory.display().to_string()
        ),
    );
    node.wait().await?;
    core_shutdown.cancel();
    core.wait().await?;
    Ok(())
}
