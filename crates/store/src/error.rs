//! Typed errors of the store crate.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("opening database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("creating database directory {path}: {source}")]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restricting database file {path} to its owner: {source}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("stored value {value:?} in column {column} is not valid")]
    CorruptValue { column: &'static str, value: String },
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade HoneyBee")]
    SchemaTooNew { found: usize, supported: usize },
    #[error("invalid event cursor {0:?}")]
    InvalidCursor(String),
    #[error("starting the checkpoint thread for {path}: {source}")]
    Checkpointer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the query ran past the store's time limit of {} s and was stopped", limit.as_secs_f64())]
    QueryTimeLimit { limit: std::time::Duration },
    #[error("the statistics of this window hold more distinct values than {limit_bytes} bytes of memory allow; narrow it with since/until or a filter")]
    StatsTooLarge { limit_bytes: usize },
    #[error("event store: {0}")]
    Events(crate::columnar::ColumnarError),
    #[error("database worker task failed: {0}")]
    Worker(String),
}
