//! The Node's configuration: the documented `config.yaml` shape (`node`, `server`, `tls`,
//! `auth`, `honeypot`, `log`) plus an `ingest` section for the honeypot event listener.
//! Every field has a default; `validate()` reports what is wrong and with which value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::spool::SpoolFullPolicy;
use thiserror::Error;

/// Room reserved for the envelope around an event line (version, node id, field names).
const ENVELOPE_OVERHEAD_BYTES: usize = 4096;
/// Default of `ingest.queue_max_bytes`: 256 lines of the longest size, or tens of thousands
/// of ordinary ones, more than the spool writer takes in one group commit.
pub const DEFAULT_INGEST_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

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
    #[error("{field} {path} cannot be made absolute: {source}")]
    NotAbsolute {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub server: ServerSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub honeypot: HoneypotSection,
    pub log: LogSection,
    pub ingest: IngestSection,
    pub spool: SpoolSection,
    pub metrics: MetricsSection,
}

/// `node:` who this node is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Name shown in the Core. Default: the machine's host name.
    pub name: String,
    /// `Full` (runs honeypots) or `Agent` (forwards events only). Default `Full`.
    #[serde(rename = "type")]
    pub node_type: NodeTypeSetting,
    /// Directory for the node's state (its persistent `node_id`). Default
    /// `./honeybee-node-data`.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: default_node_name(),
            node_type: NodeTypeSetting::Full,
            data_dir: PathBuf::from("honeybee-node-data"),
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "honeybee-node".into())
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum NodeTypeSetting {
    Full,
    Agent,
}

/// `server:` the Core to connect to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// The Core's node port as `host:port`. Default `127.0.0.1:9001`.
    pub address: String,
    /// Seconds between heartbeats (`NodeStatusUpdate`). Default 30.
    pub heartbeat_interval: f64,
    /// First delay before reconnecting, in seconds; doubles per failed attempt (with
    /// jitter) up to `max_reconnect_delay`. Default 5.
    pub reconnect_delay: f64,
    /// Longest delay between reconnection attempts, in seconds. Default 60.
    pub max_reconnect_delay: f64,
    /// Seconds to wait for the TCP connection and for the `RegistrationAck`. Default 10.
    pub connect_timeout: f64,
    /// Largest envelope accepted from the Core, in bytes. Default 1 MiB.
    pub max_envelope_bytes: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            address: "127.0.0.1:9001".into(),
            heartbeat_interval: 30.0,
            reconnect_delay: 5.0,
            max_reconnect_delay: 60.0,
            connect_timeout: 10.0,
            max_envelope_bytes: honeybee_protocol::DEFAULT_MAX_ENVELOPE_BYTES,
        }
    }
}

impl ServerSection {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval)
    }

    pub fn reconnect_delay(&self) -> Duration {
        Duration::from_secs_f64(self.reconnect_delay)
    }

    pub fn max_reconnect_delay(&self) -> Duration {
        Duration::from_secs_f64(self.max_reconnect_delay)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout)
    }

    /// Whether `address` names this machine: `localhost` or a loopback IP address. A name
    /// is not resolved here, so any other name counts as remote.
    pub fn is_loopback(&self) -> bool {
        let Some((host, _)) = self.address.rsplit_once(':') else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    }
}

/// `tls:` TLS 1.3 to the Core. With `enabled`, the Core is verified against `ca_file` or the
/// pinned `ca_fingerprint` (one is required, unless `insecure_skip_verify`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Speak TLS 1.3 to the Core (whose `[tls] enabled` must be on too). Default false.
    pub enabled: bool,
    /// PEM file with the CA that signed the Core's certificate (the Core's `tls/ca.pem`).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the Core's CA certificate, hex (colons allowed), as the Core logs it.
    pub ca_fingerprint: Option<String>,
    /// PEM client certificate (chain) presented to a Core that requires mutual TLS
    /// (`[tls] client_ca_file`). Goes with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the Core's certificate must carry. Default: the host of `server.address`.
    pub server_name: Option<String>,
    /// Trust any certificate: encryption without authentication. Warned about loudly.
    pub insecure_skip_verify: bool,
    /// Speak plaintext to a Core that is not on this machine. Default false: without TLS a
    /// node talks only to a loopback Core, because anyone on the path could read its
    /// enrollment token and codes and, posing as the Core, send it commands.
    pub allow_plaintext: bool,
}

