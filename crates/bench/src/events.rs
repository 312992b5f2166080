//! The benchmark's event corpus: Cowrie-like JSON lines of mixed sizes, generated once
//! from a fixed seed so every run (and the rsyslog comparison) sends the same bytes.
//!
//! Each line starts with two fields the harness stamps at write time, `bench_id` (unique
//! over the run: it finds losses and duplicates) and `bench_sent_us` (the wall clock at the
//! write, in microseconds: it gives the latency to "stored"). The rest of the line is one of
//! the corpus templates, so stamping a line is two integer formats and a copy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Lines the corpus cycles through; enough variety for realistic compression and parsing,
/// few enough to stay in cache like a real honeypot's repetitive output.
const TEMPLATE_COUNT: usize = 4096;

/// The size mix of Cowrie output: mostly logins and commands, some client
/// fingerprints and long commands (a download-and-run one-liner, an SSH key exchange).
const SIZE_CLASSES: [(f64, std::ops::Range<usize>); 3] =
    [(0.6, 150..400), (0.3, 400..900), (0.1, 900..1500)];

/// The Cowrie event ids the corpus (and the query scenario's store) use.
pub const EVENT_IDS: [&str; 8] = [
    "cowrie.login.failed",
    "cowrie.login.success",
    "cowrie.command.input",
    "cowrie.session.connect",
    "cowrie.session.closed",
    "cowrie.client.version",
    "cowrie.client.kex",
    "cowrie.session.file_download",
];

/// The corpus: the tail of each line after the stamped fields (`"eventid":…}\n`).
pub struct EventCorpus {
    templates: Vec<Vec<u8>>,
}

impl EventCorpus {
    /// Builds the corpus for `pot_count` pots: template `i` belongs to pot `i % pot_count`,
    /// so a connection that writes as pot `p` uses the templates of that pot only.
    pub fn new(pot_count: usize) -> Self {
        let mut random = StdRng::seed_from_u64(0x6865_6e65_7962_6565);
        let templates = (0..TEMPLATE_COUNT.max(pot_count))
            .map(|index| template(&mut random, index % pot_count.max(1)))
            .collect();
        EventCorpus { templates }
    }

    /// The template for the `sequence`-th line of pot `pot_index` out of `pot_count`.
    pub fn template(&self, pot_index: usize, pot_count: usize, sequence: u64) -> &[u8] {
        let per_pot = self.templates.len() / pot_count.max(1);
        let slot = (sequence % per_pot as u64) as usize;
        &self.templates[slot * pot_count.max(1) + pot_index]
    }

    /// Appends the full line: the stamped fields, then the template.
    pub fn write_line(buffer: &mut Vec<u8>, template: &[u8], bench_id: u64, sent_micros: u64) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            buffer,
            "{{\"bench_id\":{bench_id},\"bench_sent_us\":{sent_micros},"
        );
        buffer.extend_from_slice(template);
    }
}

/// The id of pot `index` as the events name it (`sensor`, which the node maps to `pot_id`).
pub fn pot_name(index: usize) -> String {
    format!("cowrie-{index:02}")
}

fn template(random: &mut StdRng, pot_index: usize) -> Vec<u8> {
    let roll: f64 = random.gen();
    let mut threshold = 0.0;
    let mut size_range = SIZE_CLASSES[0].1.clone();
    for (share, range) in SIZE_CLASSES.iter() {
        threshold += share;
        if roll < threshold {
            size_range = range.clone();
            break;
        }
    }
    let target = random.gen_range(size_range);
    let event_id = EVENT_IDS[random.gen_range(0..EVENT_IDS.len())];
    let source = format!(
        "{}.{}.{}.{}",
        random.gen_range(1..224),
        random.gen_range(0..256),
        random.gen_range(0..256),
        random.gen_range(1..255)
    );
    let mut event = json!({
        "eventid": event_id,
        "sensor": pot_name(pot_index),
        "src_ip": source,
        "src_port": random.gen_range(1024..65535),
        "dst_ip": "10.0.0.2",
        "dst_port": 22,
        "session": format!("{:012x}", random.gen::<u64>() & 0xffff_ffff_ffff),
        "protocol": "ssh",
        "timestamp": "2026-11-28T10:30:00.123456Z",
        "message": format!("{event_id} from {source}"),
    });
    // Fill up to the target size with the field such an event really carries.
    let length = serde_json::to_vec(&event)
        .map(|bytes| bytes.len())
        .unwrap_or(0)
        + 1;
    let padding = target.saturating_sub(length + 20);
    let filler: String = (0..padding)
        .map(|_| {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 -_/.;|&";
            alphabet[random.gen_range(0..alphabet.len())] as char
        })
        .collect();
    let field = match event_id {
        "cowrie.client.kex" => "kexAlgs",
        "cowrie.session.file_download" => "url",
        "cowrie.client.version" => "version",
        _ => "input",
    };
    if let Value::Object(map) = &mut event {
        map.insert(field.into(), Value::String(filler));
    }
    let mut line = serde_json::to_vec(&event).expect("a json value serialises");
    // Drop the opening brace: the stamped fields open the object.
    line.remove(0);
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_json_of_the_promised_sizes_and_pots() {
        let corpus = EventCorpus::new(16);
        let mut sizes = Vec::new();
        for pot in [0, 7, 15] {
            for sequence in 0..200 {
                let mut line = Vec::new();
                let template = corpus.template(pot, 16, sequence);
                EventCorpus::write_line(&mut line, template, 42, 1_764_000_000_000_000);
                assert_eq!(line.pop(), Some(b'\n'));
                let value: Value = serde_json::from_slice(&line).unwrap();
                assert_eq!(value["bench_id"], 42);
                assert_eq!(value["sensor"], pot_name(pot));
                sizes.push(line.len());
            }
        }
        assert!(
            sizes.iter().all(|size| (150..1600).contains(size)),
            "{sizes:?}"
        );
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((300.0..700.0).contains(&mean), "mean line {mean} bytes");
    }
}
