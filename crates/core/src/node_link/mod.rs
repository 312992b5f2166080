//! One Protocol v2 session per node connection (`node_listener.rs` accepts them).
//!
//! A session is a small state machine: it waits (with a deadline) for a `NodeRegistration`,
//! acknowledges it, and from then on stores what the node reports and writes the commands
//! the rest of the Core sends it. Bad input from one node is counted, logged at a limited
//! rate and skipped; it never affects other connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use honeybee_byte_budget::ByteBudget;
use honeybee_protocol::{
    encode_envelope, parse_timestamp_text, CommandAnswer, DecodeError, EnvelopeDecoder, EventAck,
    Message, NodeCommand, NodeEventKind, NodeRegistration, NodeStatus, NodeType, PotEvent,
    PotStatus, PotStatusUpdate, RegistrationAck, CAPABILITY_ACKED_DELIVERY,
    CAPABILITY_COMMAND_ANSWERS, CAPABILITY_UNINSTALL_POT,
};
use honeybee_store::{
    NewEvent, NodeKind, NodeRegistrationRecord, NodeState, PotRecord, PotState, Store,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::{CommandOutcome, CommandTracker};
use crate::delivery::{queued_event_bytes, DeliveryProgress, QueuedEvent};
use crate::enrollment::NodeAuthenticator;
use crate::event_fields::EventEnricher;
use crate::metrics::CoreMetrics;
use crate::peer_log::{peer_text, PeerKey, PeerLogLimiter};
use crate::sessions::{OutgoingCommand, SessionHandle, SessionRegistry};
use honeybee_accept::AddressGroup;

mod registration;

/// The protocol extensions this Core speaks; a session uses those the node announced too.
const SUPPORTED_CAPABILITIES: [&str; 3] = [
    CAPABILITY_COMMAND_ANSWERS,
    CAPABILITY_UNINSTALL_POT,
    CAPABILITY_ACKED_DELIVERY,
];

/// A write to a node that takes longer than this ends the session: a node that does not
/// read must not hold a Core task forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `last_seen` is written at most this often for traffic other than status updates.
const TOUCH_INTERVAL: Duration = Duration::from_secs(5);
/// Commands queued for one node before senders wait.
const COMMAND_QUEUE: usize = 64;
/// On shutdown, how long a registered session keeps reading what its node already sent.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Distinct pot statuses remembered per session to skip repeated identical writes.
const POT_STATUS_MEMORY: usize = 1024;
/// A connection's read buffer starts small, because most nodes are idle between heartbeats
/// and a Core holds thousands of them, and doubles up to the maximum while reads fill it (a
/// node sending events).
const READ_BUFFER_START_BYTES: usize = 4 * 1024;
const READ_BUFFER_MAX_BYTES: usize = 64 * 1024;

/// The refusal a revoked node gets, whether its session was live or just starting.
fn revoked_message(node_id: u64) -> String {
    format!("node {node_id} was revoked by an operator")
}

/// What every session needs from the Core.
pub(crate) struct LinkContext {
    pub store: Arc<dyn Store>,
    /// Fills each event's well-known fields and location at ingest.
    pub enricher: Arc<EventEnricher>,
    pub events: mpsc::Sender<QueuedEvent>,
    /// `[storage] queue_max_bytes`: each event takes its bytes before it is queued.
    pub event_bytes: ByteBudget,
    pub sessions: Arc<SessionRegistry>,
    pub commands: Arc<CommandTracker>,
    pub authenticator: NodeAuthenticator,
    pub metrics: Arc<CoreMetrics>,
    pub max_envelope_bytes: usize,
    /// The envelope cap until the connection registered.
    pub max_unregistered_envelope_bytes: usize,
    /// From accept to registered, TLS handshake included.
    pub handshake_timeout: Duration,
    /// Present when the node port speaks TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// A registered node silent this long is disconnected (its connection is presumed dead).
    pub idle_timeout: Duration,
    /// Lines about peers, limited per peer (shared with the accept loop).
    pub log_limiter: Arc<PeerLogLimiter>,
}

/// The registered identity of a session.
struct Session {
    node_id: u64,
    session_id: u64,
    commands: mpsc::Receiver<OutgoingCommand>,
    replaced: CancellationToken,
    revoked: CancellationToken,
    /// With acknowledged delivery: how far this session's events are stored, and the last
    /// position told to the node.
    delivery: Option<Arc<DeliveryProgress>>,
    acknowledged_seq: u64,
    last_touch: Instant,
    /// The last node state written and when, to skip repeats within [`TOUCH_INTERVAL`].
    last_state_write: Option<(NodeState, Instant)>,
    /// The last status written per pot, to skip identical repeats.
    pot_statuses: HashMap<String, (PotState, Option<String>)>,
    /// The secret this session issued, while the node has not spoken since the ack that
    /// carried it; its next message shows that this secret (not a later one) arrived.
    unconfirmed_secret: Option<String>,
}

/// What to do after a message.
enum Flow {
    Continue,
    Close,
}

/// Either half of a node connection, whatever carries it (plain TCP today; a TLS stream
/// fits the same shape).
pub(crate) type ConnectionReader = Box<dyn tokio::io::AsyncRead + Unpin + Send + Sync>;
pub(crate) type ConnectionWriter = Box<dyn tokio::io::AsyncWrite + Unpin + Send + Sync>;

pub(crate) struct NodeLink {
    writer: Option<ConnectionWriter>,
    remote: SocketAddr,
    /// Whom the connection counts against before it registered (its address group, or
    /// the uid of a local peer): its log lines and its TOTP guesses.
    group: AddressGroup,
    context: Arc<LinkContext>,
    decoder: EnvelopeDecoder,
    session: Option<Session>,
    outgoing: Vec<u8>,
}

impl NodeLink {
    pub fn new(
        writer: ConnectionWriter,
        remote: SocketAddr,
        group: AddressGroup,
        context: Arc<LinkContext>,
    ) -> Self {
        // Small until the peer registered: an unauthenticated connection must not make
        // the Core buffer a full-size envelope.
        let decoder = EnvelopeDecoder::new(context.max_unregistered_envelope_bytes);
        NodeLink {
            writer: Some(writer),
            remote,
            group,
            context,
            decoder,
            session: None,
            outgoing: Vec::new(),
        }
    }

    /// Serves the session until it ends; `handshake_deadline` is when an unregistered
    /// connection is closed (set at accept, so the TLS handshake counts against it).
    pub async fn run(
        mut self,
        mut reader: ConnectionReader,
        handshake_deadline: Instant,
        shutdown: CancellationToken,
    ) {
        let mut read_buffer = vec![0u8; READ_BUFFER_START_BYTES];
        let mut graceful = false;
        let mut last_read = Instant::now();
        // Set when shutdown began for a registered session: read until the node is gone.
        let mut drain_deadline: Option<Instant> = None;
        let close_reason: &str = loop {
            let registered = self.session.is_some();
            let delivery = self
                .session
                .as_ref()
                .and_then(|session| session.delivery.clone());
            let idle_deadline = last_read + self.context.idle_timeout;
            // Biased: every branch before the read is ready only on a deadline or a signal,
            // so a node that never stops sending cannot starve them.
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    let Some(node_id) = self.session.as_ref().map(|session| session.node_id) else {
                        break "core shutting down";
                    };
                    // Tell the node to stop sending, then read what it already sent.
                    drain_deadline = Some(Instant::now() + SHUTDOWN_DRAIN);
                    if self.send_refusal(node_id, "core shutting down; reconnect later".into()).await.is_err() {
                        break "core shutting down";
                    }
                }
                _ = sleep_until_some(drain_deadline) => break "core shutting down (drain deadline reached)",
                _ = tokio::time::sleep_until(handshake_deadline), if !registered => {
                    self.context.metrics.registration_refused("handshake_timeout");
                    break "no registration before the handshake timeout";
                }
                _ = tokio::time::sleep_until(idle_deadline), if registered => {
                    self.context.metrics.rejected("idle_timeout");
                    break "no traffic from the node within the idle timeout";
                }
                _ = stored_signal(delivery.as_deref()) => {
                    if self.acknowledge_stored().await.is_err() {
                        break "writing to the node failed";
                    }
                }
                signal = session_signal(&mut self.session), if drain_deadline.is_none() => match signal {
                    SessionSignal::Replaced => break "replaced by a newer connection of the same node",
                    SessionSignal::Revoked => {
                        let node_id = self.session.as_ref().map_or(0, |session| session.node_id);
                        let _ = self.send_refusal(node_id, revoked_message(node_id)).await;
                        break "node revoked by an operator";
                    }
                    SessionSignal::CommandsClosed => break "command channel closed",
                    SessionSignal::Command(command) => {
                        if self.send_command(command).await.is_err() {
                            break "writing to the node failed";
                        }
                    }
                },
                read = reader.read(&mut read_buffer) => {
                    let count = match read {
                        Ok(0) => {
                            if let Err(error) = self.decoder.finish() {
                                self.warn_limited("connection closed inside an envelope", &error);
                            }
                            break "connection closed by the node";
                        }
                        Ok(count) => count,
                        Err(_) => break "reading from the node failed",
                    };
                    last_read = Instant::now();
                    self.decoder.push(&read_buffer[..count]);
                    // Only a registered node's buffer grows: before, a peer is owed no more
                    // memory than its registration needs.
                    if registered && count == read_buffer.len() && read_buffer.len() < READ_BUFFER_MAX_BYTES {
                        read_buffer.resize(read_buffer.len() * 2, 0);
                    }
                    match self.drain_envelopes(&mut graceful).await {
                        Flow::Continue => {}
                        Flow::Close => break if graceful { "node said goodbye (NodeDrop)" } else { "session ended by the core" },
                    }
                }
            }
        };
        self.finish(close_reason, graceful).await;
    }

    /// Handles every complete envelope in the decoder.
    async fn drain_envelopes(&mut self, graceful: &mut bool) -> Flow {
        loop {
            match self.decoder.next_envelope() {
                Ok(None) => return Flow::Continue,
                Ok(Some(envelope)) => {
                    if let Flow::Close = self.handle_message(envelope.message, graceful).await {
                        return Flow::Close;
                    }
                }
                Err(error) => {
                    self.context.metrics.rejected(error.kind());
                    self.warn_limited("refused an envelope", &error);
                    if let DecodeError::UnsupportedVersion { variant, .. } = &error {
                        if self.session.is_none() && variant.as_deref() == Some("NodeRegistration")
                        {
                            self.context
                                .metrics
                                .registration_refused("unsupported_version");
                            let _ = self.send_refusal(0, error.to_string()).await;
                            return Flow::Close;
                        }
                    }
                    if error.is_fatal() {
                        let node_id = self.session.as_ref().map_or(0, |s| s.node_id);
                        let _ = self.send_refusal(node_id, error.to_string()).await;
                        return Flow::Close;
                    }
                }
            }
        }
    }

    async fn handle_message(&mut self, message: Message, graceful: &mut bool) -> Flow {
        let Some(node_id) = self.session.as_ref().map(|session| session.node_id) else {
            return match message {
                Message::NodeRegistration(registration) => self.register(registration).await,
                other => {
                    self.context.metrics.rejected("before_registration");
                    self.warn_limited(
                        "dropped a message sent before registration",
                        &other.variant_name(),
                    );
                    Flow::Continue
                }
            };
        };
        self.confirm_secret_once(node_id).await;
        let now = Utc::now();
        match message {
            Message::PotEvent(event) => {
                if event.node_id != node_id {
                    return self.drop_foreign(node_id, event.node_id, "PotEvent");
                }
                let progress = event
                    .seq
                    .and(self.session.as_ref())
                    .and_then(|session| session.delivery.clone());
                let event = self.to_new_event(event, now);
                // Awaiting the bytes and the slot is the backpressure: a used-up byte
                // budget or a full queue stops this read loop.
                let bytes = self
                    .context
                    .event_bytes
                    .acquire(queued_event_bytes(&event))
                    .await;
                let event = QueuedEvent {
                    event,
                    progress,
                    bytes,
                };
                if self.context.events.send(event).await.is_err() {
                    return Flow::Close;
                }
                self.context.metrics.events_received.increment();
                self.touch(node_id, now).await;
            }
            Message::NodeStatusUpdate(update) => {
                if update.node_id != node_id {
                    return self.drop_foreign(node_id, update.node_id, "NodeStatusUpdate");
                }
                self.store_node_state(node_id, node_state(update.status), now)
                    .await;
            }
            Message::PotStatusUpdate(update) => {
                if update.node_id != node_id {
                    return self.drop_foreign(node_id, update.node_id, "PotStatusUpdate");
                }
                self.store_pot_status(update, now).await;
                self.touch(node_id, now).await;
            }
            Message::NodeEvent(event) => {
                let kind = format!("{:?}", event.kind);
                self.context.metrics.node_event(&kind);
                // A node decides how often and how much it reports: its lines are limited
                // per node and cut short, so it can neither flood the log nor hide another
                // node's reports.
                if let Some(suppressed) = self.context.log_limiter.allow(&PeerKey::Node(node_id)) {
                    let detail = peer_text(event.message.as_deref().unwrap_or(""));
                    match event.kind {
                        NodeEventKind::Error | NodeEventKind::Alarm => {
                            tracing::warn!(node_id, kind, %detail, suppressed, "node reported an event")
                        }
                        NodeEventKind::Started | NodeEventKind::Stopped => {
                            tracing::info!(node_id, kind, %detail, suppressed, "node reported an event")
                        }
                    }
                }
                self.touch(node_id, now).await;
            }
            Message::NodeDrop => {
                *graceful = true;
                return Flow::Close;
            }
            Message::NodeRegistration(_) => {
                self.context.metrics.rejected("duplicate_registration");
                self.warn_limited("ignored a second registration on one connection", &node_id);
            }
            Message::CommandAnswer(answer) => {
                if answer.node_id != node_id {
                    return self.drop_foreign(node_id, answer.node_id, "CommandAnswer");
                }
                self.record_answer(answer, now).await;
            }
            Message::RegistrationAck(_) | Message::NodeCommand(_) | Message::EventAck(_) => {
                self.context.metrics.rejected("wrong_direction");
                self.warn_limited("ignored a core-to-node message sent by a node", &node_id);
            }
        }
        Flow::Continue
    }

    fn to_new_event(&self, event: PotEvent, received_at: DateTime<Utc>) -> NewEvent {
        let timestamp = parse_timestamp_text(&event.timestamp).unwrap_or_else(|| {
            self.context.metrics.events_bad_timestamp.increment();
            self.warn_limited(
                "event timestamp unparseable; stored with the receive time",
                &event.timestamp,
            );
            received_at
        });
        NewEvent {
            node_id: event.node_id,
            pot_id: event.pot_id,
            pot_type: event.pot_type,
            event_type: event.event_type,
            timestamp,
            received_at,
            fields: self.context.enricher.fields(&event.data),
            data_json: event.data.into_string(),
            seq: event.seq,
        }
    }

    /// Writes a reported node state, skipping a repeat of the same state within
    /// [`TOUCH_INTERVAL`] (heartbeats are far apart; a node spamming them is not).
    async fn store_node_state(&mut self, node_id: u64, state: NodeState, now: DateTime<Utc>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if let Some((last_state, written_at)) = session.last_state_write {
            if last_state == state && written_at.elapsed() < TOUCH_INTERVAL {
                return;
            }
        }
        session.last_state_write = Some((state, Instant::now()));
        session.last_touch = Instant::now();
        if let Err(error) = self
            .context
            .store
            .update_node_state(node_id, state, now)
            .await
        {
            tracing::warn!(node_id, %error, "storing a node status failed");
        }
    }

    async fn store_pot_status(&mut self, update: PotStatusUpdate, now: DateTime<Utc>) {
        let state = match update.status {
            PotStatus::Installing => PotState::Installing,
            PotStatus::Running => PotState::Running,
            PotStatus::Stopped => PotState::Stopped,
            PotStatus::Failed => PotState::Failed,
        };
        if let Some(session) = self.session.as_mut() {
            let status = (state, update.message.clone());
            if session.pot_statuses.get(&update.pot_id) == Some(&status) {
                return;
            }
            if session.pot_statuses.len() >= POT_STATUS_MEMORY {
                session.pot_statuses.clear();
            }
            session.pot_statuses.insert(update.pot_id.clone(), status);
        }
        let record = PotRecord {
            node_id: update.node_id,
            pot_id: update.pot_id,
            pot_type: update.pot_type,
            state,
            message: update.message,
            updated_at: now,
        };
        if let Err(error) = self.context.store.upsert_pot(record).await {
            tracing::warn!(node_id = update.node_id, %error, "storing a pot status failed");
        }
    }

    /// Records a sign of life, at most every [`TOUCH_INTERVAL`].
    async fn touch(&mut self, node_id: u64, now: DateTime<Utc>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.last_touch.elapsed() < TOUCH_INTERVAL {
            return;
        }
        let result = self.context.store.touch_node(node_id, now).await;
        // The interval counts from the end of the write: a store that takes seconds per
        // write (locked, waiting out its busy timeout) must not get one write per event,
        // which would stall this session on the store instead of on the queue.
        if let Some(session) = self.session.as_mut() {
            session.last_touch = Instant::now();
        }
        if let Err(error) = result {
            tracing::warn!(node_id, %error, "storing last_seen failed");
        }
    }

    fn drop_foreign(&self, node_id: u64, claimed: u64, variant: &str) -> Flow {
        self.context.metrics.rejected("foreign_node_id");
        self.warn_limited(
            "dropped a message carrying another node's id",
            &format!("{variant} from node {node_id} claims node {claimed}"),
        );
        Flow::Continue
    }

    async fn send_command(&mut self, outgoing: OutgoingCommand) -> Result<(), ()> {
        let node_id = self.session.as_ref().map_or(0, |session| session.node_id);
        tracing::info!(
            node_id,
            command = outgoing.command.variant_name(),
            command_id = outgoing.command_id,
            "sending command to node"
        );
        self.write_message(&Message::NodeCommand(NodeCommand {
            node_id,
            command: outgoing.command,
            command_id: outgoing.command_id,
        }))
        .await
    }

    /// Hands a command's answer to the tracker; a successful uninstall also forgets the pot.
    async fn record_answer(&self, answer: CommandAnswer, now: DateTime<Utc>) {
        // Answers are the node's text: limited per node and cut short like its other lines.
        if let Some(suppressed) = self
            .context
            .log_limiter
            .allow(&PeerKey::Node(answer.node_id))
        {
            tracing::info!(
                node_id = answer.node_id,
                command = %peer_text(&answer.command),
                command_id = answer.command_id,
                pot_id = answer.pot_id.as_deref().map(peer_text).as_deref(),
                success = answer.success,
                detail = %peer_text(answer.message.as_deref().unwrap_or("")),
                suppressed,
                "node answered a command"
            );
        }
        if answer.success && answer.command == "UninstallPot" {
            if let Some(pot_id) = &answer.pot_id {
                if let Err(error) = self
                    .context
                    .store
                    .delete_pot(answer.node_id, pot_id.clone())
                    .await
                {
                    tracing::warn!(node_id = answer.node_id, %error, "forgetting an uninstalled pot failed");
                }
            }
        }
        if let Some(command_id) = answer.command_id {
            let node_id = answer.node_id;
            let accepted = self.context.commands.record(CommandOutcome {
                command_id,
                node_id: answer.node_id,
                command: answer.command,
                pot_id: answer.pot_id,
                success: answer.success,
                message: answer.message,
                data: answer.data,
                received_at: now,
            });
            if !accepted {
                self.context.metrics.rejected("foreign_command_answer");
                self.warn_limited(
                    "dropped an answer to a command not sent to this node",
                    &format!("node {node_id}, command {command_id}"),
                );
            }
        }
    }

    /// A `RegistrationAck` with `accepted: false` tells the node why the Core closes the
    /// session; it is the only error-carrying message the contract gives the Core.
    /// Tells the node how far its events are stored, if that moved since the last ack.
    async fn acknowledge_stored(&mut self) -> Result<(), ()> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let Some(stored) = session
            .delivery
            .as_ref()
            .map(|progress| progress.stored_seq())
        else {
            return Ok(());
        };
        if stored <= session.acknowledged_seq {
            return Ok(());
        }
        session.acknowledged_seq = stored;
        let ack = Message::EventAck(EventAck {
            node_id: session.node_id,
            seq: stored,
        });
        self.write_message(&ack).await?;
        self.context.metrics.event_acks_sent.increment();
        Ok(())
    }

    async fn send_refusal(&mut self, node_id: u64, reason: String) -> Result<(), ()> {
        if let Some(suppressed) = self.context.log_limiter.allow(&self.peer_key()) {
            tracing::info!(remote = %self.remote, node_id, reason = %peer_text(&reason), suppressed, "refusing node session");
        }
        self.write_message(&Message::RegistrationAck(RegistrationAck {
            node_id,
            accepted: false,
            message: Some(reason),
            totp_key: None,
            capabilities: Vec::new(),
            acked_seq: None,
        }))
        .await
    }

    async fn write_message(&mut self, message: &Message) -> Result<(), ()> {
        self.outgoing.clear();
        encode_envelope(message, &mut self.outgoing);
        let writer = self.writer.as_mut().ok_or(())?;
        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&self.outgoing)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Whom lines about this connection count against: the node once registered, its
    /// address before.
    fn peer_key(&self) -> PeerKey {
        PeerKey::of(
            self.session.as_ref().map(|session| session.node_id),
            self.group,
        )
    }

    fn warn_limited(&self, what: &str, detail: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.context.log_limiter.allow(&self.peer_key()) {
            let node_id = self.session.as_ref().map(|session| session.node_id);
            let detail = detail.to_string();
            let detail = peer_text(&detail);
            tracing::warn!(remote = %self.remote, ?node_id, %detail, suppressed, "{what}");
        }
    }

    async fn finish(mut self, reason: &str, graceful: bool) {
        if let Some(session) = self.session.take() {
            self.context.metrics.node_sessions_active.decrement();
            self.context
                .sessions
                .remove_if_current(session.node_id, session.session_id);
            // A no-op in the store when a newer session of the node registered meanwhile.
            if let Err(error) = self
                .context
                .store
                .disconnect_node(session.node_id, session.session_id, Utc::now())
                .await
            {
                tracing::warn!(node_id = session.node_id, %error, "storing a disconnect failed");
            }
            tracing::info!(node_id = session.node_id, remote = %self.remote, reason, graceful, "node session ended");
        } else {
            tracing::debug!(remote = %self.remote, reason, "unregistered connection ended");
        }
        if let Some(mut writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
        }
    }
}