/// `auth:` how the node proves itself to the Core: an enrollment token the first time, then
/// TOTP codes from the secret the Core issued.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Keep the secret the Core issues and send a code with every registration. Default
    /// true. False only for a Core that authenticates no node (HoneyBee's Core always does,
    /// so a node with `false` registers once and is refused afterwards).
    pub totp_enabled: bool,
    /// Where the TOTP secret is kept (mode 0600). Default `<node.data_dir>/totp.key`.
    /// Losing it means enrolling again under a new node id.
    pub totp_secret_file: Option<PathBuf>,
    /// The enrollment token (`honeybee enroll create`) presented while the node has no
    /// secret yet. Also read from `HONEYBEE_ENROLLMENT_TOKEN` or `--enrollment-token`.
    pub enrollment_token: Option<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            totp_enabled: true,
            totp_secret_file: None,
            enrollment_token: None,
        }
    }
}

/// `honeypot:` running honeypots on a `Full` node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HoneypotSection {
    /// Whether this node installs and runs pots on command. Default true (`Agent` nodes
    /// never do).
    pub enabled: bool,
    /// Where pot instances live, one directory each. Default `<node.data_dir>/pots`. A
    /// leading `~/` means the home directory.
    pub base_dir: Option<PathBuf>,
    /// A potstore directory (with `manifest.toml`). Default: the potstore built into the
    /// node binary (this repository's `potstore/`).
    pub potstore: Option<PathBuf>,
    /// Interpreter for Python pots and their virtualenvs; the pot user must be able to run
    /// it (not one under `/root`). Default `/usr/bin/python3`.
    pub python: String,
    /// When the node runs as root, each pot runs as a system user of its own named
    /// `<run_as>-<10 hex digits of the pot id's SHA-256>` (created at install, removed at
    /// uninstall). Lowercase letters, digits, `_` and `-`, at most 21 characters. Default
    /// `honeybee`.
    pub run_as: String,
    /// Whether a node that is not root may run pots anyway, as its own user (then a pot can
    /// read the node's `totp.key`, spool and keys, and speak for any pot). Default false:
    /// such a node refuses every pot command and says why.
    pub allow_unprivileged: bool,
    /// Whether `InstallPot.git_url` may be an `ssh://` or `user@host:path` URL (besides
    /// `https://`). Default false.
    pub git_allow_ssh: bool,
    /// A CA bundle (PEM) that `git clone` over https trusts instead of the system's; it must
    /// be readable by the pot users. Default: the system's.
    pub git_ca_file: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when a pot is stopped. Default 10.
    pub stop_grace: f64,
    /// First delay before restarting a pot that died, in seconds; doubles per crash up to
    /// 30 s. More than 5 crashes within 60 s and the pot stays `Failed`. Default 1.
    pub restart_backoff: f64,
    /// A pot's captured output rotates at this size, in bytes. Default 1 MiB.
    pub log_max_bytes: u64,
    /// Rotated output files kept per pot. Default 3.
    pub log_files: usize,
    /// Default `ssh_port` for pot types that have one (Cowrie). Default 2222.
    pub default_ssh_port: u16,
    /// Default `telnet_port` for pot types that have one (Cowrie). Default 2223.
    pub default_telnet_port: u16,
}

impl Default for HoneypotSection {
    fn default() -> Self {
        HoneypotSection {
            enabled: true,
            base_dir: None,
            potstore: None,
            python: "/usr/bin/python3".into(),
            run_as: "honeybee".into(),
            allow_unprivileged: false,
            git_allow_ssh: false,
            git_ca_file: None,
            stop_grace: 10.0,
            restart_backoff: 1.0,
            log_max_bytes: 1024 * 1024,
            log_files: 3,
            default_ssh_port: 2222,
            default_telnet_port: 2223,
        }
    }
}

