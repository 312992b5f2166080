//! The ingest listener (127.0.0.1:9100): honeypots connect and write JSON lines; each line
//! is framed with a size cap, normalised, and queued for the uplink to the Core.
//!
//! A bad line is counted, logged at a limited rate and skipped; the connection keeps
//! working for the next line. When the queue is full (in events or in bytes,
//! `ingest_queue.rs`) the connection stops being read, so a slow spool slows honeypots down
//! instead of losing their events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use honeybee_accept::{
    accept_until_shutdown, AcceptSettings, AddressGroup, AtShutdown, ConnectionLimiter,
    ConnectionPermit,
};
use honeybee_protocol::{
    normalize_ingest_line, FramedLine, IngestError, IngestEvent, LineFramer, Message, NodeEvent,
    NodeEventKind, PotContext,
};
use honeybee_telemetry::{truncate_for_log, PeerLogRateLimiter, MAX_LOGGED_PEER_TEXT_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ingest_queue::IngestQueueSender;
use crate::metrics::NodeMetrics;
use crate::pot_identities::{PotIdentities, PotIdentity};

const READ_BUFFER_BYTES: usize = 64 * 1024;
/// On shutdown, how long a honeypot connection keeps being read: lines a honeypot wrote
/// before the node stopped are still accepted.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);
/// A connection over the event rate is reported to the Core at most this often.
const ALARM_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct IngestContext {
    pub queue: IngestQueueSender,
    pub metrics: Arc<NodeMetrics>,
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub max_events_per_second: u32,
    /// Where alarms for the Core go (the uplink's outbox).
    pub alarms: mpsc::Sender<Message>,
    /// Warnings about senders, limited per sender: a flooding pot silences only itself.
    pub log_limiter: PeerLogRateLimiter<IngestLogKey>,
    /// The pots this node runs under users of their own (`None`: it runs none, or runs them
    /// as itself): their connections are stamped with their pot, whatever the lines say.
    pub identities: Option<Arc<PotIdentities>>,
    /// One pace per pot, shared by all its connections: a pot cannot multiply its rate by
    /// opening more of them.
    pub pot_pacers: Mutex<HashMap<String, Arc<Mutex<Pacer>>>>,
}

impl IngestContext {
    /// The pot a connection comes from, by the uid owning the peer's socket.
    fn sender_pot(&self, group: AddressGroup) -> Option<PotIdentity> {
        let identities = self.identities.as_ref()?;
        match group {
            AddressGroup::LocalUser(uid) => identities.get(uid),
            _ => None,
        }
    }

    /// The pace of `pot`, or a new one for a connection of its own.
    fn pacer_for(&self, pot: Option<&PotIdentity>) -> Arc<Mutex<Pacer>> {
        let new = || Arc::new(Mutex::new(Pacer::new(self.max_events_per_second)));
        match pot {
            Some(pot) => self
                .pot_pacers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(pot.pot_id.clone())
                .or_insert_with(new)
                .clone(),
            None => new(),
        }
    }
}

/// Warning lines per sender and window, and senders tracked (the least recently heard one
/// makes room for a new one).
const LOG_LINES_PER_SENDER: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);
const LOG_SENDERS_TRACKED: usize = 1024;

/// The limiter of ingest warnings, per sender.
pub(crate) fn ingest_log_limiter() -> PeerLogRateLimiter<IngestLogKey> {
    PeerLogRateLimiter::new(LOG_WINDOW, LOG_LINES_PER_SENDER, LOG_SENDERS_TRACKED)
}

/// Whom a warning about ingest counts against: the pot of the connection, else its sender's
/// [`AddressGroup`] (the unix user owning its socket; when the owner is unknown — the
/// sender closed its end already — one shared group, never root's budget, which the kernel
/// would name for a closed socket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IngestLogKey {
    Pot(String),
    Sender(AddressGroup),
}

impl IngestLogKey {
    fn of(group: AddressGroup, pot: Option<&PotIdentity>) -> Self {
        match pot {
            Some(pot) => IngestLogKey::Pot(pot.pot_id.clone()),
            None => IngestLogKey::Sender(group),
        }
    }
}

