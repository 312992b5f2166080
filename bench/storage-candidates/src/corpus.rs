//! The events the candidates store: the project's two bench corpora, regenerated with the
//! same seeds as `crates/bench`, plus what the Core would extract from each at ingest.
//!
//! - `query`: scenario (e) of `docs/performance.md` (`crates/bench/src/query.rs`): 100 nodes
//!   × 4 pots, eight event types, 50,000 attacker addresses, 30 days, small payloads with
//!   `username` and `password`. The "≈ 470 B/event today" and the disk target refer to it.
//! - `pipeline`: scenario (a)'s lines (`crates/bench/src/events.rs`, 16 pots of one node):
//!   150–1500 B, mean ≈ 540 B, with random filler text in `input`/`url`/`kexAlgs`/`version`.
//!
//! Both spread their events evenly over 30 days of arrival time, as scenario (e) does.

use std::borrow::Cow;

use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

#[path = "../../../crates/bench/src/events.rs"]
#[allow(dead_code)]
mod events;

use events::{EventCorpus, EVENT_IDS};

pub const SPAN_SECONDS: i64 = 30 * 24 * 3600;
const NODES: u64 = 100;
const POTS_PER_NODE: u64 = 4;
const SOURCES: u32 = 50_000;
const PIPELINE_POTS: usize = 16;

/// One event as the Core's event writer gets it: the envelope and the payload text.
#[derive(Debug, Clone)]
pub struct Event {
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub event_type: String,
    /// Microseconds since the epoch; the corpus uses the arrival time as the event time.
    pub received_at: i64,
    pub data: String,
}

/// The well-known fields of the payload's top level, extracted at ingest, plus the
/// country the source address maps to.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub src_ip: Option<String>,
    pub src_port: Option<i64>,
    pub dst_port: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub input: Option<String>,
    pub session: Option<String>,
    pub url: Option<String>,
    pub shasum: Option<String>,
    pub protocol: Option<String>,
    pub country: Option<&'static str>,
}

/// The top level of a payload: every value kept as raw JSON text, so a field of an
/// unexpected type never fails the event.
#[derive(serde::Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default)]
    src_ip: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ip: Option<&'a RawValue>,
    #[serde(borrow, default)]
    src_port: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dst_port: Option<&'a RawValue>,
    #[serde(borrow, default)]
    username: Option<&'a RawValue>,
    #[serde(borrow, default)]
    password: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    command: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session: Option<&'a RawValue>,
    #[serde(borrow, default)]
    url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    shasum: Option<&'a RawValue>,
    #[serde(borrow, default)]
    protocol: Option<&'a RawValue>,
}

fn text(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?.get();
    if raw.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(raw)
            .ok()
            .map(Cow::into_owned)
    } else {
        None
    }
}

fn number(raw: Option<&RawValue>) -> Option<i64> {
    raw?.get().parse().ok()
}

impl Fields {
    /// What ingest extracts from one payload (and the country enrichment).
    pub fn extract(data: &str) -> Fields {
        let Ok(top) = serde_json::from_str::<TopLevel<'_>>(data) else {
            return Fields::default();
        };
        let src_ip = text(top.src_ip).or_else(|| text(top.ip));
        let country = src_ip.as_deref().map(country_of);
        Fields {
            src_port: number(top.src_port),
            dst_port: number(top.dst_port),
            username: text(top.username),
            password: text(top.password),
            input: text(top.input).or_else(|| text(top.command)),
            session: text(top.session),
            url: text(top.url),
            shasum: text(top.shasum),
            protocol: text(top.protocol),
            src_ip,
            country,
        }
    }
}

/// A stand-in for the GeoIP lookup: a fixed, skewed map from address to country, so
/// country filters have common values (CN, US) and rare ones (IS).
const COUNTRIES: [(&str, u32); 31] = [
    ("CN", 2200),
    ("US", 1400),
    ("RU", 800),
    ("BR", 600),
    ("IN", 600),
    ("VN", 500),
    ("DE", 400),
    ("KR", 400),
    ("ID", 300),
    ("NL", 300),
    ("FR", 300),
    ("SG", 300),
    ("GB", 300),
    ("TW", 200),
    ("HK", 200),
    ("JP", 200),
    ("UA", 200),
    ("IR", 200),
    ("TR", 200),
    ("AR", 100),
    ("MX", 100),
    ("TH", 100),
    ("PL", 100),
    ("CA", 100),
    ("IT", 100),
    ("ES", 100),
    ("ZA", 100),
    ("EG", 100),
    ("PK", 100),
    ("BD", 98),
    ("IS", 2),
];

