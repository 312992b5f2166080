//! What every candidate layout implements, so the harness drives them alike.

use anyhow::Result;

use crate::corpus::{Event, Fields};

/// An event with what ingest extracted from it.
pub struct Ingested {
    pub event: Event,
    pub fields: Fields,
}

/// A filter of the first-page queries (newest first).
#[derive(Debug, Clone)]
pub enum Filter {
    Username(String),
    SrcIp(String),
    Country(String),
    EventType(String),
}

impl Filter {
    pub fn describe(&self) -> String {
        match self {
            Filter::Username(value) => format!("username={value}"),
            Filter::SrcIp(value) => format!("src_ip={value}"),
            Filter::Country(value) => format!("country={value}"),
            Filter::EventType(value) => format!("eventid={value}"),
        }
    }

    /// Whether the event's stored fields match.
    pub fn matches(&self, event_type: &str, fields: &Fields) -> bool {
        match self {
            Filter::Username(value) => fields.username.as_deref() == Some(value),
            Filter::SrcIp(value) => fields.src_ip.as_deref() == Some(value),
            Filter::Country(value) => fields.country == Some(value.as_str()),
            Filter::EventType(value) => event_type == value,
        }
    }
}

/// A field the statistics count values of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    SrcIp,
    Username,
    Password,
    EventId,
    Country,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::SrcIp,
        Field::Username,
        Field::Password,
        Field::EventId,
        Field::Country,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::SrcIp => "src_ip",
            Field::Username => "username",
            Field::Password => "password",
            Field::EventId => "eventid",
            Field::Country => "country",
        }
    }

    pub fn value<'a>(self, event_type: &'a str, fields: &'a Fields) -> Option<&'a str> {
        match self {
            Field::SrcIp => fields.src_ip.as_deref(),
            Field::Username => fields.username.as_deref(),
            Field::Password => fields.password.as_deref(),
            Field::EventId => Some(event_type),
            Field::Country => fields.country,
        }
    }
}

/// A page row: the arrival id and the payload exactly as received.
pub type Row = (u64, String);

/// Top values of one field with their counts, most frequent first (ties by value).
pub type Top = Vec<(String, u64)>;

pub trait Candidate {
    /// Stores a batch durably (on disk, fsynced) before returning; assigns arrival ids in
    /// order.
    fn append(&mut self, batch: &[Ingested]) -> Result<()>;
    /// Seals the hot partition (no-op for a layout without partitions).
    fn seal(&mut self) -> Result<()>;
    /// Brings the files to their resting state before their size is measured: seals the
    /// hot partition (or, for a single database, checkpoints its WAL away).
    fn finish(&mut self) -> Result<()> {
        self.seal()
    }
    /// Where the bytes went, once finished (one line per part), if the layout tells.
    fn disk_report(&self) -> Vec<String> {
        Vec::new()
    }
    /// First page, newest first: at most `limit` events matching `filter`.
    fn first_page(&mut self, filter: &Filter, limit: usize) -> Result<Vec<Row>>;
    /// Events with an arrival id above `after`, oldest first.
    fn after_id(&mut self, after: u64, limit: usize) -> Result<Vec<Row>>;
    /// The 10 most frequent values of each field among events that arrived at or after
    /// `since` (micros), or all events.
    fn top10(&mut self, since: Option<i64>) -> Result<Vec<(Field, Top)>>;
}

/// Orders counted values and keeps the ten first: by count descending, then by value.
pub fn top_ten(counts: impl IntoIterator<Item = (String, u64)>) -> Top {
    let mut all: Vec<(String, u64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(10);
    all
}