/// One honeypot connection, as warnings name it and count it.
struct IngestPeer {
    remote: SocketAddr,
    log_key: IngestLogKey,
}

/// Paces one pot (or one connection of a sender that is not a pot of this node) to at most
/// `rate` events per second (bursts of one second's worth).
pub(crate) struct Pacer {
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

/// Accepts honeypot connections until `shutdown` within `limiter`'s slots (in all:
/// `ingest.max_connections`; per sender: `ingest.max_connections_per_sender`), then waits
/// for open ones to finish. Honeypots that connected just before the stop are still served
/// (their lines are read for the drain period) if they fit into the limits.
///
/// The share per sender matters: without it one pot user could hold every slot (a byte
/// every few minutes keeps a connection past `ingest.idle_timeout`) and leave the other
/// pots of the node no way to deliver. A sender over its share is closed at once, counted,
/// and logged at a limited rate.
pub(crate) async fn run_ingest_listener(
    listener: TcpListener,
    context: Arc<IngestContext>,
    limiter: Arc<ConnectionLimiter>,
    shutdown: CancellationToken,
) {
    let settings = AcceptSettings {
        listener_name: "ingest",
        limiter,
        at_shutdown: AtShutdown::ServeBacklogWithinLimits,
        on_refused: Box::new({
            let context = context.clone();
            move |remote, group| {
                context.metrics.ingest_sender_limit_closed.increment();
                let sender = IngestLogKey::Sender(group);
                if let Some(suppressed) = context.log_limiter.allow(&sender) {
                    tracing::warn!(%remote, sender = %group, suppressed, "closed an ingest connection: its sender holds ingest.max_connections_per_sender already");
                }
            }
        }),
    };
    let connections = accept_until_shutdown(listener, settings, shutdown.clone(), {
        move |stream, remote, permit| {
            let context = context.clone();
            let shutdown = shutdown.clone();
            async move {
                context.metrics.ingest_connections.increment();
                context.metrics.ingest_connections_active.increment();
                serve_ingest_connection(stream, remote, &permit, &context, shutdown).await;
                context.metrics.ingest_connections_active.decrement();
            }
        }
    })
    .await;
    connections.wait().await;
}

async fn serve_ingest_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    permit: &ConnectionPermit,
    context: &IngestContext,
    shutdown: CancellationToken,
) {
    let mut framer = LineFramer::new(context.max_line_bytes);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    // A pot this node started is known by its socket's owner; other senders name their pot.
    let group = permit.address_group();
    let sender = context.sender_pot(group);
    let pot_context = match &sender {
        Some(pot) => PotContext {
            pot_id: Some(pot.pot_id.clone()),
            pot_type: Some(pot.pot_type.clone()),
        },
        None => PotContext::default(),
    };
    let peer = IngestPeer {
        remote,
        log_key: IngestLogKey::of(group, sender.as_ref()),
    };
    let mut drain_deadline: Option<Instant> = None;
    let pacer = context.pacer_for(sender.as_ref());
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
            let result = stamp(result, sender.as_ref(), &peer, context);
            if result.as_ref().is_ok_and(Option::is_some) {
                pace(&pacer, sender.as_ref(), remote, context).await;
            }
            if !accept(result, &peer, context).await {
                return;
            }
        }
    }
    // A sender may close without a final newline: its last line still counts.
    if let Some(line) = framer.finish() {
        let result = normalize_ingest_line(line, &pot_context, Utc::now());
        let result = stamp(result, sender.as_ref(), &peer, context);
        accept(result, &peer, context).await;
    }
}

/// Events from a pot this node started carry that pot's id and type, whatever the line
/// said: a compromised pot cannot speak for another one.
fn stamp(
    result: Result<Option<IngestEvent>, IngestError>,
    sender: Option<&PotIdentity>,
    peer: &IngestPeer,
    context: &IngestContext,
) -> Result<Option<IngestEvent>, IngestError> {
    let Some(sender) = sender else {
        return refuse_unproven_claim(result, peer, context);
    };
    let Ok(Some(mut event)) = result else {
        return result;
    };
    if event.pot_id != sender.pot_id || event.pot_type != sender.pot_type {
        context.metrics.ingest_pot_claims_overridden.increment();
        if let Some(suppressed) = context.log_limiter.allow(&peer.log_key) {
            tracing::warn!(remote = %peer.remote, pot_id = %sender.pot_id, claimed_pot_id = %truncate_for_log(&event.pot_id, MAX_LOGGED_PEER_TEXT_BYTES), claimed_pot_type = %truncate_for_log(&event.pot_type, MAX_LOGGED_PEER_TEXT_BYTES), suppressed, "a pot sent an event naming another pot; stamped with its own id");
        }
        event.pot_id.clone_from(&sender.pot_id);
        event.pot_type.clone_from(&sender.pot_type);
    }
    Ok(Some(event))
}

