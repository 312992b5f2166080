//! What a query asks of each event, in the terms of the columnar layout: which columns
//! are dictionary-coded, which are free text, and an event query turned into bounds and
//! equalities on them.

use crate::model::{EventCursor, EventFields, EventOrder, EventQuery};

/// The dictionary-coded columns, in the order of the hot partition's arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CodedColumn {
    PotId,
    PotType,
    EventType,
    SrcIp,
    Username,
    Password,
    Protocol,
    Country,
    City,
}

impl CodedColumn {
    pub const COUNT: usize = 9;
    pub const ALL: [CodedColumn; CodedColumn::COUNT] = [
        CodedColumn::PotId,
        CodedColumn::PotType,
        CodedColumn::EventType,
        CodedColumn::SrcIp,
        CodedColumn::Username,
        CodedColumn::Password,
        CodedColumn::Protocol,
        CodedColumn::Country,
        CodedColumn::City,
    ];

    /// The column's name in a sealed partition's Parquet file.
    pub fn name(self) -> &'static str {
        match self {
            CodedColumn::PotId => "pot_id",
            CodedColumn::PotType => "pot_type",
            CodedColumn::EventType => "event_type",
            CodedColumn::SrcIp => "src_ip",
            CodedColumn::Username => "username",
            CodedColumn::Password => "password",
            CodedColumn::Protocol => "protocol",
            CodedColumn::Country => "country",
            CodedColumn::City => "city",
        }
    }

    /// The column's value among the well-known fields (the envelope's columns have none).
    pub fn field(self, fields: &EventFields) -> Option<&str> {
        match self {
            CodedColumn::PotId | CodedColumn::PotType | CodedColumn::EventType => None,
            CodedColumn::SrcIp => fields.src_ip.as_deref(),
            CodedColumn::Username => fields.username.as_deref(),
            CodedColumn::Password => fields.password.as_deref(),
            CodedColumn::Protocol => fields.protocol.as_deref(),
            CodedColumn::Country => fields.country.as_deref(),
            CodedColumn::City => fields.city.as_deref(),
        }
    }
}

/// Free-text columns: values that rarely repeat (session ids, commands, URLs, hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PlainColumn {
    Command,
    Session,
    Url,
    FileHash,
}

impl PlainColumn {
    pub const COUNT: usize = 4;
    pub const ALL: [PlainColumn; PlainColumn::COUNT] = [
        PlainColumn::Command,
        PlainColumn::Session,
        PlainColumn::Url,
        PlainColumn::FileHash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlainColumn::Command => "command",
            PlainColumn::Session => "session",
            PlainColumn::Url => "url",
            PlainColumn::FileHash => "file_hash",
        }
    }

    pub fn field(self, fields: &EventFields) -> Option<&str> {
        match self {
            PlainColumn::Command => fields.command.as_deref(),
            PlainColumn::Session => fields.session.as_deref(),
            PlainColumn::Url => fields.url.as_deref(),
            PlainColumn::FileHash => fields.file_hash.as_deref(),
        }
    }
}

/// An event query as conditions on columns; every condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventFilter {
    /// Only ids above this.
    pub id_above: Option<u64>,
    /// Only ids below this.
    pub id_below: Option<u64>,
    /// Event timestamps (micros) at or after this.
    pub since: Option<i64>,
    /// Event timestamps (micros) at or before this.
    pub until: Option<i64>,
    pub node_id: Option<u64>,
    pub coded: Vec<(CodedColumn, String)>,
    pub plain: Vec<(PlainColumn, String)>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub asn: Option<u32>,
}

impl EventFilter {
    /// The conditions of `query`: its filters, and the page position its order, `after_id`
    /// and cursor give.
    pub fn of_query(query: &EventQuery) -> EventFilter {
        let mut coded = Vec::new();
        for (column, value) in [
            (CodedColumn::PotId, &query.pot_id),
            (CodedColumn::EventType, &query.event_type),
        ] {
            if let Some(value) = value {
                coded.push((column, value.clone()));
            }
        }
        for column in CodedColumn::ALL {
            if let Some(value) = column.field(&query.fields) {
                coded.push((column, value.to_owned()));
            }
        }
        let plain = PlainColumn::ALL
            .into_iter()
            .filter_map(|column| Some((column, column.field(&query.fields)?.to_owned())))
            .collect();
        let as_id = |id: i64| u64::try_from(id).unwrap_or(0);
        let after = query.after_id.map(as_id);
        let cursor = query.cursor.map(|EventCursor { id }| as_id(id));
        let (id_above, id_below) = match query.order {
            EventOrder::NewestFirst => (after, cursor),
            EventOrder::Arrival => (after.max(cursor), None),
        };
        EventFilter {
            id_above,
            id_below,
            since: query.since.map(|since| since.timestamp_micros()),
            until: query.until.map(|until| until.timestamp_micros()),
            node_id: query.node_id,
            coded,
            plain,
            src_port: query.fields.src_port,
            dst_port: query.fields.dst_port,
            asn: query.fields.asn,
        }
    }

    /// Whether ids `first..=last` can hold a match.
    pub fn may_match_ids(&self, first: u64, last: u64) -> bool {
        !(self.id_above.is_some_and(|above| last <= above)
            || self.id_below.is_some_and(|below| first >= below))
    }

    /// Whether event timestamps `min..=max` (micros) can hold a match.
    pub fn may_match_times(&self, min: i64, max: i64) -> bool {
        !(self.since.is_some_and(|since| max < since)
            || self.until.is_some_and(|until| min > until))
    }

    /// Whether every event timestamp in `min..=max` (micros) is inside the window.
    pub fn holds_times(&self, min: i64, max: i64) -> bool {
        self.since.is_none_or(|since| since <= min) && self.until.is_none_or(|until| max <= until)
    }

    /// Every equality on a text column, coded or plain, as (column name, value).
    pub fn text_conditions(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.coded
            .iter()
            .map(|(column, value)| (column.name(), value.as_str()))
            .chain(
                self.plain
                    .iter()
                    .map(|(column, value)| (column.name(), value.as_str())),
            )
    }

    /// Whether the filter has no condition at all: every event matches.
    pub fn is_everything(&self) -> bool {
        self.only_time() && self.since.is_none() && self.until.is_none()
    }

    /// Whether the filter is a time window and nothing else (what summaries answer).
    pub fn only_time(&self) -> bool {
        self.id_above.is_none()
            && self.id_below.is_none()
            && self.node_id.is_none()
            && self.coded.is_empty()
            && self.plain.is_empty()
            && self.src_port.is_none()
            && self.dst_port.is_none()
            && self.asn.is_none()
    }
}