fn node_state(status: NodeStatus) -> NodeState {
    match status {
        NodeStatus::Connected => NodeState::Connected,
        NodeStatus::Deploying => NodeState::Deploying,
        NodeStatus::Running => NodeState::Running,
        NodeStatus::Stopped => NodeState::Stopped,
        NodeStatus::Failed => NodeState::Failed,
        NodeStatus::Unknown => NodeState::Unknown,
    }
}

/// Resolves at `deadline`; pends forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the rest of the Core wants from a registered session.
enum SessionSignal {
    Replaced,
    Revoked,
    Command(OutgoingCommand),
    CommandsClosed,
}

/// Resolves when more of the session's events are stored; pends without acknowledged
/// delivery.
async fn stored_signal(delivery: Option<&DeliveryProgress>) {
    match delivery {
        Some(progress) => progress.changed().await,
        None => std::future::pending().await,
    }
}

/// The next signal for the session; pends forever before registration.
async fn session_signal(session: &mut Option<Session>) -> SessionSignal {
    let Some(session) = session else {
        return std::future::pending().await;
    };
    // Biased: removing a session from the registry also closes its command channel, and
    // the reason it was removed must win over that consequence.
    tokio::select! {
        biased;
        _ = session.revoked.cancelled() => SessionSignal::Revoked,
        _ = session.replaced.cancelled() => SessionSignal::Replaced,
        command = session.commands.recv() => match command {
            Some(command) => SessionSignal::Command(command),
            None => SessionSignal::CommandsClosed,
        },
    }
}