impl HoneypotSection {
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs_f64(self.stop_grace)
    }

    pub fn restart_backoff(&self) -> Duration {
        Duration::from_secs_f64(self.restart_backoff)
    }

    /// `base_dir` with `~/` expanded, or the default under the node's data directory.
    pub fn base_dir(&self, data_dir: &Path) -> PathBuf {
        match &self.base_dir {
            Some(path) => expand_home(path),
            None => data_dir.join("pots"),
        }
    }
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// `log:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `trace`, `debug`, `info`, `warn`, `error` or a `tracing` filter. Default `info`.
    /// `RUST_LOG` overrides it.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
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

/// `spool:` the durable on-disk queue between the honeypots and the Core.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSection {
    /// Where segment files live. Default `<node.data_dir>/spool`.
    pub directory: Option<PathBuf>,
    /// Most bytes of unacknowledged events kept on disk. Default 1 GiB (about 3 million
    /// Cowrie events).
    pub max_bytes: u64,
    /// Size at which a segment file is closed and a new one started; acknowledged segments
    /// are deleted whole. Default 16 MiB.
    pub segment_bytes: u64,
    /// When the spool is full: `refuse` (default) refuses new events, `drop_oldest` deletes
    /// the oldest unacknowledged segment. Either way the count is a metric and a
    /// `NodeEvent` Alarm to the Core.
    pub full_policy: SpoolFullPolicy,
    /// Shortest time in milliseconds between two fsyncs of the spool (group commit): what
    /// arrives meanwhile is appended and synced together. An event after a quiet spell is
    /// synced at once; in a steady stream one waits at most this long. Default 2: an fsync
    /// costs about 0.1 ms of CPU here whatever it carries, and at 10,000 events/s syncing
    /// every few events was half a core (see docs/performance.md). 0 syncs every batch at
    /// once; at most 1000.
    pub sync_interval_ms: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            directory: None,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            full_policy: SpoolFullPolicy::Refuse,
            sync_interval_ms: 2,
        }
    }
}

/// `metrics:` an HTTP endpoint with the node's metrics in Prometheus text format.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `HOST:PORT` to serve `GET /metrics` on, e.g. `127.0.0.1:9101`. Default: not served
    /// (the node still logs a summary every minute).
    pub listen: Option<String>,
}

/// `ingest:` the listener honeypots write their events to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Bind address. Default `127.0.0.1`: honeypots run on the same machine, and the port
    /// must not be reachable by attackers.
    pub host: String,
    /// Port honeypots connect to (`HONEYBEE_EVENT_PORT`). Default 9100; 0 picks a free port.
    pub port: u16,
    /// Longest accepted event line, in bytes. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Honeypot connections served at once. Default 1024.
    pub max_connections: usize,
    /// Honeypot connections served at once from one sender (the unix user owning the
    /// socket — each pot is one — else the address); one more is closed at once, so one pot
    /// cannot hold all of `max_connections`. Default 64.
    pub max_connections_per_sender: usize,
    /// Events held in memory on their way into the spool; when full (the disk is slower
    /// than the honeypots), the node stops reading from honeypots (backpressure) instead of
    /// dropping events. Default 16384.
    pub queue_capacity: usize,
    /// Bytes those events may take (their text plus about 150 bytes each), counted until
    /// the spool wrote them; when used up, the node stops reading from honeypots as with a
    /// full queue. Without it the queue could hold `queue_capacity` × `max_line_bytes`
    /// (1 GiB). Must be at least `max_line_bytes`. Default 16 MiB.
    pub queue_max_bytes: usize,
    /// A honeypot connection silent this many seconds is closed (the kits reconnect by
    /// themselves). Default 300.
    pub idle_timeout: f64,
    /// Most events per second read from one honeypot connection; a faster sender is slowed
    /// down (nothing is dropped), counted, and reported to the Core as a `NodeEvent` Alarm.
    /// Default 100000: far above a real honeypot under a scan wave, and still a bound on a
    /// runaway or compromised one.
    pub max_events_per_second: u32,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            host: "127.0.0.1".into(),
            port: 9100,
            max_line_bytes: honeybee_protocol::DEFAULT_MAX_LINE_BYTES,
            max_connections: 1024,
            max_connections_per_sender: 64,
            queue_capacity: 16_384,
            queue_max_bytes: DEFAULT_INGEST_QUEUE_MAX_BYTES,
            idle_timeout: 300.0,
            max_events_per_second: 100_000,
        }
    }
}

