//! Observability helpers shared by the Core and the Node: a registry of named counters and
//! gauges rendered in the Prometheus text format, and a limiter that keeps hostile input
//! from flooding the logs.
//!
//! Deliberately tiny and dependency-free: hot paths hold an `Arc<Counter>` and pay one
//! relaxed atomic add per increment; the registry lock is only taken to register or render.

mod peer_log;

pub use peer_log::{truncate_for_log, PeerLogRateLimiter, MAX_LOGGED_PEER_TEXT_BYTES};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn increment(&self) {
        self.add(1);
    }

    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open, queue depth).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn decrement(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Adds `amount` (negative to subtract): for gauges that several tasks move at once
    /// (bytes queued), where a `set` from each would race.
    pub fn add(&self, amount: i64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

#[derive(Debug, Default)]
struct Family {
    help: &'static str,
    /// Rendered label set (`{reason="x"}` or empty) → metric.
    series: BTreeMap<String, Metric>,
}

/// All metrics of one process.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl MetricsRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(MetricsRegistry::default())
    }

    /// Returns the counter `name{labels}`, creating it on first use. Keep the returned
    /// handle on hot paths instead of looking it up per event.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Counter> {
        match self.metric(name, help, labels, || {
            Metric::Counter(Arc::new(Counter::default()))
        }) {
            Metric::Counter(counter) => counter,
            Metric::Gauge(_) => panic!("metric {name} is registered as a gauge"),
        }
    }

    /// Returns the gauge `name{labels}`, creating it on first use.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Gauge> {
        match self.metric(name, help, labels, || {
            Metric::Gauge(Arc::new(Gauge::default()))
        }) {
            Metric::Gauge(gauge) => gauge,
            Metric::Counter(_) => panic!("metric {name} is registered as a counter"),
        }
    }

    fn metric(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        create: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        family
            .series
            .entry(render_labels(labels))
            .or_insert_with(create)
            .clone()
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut output = String::new();
        for (name, family) in families.iter() {
            let kind = match family.series.values().next() {
                Some(Metric::Gauge(_)) => "gauge",
                _ => "counter",
            };
            let _ = writeln!(output, "# HELP {name} {}", family.help);
            let _ = writeln!(output, "# TYPE {name} {kind}");
            for (labels, metric) in &family.series {
                let value = match metric {
                    Metric::Counter(counter) => counter.get() as i64,
                    Metric::Gauge(gauge) => gauge.get(),
                };
                let _ = writeln!(output, "{name}{labels} {value}");
            }
        }
        output
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let rendered: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", rendered.join(","))
}

/// Lets at most `burst` log lines through per `window`; counts the rest so the next line
/// that gets through can say how many were suppressed.
#[derive(Debug)]
pub struct LogRateLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<LimiterState>,
}

/// One window of a limiter: how many lines it let through since `window_start`, and how
/// many it held back since the last one it let through.
#[derive(Debug)]
pub(crate) struct LimiterState {
    window_start: Instant,
    allowed_in_window: u32,
    suppressed: u64,
}

impl LimiterState {
    pub(crate) fn new(now: Instant) -> Self {
        LimiterState {
            window_start: now,
            allowed_in_window: 0,
            suppressed: 0,
        }
    }

    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// `Some(suppressed_before)` when one more line fits `burst` per `window`.
    pub(crate) fn admit(&mut self, now: Instant, window: Duration, burst: u32) -> Option<u64> {
        if now.duration_since(self.window_start) >= window {
            self.window_start = now;
            self.allowed_in_window = 0;
        }
        if self.allowed_in_window < burst {
            self.allowed_in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl LogRateLimiter {
    pub fn new(window: Duration, burst: u32) -> Self {
        LogRateLimiter {
            window,
            burst,
            state: Mutex::new(LimiterState::new(Instant::now())),
        }
    }

    /// `Some(suppressed_before)` when this line may be logged, `None` when it must not.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.admit(Instant::now(), self.window, self.burst)
    }
}

impl Default for LogRateLimiter {
    /// Ten lines per ten seconds.
    fn default() -> Self {
        LogRateLimiter::new(Duration::from_secs(10), 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_labels_and_help() {
        let registry = MetricsRegistry::new();
        let rejected = registry.counter("lines_total", "Lines seen.", &[("reason", "bad\"q")]);
        rejected.add(3);
        registry.gauge("open", "Open things.", &[]).set(-2);
        let text = registry.render_prometheus();
        assert!(text.contains("# TYPE lines_total counter"), "{text}");
        assert!(
            text.contains("lines_total{reason=\"bad\\\"q\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE open gauge\nopen -2"), "{text}");
        assert!(
            !text.contains("lines_total 0"),
            "no unlabelled series: {text}"
        );
    }

    #[test]
    fn the_same_series_is_shared() {
        let registry = MetricsRegistry::new();
        registry.counter("c", "h", &[]).increment();
        registry.counter("c", "h", &[]).increment();
        assert!(registry.render_prometheus().contains("\nc 2\n"));
    }

    #[test]
    fn limiter_suppresses_past_the_burst_and_reports_the_count() {
        let limiter = LogRateLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        let fresh = LogRateLimiter::new(Duration::ZERO, 1);
        assert_eq!(fresh.allow(), Some(0));
        assert_eq!(fresh.allow(), Some(0));
    }
}
