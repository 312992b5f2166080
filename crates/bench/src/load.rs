//! The load generator: one TCP connection per simulated honeypot, writing corpus lines to
//! an ingest port (a node's, or rsyslog's for the comparison) as fast as the socket takes
//! them or at a fixed rate. Lines are stamped per write batch, so the latency measured is
//! from the honeypot's write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::events::EventCorpus;
use crate::report::unix_micros;

/// Most lines per write: big enough to amortise the system call, small enough that the
/// stamp is close to every line's real write time.
const MAX_LINES_PER_WRITE: u64 = 256;

/// One simulated honeypot.
#[derive(Debug, Clone, Copy)]
pub struct PotLoad {
    pub port: u16,
    pub pot_index: usize,
    pub pot_count: usize,
    /// Lines to send.
    pub events: u64,
    /// `bench_id` of the first line; the others follow.
    pub first_id: u64,
    /// Lines per second, or as fast as possible.
    pub rate: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LoadOutcome {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Runs every pot's load at once and returns when all lines are written.
pub async fn run(corpus: Arc<EventCorpus>, pots: Vec<PotLoad>) -> anyhow::Result<LoadOutcome> {
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for pot in pots {
        let corpus = corpus.clone();
        writers.spawn(async move { write_pot(&corpus, pot).await });
    }
    let mut outcome = LoadOutcome::default();
    while let Some(result) = writers.join_next().await {
        let written = result.context("a load task panicked")??;
        outcome.events += written.events;
        outcome.bytes += written.bytes;
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

async fn write_pot(corpus: &EventCorpus, pot: PotLoad) -> anyhow::Result<LoadOutcome> {
    let mut stream = TcpStream::connect(("127.0.0.1", pot.port))
        .await
        .with_context(|| format!("connecting to the ingest port {}", pot.port))?;
    stream.set_nodelay(true)?;
    let started = Instant::now();
    let mut buffer = Vec::with_capacity(MAX_LINES_PER_WRITE as usize * 1600);
    let mut sent = 0u64;
    let mut bytes = 0u64;
    while sent < pot.events {
        let batch = match pot.rate {
            None => MAX_LINES_PER_WRITE.min(pot.events - sent),
            Some(rate) => {
                let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(pot.events);
                if due <= sent {
                    // Sleep until the next line is due (at least the timer's resolution).
                    let next_due = Duration::from_secs_f64((sent + 1) as f64 / rate);
                    tokio::time::sleep_until((started + next_due).into()).await;
                    continue;
                }
                (due - sent).min(MAX_LINES_PER_WRITE)
            }
        };
        buffer.clear();
        let stamp = unix_micros();
        for offset in 0..batch {
            let sequence = sent + offset;
            let template = corpus.template(pot.pot_index, pot.pot_count, sequence);
            EventCorpus::write_line(&mut buffer, template, pot.first_id + sequence, stamp);
        }
        stream
            .write_all(&buffer)
            .await
            .with_context(|| format!("writing to the ingest port {}", pot.port))?;
        sent += batch;
        bytes += buffer.len() as u64;
    }
    stream.shutdown().await.ok();
    Ok(LoadOutcome {
        events: sent,
        bytes,
        elapsed: started.elapsed(),
    })
}
