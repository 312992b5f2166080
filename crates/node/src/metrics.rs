//! The Node's metrics: handles into the shared registry, created once at start-up.

use std::sync::Arc;

use honeybee_byte_budget::ByteBudgetMetrics;
use honeybee_telemetry::{Counter, Gauge, MetricsRegistry};

pub(crate) struct NodeMetrics {
    pub registry: Arc<MetricsRegistry>,
    pub ingest_connections: Arc<Counter>,
    pub ingest_connections_active: Arc<Gauge>,
    pub events_accepted: Arc<Counter>,
    pub events_forwarded: Arc<Counter>,
    pub core_connections: Arc<Counter>,
    pub core_connection_failures: Arc<Counter>,
    pub commands_received: Arc<Counter>,
    pub events_too_large: Arc<Counter>,
    pub lines_rejected: Arc<Counter>,
    pub ingest_idle_closed: Arc<Counter>,
    pub ingest_sender_limit_closed: Arc<Counter>,
    pub pot_processes_survived: Arc<Counter>,
    pub ingest_events_delayed: Arc<Counter>,
    /// `ingest.queue_max_bytes` in use, and how often a connection waited for it.
    pub ingest_queue_budget: ByteBudgetMetrics,
    pub ingest_pot_claims_overridden: Arc<Counter>,
    pub ingest_pot_claims_refused: Arc<Counter>,
    pub spool_appended: Arc<Counter>,
    pub spool_syncs: Arc<Counter>,
    pub spool_refused: Arc<Counter>,
    pub spool_dropped: Arc<Counter>,
    pub spool_size_bytes: Arc<Gauge>,
    pub spool_unreadable: Arc<Counter>,
    pub events_acknowledged: Arc<Counter>,
}

impl NodeMetrics {
    pub fn new(registry: Arc<MetricsRegistry>) -> Self {
        NodeMetrics {
            spool_appended: registry.counter(
                "honeybee_node_spool_appended_total",
                "Events written durably to the spool (accepted).",
                &[],
            ),
            spool_syncs: registry.counter(
                "honeybee_node_spool_syncs_total",
                "Group commits of the spool: appends that ended in an fsync (see spool.sync_interval_ms).",
                &[],
            ),
            spool_refused: registry.counter(
                "honeybee_node_spool_refused_total",
                "Events refused because the spool was full (or its write failed).",
                &[],
            ),
            spool_dropped: registry.counter(
                "honeybee_node_spool_dropped_total",
                "Unacknowledged events deleted to make room (policy drop_oldest).",
                &[],
            ),
            spool_size_bytes: registry.gauge(
                "honeybee_node_spool_size_bytes",
                "Bytes of spool segments on disk.",
                &[],
            ),
            spool_unreadable: registry.counter(
                "honeybee_node_spool_unreadable_total",
                "Spooled events skipped because their record could not be read as an event.",
                &[],
            ),
            events_acknowledged: registry.counter(
                "honeybee_node_events_acknowledged_total",
                "Events the Core acknowledged as stored.",
                &[],
            ),
            ingest_connections: registry.counter(
                "honeybee_node_ingest_connections_total",
                "Honeypot connections accepted on the ingest port.",
                &[],
            ),
            ingest_connections_active: registry.gauge(
                "honeybee_node_ingest_connections_active",
                "Honeypot connections currently open.",
                &[],
            ),
            events_accepted: registry.counter(
                "honeybee_node_events_accepted_total",
                "Ingest lines accepted and queued for the Core.",
                &[],
            ),
            events_forwarded: registry.counter(
                "honeybee_node_events_forwarded_total",
                "PotEvents written to the Core.",
                &[],
            ),
            core_connections: registry.counter(
                "honeybee_node_core_sessions_total",
                "Sessions with the Core that were accepted.",
                &[],
            ),
            core_connection_failures: registry.counter(
                "honeybee_node_core_connection_failures_total",
                "Attempts to reach or register with the Core that failed.",
                &[],
            ),
            commands_received: registry.counter(
                "honeybee_node_commands_received_total",
                "Commands received from the Core.",
                &[],
            ),
            events_too_large: registry.counter(
                "honeybee_node_events_too_large_total",
                "Events dropped because their envelope exceeds server.max_envelope_bytes.",
                &[],
            ),
            ingest_idle_closed: registry.counter(
                "honeybee_node_ingest_idle_closed_total",
                "Honeypot connections closed after ingest.idle_timeout of silence.",
                &[],
            ),
            pot_processes_survived: registry.counter(
                "honeybee_node_pot_processes_survived_total",
                "Pot stops, restarts, uninstalls and starts that failed because processes of the pot's user were still running 10 s after SIGKILL.",
                &[],
            ),
            ingest_sender_limit_closed: registry.counter(
                "honeybee_node_ingest_sender_limit_closed_total",
                "Honeypot connections closed at once because their sender (the unix user owning the socket, else the address) held ingest.max_connections_per_sender already.",
                &[],
            ),
            ingest_events_delayed: registry.counter(
                "honeybee_node_ingest_events_delayed_total",
                "Events held back because their pot (or, for senders that are not pots of this node, their connection) exceeded ingest.max_events_per_second.",
                &[],
            ),
            ingest_queue_budget: ByteBudgetMetrics {
                bytes_held: registry.gauge(
                    "honeybee_node_ingest_queue_bytes",
                    "Bytes of events queued for the spool or being written, against ingest.queue_max_bytes.",
                    &[],
                ),
                producer_waits: registry.counter(
                    "honeybee_node_ingest_queue_byte_waits_total",
                    "Times a honeypot connection stopped being read because ingest.queue_max_bytes was used up (backpressure).",
                    &[],
                ),
            },
            ingest_pot_claims_overridden: registry.counter(
                "honeybee_node_ingest_pot_claims_overridden_total",
                "Events from a pot the node started that named another pot id or type; stamped with the sender's own.",
                &[],
            ),
            ingest_pot_claims_refused: registry.counter(
                "honeybee_node_ingest_pot_claims_refused_total",
                "Events dropped because they named a pot this node runs under its own user but came from another sender.",
                &[],
            ),
            lines_rejected: registry.counter(
                "honeybee_node_ingest_lines_rejected_all_total",
                "Ingest lines rejected, all reasons together.",
                &[],
            ),
            registry,
        }
    }

    /// Counts an ingest line rejected, by reason.
    pub fn line_rejected(&self, reason: &str) {
        self.lines_rejected.increment();
        self.registry
            .counter(
                "honeybee_node_ingest_lines_rejected_total",
                "Ingest lines rejected, by reason.",
                &[("reason", reason)],
            )
            .increment();
    }

    /// Counts a message from the Core that could not be used, by reason.
    pub fn core_message_rejected(&self, reason: &str) {
        self.registry
            .counter(
                "honeybee_node_core_messages_rejected_total",
                "Messages from the Core refused, by reason.",
                &[("reason", reason)],
            )
            .increment();
    }

    /// Counts a Core this node refused to register with, by reason (`impostor_core`: a
    /// plaintext local Core whose socket another user owns; `unverified_core`: its owner
    /// could not be found; `unrequested_totp_key`: a new secret for a coded registration).
    pub fn core_refused(&self, reason: &str) {
        self.registry
            .counter(
                "honeybee_node_cores_refused_total",
                "Cores this node refused to register with, by reason.",
                &[("reason", reason)],
            )
            .increment();
    }
}
