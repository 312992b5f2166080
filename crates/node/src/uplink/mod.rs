//! The uplink to the Core: connect, register, heartbeat, forward spooled events in batches,
//! answer commands, and reconnect with exponential backoff and jitter when the link drops.
//!
//! Events are read from the durable spool and deleted from it only when the Core
//! acknowledges them (acknowledged delivery); each session starts again at the first
//! unacknowledged event, and the Core stores each (node, seq) once. Against a Core without
//! the extension, an event counts as delivered once written to the connection.

use std::sync::Arc;
use std::time::Duration;

use honeybee_protocol::{
    encode_envelope, encode_pot_event, Command, CommandAnswer, EnvelopeDecoder, Message, NodeEvent,
    NodeEventKind, NodeRegistration, NodeStatus, NodeStatusUpdate, NodeType, PotEventRef,
    PotStatus, PotStatusUpdate, CAPABILITY_ACKED_DELIVERY, CAPABILITY_COMMAND_ANSWERS,
    CAPABILITY_UNINSTALL_POT,
};
use honeybee_telemetry::LogRateLimiter;
use rand::Rng;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::ServerSection;
use crate::credentials::{NodeCredentials, RegistrationProof};
use crate::metrics::NodeMetrics;
use crate::pots::PotManager;
use crate::spool::{decode_event, Spool, SpoolReader, SpooledBatch};

mod registration;
use registration::connect_and_register;

