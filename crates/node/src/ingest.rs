//! The ingest listener (127.0.0.1:9100): honeypots connect and write JSON lines; each line
//! is framed with a size cap, normalised, and queued for the uplink to the Core.
//!
//! A bad line is counted, logged at a limited rate and skipped; the connection keeps
//! working for the next line. When the queue is full the connection stops being read, so
//! a slow Core slows honeypots down instead of losing their events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use honeybee_protocol::{
    normalize_ingest_line, FramedLine, IngestError, IngestEvent, LineFramer, Message, NodeEvent,
    NodeEventKind, PotContext,
};
use honeybee_telemetry::LogRateLimiter;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::NodeMetrics;

const READ_BUFFER_BYTES: usize = 64 * 1024;
/// On shutdown, how long a honeypot connection keeps being read: lines a honeypot wrote
/// before the node stopped are still accepted.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);
/// A connection over the event rate is reported to the Core at most this often.
const ALARM_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown waits for one more connection from the accept backlog.
const BACKLOG_POLL: Duration = Duration::from_millis(20);

pub(crate) struct IngestContext {
    pub queue: mpsc::Sender<IngestEvent>,
    pub metrics: Arc<NodeMetrics>,
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub max_events_per_second: u32,
    /// Where alarms for the Core go (the uplink's outbox).
    pub alarms: mpsc::Sender<Message>,
    pub log_limiter: LogRateLimiter,
}

/// Paces one connection to at most `rate` events per second (bursts of one second's worth).
struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
    /// Events that had to wait, and when the Core was last told.
    delayed: u64,
    last_alarm: Option<Instant>,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Pacer {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
            delayed: 0,
            last_alarm: None,
        }
    }

    /// How long the next event must wait (zero within the rate).
    fn delay_for_next(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.delayed += 1;
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Whether the Core should hear about this connection's pace now (once a minute).
    fn alarm_due(&mut self) -> bool {
        let due = self
            .last_alarm
            .is_none_or(|at| at.elapsed() >= ALARM_INTERVAL);
        if due {
            self.last_alarm = Some(Instant::now());
        }
        due
    }
}

/// Accepts honeypot connections until `shutdown`, then waits for open ones to finish.
pub(crate) async fn run_ingest_listener(
    listener: TcpListener,
    context: Arc<IngestContext>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an ingest connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let context = context.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            context.metrics.ingest_connections.increment();
            context.metrics.ingest_connections_active.increment();
            serve_ingest_connection(stream, remote, &context, shutdown).await;
            context.metrics.ingest_connections_active.decrement();
            drop(permit);
        });
    }
    // Honeypots that connected just before the stop are still served (their lines are read
    // for the drain period): take what waits in the accept backlog, within the same
    // connection limit. Without a free slot the rest of the backlog is closed with the
    // listener: a flood queued in the backlog must not get past `max_connections` only
    // because the node is stopping.
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        let Ok(Ok((stream, remote))) = tokio::time::timeout(BACKLOG_POLL, listener.accept()).await
        else {
            break;
        };
        let context = context.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            context.metrics.ingest_connections.increment();
            context.metrics.ingest_connections_active.increment();
            serve_ingest_connection(stream, remote, &context, shutdown).await;
            context.metrics.ingest_connections_active.decrement();
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

