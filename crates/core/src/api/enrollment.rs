//! `/api/v1/enrollment-tokens`: tokens that let new nodes enroll (create, list, revoke).
//! Admin only, even for `GET`. A token's secret is shown once, at creation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use honeybee_protocol::format_timestamp;
use honeybee_store::EnrollmentTokenRecord;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::tokens;

pub(super) const ENROLLMENT_TOKENS_PATH: &str = "/api/v1/enrollment-tokens";
/// Default lifetime of a token: a day, long enough to set a sensor up.
const DEFAULT_TTL_SECONDS: u64 = 86_400;
/// Longest lifetime accepted: a year. Longer-lived admission secrets should not exist.
const MAX_TTL_SECONDS: u64 = 366 * 86_400;
const MAX_USES: u32 = 100_000;

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route(ENROLLMENT_TOKENS_PATH, get(list_tokens).post(create_token))
        .route("/api/v1/enrollment-tokens/{token_id}", delete(revoke_token))
}

/// The body of `POST /api/v1/enrollment-tokens`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CreateTokenRequest {
    /// A label for the operator. Default `enrollment`.
    name: Option<String>,
    /// How many nodes may enroll with it. Default 1.
    uses: Option<u32>,
    /// Lifetime in seconds. Default 86400 (a day).
    ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TokenView {
    id: u64,
    name: String,
    uses_total: u32,
    uses_left: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    /// `usable`, `used_up`, `expired` or `revoked`.
    status: &'static str,
    /// The secret, only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn from_record(record: EnrollmentTokenRecord, now: DateTime<Utc>) -> Self {
        let status = if record.revoked_at.is_some() {
            "revoked"
        } else if record
            .expires_at
            .is_some_and(|expires_at| expires_at <= now)
        {
            "expired"
        } else if record.uses_left == 0 {
            "used_up"
        } else {
            "usable"
        };
        TokenView {
            id: record.id,
            name: record.name,
            uses_total: record.uses_total,
            uses_left: record.uses_left,
            expires_at: record.expires_at.map(format_timestamp),
            created_at: format_timestamp(record.created_at),
            revoked_at: record.revoked_at.map(format_timestamp),
            status,
            token: None,
        }
    }
}

async fn create_token(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    // An empty body means "all defaults".
    let request: CreateTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateTokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::BadRequest(format!("invalid enrollment token request: {error}"))
        })?
    };
    let uses = request.uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(ApiError::BadRequest(format!(
            "invalid uses {uses}: expected 1 to {MAX_USES}"
        )));
    }
    let ttl_seconds = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
        return Err(ApiError::BadRequest(format!(
            "invalid ttl_seconds {ttl_seconds}: expected 1 to {MAX_TTL_SECONDS}"
        )));
    }
    let name = request.name.unwrap_or_else(|| "enrollment".into());
    let now = Utc::now();
    let expires_at = now + chrono::Duration::seconds(ttl_seconds as i64);
    let created =
        tokens::create_enrollment_token(state.store.as_ref(), &name, uses, expires_at, now).await?;
    tracing::info!(token_id = created.id, name, uses, %expires_at, "enrollment token created");
    let mut view = TokenView::from_record(created.record, now);
    view.token = Some(created.token);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Serialize)]
struct TokenList {
    enrollment_tokens: Vec<TokenView>,
}

async fn list_tokens(State(state): State<Arc<ApiState>>) -> Result<Json<TokenList>, ApiError> {
    let now = Utc::now();
    let enrollment_tokens = state
        .store
        .list_enrollment_tokens()
        .await?
        .into_iter()
        .map(|record| TokenView::from_record(record, now))
        .collect();
    Ok(Json(TokenList { enrollment_tokens }))
}

async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Path(token_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let token_id: u64 = token_id.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid enrollment token id {token_id:?}: expected an unsigned integer"
        ))
    })?;
    if !state
        .store
        .revoke_enrollment_token(token_id, Utc::now())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "enrollment token {token_id} not found"
        )));
    }
    tracing::info!(token_id, "enrollment token revoked");
    Ok(StatusCode::NO_CONTENT)
}
