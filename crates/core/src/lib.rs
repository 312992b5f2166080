//! HoneyBee Core: accepts nodes over Protocol v2 on the node port, tracks nodes and pots,
//! stores every event through the [`honeybee_store::Store`] interface and serves the REST
//! API.
//!
//! [`start`] binds everything and returns a [`RunningCore`] with the bound addresses;
//! cancelling the shutdown token stops accepting, ends node sessions, drains the event
//! queue into the store and stops the API.

mod api;
mod api_server;
mod commands;
pub mod config;
mod delivery;
mod enrollment;
mod event_fields;
mod event_writer;
mod guess_limiter;
mod metrics;
mod node_link;
mod node_listener;
mod peer_log;
mod private_file;
mod retention;
mod sessions;
mod tls;
mod tokens;
mod write_deadline;

use std::net::SocketAddr;
use std::sync::Arc;

use event_fields::EventEnricher;
use honeybee_byte_budget::ByteBudget;
use honeybee_geoip::{GeoIp, GeoIpPaths};
use honeybee_store::{
    ColumnarOptions, EmbeddedStore, EventStore, SqliteOptions, SqliteStore, SqliteSynchronous,
    Store, StoreError,
};
use honeybee_telemetry::MetricsRegistry;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, CoreConfig};
pub use honeybee_store::ApiRole;

use crate::api_server::ApiServerSettings;
use crate::commands::CommandTracker;
use crate::config::{ApiAuth, StorageBackend, Synchronous};
use crate::metrics::CoreMetrics;
use crate::node_link::LinkContext;
use crate::sessions::SessionRegistry;
use honeybee_accept::ConnectionLimiter;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("binding the {what} on {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the admin token to {path}: {source}")]
    TokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening a GeoIP database: {0}")]
    GeoIp(#[from] honeybee_geoip::GeoIpError),
    #[error("setting up TLS: {0}")]
    Tls(String),
    #[error("core task failed: {0}")]
    Task(String),
}