/// Most events sent in one write.
const BATCH_MAX_EVENTS: usize = 1024;
/// A write the Core does not take within this time ends the session (the Core may be
/// applying backpressure, so this is generous).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown may spend forwarding what is still queued.
const SHUTDOWN_DRAIN_DEADLINE: Duration = Duration::from_secs(5);
const READ_BUFFER_BYTES: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum UplinkError {
    #[error("connecting to the core at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out {what} (core at {address})")]
    Timeout { address: String, what: &'static str },
    #[error("TLS handshake with the core at {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("the core refused the registration: {message}")]
    Refused { message: String },
    #[error("keeping the TOTP secret the core issued failed: {0}")]
    Credentials(#[from] crate::credentials::CredentialError),
    #[error("connection to the core lost: {reason}")]
    Lost { reason: String },
    #[error("reading the spool failed: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("the core broke the protocol: {0}")]
    Protocol(String),
    #[error("refusing the plaintext core at {address}: its socket belongs to uid {owner}, neither root nor this node's uid {own_uid} (another local user may have taken the core's port)")]
    ImpostorCore {
        address: String,
        owner: u32,
        own_uid: u32,
    },
    #[error("refusing the plaintext core at {address}: the owner of its socket could not be found within {seconds} s")]
    UnverifiedCore { address: String, seconds: u64 },
    #[error("refusing the core at {address}: it sent a new totp_key in answer to a registration with a totp code (the stored secret is kept)")]
    UnrequestedTotpKey { address: String },
}

/// The highest seq a Core may name: it stores seqs as signed 64-bit integers, so anything
/// above is a broken or hostile Core (and `seq + 1` must never overflow here).
const HIGHEST_VALID_SEQ: u64 = i64::MAX as u64;

pub(crate) struct UplinkContext {
    pub node_id: u64,
    pub node_name: String,
    pub node_type: NodeType,
    pub server: ServerSection,
    pub metrics: Arc<NodeMetrics>,
    pub log_limiter: LogRateLimiter,
    /// The pot manager of a Full node that runs pots.
    pub pots: Option<Arc<PotManager>>,
    /// Why a Full node cannot run pots, when it should but cannot.
    pub pots_unavailable: Option<String>,
    /// The durable queue of events to forward.
    pub spool: Arc<Spool>,
    /// The node's enrollment token and TOTP secret; `None` with `auth.totp_enabled: false`.
    pub credentials: Option<Arc<NodeCredentials>>,
    /// The TLS connector and the name the Core's certificate must carry, when TLS is on.
    pub tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl UplinkContext {
    /// The extensions this node announces.
    fn capabilities(&self) -> Vec<String> {
        let mut capabilities = vec![
            CAPABILITY_COMMAND_ANSWERS.to_owned(),
            CAPABILITY_ACKED_DELIVERY.to_owned(),
        ];
        if self.pots.is_some() {
            capabilities.push(CAPABILITY_UNINSTALL_POT.to_owned());
        }
        capabilities
    }
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], and d doubles per
/// failure up to the maximum, so many nodes reconnecting to a restarted Core spread out.
struct Backoff {
    initial: Duration,
    current: Duration,
    max: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            current: initial,
            max,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let fraction = rand::thread_rng().gen_range(0.5..=1.0);
        ceiling.mul_f64(fraction)
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Runs until shutdown: keeps a session with the Core and forwards every queued event.
pub(crate) async fn run_uplink(
    context: Arc<UplinkContext>,
    mut outbox: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(
        context.server.reconnect_delay(),
        context.server.max_reconnect_delay(),
    );
    let mut announced_start = false;
    while !shutdown.is_cancelled() {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            attempt = connect_and_register(&context) => attempt,
        };
        match attempt {
            Ok(mut session) => {
                backoff.reset();
                context.metrics.core_connections.increment();
                tracing::info!(node_id = context.node_id, core = %context.server.address, "registered with the core");
                if !announced_start {
                    announced_start = true;
                    let started = Message::NodeEvent(NodeEvent {
                        kind: NodeEventKind::Started,
                        message: Some(format!(
                            "honeybee-node {} started",
                            env!("CARGO_PKG_VERSION")
                        )),
                    });
                    if let Err(error) = session.write_messages(std::slice::from_ref(&started)).await
                    {
                        tracing::warn!(%error, "announcing the start to the core failed");
                    }
                }
                match session.run(&context, &mut outbox, &shutdown).await {
                    Ok(()) => return,
                    Err(error) => {
                        context.metrics.core_connection_failures.increment();
                        tracing::warn!(%error, unacknowledged = context.spool.unacknowledged_events(), "session with the core ended; reconnecting");
                    }
                }
            }
            Err(error) => {
                context.metrics.core_connection_failures.increment();
                match &error {
                    UplinkError::ImpostorCore { .. } => {
                        context.metrics.core_refused("impostor_core")
                    }
                    UplinkError::UnverifiedCore { .. } => {
                        context.metrics.core_refused("unverified_core")
                    }
                    _ => {}
                }
                // One line per attempt: the reconnect backoff (up to
                // server.max_reconnect_delay) is what limits these lines.
                tracing::warn!(%error, "could not register with the core");
            }
        }
        let delay = backoff.next_delay();
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "waiting before reconnecting"
        );
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let unacknowledged = context.spool.unacknowledged_events();
    if unacknowledged > 0 {
        tracing::warn!(
            unacknowledged,
            "stopping with events the core has not stored yet: they stay in the spool and are sent after the next start"
        );
    }
}

/// One registered connection to the Core.
struct CoreSession {
    /// The connection's halves, whatever carries it (plain TCP today; a TLS stream fits).
    reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    writer: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    decoder: EnvelopeDecoder,
    node_id: u64,
    outgoing: Vec<u8>,
    address: String,
    /// Extensions the Core accepted in its registration ack.
    capabilities: Vec<String>,
    /// Where this session reads the spool.
    spool_reader: SpoolReader,
    /// The batch last read from the spool (its buffer is reused).
    spooled: SpooledBatch,
    /// The seq of the last event written to the Core.
    last_sent_seq: u64,
}

/// Applies an acknowledgement to the spool on the blocking pool: it deletes segment files
/// and rewrites the position file, which must not stall the runtime's threads. Awaited, so
/// acknowledgements still apply in order.
async fn acknowledge_in_spool(spool: &Arc<Spool>, seq: u64) -> u64 {
    let spool = spool.clone();
    match tokio::task::spawn_blocking(move || spool.ack(seq)).await {
        Ok(acknowledged) => acknowledged,
        Err(error) => {
            tracing::error!(seq, %error, "applying an acknowledgement to the spool failed; the events are sent again later");
            0
        }
    }
}

impl CoreSession {
    fn status(&self, status: NodeStatus) -> Message {
        Message::NodeStatusUpdate(NodeStatusUpdate {
            node_id: self.node_id,
            status,
        })
    }

    /// Whether the Core acknowledges stored events on this session.
    fn acked_delivery(&self) -> bool {
        self.capabilities
            .iter()
            .any(|capability| capability == CAPABILITY_ACKED_DELIVERY)
    }

    /// Serves the session until it fails (`Err`) or shutdown completes (`Ok`).
    async fn run(
        &mut self,
        context: &UplinkContext,
        outbox: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), UplinkError> {
        self.report_pots(context, outbox).await?;
        let mut durable = context.spool.subscribe_durable();
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + context.server.heartbeat_interval(),
            context.server.heartbeat_interval(),
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Set when a read found nothing although the durable position says there is more
        // (it should not happen): wait for the next append instead of spinning.
        let mut stalled = false;
        loop {
            let caught_up = stalled || self.spool_reader.caught_up(&context.spool);
            if caught_up && context.spool.writer_finished() {
                // Ingest and the spool writer are done: the node is stopping.
                self.drain_and_leave(context).await;
                return Ok(());
            }
            // Biased: what the Core said (acks, a refusal, a closed connection) is handled
            // before more events are written.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.drain_and_leave(context).await;
                    return Ok(());
                }
                message = self.next_message(context) => {
                    self.handle_core_message(context, message?).await?;
                }
                Some(message) = outbox.recv() => {
                    if let Some(message) = self.adapt(message) {
                        self.write_messages(&[message]).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    self.write_messages(&[self.status(NodeStatus::Running)]).await?;
                }
                _ = durable.changed(), if caught_up => {
                    stalled = false;
                }
                // Last: ready whenever there is more to send, after everything above.
                _ = std::future::ready(()), if !caught_up => {
                    stalled = !self.forward_next_batch(context).await?;
                    if stalled {
                        tracing::warn!(durable_seq = context.spool.durable_seq(), "the spool reader found no event where one should be; waiting for the next append");
                    }
                }
            }
        }
    }

    /// Reads the next batch from the spool and writes it as PotEvents in one write.
    /// Returns whether there was anything to read.
    async fn forward_next_batch(&mut self, context: &UplinkContext) -> Result<bool, UplinkError> {
        let spool = context.spool.clone();
        let mut spool_reader = std::mem::replace(&mut self.spool_reader, spool.reader());
        let mut spooled = std::mem::take(&mut self.spooled);
        let (spool_reader, spooled, read) = tokio::task::spawn_blocking(move || {
            let read = spool_reader.read_batch(&spool, BATCH_MAX_EVENTS, &mut spooled);
            (spool_reader, spooled, read)
        })
        .await
        .map_err(|error| UplinkError::Lost {
            reason: format!("spool reader task failed: {error}"),
        })?;
        self.spool_reader = spool_reader;
        self.spooled = spooled;
        read?;
        self.forward(context).await?;
        Ok(!self.spooled.is_empty())
    }

    /// Writes the spooled batch as PotEvents in one write. Without acknowledged delivery, a
    /// written event counts as delivered. The events go out as they lie in the spool: only
    /// their envelope is written, `data` is copied as JSON text.
    async fn forward(&mut self, context: &UplinkContext) -> Result<(), UplinkError> {
        let Some(last_seq) = self.spooled.last_seq() else {
            return Ok(());
        };
        let numbered = self.acked_delivery();
        self.outgoing.clear();
        let mut forwarded = 0;
        for (seq, payload) in self.spooled.iter() {
            let event = match decode_event(payload) {
                Ok(event) => event,
                Err(error) => {
                    // Its checksum held, so the bytes are what was written: only a spool
                    // from an incompatible version gets here. Skipping beats a node that
                    // stops forwarding.
                    context.metrics.spool_unreadable.increment();
                    tracing::error!(seq, %error, "skipped a spooled event that cannot be read");
                    continue;
                }
            };
            let envelope_start = self.outgoing.len();
            encode_pot_event(
                &PotEventRef {
                    node_id: self.node_id,
                    pot_id: &event.pot_id,
                    pot_type: &event.pot_type,
                    event_type: &event.event_type,
                    timestamp: &event.timestamp,
                    data: event.data,
                    seq: numbered.then_some(seq),
                },
                &mut self.outgoing,
            );
            // The Core would end the session on an envelope over its cap, and the node
            // would send it again forever: drop just this one, loudly.
            if self.outgoing.len() - envelope_start > context.server.max_envelope_bytes {
                self.outgoing.truncate(envelope_start);
                context.metrics.events_too_large.increment();
                tracing::error!(
                    pot_id = %event.pot_id,
                    event_type = %event.event_type,
                    max_envelope_bytes = context.server.max_envelope_bytes,
                    "dropped an event whose envelope exceeds server.max_envelope_bytes"
                );
                continue;
            }
            forwarded += 1;
        }
        self.flush_outgoing().await?;
        context.metrics.events_forwarded.add(forwarded);
        self.last_sent_seq = last_seq;
        if !numbered {
            let acknowledged = acknowledge_in_spool(&context.spool, last_seq).await;
            context.metrics.events_acknowledged.add(acknowledged);
        }
        Ok(())
    }

    /// Forwards what the spool still holds and waits for the Core's acknowledgement, both
    /// within [`SHUTDOWN_DRAIN_DEADLINE`], then says goodbye. What is not acknowledged by
    /// then stays in the spool for the next start.
    async fn drain_and_leave(&mut self, context: &UplinkContext) {
        let deadline = Instant::now() + SHUTDOWN_DRAIN_DEADLINE;
        let mut durable = context.spool.subscribe_durable();
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                if !self.spool_reader.caught_up(&context.spool)
                    && self.forward_next_batch(context).await?
                {
                    continue;
                }
                let all_acknowledged =
                    !self.acked_delivery() || context.spool.acked_seq() >= self.last_sent_seq;
                let writer_finished = context.spool.writer_finished();
                if writer_finished && all_acknowledged {
                    return Ok::<(), UplinkError>(());
                }
                tokio::select! {
                    _ = durable.changed(), if !writer_finished => {}
                    message = self.next_message(context) => {
                        self.handle_core_message(context, message?).await?;
                    }
                }
            }
        })
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "forwarding spooled events during shutdown failed")
            }
            Err(_) => tracing::warn!(
                unacknowledged = context.spool.unacknowledged_events(),
                "shutdown deadline reached before the core acknowledged every event; the rest stays in the spool"
            ),
        }
        let goodbye = [self.status(NodeStatus::Stopped), Message::NodeDrop];
        if let Err(error) = self.write_messages(&goodbye).await {
            tracing::debug!(%error, "could not say goodbye to the core");
        }
        let _ = self.writer.shutdown().await;
        tracing::info!(node_id = self.node_id, "left the core (NodeDrop)");
    }

    async fn handle_core_message(
        &mut self,
        context: &UplinkContext,
        message: Message,
    ) -> Result<(), UplinkError> {
        match message {
            Message::NodeCommand(command) => {
                context.metrics.commands_received.increment();
                tracing::info!(
                    command = command.command.variant_name(),
                    command_id = command.command_id,
                    pot_id = command.command.pot_id(),
                    "command from the core"
                );
                if let Some(pots) = &context.pots {
                    // Installs take minutes: the manager answers through the outbox.
                    tokio::spawn(pots.clone().handle(command.command, command.command_id));
                    return Ok(());
                }
                let answer: Vec<Message> = self
                    .answer_without_pots(
                        command.command,
                        command.command_id,
                        context.pots_unavailable.as_deref(),
                    )
                    .into_iter()
                    .filter_map(|message| self.adapt(message))
                    .collect();
                self.write_messages(&answer).await
            }
            Message::EventAck(ack) => {
                // Acknowledging what was never sent would delete events the Core never got.
                if ack.seq > self.last_sent_seq.max(context.spool.acked_seq()) {
                    context.metrics.core_message_rejected("ack_beyond_sent");
                    return Err(UplinkError::Protocol(format!(
                        "EventAck.seq {} is beyond the last seq sent ({})",
                        ack.seq, self.last_sent_seq
                    )));
                }
                let acknowledged = acknowledge_in_spool(&context.spool, ack.seq).await;
                context.metrics.events_acknowledged.add(acknowledged);
                Ok(())
            }
            Message::RegistrationAck(ack) if !ack.accepted => Err(UplinkError::Refused {
                message: ack.message.unwrap_or_else(|| "no reason given".into()),
            }),
            other => {
                context.metrics.core_message_rejected("unexpected_message");
                if let Some(suppressed) = context.log_limiter.allow() {
                    tracing::warn!(
                        variant = other.variant_name(),
                        suppressed,
                        "ignored an unexpected message from the core"
                    );
                }
                Ok(())
            }
        }
    }

    /// An Agent node (or one with `honeypot.enabled: false`) runs no pots: pot commands are
    /// answered `Failed` with the reason, node commands with an `Error` NodeEvent, as the
    /// contract asks for unsupported commands; each also gets its `CommandAnswer`.
    fn answer_without_pots(
        &self,
        command: Command,
        command_id: Option<u64>,
        unavailable: Option<&str>,
    ) -> Vec<Message> {
        let name = command.variant_name();
        let pot_type = match &command {
            Command::InstallPot(install) => install.honeypot_type.clone(),
            _ => "unknown".to_owned(),
        };
        let reason = match (command.pot_id(), unavailable) {
            (Some(_), Some(why)) => format!("{name} failed: this node cannot run pots: {why}"),
            (Some(_), None) => format!("{name} is not supported: this node does not run pots"),
            (None, _) => format!("{name} is not supported by this node"),
        };
        let mut messages = match command.pot_id() {
            Some(pot_id) => vec![Message::PotStatusUpdate(PotStatusUpdate {
                node_id: self.node_id,
                pot_id: pot_id.to_owned(),
                pot_type,
                status: PotStatus::Failed,
                message: Some(reason.clone()),
                command_id,
            })],
            // No pots are installed, so there is nothing to list.
            None if matches!(command, Command::GetInstalledPots) => Vec::new(),
            None => vec![Message::NodeEvent(NodeEvent {
                kind: NodeEventKind::Error,
                message: Some(reason.clone()),
            })],
        };
        let listed = matches!(command, Command::GetInstalledPots);
        messages.push(Message::CommandAnswer(CommandAnswer {
            node_id: self.node_id,
            command_id,
            command: name.to_owned(),
            pot_id: command.pot_id().map(str::to_owned),
            success: listed,
            message: Some(if listed {
                "no pots installed".into()
            } else {
                reason
            }),
            data: listed.then(|| serde_json::json!({"pots": []})),
        }));
        messages
    }

    /// Fits a message to what the Core speaks: without the `command_answers` extension,
    /// answers are not sent and command ids are left out.
    fn adapt(&self, message: Message) -> Option<Message> {
        if self
            .capabilities
            .iter()
            .any(|c| c == CAPABILITY_COMMAND_ANSWERS)
        {
            return Some(message);
        }
        match message {
            Message::CommandAnswer(_) => None,
            Message::PotStatusUpdate(mut update) => {
                update.command_id = None;
                Some(Message::PotStatusUpdate(update))
            }
            other => Some(other),
        }
    }

    /// After (re)registration: every pot's current status. Reports queued while the Core
    /// was away are stale and dropped; command answers among them still go out.
    async fn report_pots(
        &mut self,
        context: &UplinkContext,
        outbox: &mut mpsc::Receiver<Message>,
    ) -> Result<(), UplinkError> {
        let Some(pots) = &context.pots else {
            return Ok(());
        };
        let mut messages = pots.status_snapshot();
        while let Ok(queued) = outbox.try_recv() {
            if !matches!(queued, Message::PotStatusUpdate(_)) {
                messages.push(queued);
            }
        }
        let messages: Vec<Message> = messages.into_iter().filter_map(|m| self.adapt(m)).collect();
        self.write_messages(&messages).await
    }

    /// Reads until one envelope is complete. Malformed envelopes are counted and skipped.
    async fn next_message(&mut self, context: &UplinkContext) -> Result<Message, UplinkError> {
        let mut buffer = [0u8; READ_BUFFER_BYTES];
        loop {
            match self.decoder.next_envelope() {
                Ok(Some(envelope)) => return Ok(envelope.message),
                Ok(None) => {}
                Err(error) => {
                    context.metrics.core_message_rejected(error.kind());
                    if error.is_fatal() {
                        return Err(UplinkError::Lost {
                            reason: error.to_string(),
                        });
                    }
                    if let Some(suppressed) = context.log_limiter.allow() {
                        tracing::warn!(%error, suppressed, "refused an envelope from the core");
                    }
                    continue;
                }
            }
            let count = self
                .reader
                .read(&mut buffer)
                .await
                .map_err(|error| UplinkError::Lost {
                    reason: error.to_string(),
                })?;
            if count == 0 {
                return Err(UplinkError::Lost {
                    reason: "the core closed the connection".into(),
                });
            }
            self.decoder.push(&buffer[..count]);
        }
    }

    async fn write_messages(&mut self, messages: &[Message]) -> Result<(), UplinkError> {
        self.outgoing.clear();
        for message in messages {
            encode_envelope(message, &mut self.outgoing);
        }
        self.flush_outgoing().await
    }

    async fn flush_outgoing(&mut self) -> Result<(), UplinkError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&self.outgoing)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(UplinkError::Lost {
                reason: format!("writing to {}: {error}", self.address),
            }),
            Err(_) => Err(UplinkError::Timeout {
                address: self.address.clone(),
                what: "writing",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{SpoolFullPolicy, SpoolOptions};

    /// The position file is a FIFO here, so writing it blocks until someone reads it: on a
    /// single-threaded runtime an acknowledgement applied on the runtime's own thread would
    /// stop every other task, and this test's task could never read the FIFO.
    #[tokio::test(flavor = "current_thread")]
    async fn acknowledgements_touch_the_spool_files_off_the_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut writer, _) = Spool::open(SpoolOptions {
            directory: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 4096,
            full_policy: SpoolFullPolicy::Refuse,
        })
        .unwrap();
        let event = honeybee_protocol::IngestEvent {
            pot_id: "p".into(),
            pot_type: "cowrie".into(),
            event_type: "login".into(),
            timestamp: "2024-01-15T10:30:00Z".into(),
            data: honeybee_protocol::JsonObject::empty(),
        };
        assert_eq!(writer.append(&[event]).appended, 1);
        let seq = spool.durable_seq();
        let position_file = dir.path().join(crate::spool::ACKED_FILE);
        nix::unistd::mkfifo(&position_file, nix::sys::stat::Mode::S_IRWXU).unwrap();

        // If the runtime is stuck, this thread releases the writer after a deadline so the
        // test fails instead of hanging.
        let (stop_watchdog, watchdog_stopped) = std::sync::mpsc::channel::<()>();
        let watchdog_fifo = position_file.clone();
        let watchdog = std::thread::spawn(move || {
            let stuck = watchdog_stopped
                .recv_timeout(Duration::from_secs(30))
                .is_err();
            if stuck {
                let _ = std::fs::read(&watchdog_fifo);
            }
            stuck
        });

        let acknowledging = tokio::spawn({
            let spool = spool.clone();
            async move { acknowledge_in_spool(&spool, seq).await }
        });
        // The acknowledgement updates the index first, then writes the position file.
        while spool.acked_seq() != seq {
            tokio::task::yield_now().await;
        }
        stop_watchdog.send(()).ok();
        assert!(
            !watchdog.join().unwrap(),
            "the runtime thread was blocked by the spool's file writes"
        );
        let fifo = position_file.clone();
        let written = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written, format!("{seq}\n"));
        assert_eq!(acknowledging.await.unwrap(), 1);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
