//! CPU time from getrusage and latency percentiles.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

fn cpu(who: UsageWho) -> Duration {
    let usage = getrusage(who).expect("getrusage cannot fail for these targets");
    let to_duration = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec() as u64) + Duration::from_micros(time.tv_usec() as u64)
    };
    to_duration(usage.user_time()) + to_duration(usage.system_time())
}

/// User + system CPU of the whole process (every thread, the store's own included).
pub fn process_cpu() -> Duration {
    cpu(UsageWho::RUSAGE_SELF)
}

/// User + system CPU of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu(UsageWho::RUSAGE_THREAD)
}

/// Median and 99th percentile, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |quantile: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let index = ((samples.len() as f64 * quantile).ceil() as usize).clamp(1, samples.len());
            samples[index - 1].as_secs_f64() * 1000.0
        };
        Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        }
    }
}

/// Bytes of every file under `dir`, recursively.
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => disk_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}
