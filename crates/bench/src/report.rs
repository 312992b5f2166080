//! Results: latency percentiles, per-process costs, and the printed and JSON forms of a
//! scenario's report.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::daemons::ProcessUsage;

/// Wall clock in microseconds since the Unix epoch: the clock the stamps in the events use.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |fraction: f64| {
            let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
            samples[index] as f64 / 1000.0
        };
        Latency {
            samples: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The cost of one process (or a group of like processes) during a measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCost {
    pub name: String,
    pub processes: usize,
    /// CPU seconds spent per million events (user + system, all processes of the group).
    pub cpu_seconds_per_million_events: f64,
    /// Highest resident memory of any one process of the group, MiB.
    pub peak_rss_mib: f64,
    /// Resident memory before the load, MiB (largest of the group).
    pub idle_rss_mib: f64,
}

impl ProcessCost {
    pub fn between(
        name: &str,
        before: &[ProcessUsage],
        after: &[ProcessUsage],
        events: u64,
    ) -> Self {
        let cpu: f64 = after
            .iter()
            .zip(before)
            .map(|(after, before)| after.cpu_seconds - before.cpu_seconds)
            .sum();
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        ProcessCost {
            name: name.to_owned(),
            processes: after.len(),
            cpu_seconds_per_million_events: if events == 0 {
                0.0
            } else {
                cpu / events as f64 * 1e6
            },
            peak_rss_mib: mib(after
                .iter()
                .map(|usage| usage.peak_rss_bytes)
                .max()
                .unwrap_or(0)),
            idle_rss_mib: mib(before
                .iter()
                .map(|usage| usage.rss_bytes)
                .max()
                .unwrap_or(0)),
        }
    }
}

/// One pipeline run (HoneyBee or the rsyslog reference).
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub system: String,
    pub nodes: usize,
    pub pots_per_node: usize,
    pub events_sent: u64,
    pub events_stored: u64,
    pub duplicates: u64,
    pub lost: u64,
    /// Events the Core's retention deleted during the run (a churn run's cap).
    pub dropped_by_retention: u64,
    /// Bytes of the stored events on disk per event (HoneyBee's event files); none for
    /// systems that keep text lines.
    pub disk_bytes_per_event: Option<f64>,
    pub mean_line_bytes: f64,
    /// Target rate, or none for as fast as possible.
    pub target_rate: Option<f64>,
    /// Events stored per second, from the first write to the last event stored.
    pub events_per_second: f64,
    pub latency: Latency,
    /// The part of `latency` until the Core received the event (honeypot write, node,
    /// link); none for systems without a receive stamp.
    pub latency_to_core: Option<Latency>,
    pub processes: Vec<ProcessCost>,
}

impl PipelineReport {
    pub fn print(&self) {
        println!(
            "{system}: {nodes} node(s) x {pots} pot(s), {sent} events sent ({bytes:.0} B mean), {stored} stored, {lost} lost, {duplicates} duplicates",
            system = self.system,
            nodes = self.nodes,
            pots = self.pots_per_node,
            sent = self.events_sent,
            bytes = self.mean_line_bytes,
            stored = self.events_stored,
            lost = self.lost,
            duplicates = self.duplicates,
        );
        println!(
            "  throughput {:.0} events/s{}; latency write->stored p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            self.events_per_second,
            self.target_rate
                .map(|rate| format!(" (target {rate:.0}/s)"))
                .unwrap_or_default(),
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.latency.samples,
        );
        if let Some(bytes) = self.disk_bytes_per_event {
            println!(
                "  disk {bytes:.1} bytes per stored event; {} events dropped by retention during the run",
                self.dropped_by_retention
            );
        }
        if let Some(to_core) = &self.latency_to_core {
            println!(
                "  of which write->received by the Core p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                to_core.p50_ms, to_core.p99_ms, to_core.max_ms,
            );
        }
        for process in &self.processes {
            println!(
                "  {:<16} x{:<4} {:>7.2} CPU s per million events, peak RSS {:>7.1} MiB, idle RSS {:>6.1} MiB",
                process.name,
                process.processes,
                process.cpu_seconds_per_million_events,
                process.peak_rss_mib,
                process.idle_rss_mib,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let latency = Latency::from_micros((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!(latency.samples, 1000);
        assert_eq!(latency.p50_ms, 501.0);
        assert_eq!(latency.p99_ms, 990.0);
        assert_eq!(latency.max_ms, 1000.0);
        assert_eq!(Latency::from_micros(Vec::new()).samples, 0);
    }
}
