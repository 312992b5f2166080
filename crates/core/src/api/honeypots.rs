//! `/api/v1/honeypots`: every pot of every node, as last reported.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use honeybee_protocol::format_timestamp;
use honeybee_store::PotRecord;
use serde::Serialize;

use super::{ApiError, ApiState};

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/honeypots", get(list_honeypots))
}

/// A pot as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct PotView {
    node_id: u64,
    pot_id: String,
    pot_type: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    updated_at: String,
}

impl From<PotRecord> for PotView {
    fn from(record: PotRecord) -> Self {
        PotView {
            node_id: record.node_id,
            pot_id: record.pot_id,
            pot_type: record.pot_type,
            status: record.state.as_str(),
            message: record.message,
            updated_at: format_timestamp(record.updated_at),
        }
    }
}

#[derive(Serialize)]
struct PotList {
    honeypots: Vec<PotView>,
}

async fn list_honeypots(State(state): State<Arc<ApiState>>) -> Result<Json<PotList>, ApiError> {
    let pots = state.store.list_pots(None).await?;
    Ok(Json(PotList {
        honeypots: pots.into_iter().map(PotView::from).collect(),
    }))
}
