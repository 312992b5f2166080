//! Domain records of the Core's store. These are neither wire types nor API types: the Core
//! converts Protocol v2 messages into them, and API responses out of them.

use chrono::{DateTime, Utc};

use crate::error::StoreError;

/// Default number of events per page.
pub const DEFAULT_EVENT_PAGE: u32 = 100;
/// Largest page a query may ask for.
pub const MAX_EVENT_PAGE: u32 = 1000;
/// Default byte budget of a page (the sum of its events' `data` text): 1,000 events of up
/// to 1 MiB each would otherwise make a 1 GiB page.
pub const DEFAULT_EVENT_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// An enum stored as text: each variant is written as its name, or as the literal given
/// with `= "text"`. Variants are ordered as declared.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident $(= $text:literal)?),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => variant_text!($variant $($text)?)),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $(variant_text!($variant $($text)?) => Some($name::$variant),)* _ => None }
            }
        }
    };
}

macro_rules! variant_text {
    ($variant:ident) => {
        stringify!($variant)
    };
    ($variant:ident $text:literal) => {
        $text
    };
}

text_enum!(
    /// What a node is able to do.
    NodeKind { Full, Agent }
);
text_enum!(
    /// The last status a node reported about itself.
    NodeState { Connected, Deploying, Running, Stopped, Failed, Unknown }
);
text_enum!(
    /// The last status a node reported about one of its pots.
    PotState { Installing, Running, Stopped, Failed }
);

text_enum!(
    /// What an API token may do: `read` for `GET` requests, `admin` for everything.
    ApiRole { Read = "read", Admin = "admin" }
);

/// An API token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTokenRecord {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    pub name: String,
    pub role: ApiRole,
    pub created_at: DateTime<Utc>,
}

/// A node enrollment token to store: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEnrollmentToken {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    pub name: String,
    /// How many nodes may enroll with it.
    pub uses: u32,
    /// After this instant the token enrolls nobody. `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A stored enrollment token, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentTokenRecord {
    pub id: u64,
    pub name: String,
    pub uses_total: u32,
    pub uses_left: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How a node authenticates: its TOTP secret and the newest step it already used.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCredential {
    pub node_id: u64,
    /// Base32, as sent in `RegistrationAck.totp_key`.
    pub totp_secret: String,
    /// Codes of this step or older are refused (no replay).
    pub last_totp_step: u64,
    pub enrolled_at: DateTime<Utc>,
    /// The node has the secret: it registered with a valid code, or went on talking in the
    /// session whose ack carried the secret.
    pub confirmed: bool,
    /// A revoked node is refused for good.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The result of an enrollment attempt; only `Enrolled` stored the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentOutcome {
    Enrolled,
    /// The node id already has a credential (enrolled, or revoked).
    AlreadyEnrolled,
    TokenUnknown,
    TokenUsedUp,
    TokenExpired,
    TokenRevoked,
    /// The node id was enrolled openly and never confirmed, and the time to enroll it again
    /// without a token is over.
    ReissueWindowClosed,
}

/// What the Core learns from an accepted registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRegistrationRecord {
    pub node_id: u64,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub kind: NodeKind,
    /// The peer address the connection came from.
    pub remote_address: String,
    /// Identifies the connection that registered; only that session may later mark the
    /// node disconnected, so a late disconnect of a replaced connection is a no-op.
    pub session_id: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub node_id: u64,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub kind: NodeKind,
    pub remote_address: String,
    pub reported_state: NodeState,
    /// Whether a Core currently holds a connection from this node.
    pub connected: bool,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Revoked by an operator (see [`NodeCredential::revoked_at`]).
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PotRecord {
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub state: PotState,
    pub message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// An event on its way into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The payload: one JSON object's text, stored as it arrived.
    pub data_json: String,
    /// What ingest took from the payload's top level (and the enrichment added), stored as
    /// columns beside it for filters and statistics.
    pub fields: EventFields,
    /// The node's sequence number (acknowledged delivery): the store skips an event whose
    /// seq is not above the node's highest stored one (a resend). `None` for nodes without
    /// the extension: never de-duplicated.
    pub seq: Option<u64>,
}

