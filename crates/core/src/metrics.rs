//! The Core's metrics: handles into the shared registry, created once at start-up so hot
//! paths never look a metric up by name.

use std::sync::Arc;

use honeybee_byte_budget::ByteBudgetMetrics;
use honeybee_telemetry::{Counter, Gauge, MetricsRegistry};

pub(crate) struct CoreMetrics {
    pub registry: Arc<MetricsRegistry>,
    pub node_connections_accepted: Arc<Counter>,
    pub node_sessions_active: Arc<Gauge>,
    pub registrations_accepted: Arc<Counter>,
    pub events_received: Arc<Counter>,
    pub events_stored: Arc<Counter>,
    pub event_batches_stored: Arc<Counter>,
    pub event_queue_depth: Arc<Gauge>,
    /// `[storage] queue_max_bytes` in use, and how often a session waited for it.
    pub event_queue_budget: ByteBudgetMetrics,
    pub store_write_failures: Arc<Counter>,
    pub events_bad_timestamp: Arc<Counter>,
    pub events_duplicate: Arc<Counter>,
    pub event_acks_sent: Arc<Counter>,
    pub nodes_enrolled: Arc<Counter>,
    pub nodes_revoked: Arc<Counter>,
    /// Events and partitions dropped by retention or a purge, and failed drops.
    pub events_dropped: Arc<Counter>,
    pub partitions_dropped: Arc<Counter>,
    pub retention_failures: Arc<Counter>,
    /// Bytes the event files took after the last retention check.
    pub event_store_bytes: Arc<Gauge>,
}

impl CoreMetrics {
    pub fn new(registry: Arc<MetricsRegistry>) -> Self {
        CoreMetrics {
            node_connections_accepted: registry.counter(
                "honeybee_core_node_connections_total",
                "TCP connections accepted on the node port.",
                &[],
            ),
            node_sessions_active: registry.gauge(
                "honeybee_core_node_sessions_active",
                "Registered node sessions currently connected.",
                &[],
            ),
            registrations_accepted: registry.counter(
                "honeybee_core_registrations_accepted_total",
                "Node registrations accepted.",
                &[],
            ),
            events_received: registry.counter(
                "honeybee_core_events_received_total",
                "PotEvents received from nodes and queued for storage.",
                &[],
            ),
            events_stored: registry.counter(
                "honeybee_core_events_stored_total",
                "Events committed to the store.",
                &[],
            ),
            event_batches_stored: registry.counter(
                "honeybee_core_event_batches_stored_total",
                "Event batches (transactions) committed to the store.",
                &[],
            ),
            event_queue_depth: registry.gauge(
                "honeybee_core_event_queue_depth",
                "Events waiting for the store writer.",
                &[],
            ),
            event_queue_budget: ByteBudgetMetrics {
                bytes_held: registry.gauge(
                    "honeybee_core_event_queue_bytes",
                    "Bytes of events queued or being committed, against [storage] queue_max_bytes.",
                    &[],
                ),
                producer_waits: registry.counter(
                    "honeybee_core_event_queue_byte_waits_total",
                    "Times a node session stopped reading because [storage] queue_max_bytes was used up (backpressure).",
                    &[],
                ),
            },
            events_dropped: registry.counter(
                "honeybee_core_events_dropped_total",
                "Events deleted by retention ([retention] max_age, max_disk_bytes) or a purge (DELETE /api/v1/events).",
                &[],
            ),
            partitions_dropped: registry.counter(
                "honeybee_core_event_partitions_dropped_total",
                "Event partitions deleted by retention or a purge.",
                &[],
            ),
            retention_failures: registry.counter(
                "honeybee_core_retention_failures_total",
                "Retention checks or purges that failed (the log says why; the next check tries again).",
                &[],
            ),
            event_store_bytes: registry.gauge(
                "honeybee_core_event_store_bytes",
                "Bytes the event files took at the last retention check.",
                &[],
            ),
            store_write_failures: registry.counter(
                "honeybee_core_store_write_failures_total",
                "Failed attempts to commit an event batch (the batch is retried).",
                &[],
            ),
            events_bad_timestamp: registry.counter(
                "honeybee_core_events_bad_timestamp_total",
                "PotEvents whose timestamp could not be parsed; stored with the receive time.",
                &[],
            ),
            events_duplicate: registry.counter(
                "honeybee_core_events_duplicate_total",
                "Events a node sent again that were already stored (skipped).",
                &[],
            ),
            event_acks_sent: registry.counter(
                "honeybee_core_event_acks_sent_total",
                "EventAck messages sent to nodes.",
                &[],
            ),
            nodes_enrolled: registry.counter(
                "honeybee_core_nodes_enrolled_total",
                "Nodes that enrolled and received a TOTP secret.",
                &[],
            ),
            nodes_revoked: registry.counter(
                "honeybee_core_nodes_revoked_total",
                "Node revocations by an operator.",
                &[],
            ),
            registry,
        }
    }

    /// Counts a message or envelope the Core refused, by reason.
    pub fn rejected(&self, reason: &str) {
        self.registry
            .counter(
                "honeybee_core_messages_rejected_total",
                "Node messages or envelopes refused, by reason.",
                &[("reason", reason)],
            )
            .increment();
    }

    /// Counts a registration the Core refused, by reason.
    pub fn registration_refused(&self, reason: &str) {
        self.registry
            .counter(
                "honeybee_core_registrations_refused_total",
                "Node registrations refused, by reason.",
                &[("reason", reason)],
            )
            .increment();
    }

    /// Counts a NodeEvent by its type.
    pub fn node_event(&self, kind: &str) {
        self.registry
            .counter(
                "honeybee_core_node_events_total",
                "NodeEvents received, by type.",
                &[("type", kind)],
            )
            .increment();
    }

    /// Counts a connection closed at once by a connection limit, by listener and reason.
    pub fn connection_refused(&self, port: &str, reason: &str) {
        self.registry
            .counter(
                "honeybee_core_connections_refused_total",
                "Connections closed when accepted (a connection limit), by port and reason.",
                &[("port", port), ("reason", reason)],
            )
            .increment();
    }

    /// Counts an API request refused before it reached a handler, by reason.
    pub fn api_request_refused(&self, reason: &str) {
        self.registry
            .counter(
                "honeybee_core_api_requests_refused_total",
                "REST API requests refused before any handler ran (host check, timeout), by reason.",
                &[("reason", reason)],
            )
            .increment();
    }
}