/// A started Core.
pub struct RunningCore {
    /// Where nodes connect (Protocol v2).
    pub node_address: SocketAddr,
    /// Where the REST API listens.
    pub api_address: SocketAddr,
    /// The admin token created on the first start with token authentication (also written
    /// to `<data_dir>/admin-token`); `None` on later starts.
    pub initial_admin_token: Option<String>,
    store: Arc<dyn Store>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningCore {
    /// A new enrollment token for one node, valid for `ttl`, for a node started together
    /// with this Core (`honeybee up`): so that Core needs no open enrollment, which would let
    /// anything on the machine — a honeypot's user included — enroll nodes.
    pub async fn create_enrollment_token(
        &self,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<String, CoreError> {
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let created =
            tokens::create_enrollment_token(self.store.as_ref(), name, 1, now + ttl, now).await?;
        Ok(created.token)
    }

    /// Waits until the Core has stopped after its shutdown token was cancelled.
    pub async fn wait(self) -> Result<(), CoreError> {
        for task in self.tasks {
            task.await
                .map_err(|error| CoreError::Task(error.to_string()))?;
        }
        tracing::info!("core stopped");
        Ok(())
    }
}

/// Opens the store, binds the node port and the API, and starts serving.
pub async fn start(
    config: CoreConfig,
    shutdown: CancellationToken,
) -> Result<RunningCore, CoreError> {
    config.validate()?;
    let enricher = Arc::new(open_enricher(&config)?);
    let OpenStore {
        all: store,
        events: event_store,
    } = open_store(&config, &enricher)?;
    // No connection is held by a Core that is just starting.
    store.disconnect_all_nodes().await?;
    let initial_admin_token = match config.api.auth {
        ApiAuth::Tokens if store.count_api_tokens().await? == 0 => {
            Some(first_admin_token(store.as_ref(), &config).await?)
        }
        _ => None,
    };

    tracing::info!(
        enrollment = ?config.server.enrollment_policy(),
        "new node ids enroll with this policy; enrolled nodes prove themselves with TOTP codes"
    );
    let registry = MetricsRegistry::new();
    let metrics = Arc::new(CoreMetrics::new(registry.clone()));
    let node_listener = bind(&config.server.host, config.server.node_port, "node port").await?;
    let api_listener = bind(
        &config.server.api_host,
        config.server.backend_port,
        "REST API",
    )
    .await?;
    let node_address = local_address(&node_listener, "node port")?;
    let api_address = local_address(&api_listener, "REST API")?;
    let loopback = config
        .server
        .host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_loopback());
    if !loopback && !config.tls.enabled {
        tracing::warn!(
            host = %config.server.host,
            "tls.allow_plaintext: the node port is reachable beyond this machine without TLS (see docs/security.md)"
        );
    }
    if config.proxy.enabled {
        tracing::warn!(
            port = config.proxy.port,
            "the WebSocket stream ([proxy]) is not served by this version; use GET /api/v1/events"
        );
    }

    let tls = if config.tls.enabled {
        let setup =
            tls::load_or_generate(&config.tls, &config.storage.data_dir, &config.server.host)?;
        tracing::info!(
            ca_fingerprint = %setup.ca_fingerprint,
            client_certificates = config.tls.client_ca_file.is_some(),
            api_tls = config.tls.api,
            "the node port speaks TLS 1.3 only; nodes pin this CA fingerprint (tls.ca_fingerprint) or trust ca.pem"
        );
        Some(setup)
    } else {
        None
    };
    if !config.server.api_is_loopback() && !config.tls.api {
        tracing::warn!(
            api_host = %config.server.api_host,
            "tls.allow_plaintext_api: the REST API is reachable beyond this machine without TLS: API tokens cross the network in clear text (set [tls] api = true)"
        );
    }
    let api_tls = tls
        .as_ref()
        .filter(|_| config.tls.api)
        .map(|setup| setup.api_acceptor.clone());
    let tls = tls.map(|setup| setup.node_acceptor);
    let (events_sender, events_receiver) = mpsc::channel(config.storage.queue_capacity);
    let retention = tokio::spawn(retention::run_retention(
        event_store.clone(),
        retention::RetentionPolicy {
            max_age: config.retention.max_age(),
            max_disk_bytes: config.retention.max_disk_bytes(),
            check_interval: config.retention.check_interval(),
        },
        metrics.clone(),
        shutdown.clone(),
    ));
    let writer = tokio::spawn(event_writer::run_event_writer(
        event_store,
        events_receiver,
        config.storage.batch_max_events,
        metrics.clone(),
        shutdown.clone(),
    ));
    let sessions = Arc::new(SessionRegistry::default());
    let commands = Arc::new(CommandTracker::new(config.server.command_answers_max_bytes));
    let context = Arc::new(LinkContext {
        store: store.clone(),
        enricher,
        events: events_sender,
        event_bytes: ByteBudget::new(
            config.storage.queue_max_bytes,
            metrics.event_queue_budget.clone(),
        ),
        sessions: sessions.clone(),
        commands: commands.clone(),
        authenticator: enrollment::NodeAuthenticator::new(
            store.clone(),
            config.server.enrollment_policy(),
        ),
        metrics: metrics.clone(),
        max_envelope_bytes: config.server.max_envelope_bytes,
        max_unregistered_envelope_bytes: config.server.unregistered_envelope_cap(),
        handshake_timeout: config.server.handshake_timeout(),
        tls,
        idle_timeout: config.server.idle_timeout(),
        log_limiter: Arc::default(),
    });
    let nodes = tokio::spawn(node_listener::run_node_listener(
        node_listener,
        context,
        ConnectionLimiter::new(
            config.server.max_node_connections,
            config.server.max_node_connections_per_address,
        ),
        shutdown.clone(),
    ));
    let api_log_limiter = Arc::default();
    let api_state = Arc::new(api::ApiState {
        store: store.clone(),
        sessions,
        commands,
        auth: config.api.auth,
        metrics: metrics.clone(),
        offline_after: config.server.offline_after(),
        host_policy: api::HostPolicy::new(
            config.server.api_is_loopback(),
            &config.api.allowed_hosts,
        ),
        request_timeout: config.api.request_timeout(),
        log_limiter: Arc::clone(&api_log_limiter),
        event_page_max_bytes: config.api.page_max_bytes,
    });
    let api = tokio::spawn(api_server::run_api_server(
        api_listener,
        api::router(api_state),
        ApiServerSettings {
            tls: api_tls,
            header_read_timeout: config.api.header_read_timeout(),
            write_timeout: config.api.write_timeout(),
            limiter: ConnectionLimiter::new(
                config.api.max_connections,
                config.api.max_connections_per_address,
            ),
            metrics: metrics.clone(),
            log_limiter: api_log_limiter,
        },
        shutdown.clone(),
    ));
    tracing::info!(%node_address, %api_address, data_dir = %config.storage.data_dir.display(), "core started");
    // The node listener finishes after every session (and with them every event sender)
    // is gone; only then can the writer drain the queue and finish.
    Ok(RunningCore {
        node_address,
        api_address,
        initial_admin_token,
        store,
        tasks: vec![nodes, writer, api, retention],
    })
}

/// The configured backend, as the interfaces the Core's parts ask for.
struct OpenStore {
    /// For the parts that use several concerns (sessions, the API, tokens).
    all: Arc<dyn Store>,
    /// For the event writer, which only appends events.
    events: Arc<dyn EventStore>,
}

/// Opens the GeoIP databases: the built-in country table, and the configured files.
fn open_enricher(config: &CoreConfig) -> Result<EventEnricher, CoreError> {
    let paths = GeoIpPaths {
        city_db: config.geoip.city_db.clone(),
        asn_db: config.geoip.asn_db.clone(),
    };
    let geoip = GeoIp::open(&paths)?;
    tracing::info!(
        country = geoip.country_database_version(),
        city_db = ?paths.city_db,
        asn_db = ?paths.asn_db,
        "GeoIP databases loaded (no network lookups)"
    );
    Ok(EventEnricher { geoip })
}

/// Opens the configured store; events an earlier release stored are given their fields
/// by `enricher` as they are moved.
fn open_store(config: &CoreConfig, enricher: &EventEnricher) -> Result<OpenStore, CoreError> {
    match config.storage.backend {
        StorageBackend::Sqlite => {
            let control = SqliteOptions::new(
                SqliteStore::path_in(&config.storage.data_dir),
                match config.storage.sqlite_synchronous {
                    Synchronous::Full => SqliteSynchronous::Full,
                    Synchronous::Normal => SqliteSynchronous::Normal,
                },
            );
            let events = ColumnarOptions {
                partition_max_events: config.storage.partition_max_events,
                sync_each_batch: config.storage.sqlite_synchronous == Synchronous::Full,
                event_readers: config.storage.event_readers,
                query_time_limit: std::time::Duration::from_secs_f64(
                    config.storage.query_time_limit,
                ),
                ..ColumnarOptions::new(ColumnarOptions::directory_in(&config.storage.data_dir))
            };
            let store = Arc::new(EmbeddedStore::open(&control, events, &|text: &str| {
                enricher.fields_of_text(text)
            })?);
            Ok(OpenStore {
                events: store.events.clone(),
                all: store,
            })
        }
    }
}

/// Creates an API token in the Core's store (`honeybee-core token create`). The secret is
/// returned once; only its hash is kept.
pub async fn create_api_token(
    config: &CoreConfig,
    name: &str,
    role: ApiRole,
) -> Result<String, CoreError> {
    let store = open_store(config, &open_enricher(config)?)?.all;
    Ok(tokens::create_token(store.as_ref(), name, role).await?)
}

/// The first admin token, so a fresh Core is never open: written to
/// `<data_dir>/admin-token` as a new file with mode 0600 (`private_file.rs`: whatever was
/// at the path, a world-readable file or a planted link, is replaced, never written through).
async fn first_admin_token(store: &dyn Store, config: &CoreConfig) -> Result<String, CoreError> {
    let token = tokens::create_token(store, "initial-admin", ApiRole::Admin).await?;
    let path = config.storage.data_dir.join("admin-token");
    if let Err(source) = private_file::write_new_file(&path, format!("{token}\n").as_bytes(), 0o600)
    {
        return Err(CoreError::TokenFile { path, source });
    }
    tracing::info!(path = %path.display(), "created the first admin API token");
    Ok(token)
}

async fn bind(host: &str, port: u16, what: &'static str) -> Result<TcpListener, CoreError> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address)
        .await
        .map_err(|source| CoreError::Bind {
            what,
            address,
            source,
        })
}

fn local_address(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, CoreError> {
    listener.local_addr().map_err(|source| CoreError::Bind {
        what,
        address: "bound socket".into(),
        source,
    })
}
