//! The Core's configuration: the `bee_config.toml` shape (`[server]`, `[logging]`,
//! `[proxy]`) plus `[storage]`, `[geoip]`, `[retention]`, `[api]` and `[tls]` sections
//! (`storage.rs` has the first two, `retention.rs` the third). Every field has a default, so an empty file (or
//! no file) is a working configuration; `validate()` reports what is wrong and with which
//! value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

mod retention;
mod storage;

pub use retention::RetentionConfig;
pub use storage::{
    GeoIpConfig, StorageBackend, StorageConfig, Synchronous, DEFAULT_QUEUE_MAX_BYTES,
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {field}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Default of `[server] command_answers_max_bytes`.
pub const DEFAULT_COMMAND_ANSWERS_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Default of `[api] page_max_bytes`.
pub const DEFAULT_API_PAGE_MAX_BYTES: usize = honeybee_store::DEFAULT_EVENT_PAGE_BYTES;

/// The whole Core configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    pub proxy: ProxyConfig,
    pub storage: StorageConfig,
    pub geoip: GeoIpConfig,
    pub retention: RetentionConfig,
    pub api: ApiConfig,
    pub tls: TlsConfig,
}

/// `[tls]`: TLS 1.3 on the node port.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve the node port over TLS 1.3 only. Default false (the quickstart stays on
    /// loopback); turn it on before nodes connect from elsewhere.
    pub enabled: bool,
    /// The certificate chain (server certificate first, CA last) in PEM. Unset: the Core
    /// generates a CA and a server certificate in `<data_dir>/tls/` on first start and logs
    /// the CA's SHA-256 fingerprint for nodes to pin.
    pub cert_file: Option<PathBuf>,
    /// The server certificate's private key in PEM (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Names and addresses for a generated server certificate. Default `localhost`,
    /// `127.0.0.1` and `server.host` when it is a specific address.
    pub server_names: Vec<String>,
    /// Let a Core that listens beyond loopback run without TLS (on a network you trust
    /// entirely). Default false: such a Core refuses to start.
    pub allow_plaintext: bool,
    /// Serve the REST API over TLS 1.3 too, with the same certificate (clients trust
    /// `ca.pem`, e.g. `honeybee --ca-file`). Default false. API tokens cross the network in
    /// clear text without it.
    pub api: bool,
    /// Mutual TLS on the node port: nodes must present a client certificate signed by a CA
    /// in this PEM file (node `tls.cert_file`/`tls.key_file`). Default: no client
    /// certificates (nodes prove themselves with TOTP).
    pub client_ca_file: Option<PathBuf>,
    /// Let the REST API listen beyond loopback (`server.api_host`) without `tls.api`. Default
    /// false: such a Core refuses to start, because API tokens would cross the network in
    /// clear text.
    pub allow_plaintext_api: bool,
}

/// `[api]`: who may use the REST API and how much of the Core one client may hold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `tokens` (default): every request but `GET /health` needs `Authorization: Bearer
    /// <token>`; `GET` needs a `read` or `admin` token (`admin` for enrollment tokens and
    /// command answers), anything else `admin`. `none`: no authentication at all — only
    /// behind something that authenticates for you, and only while `server.api_host` is
    /// loopback.
    pub auth: ApiAuth,
    /// Host names (without port) requests may carry in their `Host` header besides the
    /// loopback ones (`localhost`, `127.x.x.x`, `[::1]`), e.g. the name a reverse proxy
    /// forwards. Checked while the API listens on loopback (a web page that rebinds its DNS
    /// name to 127.0.0.1 must not reach the API) or whenever this list is not empty.
    /// Default: empty.
    pub allowed_hosts: Vec<String>,
    /// API connections open at once; further connections wait in the accept backlog.
    /// Default 1024.
    pub max_connections: usize,
    /// API connections open at once from one address (IPv6: one /64; from this machine:
    /// one unix user, whichever loopback addresses it uses); a connection beyond it is
    /// closed at once. Default 64.
    pub max_connections_per_address: usize,
    /// Seconds a connection has to complete its TLS handshake and then each request's
    /// headers (also how long an idle keep-alive connection stays open). Default 10.
    pub header_read_timeout: f64,
    /// Seconds one request may take from its headers to its response (reading the body
    /// included); a slower one is answered 408. Default 60.
    pub request_timeout: f64,
    /// Seconds a response (or a TLS record) may take, from the first write that had to
    /// wait because the client did not read, until the client took all of it; progress
    /// does not extend it (a client reading one packet every 29 s would keep a large page
    /// for hours), the next request starts a new allowance. Past it the connection is
    /// closed. Without it a client pipelining requests and never reading would hold its
    /// connection for ever. Default 30.
    pub write_timeout: f64,
    /// Most bytes of event data (`data` as stored JSON text) one `GET /api/v1/events` page
    /// holds, besides `limit`: the store stops reading rows once the page reaches it, so a
    /// page of 1,000 events of 1 MiB each is never built in memory. Such a page holds fewer
    /// than `limit` events and still carries `next_cursor`; a page always holds at least
    /// one event, whatever its size. Default 8 MiB.
    pub page_max_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth: ApiAuth::Tokens,
            allowed_hosts: Vec::new(),
            max_connections: 1024,
            max_connections_per_address: 64,
            header_read_timeout: 10.0,
            request_timeout: 60.0,
            write_timeout: 30.0,
            page_max_bytes: DEFAULT_API_PAGE_MAX_BYTES,
        }
    }
}

