//! `storage-candidates`: measures candidate layouts of the event store v2 (issue 16) on
//! the project's bench corpora, one candidate per process run. See docs/storage.md.
//!
//! `storage-candidates --candidate today|sqlite-parts|parquet|parquet-indexed|fjall --corpus query|pipeline
//!  --events N --dir DIR [--batch 1000] [--partition-events 250000] [--reps 20] [--page-kib 64] [--page-rows 1024]`
//!
//! `--page-kib` is the Parquet data page size (candidates `parquet` and `parquet-indexed`),
//! `--page-rows` the most rows per data page (`parquet-indexed` only).

mod candidate;
mod corpus;
mod fjall_store;
mod measure;
mod parquet_indexed;
mod parquet_store;
mod sqlite_parts;
mod today;
mod wal;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use candidate::{Candidate, Field, Filter, Ingested, Row, Top};
use corpus::{CorpusKind, Fields, Generator};
use measure::{disk_bytes, process_cpu, thread_cpu, Latency};

struct Settings {
    candidate: String,
    corpus: CorpusKind,
    events: u64,
    dir: PathBuf,
    batch: usize,
    partition_events: u64,
    reps: usize,
    page_kib: usize,
    page_rows: usize,
}

fn parse_args() -> Result<Settings> {
    let mut settings = Settings {
        candidate: String::new(),
        corpus: CorpusKind::Query,
        events: 1_000_000,
        dir: PathBuf::new(),
        batch: 1_000,
        partition_events: 250_000,
        reps: 20,
        page_kib: 64,
        page_rows: 1024,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--candidate" => settings.candidate = value,
            "--corpus" => {
                settings.corpus = CorpusKind::parse(&value).context("--corpus query|pipeline")?
            }
            "--events" => settings.events = value.parse()?,
            "--dir" => settings.dir = PathBuf::from(value),
            "--batch" => settings.batch = value.parse()?,
            "--partition-events" => settings.partition_events = value.parse()?,
            "--reps" => settings.reps = value.parse()?,
            "--page-kib" => settings.page_kib = value.parse()?,
            "--page-rows" => settings.page_rows = value.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if settings.dir.as_os_str().is_empty() {
        bail!("--dir is required");
    }
    if settings.dir.exists() && std::fs::read_dir(&settings.dir)?.next().is_some() {
        bail!("{} is not empty", settings.dir.display());
    }
    if !settings
        .partition_events
        .is_multiple_of(settings.batch as u64)
    {
        bail!("--partition-events must be a multiple of --batch");
    }
    Ok(settings)
}

fn open(settings: &Settings) -> Result<Box<dyn Candidate>> {
    std::fs::create_dir_all(&settings.dir)?;
    Ok(match settings.candidate.as_str() {
        "today" => Box::new(today::Today::open(&settings.dir)?),
        "sqlite-parts" => Box::new(sqlite_parts::SqliteParts::open(&settings.dir)?),
        "parquet" => Box::new(parquet_store::ParquetStore::open(
            &settings.dir,
            settings.page_kib * 1024,
        )?),
        "parquet-indexed" => Box::new(parquet_indexed::IndexedStore::open(
            &settings.dir,
            settings.page_kib * 1024,
            settings.page_rows,
        )?),
        "fjall" => Box::new(fjall_store::FjallStore::open(&settings.dir)?),
        other => bail!("unknown candidate {other}"),
    })
}

/// FNV-1a over ids and payloads: equal digests across candidates mean equal answers,
/// payloads byte for byte.
fn digest_rows(rows: &[Row]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, data) in rows {
        for byte in id.to_le_bytes().iter().chain(data.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn digest_tops(tops: &[(Field, Top)]) -> u64 {
    let text = format!("{tops:?}");
    digest_rows(&[(0, text)])
}

fn per_million(cpu: Duration, events: u64) -> f64 {
    cpu.as_secs_f64() * 1_000_000.0 / events as f64
}

fn main() -> Result<()> {
    let settings = parse_args()?;
    let mut store = open(&settings)?;
    let mut generator = Generator::new(settings.corpus, settings.events);

    // Ingest: the store's own cost is the process CPU minus what this thread spent making
    // and parsing the corpus, minus sealing (counted apart).
    let mut generate_cpu = Duration::ZERO;
    let mut extract_cpu = Duration::ZERO;
    let mut seal_cpu = Duration::ZERO;
    let mut seal_wall = Duration::ZERO;
    let mut append_wall = Duration::ZERO;
    let mut seals = 0u32;
    let mut payload_bytes = 0u64;
    let mut newest = 0i64;
    let mut probe_source = None;
    let started_cpu = process_cpu();
    let mut written = 0u64;
    while written < settings.events {
        let count = (settings.events - written).min(settings.batch as u64);
        let before = thread_cpu();
        let events: Vec<_> = (0..count).map(|_| generator.next_event()).collect();
        let generated = thread_cpu();
        let batch: Vec<Ingested> = events
            .into_iter()
            .map(|event| {
                let fields = Fields::extract(&event.data);
                Ingested { event, fields }
            })
            .collect();
        let extracted = thread_cpu();
        generate_cpu += generated - before;
        extract_cpu += extracted - generated;
        for item in &batch {
            payload_bytes += item.event.data.len() as u64;
            newest = newest.max(item.event.received_at);
        }
        if written <= settings.events / 2 && written + count > settings.events / 2 {
            probe_source = batch.last().and_then(|item| item.fields.src_ip.clone());
        }
        let wall = Instant::now();
        store.append(&batch)?;
        append_wall += wall.elapsed();
        written += count;
        if written.is_multiple_of(settings.partition_events) && written < settings.events {
            let (cpu, wall) = (process_cpu(), Instant::now());
            store.seal()?;
            seal_cpu += process_cpu() - cpu;
            seal_wall += wall.elapsed();
            seals += 1;
        }
    }
    let total_cpu = process_cpu() - started_cpu;
    let ingest_cpu = total_cpu.saturating_sub(generate_cpu + extract_cpu + seal_cpu);
    let hot_disk = disk_bytes(&settings.dir);
    let n = settings.events;
    println!(
        "candidate={} corpus={:?} events={} batch={} partition_events={}",
        settings.candidate, settings.corpus, n, settings.batch, settings.partition_events
    );
    println!(
        "payload: {:.1} B/event mean; corpus generation {:.2} CPU s/M (not counted); extraction of the well-known fields {:.2} CPU s/M",
        payload_bytes as f64 / n as f64,
        per_million(generate_cpu, n),
        per_million(extract_cpu, n)
    );
    println!(
        "ingest: {:.2} CPU s/M events (store only), {:.0} events/s wall in append",
        per_million(ingest_cpu, n),
        n as f64 / append_wall.as_secs_f64()
    );
    println!(
        "seal: {} seals, {:.2} CPU s/M events, {:.2} s wall in all",
        seals,
        per_million(seal_cpu, n),
        seal_wall.as_secs_f64()
    );
    println!(
        "disk with the hot tail: {:.1} B/event ({} bytes)",
        hot_disk as f64 / n as f64,
        hot_disk
    );

    // Queries, with the newest partition still hot.
    let limit = 100;
    let source = probe_source.unwrap_or_default();
    let filters = [
        Filter::Username("root".into()),
        Filter::Username("admin".into()),
        Filter::SrcIp(source),
        Filter::SrcIp("203.0.113.9".into()),
        Filter::Country("CN".into()),
        Filter::Country("IS".into()),
        Filter::EventType("cowrie.session.file_download".into()),
    ];
    for filter in &filters {
        let mut samples = Vec::new();
        let mut result = Vec::new();
        for _ in 0..settings.reps {
            let started = Instant::now();
            result = store.first_page(filter, limit)?;
            samples.push(started.elapsed());
        }
        let latency = Latency::of(samples);
        println!(
            "first page {:<40} p50 {:>8.2} ms p99 {:>8.2} ms  rows {:>3} digest {:016x}",
            filter.describe(),
            latency.p50_ms,
            latency.p99_ms,
            result.len(),
            digest_rows(&result)
        );
    }
    let mut random = StdRng::seed_from_u64(7);
    let mut samples = Vec::new();
    let mut digest = 0u64;
    for _ in 0..settings.reps * 5 {
        let after = random.gen_range(0..n);
        let started = Instant::now();
        let page = store.after_id(after, limit)?;
        samples.push(started.elapsed());
        let expected = (n - after).min(limit as u64) as usize;
        anyhow::ensure!(
            page.len() == expected && page.first().map(|row| row.0) == Some(after + 1),
            "after_id={after}: {} rows from {:?}",
            page.len(),
            page.first().map(|row| row.0)
        );
        digest ^= digest_rows(&page);
    }
    let latency = Latency::of(samples);
    println!(
        "after_id page (asc, 100)                          p50 {:>8.2} ms p99 {:>8.2} ms  pages {} digest {:016x}",
        latency.p50_ms,
        latency.p99_ms,
        settings.reps * 5,
        digest
    );
    const HOUR: i64 = 3_600_000_000;
    let day_window = newest.div_euclid(HOUR) * HOUR - 23 * HOUR;
    for (name, since) in [("all", None), ("24h", Some(day_window))] {
        let mut samples = Vec::new();
        let mut tops = Vec::new();
        for _ in 0..settings.reps.min(5) {
            let started = Instant::now();
            tops = store.top10(since)?;
            samples.push(started.elapsed());
        }
        let latency = Latency::of(samples);
        println!(
            "top-10 of 5 fields over {:<24} p50 {:>8.2} ms p99 {:>8.2} ms  digest {:016x}",
            name,
            latency.p50_ms,
            latency.p99_ms,
            digest_tops(&tops)
        );
        for (field, top) in &tops {
            let shown: Vec<String> = top
                .iter()
                .take(3)
                .map(|(value, count)| format!("{value}:{count}"))
                .collect();
            println!("    {:<9} {}", field.name(), shown.join(" "));
        }
    }

    let (cpu, wall) = (process_cpu(), Instant::now());
    store.finish()?;
    println!(
        "final seal: {:.2} CPU s, {:.2} s wall",
        (process_cpu() - cpu).as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    for line in store.disk_report() {
        println!("    {line}");
    }
    let sealed_disk = disk_bytes(&settings.dir);
    println!(
        "disk after sealing everything: {:.1} B/event ({} bytes)",
        sealed_disk as f64 / n as f64,
        sealed_disk
    );
    Ok(())
}