impl IngestSection {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout)
    }
}

impl NodeConfig {
    /// Every configured path made absolute against the current directory (after `~/`
    /// expansion), so that a relative `node.data_dir` such as `honeybee up`'s default means
    /// the same to the pot installs and pot processes the node starts in other directories.
    pub fn with_absolute_paths(mut self) -> Result<Self, ConfigError> {
        let absolute = |field: &'static str, path: &Path| {
            std::path::absolute(expand_home(path)).map_err(|source| ConfigError::NotAbsolute {
                field,
                path: path.to_path_buf(),
                source,
            })
        };
        self.node.data_dir = absolute("node.data_dir", &self.node.data_dir)?;
        let optional_paths: [(&'static str, &mut Option<PathBuf>); 7] = [
            ("honeypot.base_dir", &mut self.honeypot.base_dir),
            ("honeypot.potstore", &mut self.honeypot.potstore),
            ("spool.directory", &mut self.spool.directory),
            ("auth.totp_secret_file", &mut self.auth.totp_secret_file),
            ("tls.ca_file", &mut self.tls.ca_file),
            ("tls.cert_file", &mut self.tls.cert_file),
            ("tls.key_file", &mut self.tls.key_file),
        ];
        for (field, path) in optional_paths {
            if let Some(value) = path.as_mut() {
                *value = absolute(field, value)?;
            }
        }
        Ok(self)
    }

