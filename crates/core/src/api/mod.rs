//! The operator REST API (port 9002): one router per resource, one error type, JSON in and
//! out. Handlers translate store records into API views; they never see wire types.

mod auth;
mod commands;
mod enrollment;
mod error;
mod events;
mod honeypots;
mod host_check;
mod integer_parameter;
mod nodes;
mod request_deadline;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use honeybee_store::Store;
use serde_json::json;

pub(crate) use error::ApiError;
pub(crate) use host_check::HostPolicy;

use crate::commands::CommandTracker;
use crate::config::ApiAuth;
use crate::metrics::CoreMetrics;
use crate::peer_log::PeerLogLimiter;
use crate::sessions::SessionRegistry;

/// The contract of this API, served at `/api/v1/openapi.json`.
const OPENAPI_DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// Shared state of every handler.
pub(crate) struct ApiState {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionRegistry>,
    pub commands: Arc<CommandTracker>,
    pub auth: ApiAuth,
    pub metrics: Arc<CoreMetrics>,
    /// A connected node silent for longer than this is shown offline.
    pub offline_after: Duration,
    /// Which `Host` headers are served.
    pub host_policy: HostPolicy,
    /// The deadline of one request, body included.
    pub request_timeout: Duration,
    /// Lines about API clients, limited per client address.
    pub log_limiter: Arc<PeerLogLimiter>,
    /// `[api] page_max_bytes`: the most event data one events page holds.
    pub event_page_max_bytes: usize,
}

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(nodes::router())
        .merge(commands::router())
        .merge(honeypots::router())
        .merge(events::router())
        .merge(stats::router())
        .merge(enrollment::router())
        .fallback(not_found)
        // After every route is merged: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Outside authentication: a page rebinding its name to the Core learns nothing,
        // not even whether a token is valid.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_check::require_known_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_deadline::enforce_request_deadline,
        ))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.registry.render_prometheus(),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT,
    )
}

/// A known path with a method it does not serve: 405 with the JSON error every other
/// failure carries (axum keeps the `Allow` header listing the methods it does serve).
async fn method_not_allowed(method: Method, uri: Uri) -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": format!("method {method} not allowed on {}", uri.path())})),
    )
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no such endpoint: {}", uri.path())})),
    )
}