/// The well-known fields of an event: taken once, at ingest, from the top level of its
/// payload (the payload itself is stored and returned exactly as received), plus what the
/// offline GeoIP enrichment found for the source address. As a query's `fields`, every
/// `Some` is a filter (equality, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFields {
    /// The attacker's address ([`SOURCE_ADDRESS_KEYS`]).
    pub src_ip: Option<String>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A command the attacker ran (Cowrie's `input`, or `command`).
    pub command: Option<String>,
    /// The honeypot's session id: one attacker connection.
    pub session: Option<String>,
    pub url: Option<String>,
    /// A downloaded or uploaded file's hash (Cowrie's `shasum`, or `sha256`).
    pub file_hash: Option<String>,
    pub protocol: Option<String>,
    /// ISO 3166 country code of `src_ip` (GeoIP, at ingest).
    pub country: Option<String>,
    /// City of `src_ip`, when a city database is configured.
    pub city: Option<String>,
    /// Autonomous system number of `src_ip`, when an ASN database is configured.
    pub asn: Option<u32>,
}

impl EventFields {
    /// Bytes of text the fields hold (for byte budgets).
    pub fn text_bytes(&self) -> usize {
        [
            &self.src_ip,
            &self.username,
            &self.password,
            &self.command,
            &self.session,
            &self.url,
            &self.file_hash,
            &self.protocol,
            &self.country,
            &self.city,
        ]
        .iter()
        .map(|text| text.as_ref().map_or(0, String::len))
        .sum()
    }
}

/// Where an event's attacker address is: the first of these payload fields that holds a
/// string (`src_ip` from Cowrie and most honeypots, `ip` from the rest).
pub const SOURCE_ADDRESS_KEYS: [&str; 2] = ["src_ip", "ip"];

/// An event as stored; `data_json` is the payload as JSON text, so the API can pass it
/// through without parsing it again.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub data_json: String,
    /// The well-known fields taken at ingest and the GeoIP enrichment, as stored.
    pub fields: EventFields,
}

/// Position after the last event of a page: the arrival id of its last event. Pages of
/// either order go on from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub id: i64,
}

impl EventCursor {
    /// Opaque text form handed to API clients: the id.
    pub fn encode(&self) -> String {
        self.id.to_string()
    }

    /// Reads a cursor; the `<timestamp>_<id>` form of earlier releases (pages ordered by
    /// the event's own time) is read as its id, so a client holding one keeps paging.
    pub fn decode(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor(text.to_owned());
        let id_text = match text.split_once('_') {
            Some((timestamp, id)) => {
                timestamp.parse::<i64>().map_err(|_| invalid())?;
                id
            }
            None => text,
        };
        let id: i64 = id_text.parse().map_err(|_| invalid())?;
        if id < 0 {
            return Err(invalid());
        }
        Ok(EventCursor { id })
    }
}

/// Filters of an event query; all optional, combined with AND.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub node_id: Option<u64>,
    pub pot_id: Option<String>,
    pub event_type: Option<String>,
    /// Well-known fields: each `Some` must equal the event's.
    pub fields: EventFields,
    /// Only events whose own timestamp is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only events whose own timestamp is at or before this.
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    /// Most bytes of `data` text in the page, besides `limit`: reading stops once it is
    /// reached, and the page then holds fewer than `limit` events with `next_cursor` set.
    /// A page holds at least one event whatever its size.
    pub max_bytes: usize,
    pub cursor: Option<EventCursor>,
    /// Only events stored after the one with this id (ids are given in the order the Core
    /// stored events).
    pub after_id: Option<i64>,
    pub order: EventOrder,
}

/// The order of a page of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventOrder {
    /// Newest first: the last stored first (descending id); pages on with `cursor`. An
    /// event delivered late from a node's spool is new here, whatever its own timestamp.
    #[default]
    NewestFirst,
    /// Oldest first by id, the order the Core stored them in. Paging on from the last id of
    /// a page (`after_id`, or the page's cursor) misses nothing and repeats nothing,
    /// whatever the events' own timestamps: an event delivered late from a node's spool
    /// comes after what was stored before it. The order the live stream, exports and alert
    /// rules follow.
    Arrival,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            node_id: None,
            pot_id: None,
            event_type: None,
            fields: EventFields::default(),
            since: None,
            until: None,
            limit: DEFAULT_EVENT_PAGE,
            max_bytes: DEFAULT_EVENT_PAGE_BYTES,
            cursor: None,
            after_id: None,
            order: EventOrder::NewestFirst,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Present when more events match after this page.
    pub next_cursor: Option<EventCursor>,
}

