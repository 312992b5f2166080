//! HoneyBee storage: the domain records the Core keeps, the interfaces every backend
//! implements — one per concern: [`EventStore`], [`FleetStore`], [`AccessStore`], and
//! [`Store`] for all three — and the embedded backend: SQLite for the control plane, a
//! columnar, partitioned store for events ([`EmbeddedStore`]).
//!
//! All SQL of the project lives in this crate. Callers hold an `Arc<dyn …Store>` and never
//! learn which backend is behind it, so a PostgreSQL backend can be added here without
//! touching them.

mod columnar;
mod embedded;
mod error;
mod model;
mod sqlite;
mod store;

pub use columnar::{ColumnarError, ColumnarEventStore, ColumnarOptions};
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use model::{
    ApiRole, ApiTokenRecord, DroppedEvents, EnrollmentOutcome, EnrollmentTokenRecord, EventCursor,
    EventFields, EventOrder, EventPage, EventQuery, EventStats, NewEnrollmentToken, NewEvent,
    NodeCredential, NodeKind, NodeRecord, NodeRegistrationRecord, NodeState, PotActivity,
    PotRecord, PotState, RetentionRule, StatField, StatsQuery, StoredEvent, DEFAULT_EVENT_PAGE,
    DEFAULT_EVENT_PAGE_BYTES, MAX_EVENT_PAGE, SOURCE_ADDRESS_KEYS,
};
pub use sqlite::{LegacyEvent, SqliteOptions, SqliteStore, SqliteSynchronous};
pub use store::{AccessStore, EventStore, FleetStore, Store};