    /// Where the spool's segment files live.
    pub fn spool_directory(&self) -> PathBuf {
        self.spool
            .directory
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("spool"))
    }
    /// Where the TOTP secret is kept.
    pub fn totp_secret_file(&self) -> PathBuf {
        self.auth
            .totp_secret_file
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("totp.key"))
    }

    /// Reads and validates a `config.yaml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text without validating it. An empty document is the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(NodeConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|error| error.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason| ConfigError::Invalid {
            field,
            value,
            reason,
        };
        if self.node.name.trim().is_empty() {
            return Err(invalid(
                "node.name",
                self.node.name.clone(),
                "must not be empty",
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", String::new(), "must not be empty"));
        }
        match self.server.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(invalid(
                    "server.address",
                    self.server.address.clone(),
                    "must be host:port, e.g. core.example.org:9001",
                ))
            }
        }
        for (field, value) in [
            ("server.heartbeat_interval", self.server.heartbeat_interval),
            ("server.reconnect_delay", self.server.reconnect_delay),
            (
                "server.max_reconnect_delay",
                self.server.max_reconnect_delay,
            ),
            ("server.connect_timeout", self.server.connect_timeout),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return Err(invalid(
                    field,
                    value.to_string(),
                    "must be between 0 and 86400 seconds",
                ));
            }
        }
        if self.server.max_reconnect_delay < self.server.reconnect_delay {
            return Err(invalid(
                "server.max_reconnect_delay",
                self.server.max_reconnect_delay.to_string(),
                "must be at least server.reconnect_delay",
            ));
        }
        if self.server.max_envelope_bytes < 1024 {
            return Err(invalid(
                "server.max_envelope_bytes",
                self.server.max_envelope_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if self.tls.enabled
            && self.tls.ca_file.is_none()
            && self.tls.ca_fingerprint.is_none()
            && !self.tls.insecure_skip_verify
        {
            return Err(invalid(
                "tls.enabled",
                "true".into(),
                "needs tls.ca_file or tls.ca_fingerprint to know the core (or, insecurely, tls.insecure_skip_verify)",
            ));
        }
        if !self.tls.enabled && !self.tls.allow_plaintext && !self.server.is_loopback() {
            return Err(invalid(
                "server.address",
                self.server.address.clone(),
                "is not a loopback address and tls.enabled is false: turn TLS on (tls.enabled with tls.ca_fingerprint), or set tls.allow_plaintext if the network is entirely yours",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file",
                format!("{:?} / {:?}", self.tls.cert_file, self.tls.key_file),
                "tls.cert_file and tls.key_file go together",
            ));
        }
        if self.ingest.host.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "ingest.host",
                self.ingest.host.clone(),
                "must be an IP address such as 127.0.0.1",
            ));
        }
        // A line becomes one envelope; it must fit, with room for the envelope's own fields.
        if self.ingest.max_line_bytes + ENVELOPE_OVERHEAD_BYTES > self.server.max_envelope_bytes {
            return Err(invalid(
                "ingest.max_line_bytes",
                self.ingest.max_line_bytes.to_string(),
                "must be at least 4096 bytes below server.max_envelope_bytes",
            ));
        }
        if self.ingest.max_line_bytes < 256 {
            return Err(invalid(
                "ingest.max_line_bytes",
                self.ingest.max_line_bytes.to_string(),
                "must be at least 256",
            ));
        }
        if !(self.honeypot.stop_grace.is_finite()
            && self.honeypot.stop_grace >= 0.0
            && self.honeypot.stop_grace <= 3600.0)
        {
            return Err(invalid(
                "honeypot.stop_grace",
                self.honeypot.stop_grace.to_string(),
                "must be between 0 and 3600 seconds",
            ));
        }
        if !(self.honeypot.restart_backoff.is_finite()
            && self.honeypot.restart_backoff > 0.0
            && self.honeypot.restart_backoff <= 30.0)
        {
            return Err(invalid(
                "honeypot.restart_backoff",
                self.honeypot.restart_backoff.to_string(),
                "must be between 0 and 30 seconds",
            ));
        }
        if !crate::pots::valid_user_prefix(&self.honeypot.run_as) {
            return Err(invalid(
                "honeypot.run_as",
                self.honeypot.run_as.clone(),
                "must be 1-21 lowercase letters, digits, '_' or '-', starting with a letter or '_' (the prefix of each pot's user name)",
            ));
        }
        let base_dir = self.honeypot.base_dir(&self.node.data_dir);
        if crate::data_dir::base_dir_holds_data_dir(&self.node.data_dir, &base_dir) {
            return Err(invalid(
                "honeypot.base_dir",
                base_dir.display().to_string(),
                "must not be node.data_dir nor contain it: each pot's user owns its directory in there; use a directory below the data directory (the default, <node.data_dir>/pots) or beside it",
            ));
        }
        if self.honeypot.log_max_bytes < 1024 {
            return Err(invalid(
                "honeypot.log_max_bytes",
                self.honeypot.log_max_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if !(self.ingest.idle_timeout.is_finite()
            && self.ingest.idle_timeout > 0.0
            && self.ingest.idle_timeout <= 86_400.0)
        {
            return Err(invalid(
                "ingest.idle_timeout",
                self.ingest.idle_timeout.to_string(),
                "must be between 0 and 86400 seconds",
            ));
        }
        if self.spool.segment_bytes < 4096 {
            return Err(invalid(
                "spool.segment_bytes",
                self.spool.segment_bytes.to_string(),
                "must be at least 4096",
            ));
        }
        if self.spool.sync_interval_ms > 1000 {
            return Err(invalid(
                "spool.sync_interval_ms",
                self.spool.sync_interval_ms.to_string(),
                "must be at most 1000 (events wait this long before they count as accepted)",
            ));
        }
        if self.spool.max_bytes < 2 * self.spool.segment_bytes {
            return Err(invalid(
                "spool.max_bytes",
                self.spool.max_bytes.to_string(),
                "must be at least twice spool.segment_bytes",
            ));
        }
        if let Some(listen) = &self.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics.listen",
                    listen.clone(),
                    "must be an address with a port, such as 127.0.0.1:9101",
                ));
            }
        }
        if self.ingest.max_events_per_second == 0 {
            return Err(invalid(
                "ingest.max_events_per_second",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.ingest.queue_max_bytes < self.ingest.max_line_bytes {
            return Err(invalid(
                "ingest.queue_max_bytes",
                self.ingest.queue_max_bytes.to_string(),
                "must be at least ingest.max_line_bytes (the longest event must fit)",
            ));
        }
        for (field, value) in [
            ("honeypot.log_files", self.honeypot.log_files),
            ("ingest.max_connections", self.ingest.max_connections),
            (
                "ingest.max_connections_per_sender",
                self.ingest.max_connections_per_sender,
            ),
            ("ingest.queue_capacity", self.ingest.queue_capacity),
        ] {
            if value == 0 {
                return Err(invalid(field, "0".into(), "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