/// A field statistics can rank the values of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatField {
    SrcIp,
    Username,
    Password,
    Command,
    Country,
    Asn,
    EventType,
    PotId,
    NodeId,
}

impl StatField {
    pub const ALL: [StatField; 9] = [
        StatField::SrcIp,
        StatField::Username,
        StatField::Password,
        StatField::Command,
        StatField::Country,
        StatField::Asn,
        StatField::EventType,
        StatField::PotId,
        StatField::NodeId,
    ];

    /// The field's name in the API (`top=src_ip,username`).
    pub fn name(self) -> &'static str {
        match self {
            StatField::SrcIp => "src_ip",
            StatField::Username => "username",
            StatField::Password => "password",
            StatField::Command => "command",
            StatField::Country => "country",
            StatField::Asn => "asn",
            StatField::EventType => "event_type",
            StatField::PotId => "pot_id",
            StatField::NodeId => "node_id",
        }
    }

    pub fn parse(name: &str) -> Option<StatField> {
        StatField::ALL
            .into_iter()
            .find(|field| field.name() == name)
    }
}

/// What statistics to compute: over the events whose own timestamp is in
/// `since..=until`, optionally of one node, pot or event type.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub node_id: Option<u64>,
    pub pot_id: Option<String>,
    pub event_type: Option<String>,
    /// The fields to rank.
    pub top: Vec<StatField>,
    /// Values per ranking.
    pub limit: usize,
    /// Width of the histogram's buckets; whole minutes.
    pub interval: std::time::Duration,
}

/// Exact statistics of a window (every event counted, nothing sampled).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventStats {
    pub total: u64,
    pub distinct_sources: u64,
    /// Events per bucket, oldest first: (bucket start, count); empty buckets left out.
    pub histogram: Vec<(DateTime<Utc>, u64)>,
    /// Per asked field, its most frequent values (most first, ties by value).
    pub top: Vec<(StatField, Vec<(String, u64)>)>,
    /// Per pot: node, pot, events, the newest event's own timestamp.
    pub pots: Vec<PotActivity>,
}

/// How busy one pot was in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct PotActivity {
    pub node_id: u64,
    pub pot_id: String,
    pub events: u64,
    pub last_event: DateTime<Utc>,
}

/// Which whole event partitions to drop. A partition goes when any rule says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionRule {
    /// Drop partitions whose every event arrived at or before this time.
    pub arrived_through: Option<DateTime<Utc>>,
    /// Then drop the oldest partitions while the event files take more than this.
    pub max_disk_bytes: Option<u64>,
    /// Also close the partition taking appends (and any waiting for sealing) when all
    /// its events arrived through `arrived_through`, so that a purge up to now leaves
    /// nothing behind. Retention leaves them to age.
    pub include_hot: bool,
}

/// What a drop removed, and what the event files take afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DroppedEvents {
    pub partitions: usize,
    pub events: u64,
    pub bytes: u64,
    /// The bytes of every event file that remains.
    pub remaining_bytes: u64,
    /// The lowest id still stored, if any.
    pub oldest_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = EventCursor { id: 42 };
        assert_eq!(EventCursor::decode(&cursor.encode()).unwrap(), cursor);
        assert_eq!(
            EventCursor::decode("-5_42").unwrap(),
            cursor,
            "an earlier release's cursor keeps its id"
        );
        for bad in ["", "-12", "a_b", "1_x", "x"] {
            assert!(EventCursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in [NodeState::Running, NodeState::Unknown] {
            assert_eq!(NodeState::parse(state.as_str()), Some(state));
        }
        assert_eq!(PotState::parse("Sleeping"), None);
    }
}
