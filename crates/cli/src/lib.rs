//! Start-up plumbing shared by the three binaries (`honeybee-core`, `honeybee-node`,
//! `honeybee`): logging set-up and turning SIGINT/SIGTERM into a shutdown token; and the
//! operator commands of the `honeybee` CLI.

mod operator;

pub use operator::{parse_duration_seconds, Operator};

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// How logs are written.
pub struct LogSettings<'a> {
    /// A `tracing` filter (`info`, `honeybee_core=debug,warn`, …); `RUST_LOG` overrides it.
    pub filter: &'a str,
    pub json: bool,
    pub force_color: bool,
    /// Also append to this file.
    pub file: Option<&'a Path>,
}

/// Installs the global tracing subscriber.
pub fn init_tracing(settings: LogSettings<'_>) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(&from_env)
            .with_context(|| format!("invalid RUST_LOG filter {from_env:?}"))?,
        _ => EnvFilter::try_new(settings.filter)
            .with_context(|| format!("invalid log level {:?}", settings.filter))?,
    };
    let ansi = settings.force_color || (settings.file.is_none() && std::io::stderr().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match settings.file {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating log folder {}", parent.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            let writer = std::io::stderr.and(std::sync::Mutex::new(file));
            if settings.json {
                builder.json().with_writer(writer).init();
            } else {
                builder.with_writer(writer).init();
            }
        }
        None => {
            if settings.json {
                builder.json().with_writer(std::io::stderr).init();
            } else {
                builder.with_writer(std::io::stderr).init();
            }
        }
    }
    Ok(())
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down (press Ctrl-C again to stop at once)"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down (a second signal stops at once)"),
        }
        cancel.cancel();
        // The usual convention: a second signal during a shutdown that hangs ends the
        // process now. What is in the spool or already committed stays; what is in memory
        // queues may be lost, which the operator asked for.
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!("second signal during shutdown: exiting at once without finishing it");
        std::process::exit(130);
    });
    Ok(token)
}