async fn serve_ingest_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    context: &IngestContext,
    shutdown: CancellationToken,
) {
    let mut framer = LineFramer::new(context.max_line_bytes);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    // Which pot a connection belongs to is not known yet; lines must name their pot.
    let pot_context = PotContext::default();
    let mut drain_deadline: Option<Instant> = None;
    let mut pacer = Pacer::new(context.max_events_per_second);
    let mut last_read = Instant::now();
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(Instant::now() + SHUTDOWN_DRAIN);
                continue;
            }
            _ = sleep_until_some(drain_deadline) => break,
            _ = tokio::time::sleep_until(last_read + context.idle_timeout) => {
                context.metrics.ingest_idle_closed.increment();
                tracing::debug!(%remote, "closing a silent honeypot connection");
                break;
            }
            read = stream.read(&mut buffer) => read,
        };
        last_read = Instant::now();
        let count = match read {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        framer.push(&buffer[..count]);
        while let Some(framed) = framer.next_line() {
            let result = match framed {
                FramedLine::Line(line) => normalize_ingest_line(line, &pot_context, Utc::now()),
                FramedLine::TooLong => Err(IngestError::TooLong {
                    max_bytes: context.max_line_bytes,
                }),
            };
            if result.as_ref().is_ok_and(Option::is_some) {
                pace(&mut pacer, remote, context).await;
            }
            if !accept(result, remote, context).await {
                return;
            }
        }
    }
    // A sender may close without a final newline: its last line still counts.
    if let Some(line) = framer.finish() {
        let result = normalize_ingest_line(line, &pot_context, Utc::now());
        accept(result, remote, context).await;
    }
}

/// Holds the connection to its event rate: waiting here stops its reads, so a flooding
/// honeypot slows down instead of losing events or starving the others.
async fn pace(pacer: &mut Pacer, remote: SocketAddr, context: &IngestContext) {
    let delay = pacer.delay_for_next();
    if delay.is_zero() {
        return;
    }
    context.metrics.ingest_events_delayed.increment();
    if pacer.alarm_due() {
        let message = format!(
            "honeypot connection {remote} exceeds ingest.max_events_per_second ({}); {} events delayed so far",
            context.max_events_per_second, pacer.delayed
        );
        tracing::warn!(%remote, delayed = pacer.delayed, "a honeypot connection exceeds the event rate");
        let _ = context.alarms.try_send(Message::NodeEvent(NodeEvent {
            kind: NodeEventKind::Alarm,
            message: Some(message),
        }));
    }
    tokio::time::sleep(delay).await;
}

/// Queues an accepted event or accounts for a rejected line; false when the node is
/// shutting down and the queue is gone.
async fn accept(
    result: Result<Option<IngestEvent>, IngestError>,
    remote: SocketAddr,
    context: &IngestContext,
) -> bool {
    match result {
        Ok(Some(event)) => {
            if context.queue.send(event).await.is_err() {
                return false;
            }
            context.metrics.events_accepted.increment();
        }
        Ok(None) => {}
        Err(error) => {
            context.metrics.line_rejected(error.kind());
            if let Some(suppressed) = context.log_limiter.allow() {
                tracing::warn!(%remote, %error, suppressed, "rejected an ingest line");
            }
        }
    }
    true
}

/// Resolves at `deadline`; pends forever when there is none.
pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use honeybee_telemetry::MetricsRegistry;

    #[tokio::test]
    async fn connections_waiting_in_the_backlog_at_shutdown_stay_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (queue, _events) = mpsc::channel(1024);
        let (alarms, _alarms) = mpsc::channel(16);
        let metrics = Arc::new(NodeMetrics::new(MetricsRegistry::new()));
        let context = Arc::new(IngestContext {
            queue,
            metrics: metrics.clone(),
            max_line_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_events_per_second: 1000,
            alarms,
            log_limiter: LogRateLimiter::default(),
        });
        let shutdown = CancellationToken::new();
        let listening = tokio::spawn(run_ingest_listener(listener, context, 2, shutdown.clone()));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(address).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.ingest_connections_active.get() < 2 {
            assert!(
                Instant::now() < deadline,
                "the two connections were not served"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Both slots are taken: these wait in the kernel's backlog.
        let mut waiting = Vec::new();
        for _ in 0..5 {
            waiting.push(TcpStream::connect(address).await.unwrap());
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), listening)
            .await
            .expect("the listener stops within 10 s")
            .unwrap();
        assert_eq!(metrics.ingest_connections.get(), 2);
        assert_eq!(metrics.ingest_connections_active.get(), 0);
    }
}