/// A sender that is not known as one of this node's pots (a honeypot run by hand, or a pot
/// whose socket was gone before the node could look up its owner) may not use the id of a
/// pot this node runs under a user of its own: such an event is dropped and counted.
fn refuse_unproven_claim(
    result: Result<Option<IngestEvent>, IngestError>,
    peer: &IngestPeer,
    context: &IngestContext,
) -> Result<Option<IngestEvent>, IngestError> {
    let (Ok(Some(event)), Some(identities)) = (&result, &context.identities) else {
        return result;
    };
    if !identities.runs_pot(&event.pot_id) {
        return result;
    }
    context.metrics.ingest_pot_claims_refused.increment();
    if let Some(suppressed) = context.log_limiter.allow(&peer.log_key) {
        tracing::warn!(remote = %peer.remote, claimed_pot_id = %event.pot_id, suppressed, "an event naming one of this node's pots came from another sender; dropped");
    }
    Ok(None)
}

/// Holds the sender to its event rate: waiting here stops its reads, so a flooding
/// honeypot slows down instead of losing events or starving the others.
async fn pace(
    pacer: &Mutex<Pacer>,
    sender: Option<&PotIdentity>,
    remote: SocketAddr,
    context: &IngestContext,
) {
    let (delay, alarm_due, delayed) = {
        let mut pacer = pacer.lock().unwrap_or_else(|p| p.into_inner());
        let delay = pacer.delay_for_next();
        let alarm_due = !delay.is_zero() && pacer.alarm_due();
        (delay, alarm_due, pacer.delayed)
    };
    if delay.is_zero() {
        return;
    }
    context.metrics.ingest_events_delayed.increment();
    if alarm_due {
        let who = match sender {
            Some(pot) => format!("pot {}", pot.pot_id),
            None => format!("honeypot connection {remote}"),
        };
        let message = format!(
            "{who} exceeds ingest.max_events_per_second ({}); {delayed} events delayed so far",
            context.max_events_per_second
        );
        tracing::warn!(%remote, pot_id = sender.map(|pot| pot.pot_id.as_str()), delayed, "a honeypot exceeds the event rate");
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
    peer: &IngestPeer,
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
            if let Some(suppressed) = context.log_limiter.allow(&peer.log_key) {
                tracing::warn!(remote = %peer.remote, log_peer = ?peer.log_key, %error, suppressed, "rejected an ingest line");
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

    /// The pace on tokio's paused clock: a burst of one second's worth passes at once, the
    /// next event waits exactly its share of a second, waiting refills, and the Core is told
    /// at most once per alarm interval.
    #[tokio::test(start_paused = true)]
    async fn the_pacer_lets_a_burst_through_then_spaces_events_at_the_rate() {
        let mut pacer = Pacer::new(10);
        for _ in 0..10 {
            assert_eq!(pacer.delay_for_next(), Duration::ZERO);
        }
        let wait = pacer.delay_for_next();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(pacer.delayed, 1);
        assert!(pacer.alarm_due(), "the first delay raises an alarm");
        assert!(!pacer.alarm_due(), "not again within the interval");
        tokio::time::advance(wait).await;
        // The token the wait earned was spent by the event that waited.
        assert_eq!(pacer.delay_for_next(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Idle time refills the burst, never beyond one second's worth.
        for _ in 0..10 {
            assert_eq!(pacer.delay_for_next(), Duration::ZERO);
        }
        assert!(pacer.delay_for_next() > Duration::ZERO);
        tokio::time::advance(ALARM_INTERVAL).await;
        assert!(pacer.alarm_due(), "due again after the interval");
    }
}