pub fn country_of(address: &str) -> &'static str {
    // FNV-1a: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in address.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let total: u32 = COUNTRIES.iter().map(|(_, weight)| weight).sum();
    let mut pick = ((hash >> 11) % u64::from(total)) as u32;
    for (code, weight) in COUNTRIES {
        if pick < weight {
            return code;
        }
        pick -= weight;
    }
    "ZZ"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusKind {
    Query,
    Pipeline,
}

impl CorpusKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "query" => Some(CorpusKind::Query),
            "pipeline" => Some(CorpusKind::Pipeline),
            _ => None,
        }
    }
}

/// Generates the corpus in arrival order, one event at a time.
pub struct Generator {
    kind: CorpusKind,
    random: StdRng,
    pipeline: Option<EventCorpus>,
    start_micros: i64,
    step_micros: i64,
    next: u64,
}

pub fn start_micros() -> i64 {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .map(|start| start.timestamp_micros())
        .unwrap_or(0)
}

impl Generator {
    pub fn new(kind: CorpusKind, events: u64) -> Self {
        Generator {
            kind,
            random: StdRng::seed_from_u64(0x0071_7565_7279),
            pipeline: (kind == CorpusKind::Pipeline).then(|| EventCorpus::new(PIPELINE_POTS)),
            start_micros: start_micros(),
            step_micros: (SPAN_SECONDS * 1_000_000) / events.max(1) as i64,
            next: 0,
        }
    }

    pub fn next_event(&mut self) -> Event {
        let sequence = self.next;
        self.next += 1;
        let received_at = self.start_micros + self.step_micros * sequence as i64;
        match self.kind {
            CorpusKind::Query => query_event(&mut self.random, received_at),
            CorpusKind::Pipeline => {
                let corpus = self.pipeline.as_ref().expect("pipeline corpus built");
                let pot = (sequence % PIPELINE_POTS as u64) as usize;
                let template = corpus.template(pot, PIPELINE_POTS, sequence / PIPELINE_POTS as u64);
                let mut line = Vec::with_capacity(template.len() + 64);
                EventCorpus::write_line(&mut line, template, sequence, received_at as u64);
                line.pop();
                let data = String::from_utf8(line).expect("the corpus is UTF-8");
                let event_type = event_id_of(&data).unwrap_or("unknown").to_owned();
                Event {
                    node_id: 1,
                    pot_id: events::pot_name(pot),
                    pot_type: "cowrie".into(),
                    event_type,
                    received_at,
                    data,
                }
            }
        }
    }
}

fn event_id_of(data: &str) -> Option<&'static str> {
    EVENT_IDS
        .iter()
        .copied()
        .find(|id| data.contains(&format!("\"eventid\":\"{id}\"")))
}

fn pot_id(index: u64) -> String {
    format!(
        "cowrie-{:03}-{}",
        index / POTS_PER_NODE,
        index % POTS_PER_NODE
    )
}

pub fn source_ip(index: u32) -> String {
    format!(
        "198.{}.{}.{}",
        18 + index / 65_536,
        (index / 256) % 256,
        index % 256
    )
}

/// Scenario (e)'s `synthetic_event`, call for call, so the same seed gives the same events.
fn query_event(random: &mut StdRng, received_at: i64) -> Event {
    let pot = random.gen_range(0..NODES * POTS_PER_NODE);
    let event_type = EVENT_IDS[random.gen_range(0..EVENT_IDS.len())];
    let source = source_ip(random.gen_range(0..SOURCES));
    let mut data = Map::new();
    data.insert("src_ip".into(), Value::String(source.clone()));
    data.insert("src_port".into(), json!(random.gen_range(1024..65535)));
    data.insert("dst_port".into(), json!(22));
    data.insert(
        "session".into(),
        Value::String(format!("{:012x}", random.gen::<u64>() & 0xffff_ffff_ffff)),
    );
    data.insert("protocol".into(), Value::String("ssh".into()));
    data.insert(
        "message".into(),
        Value::String(format!("{event_type} from {source}")),
    );
    data.insert("username".into(), Value::String("root".into()));
    data.insert(
        "password".into(),
        Value::String(format!("pw{}", random.gen_range(0..10_000))),
    );
    Event {
        node_id: pot / POTS_PER_NODE + 1,
        pot_id: pot_id(pot),
        pot_type: "cowrie".into(),
        event_type: event_type.into(),
        received_at,
        data: Value::Object(data).to_string(),
    }
}

/// The enrichment table's own string for a country code read back from storage.
pub fn country_of_code(code: &str) -> &'static str {
    COUNTRIES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(known, _)| *known)
        .unwrap_or("ZZ")
}
