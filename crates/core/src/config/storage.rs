//! `[storage]` and `[geoip]`: where events are kept and how they are enriched.

use std::path::PathBuf;

use serde::Deserialize;

/// Default of `[storage] queue_max_bytes`: 64 events of the largest size, or tens of
/// thousands of ordinary ones (a few hundred bytes each), which is more than one batch.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// `[storage]`: where and how events are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage backend. Only `sqlite` (embedded) today.
    pub backend: StorageBackend,
    /// Directory of the Core's state: nodes, pots and tokens in `<data_dir>/honeybee.sqlite3`,
    /// events in `<data_dir>/events/`.
    /// Default `./honeybee-data`.
    pub data_dir: PathBuf,
    /// `full` (default: a stored batch survives power loss) or `normal` (survives a crash
    /// of the Core, not of the machine; faster on slow disks).
    pub sqlite_synchronous: Synchronous,
    /// Most events written in one transaction. Default 16384: under load the writer takes
    /// whatever waited during the previous commit, and a bigger transaction writes each
    /// hot index page once for more events (measured: 4096 → 16384 took SQLite from about
    /// 77k to 92k events/s with the shipped indexes). An idle Core still writes each event
    /// at once.
    pub batch_max_events: usize,
    /// Events buffered between the node connections and the writer; when full, the Core
    /// stops reading from nodes (backpressure) instead of growing memory. Default 65536.
    pub queue_capacity: usize,
    /// Bytes the queued events may take (their text plus a fixed overhead each), counted
    /// from the moment a session decoded an event until the batch holding it is committed;
    /// when used up, sessions stop reading from nodes exactly as with a full queue. Without
    /// it the queue could hold `queue_capacity` × `server.max_envelope_bytes` (64 GiB).
    /// Must be at least `server.max_envelope_bytes`. Default 64 MiB.
    pub queue_max_bytes: usize,
    /// Events queries (API) that run at once; more wait for a turn. Token checks and node
    /// and pot reads never wait for these. 1 to 64, default 4.
    pub event_readers: usize,
    /// Events in the hot (newest) event partition before it is sealed into a compressed
    /// columnar file (`<data_dir>/events/part-*.parquet`); a partition also ends with its
    /// hour of arrival. Bounds the hot partition's memory (about 100 bytes an event) and
    /// the log replayed after a crash. 1 to 10,000,000, default 250,000.
    pub partition_max_events: usize,
    /// Seconds one events query may run before the store stops it and the API answers 503
    /// (narrow the query with `since`/`until` or a filter). 0.1 to 3600, default 10.
    pub query_time_limit: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Sqlite,
            data_dir: PathBuf::from("honeybee-data"),
            sqlite_synchronous: Synchronous::Full,
            batch_max_events: 16_384,
            queue_capacity: 65_536,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            event_readers: 4,
            partition_max_events: honeybee_store::ColumnarOptions::DEFAULT_PARTITION_MAX_EVENTS,
            query_time_limit: 10.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sqlite,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

/// `[geoip]`: the offline enrichment of attacker addresses. The country comes from the
/// database built into the binary (DB-IP Lite, CC BY 4.0); city and autonomous system come
/// from MaxMind-format files when configured (GeoLite2-City, GeoLite2-ASN, DB-IP's, or any
/// `.mmdb` with the same fields). Nothing is looked up over the network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeoIpConfig {
    /// A city database (`.mmdb`): adds the city, and its country wins over the built-in
    /// one. Default: none.
    pub city_db: Option<PathBuf>,
    /// An autonomous-system database (`.mmdb`): adds the AS number. Default: none.
    pub asn_db: Option<PathBuf>,
}
