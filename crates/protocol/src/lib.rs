//! HoneyBee wire contracts, without any I/O: Protocol v2 message types, the streaming
//! envelope decoder, the ingest line framer, the normalisation of honeypot event lines and
//! the TOTP codes nodes authenticate with.
//!
//! Everything here is pure: callers feed bytes in and get typed values (or typed errors)
//! out, so the same code serves the Core, the Node, tests and benchmarks.

mod decoder;
mod error;
mod ingest;
mod json_object;
mod line_framer;
mod message;
mod timestamp;
mod totp;
mod variant;

pub use decoder::{decode_envelope, EnvelopeDecoder, DEFAULT_MAX_ENVELOPE_BYTES};
pub use error::{DecodeError, IngestError};
pub use ingest::{normalize_ingest_line, IngestEvent, IngestEventRef, PotContext, UNKNOWN};
pub use json_object::JsonObject;
pub use line_framer::{FramedLine, LineFramer, DEFAULT_MAX_LINE_BYTES};
pub use message::{
    encode_envelope, encode_pot_event, Command, CommandAnswer, Envelope, EventAck, InstallPot,
    Message, NodeCommand, NodeEvent, NodeEventKind, NodeRegistration, NodeStatus, NodeStatusUpdate,
    NodeType, PotEvent, PotEventRef, PotStatus, PotStatusUpdate, RegistrationAck,
    CAPABILITY_ACKED_DELIVERY, CAPABILITY_COMMAND_ANSWERS, CAPABILITY_UNINSTALL_POT,
    PROTOCOL_VERSION,
};
pub use timestamp::{format_timestamp, parse_timestamp_text};
pub use totp::{
    base32_decode, base32_encode, totp_code, totp_matching_step, totp_step_at, TOTP_DIGITS,
    TOTP_SECRET_BYTES, TOTP_STEP_SECONDS,
};
