//! Typed errors of the protocol crate: what failed to decode, and with which value.

use thiserror::Error;

/// Why a Protocol v2 envelope could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The peer exceeded the configured envelope size; the stream cannot be trusted any more.
    #[error("envelope exceeds the maximum size of {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    /// A complete JSON value arrived but is not a valid v2 envelope.
    #[error("malformed envelope: {reason}")]
    Malformed { reason: String },
    /// The envelope is well formed but speaks another protocol version (or none).
    #[error("unsupported protocol version {version} (this side speaks version 2){}", variant.as_deref().map(|v| format!(", message {v}")).unwrap_or_default())]
    UnsupportedVersion {
        /// The `version` value as received (JSON text), or `missing`.
        version: String,
        /// The message variant name, when it could be read; lets the Core answer a
        /// `NodeRegistration` with a refusal instead of silence.
        variant: Option<String>,
    },
    /// The stream ended in the middle of an envelope.
    #[error("stream ended inside an envelope ({buffered_bytes} bytes buffered)")]
    Truncated { buffered_bytes: usize },
}

impl DecodeError {
    /// A fatal error means the connection must be closed: the decoder can no longer find
    /// envelope boundaries (or the peer is hostile). Other errors skip one envelope.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::TooLarge { .. } | DecodeError::Truncated { .. }
        )
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::Truncated { .. } => "truncated",
        }
    }
}

/// Why an ingest line (honeypot → node) was rejected.
#[derive(Debug, Error, PartialEq)]
pub enum IngestError {
    #[error("line is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("line is not valid JSON: {reason}")]
    NotJson { reason: String },
    #[error("line is JSON but not an object (found {found})")]
    NotAnObject { found: &'static str },
    #[error("event has neither \"event_type\" nor \"eventid\"")]
    MissingEventType,
    #[error("field {field:?} must be a non-empty string, found {found}")]
    BadField { field: &'static str, found: String },
    #[error("unparseable timestamp {value}")]
    BadTimestamp { value: String },
    #[error("field \"data\" must be an object (found {found})")]
    DataNotAnObject { found: &'static str },
    #[error("line exceeds the maximum size of {max_bytes} bytes")]
    TooLong { max_bytes: usize },
}

impl IngestError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IngestError::NotUtf8 { .. } => "not_utf8",
            IngestError::NotJson { .. } => "not_json",
            IngestError::NotAnObject { .. } => "not_an_object",
            IngestError::MissingEventType => "missing_event_type",
            IngestError::BadField { .. } => "bad_field",
            IngestError::BadTimestamp { .. } => "bad_timestamp",
            IngestError::DataNotAnObject { .. } => "data_not_an_object",
            IngestError::TooLong { .. } => "too_long",
        }
    }
}
