//! `/api/v1/nodes`: the nodes this Core knows, with their connection state and pots.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use honeybee_protocol::format_timestamp;
use honeybee_store::NodeRecord;
use serde::Serialize;

use super::honeypots::PotView;
use super::integer_parameter::parse_unsigned_integer;
use super::{ApiError, ApiState};

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{node_id}", get(get_node))
        .route("/api/v1/nodes/{node_id}/revoke", post(revoke_node))
}

/// A node as the API shows it.
#[derive(Debug, Serialize)]
struct NodeView {
    node_id: u64,
    node_name: String,
    /// The last reported status while the node is online, `Offline` otherwise.
    status: &'static str,
    node_type: &'static str,
    /// Connected and heard from within the heartbeat allowance.
    online: bool,
    /// A Core holds a connection from the node (it may still be silent).
    connected: bool,
    /// Revoked by an operator: refused at every registration.
    revoked: bool,
    /// The last status the node reported, even when it is offline now.
    reported_status: &'static str,
    address: String,
    port: u16,
    remote_address: String,
    first_seen: String,
    last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    honeypots: Option<Vec<PotView>>,
}

impl NodeView {
    fn from_record(record: NodeRecord, state: &ApiState) -> Self {
        let silent_for = Utc::now()
            .signed_duration_since(record.last_seen)
            .to_std()
            .unwrap_or_default();
        let online = record.connected && silent_for <= state.offline_after;
        NodeView {
            node_id: record.node_id,
            node_name: record.name,
            status: if online {
                record.reported_state.as_str()
            } else {
                "Offline"
            },
            node_type: record.kind.as_str(),
            online,
            connected: record.connected,
            revoked: record.revoked,
            reported_status: record.reported_state.as_str(),
            address: record.address,
            port: record.port,
            remote_address: record.remote_address,
            first_seen: format_timestamp(record.first_seen),
            last_seen: format_timestamp(record.last_seen),
            honeypots: None,
        }
    }
}

#[derive(Serialize)]
struct NodeList {
    nodes: Vec<NodeView>,
}

async fn list_nodes(State(state): State<Arc<ApiState>>) -> Result<Json<NodeList>, ApiError> {
    let records = state.store.list_nodes().await?;
    let nodes = records
        .into_iter()
        .map(|record| NodeView::from_record(record, &state))
        .collect();
    Ok(Json(NodeList { nodes }))
}

async fn get_node(
    State(state): State<Arc<ApiState>>,
    Path(node_id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node_id = parse_node_id(&node_id)?;
    let record = state
        .store
        .get_node(node_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {node_id} not found")))?;
    let pots = state.store.list_pots(Some(node_id)).await?;
    let mut view = NodeView::from_record(record, &state);
    view.honeypots = Some(pots.into_iter().map(PotView::from).collect());
    Ok(Json(view))
}

/// The answer to a revocation.
#[derive(Debug, Serialize)]
struct Revocation {
    node_id: u64,
    revoked_at: String,
    /// Whether this Core held a connection of the node and closed it.
    disconnected: bool,
}

/// Revokes a node: its connection is closed at once and every later registration refused.
async fn revoke_node(
    State(state): State<Arc<ApiState>>,
    Path(node_id): Path<String>,
) -> Result<Json<Revocation>, ApiError> {
    let node_id = parse_node_id(&node_id)?;
    let known = state.store.get_node(node_id).await?.is_some()
        || state.store.node_credential(node_id).await?.is_some();
    if !known {
        return Err(ApiError::NotFound(format!("node {node_id} not found")));
    }
    let revoked_at = state.store.revoke_node(node_id, Utc::now()).await?;
    let disconnected = state.sessions.revoke(node_id);
    state.metrics.nodes_revoked.increment();
    tracing::warn!(node_id, disconnected, "node revoked by an operator");
    Ok(Json(Revocation {
        node_id,
        revoked_at: format_timestamp(revoked_at),
        disconnected,
    }))
}

pub(super) fn parse_node_id(text: &str) -> Result<u64, ApiError> {
    parse_unsigned_integer(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid node id {text:?}: expected an unsigned integer"
        ))
    })
}