impl ApiConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiAuth {
    Tokens,
    None,
}

/// `[server]`: the node port and the REST API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the node port binds to. Default `127.0.0.1`; use `0.0.0.0` to accept remote
    /// nodes.
    pub host: String,
    /// Address the REST API binds to. Default `127.0.0.1`, whatever `host` is: accepting
    /// remote nodes does not expose the admin API. Beyond loopback it needs `tls.api` (or
    /// `tls.allow_plaintext_api`) and `api.auth = "tokens"`.
    pub api_host: String,
    /// Protocol v2 port for nodes. Default 9001; 0 picks a free port.
    pub node_port: u16,
    /// REST API port. Default 9002; 0 picks a free port.
    pub backend_port: u16,
    /// Shorthand for `logging.level = "debug"`.
    pub debug: bool,
    /// How often nodes are expected to send a heartbeat, in seconds. Default 30.
    pub heartbeat_interval: f64,
    /// A connected node silent for this many heartbeat intervals is shown offline. Default 3.
    pub missed_heartbeats_offline: u32,
    /// Largest Protocol v2 envelope accepted, in bytes; a bigger one ends the connection.
    /// Default 1 MiB.
    pub max_envelope_bytes: usize,
    /// Seconds a new connection has to register before it is closed. Default 10.
    pub handshake_timeout: f64,
    /// Node connections served at once; further connections wait in the accept backlog.
    /// Default 10000.
    pub max_node_connections: usize,
    /// Node connections open at once from one address (IPv6: one /64; from this machine:
    /// one unix user, whichever loopback addresses it uses); a connection beyond
    /// it is closed at once, so one host cannot take every slot. Default 64.
    pub max_node_connections_per_address: usize,
    /// Largest envelope accepted from a connection that has not registered yet, in bytes;
    /// a bigger one ends the connection. Default 16 KiB (a registration is far smaller),
    /// so unauthenticated peers cannot make the Core buffer `max_envelope_bytes` each.
    /// A value above `max_envelope_bytes` counts as `max_envelope_bytes`.
    pub max_unregistered_envelope_bytes: usize,
    /// How a node id the Core has never seen gets its TOTP secret. `token`: it must present
    /// an enrollment token (`honeybee enroll create`). `open`: any node that reaches the
    /// port enrolls; allowed on loopback only (tests, a Core alone on a machine no honeypot
    /// runs on). Default: `token`, on loopback too. Enrolled nodes always prove themselves
    /// with TOTP codes.
    pub enrollment: Option<EnrollmentPolicy>,
    /// Most bytes the recent command answers (`GET /api/v1/commands/{id}`) may take; the
    /// oldest are forgotten first (as they are past 4096 answers). An answer bigger than
    /// all of it reaches the caller waiting for it but is kept without its `data`, with a
    /// message saying so. Default 16 MiB.
    pub command_answers_max_bytes: usize,
}

