//! The reference for scenario (a): rsyslog forwarding the same lines over two hops, the
//! way operators centralise honeypot logs without HoneyBee. A "sensor" rsyslogd takes the
//! lines on `imtcp` and forwards them with `omfwd` (TCP) to a "central" rsyslogd, which
//! writes them with `omfile`. Nothing is parsed and nothing is made durable: this is the
//! bar for moving bytes, which HoneyBee must meet while parsing and storing.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::daemons::{self, Daemon};
use crate::events::EventCorpus;
use crate::load;
use crate::pipeline::{rate_of, BlockingWatch, PipelineSettings};
use crate::report::{unix_micros, Latency, PipelineReport, ProcessCost};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// Runs the two-hop rsyslog forward of the same load and reports it like a HoneyBee run.
pub async fn run_rsyslog(
    settings: &PipelineSettings,
    corpus: Arc<EventCorpus>,
    dir: &Path,
) -> anyhow::Result<PipelineReport> {
    if !Path::new(RSYSLOGD).is_file() {
        bail!("{RSYSLOGD} not found: install Debian's rsyslog package (scripts/bench.sh does)");
    }
    let sensor_port = daemons::free_port()?;
    let central_port = daemons::free_port()?;
    let output = dir.join("central").join("events.log");
    let central = start_rsyslogd(
        dir,
        "central",
        central_port,
        &format!(
            "template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\naction(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
            output.display()
        ),
    )?;
    let sensor = start_rsyslogd(
        dir,
        "sensor",
        sensor_port,
        &format!(
            "template(name=\"raw\" type=\"string\" string=\"%rawmsg%\")\naction(type=\"omfwd\" target=\"127.0.0.1\" port=\"{central_port}\" protocol=\"tcp\" template=\"raw\")\n"
        ),
    )?;
    let startup = Duration::from_secs(10);
    daemons::wait_for_port(([127, 0, 0, 1], central_port).into(), startup).await?;
    daemons::wait_for_port(([127, 0, 0, 1], sensor_port).into(), startup).await?;
    let before = [sensor.usage()?, central.usage()?];

    let started = Instant::now();
    let watch = {
        let output = output.clone();
        let expected = settings.events;
        let sample_every = settings.sample_every();
        BlockingWatch::spawn(move |stop| watch_file(&output, expected, sample_every, started, stop))
    };
    let sent = match load::run(corpus, settings.pot_loads(&[sensor_port])).await {
        Ok(sent) => sent,
        Err(error) => {
            watch.abandon();
            return Err(error);
        }
    };
    let watched = watch
        .finish(settings.timeout.saturating_sub(started.elapsed()))
        .await?;
    let after = [sensor.usage()?, central.usage()?];
    let lines = watched.ids.len() as u64;
    let mut ids = watched.ids;
    ids.sort_unstable();
    ids.dedup();
    let distinct = ids.len() as u64;
    Ok(PipelineReport {
        system: "rsyslog two-hop".into(),
        nodes: settings.nodes,
        pots_per_node: settings.pots_per_node,
        events_sent: sent.events,
        events_stored: lines,
        duplicates: lines - distinct,
        lost: sent.events.saturating_sub(distinct),
        dropped_by_retention: 0,
        disk_bytes_per_event: None,
        mean_line_bytes: sent.bytes as f64 / sent.events.max(1) as f64,
        target_rate: settings.rate,
        events_per_second: rate_of(distinct, watched.all_written_after, started),
        latency: Latency::from_micros(watched.latencies_micros),
        latency_to_core: None,
        processes: vec![
            ProcessCost::between("rsyslogd sensor", &before[..1], &after[..1], distinct),
            ProcessCost::between("rsyslogd central", &before[1..], &after[1..], distinct),
        ],
    })
}

fn start_rsyslogd(dir: &Path, role: &str, port: u16, output_rules: &str) -> anyhow::Result<Daemon> {
    let work = dir.join(role);
    std::fs::create_dir_all(&work)?;
    let config = dir.join(format!("rsyslog-{role}.conf"));
    std::fs::write(
        &config,
        format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"64k\")\nmodule(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n{output_rules}",
            work = work.display()
        ),
    )?;
    Daemon::spawn(
        &format!("rsyslogd-{role}"),
        Path::new(RSYSLOGD),
        &[
            "-n".into(),
            "-f".into(),
            config.display().to_string(),
            "-i".into(),
            dir.join(format!("rsyslog-{role}.pid"))
                .display()
                .to_string(),
        ],
        dir,
    )
}

struct WatchedFile {
    ids: Vec<u64>,
    all_written_after: Option<Duration>,
    latencies_micros: Vec<u64>,
}

/// Follows the central rsyslogd's output file: each complete line is one event written.
fn watch_file(
    path: &PathBuf,
    expected: u64,
    sample_every: u64,
    started: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<WatchedFile> {
    let mut watched = WatchedFile {
        ids: Vec::with_capacity(expected as usize),
        all_written_after: None,
        latencies_micros: Vec::new(),
    };
    let mut offset = 0u64;
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut file) = std::fs::File::open(path) {
            file.seek(SeekFrom::Start(offset))?;
            loop {
                let read = file.read(&mut chunk)?;
                if read == 0 {
                    break;
                }
                offset += read as u64;
                let now = unix_micros();
                pending.extend_from_slice(&chunk[..read]);
                let complete = pending
                    .iter()
                    .rposition(|byte| *byte == b'\n')
                    .map(|end| end + 1)
                    .unwrap_or(0);
                for line in pending[..complete]
                    .split(|byte| *byte == b'\n')
                    .filter(|line| !line.is_empty())
                {
                    let id = number_after(line, b"\"bench_id\":").unwrap_or(0);
                    if id.is_multiple_of(sample_every) {
                        if let Some(sent) = number_after(line, b"\"bench_sent_us\":") {
                            watched.latencies_micros.push(now.saturating_sub(sent));
                        }
                    }
                    watched.ids.push(id);
                }
                pending.drain(..complete);
            }
        }
        if watched.ids.len() as u64 >= expected {
            watched.all_written_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(watched)
}

/// The unsigned integer right after `key` in `line`.
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let start = line.windows(key.len()).position(|window| window == key)? + key.len();
    let digits = line[start..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    std::str::from_utf8(&line[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_numbers_are_read_from_a_line() {
        let line = br#"{"bench_id":42,"bench_sent_us":1764000000000001,"eventid":"x"}"#;
        assert_eq!(number_after(line, b"\"bench_id\":"), Some(42));
        assert_eq!(
            number_after(line, b"\"bench_sent_us\":"),
            Some(1_764_000_000_000_001)
        );
        assert_eq!(number_after(line, b"\"missing\":"), None);
    }
}