/// Who may enroll a new node: see [`ServerConfig::enrollment`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentPolicy {
    Token,
    Open,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            api_host: "127.0.0.1".into(),
            node_port: 9001,
            backend_port: 9002,
            debug: false,
            heartbeat_interval: 30.0,
            missed_heartbeats_offline: 3,
            max_envelope_bytes: honeybee_protocol::DEFAULT_MAX_ENVELOPE_BYTES,
            handshake_timeout: 10.0,
            max_node_connections: 10_000,
            max_node_connections_per_address: 64,
            max_unregistered_envelope_bytes: 16 * 1024,
            enrollment: None,
            command_answers_max_bytes: DEFAULT_COMMAND_ANSWERS_MAX_BYTES,
        }
    }
}

impl ServerConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.handshake_timeout)
    }

    /// Whether `host` is a loopback address (nothing beyond this machine can connect).
    pub fn is_loopback(&self) -> bool {
        self.host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
    }

    /// The envelope cap in force before registration.
    pub fn unregistered_envelope_cap(&self) -> usize {
        self.max_unregistered_envelope_bytes
            .min(self.max_envelope_bytes)
    }

    /// Whether `api_host` is a loopback address.
    pub fn api_is_loopback(&self) -> bool {
        self.api_host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
    }

    /// The enrollment policy in force: the configured one, or `token`.
    pub fn enrollment_policy(&self) -> EnrollmentPolicy {
        // Tokens everywhere unless told otherwise: on a sensor the Core's loopback port is
        // within reach of every honeypot's user too.
        self.enrollment.unwrap_or(EnrollmentPolicy::Token)
    }

    /// How long a node may stay silent before it is shown offline.
    pub fn offline_after(&self) -> Duration {
        self.heartbeat_interval() * self.missed_heartbeats_offline
    }

    /// How long a registered node may stay silent before its connection is closed as dead:
    /// three times the offline allowance, so "offline but connected" stays visible first.
    pub fn idle_timeout(&self) -> Duration {
        self.offline_after() * 3
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `trace`, `debug`, `info`, `warn` or `error`, or a full `tracing` filter such as
    /// `honeybee_core=debug,info`. Default `info`. `RUST_LOG` overrides it.
    pub level: String,
    /// When set, logs are also appended to `<folder>/honeybee-core.log`. Default: unset,
    /// logs go to standard error only.
    pub folder: Option<PathBuf>,
    /// Colour the standard error output even when it is not a terminal. Default false.
    pub force_color: bool,
    /// `text` (default) or `json` (one JSON object per line, for log shippers).
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            folder: None,
            force_color: false,
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[proxy]`: the live WebSocket stream (port 9003). Accepted so existing config files
/// load; the stream itself is not served by this version.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 9003,
        }
    }
}

impl CoreConfig {
    /// Reads and validates a `bee_config.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim().to_owned())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.retention.validate()?;
        let invalid = |field, value: String, reason| ConfigError::Invalid {
            field,
            value,
            reason,
        };
        if self.server.host.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "server.host",
                self.server.host.clone(),
                "must be an IP address such as 127.0.0.1 or 0.0.0.0",
            ));
        }
        if self.server.api_host.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "server.api_host",
                self.server.api_host.clone(),
                "must be an IP address such as 127.0.0.1 or 0.0.0.0",
            ));
        }
        let positive_seconds = |field, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 86_400.0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    value.to_string(),
                    "must be between 0 and 86400 seconds",
                ))
            }
        };
        positive_seconds("server.heartbeat_interval", self.server.heartbeat_interval)?;
        positive_seconds("server.handshake_timeout", self.server.handshake_timeout)?;
        positive_seconds("api.header_read_timeout", self.api.header_read_timeout)?;
        positive_seconds("api.request_timeout", self.api.request_timeout)?;
        positive_seconds("api.write_timeout", self.api.write_timeout)?;
        if self.server.missed_heartbeats_offline == 0 {
            return Err(invalid(
                "server.missed_heartbeats_offline",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.server.max_envelope_bytes < 1024 {
            return Err(invalid(
                "server.max_envelope_bytes",
                self.server.max_envelope_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if self.server.max_node_connections == 0 {
            return Err(invalid(
                "server.max_node_connections",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.server.max_node_connections_per_address == 0 {
            return Err(invalid(
                "server.max_node_connections_per_address",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.server.max_unregistered_envelope_bytes < 1024 {
            return Err(invalid(
                "server.max_unregistered_envelope_bytes",
                self.server.max_unregistered_envelope_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if self.api.max_connections == 0 {
            return Err(invalid(
                "api.max_connections",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.api.max_connections_per_address == 0 {
            return Err(invalid(
                "api.max_connections_per_address",
                "0".into(),
                "must be at least 1",
            ));
        }
        if let Some(bad) =
            self.api.allowed_hosts.iter().find(|name| {
                name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/')
            })
        {
            return Err(invalid(
                "api.allowed_hosts",
                bad.clone(),
                "must be host names or addresses without spaces or slashes",
            ));
        }
        if self.server.node_port != 0 && self.server.node_port == self.server.backend_port {
            return Err(invalid(
                "server.backend_port",
                self.server.backend_port.to_string(),
                "must differ from server.node_port",
            ));
        }
        if self.storage.batch_max_events == 0 {
            return Err(invalid(
                "storage.batch_max_events",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.storage.queue_capacity < self.storage.batch_max_events {
            return Err(invalid(
                "storage.queue_capacity",
                self.storage.queue_capacity.to_string(),
                "must be at least storage.batch_max_events",
            ));
        }
        if !(1..=64).contains(&self.storage.event_readers) {
            return Err(invalid(
                "storage.event_readers",
                self.storage.event_readers.to_string(),
                "must be from 1 to 64",
            ));
        }
        if !(1..=10_000_000).contains(&self.storage.partition_max_events) {
            return Err(invalid(
                "storage.partition_max_events",
                self.storage.partition_max_events.to_string(),
                "must be from 1 to 10000000",
            ));
        }
        if !(0.1..=3600.0).contains(&self.storage.query_time_limit) {
            return Err(invalid(
                "storage.query_time_limit",
                self.storage.query_time_limit.to_string(),
                "must be from 0.1 to 3600 seconds",
            ));
        }
        if self.storage.queue_max_bytes < self.server.max_envelope_bytes {
            return Err(invalid(
                "storage.queue_max_bytes",
                self.storage.queue_max_bytes.to_string(),
                "must be at least server.max_envelope_bytes (the largest event must fit)",
            ));
        }
        if self.server.command_answers_max_bytes == 0 {
            return Err(invalid(
                "server.command_answers_max_bytes",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.api.page_max_bytes == 0 {
            return Err(invalid(
                "api.page_max_bytes",
                "0".into(),
                "must be at least 1",
            ));
        }
        let loopback = self.server.is_loopback();
        if !loopback && self.server.enrollment == Some(EnrollmentPolicy::Open) {
            return Err(invalid(
                "server.enrollment",
                "open".into(),
                "open enrollment lets anyone who reaches the node port enroll; it is allowed only when server.host is loopback (use enrollment tokens with several uses instead)",
            ));
        }
        if !loopback && !self.tls.enabled && !self.tls.allow_plaintext {
            return Err(invalid(
                "tls.enabled",
                "false".into(),
                "server.host is reachable beyond this machine: enable [tls] (or, on a network you trust entirely, set tls.allow_plaintext = true)",
            ));
        }
        let api_loopback = self.server.api_is_loopback();
        if !api_loopback && !self.tls.api && !self.tls.allow_plaintext_api {
            return Err(invalid(
                "server.api_host",
                self.server.api_host.clone(),
                "the REST API would be reachable beyond this machine without TLS: set [tls] api = true (or, on a network you trust entirely, tls.allow_plaintext_api = true)",
            ));
        }
        if !api_loopback && self.api.auth == ApiAuth::None {
            return Err(invalid(
                "api.auth",
                "none".into(),
                "an API without authentication is allowed only when server.api_host is loopback (use api.auth = \"tokens\")",
            ));
        }
        if !self.tls.enabled && (self.tls.api || self.tls.client_ca_file.is_some()) {
            return Err(invalid(
                "tls.enabled",
                "false".into(),
                "tls.api and tls.client_ca_file need tls.enabled = true",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file",
                format!("{:?} / {:?}", self.tls.cert_file, self.tls.key_file),
                "tls.cert_file and tls.key_file go together",
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "storage.data_dir",
                String::new(),
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The effective log filter (`debug = true` raises the default level).
    pub fn log_filter(&self) -> String {
        if self.server.debug && self.logging.level == "info" {
            "debug".into()
        } else {
            self.logging.level.clone()
        }
    }
}

#[cfg(test)]
mod tests;
