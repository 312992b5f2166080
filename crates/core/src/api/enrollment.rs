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

use super::integer_parameter::parse_unsigned_integer;
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

/// The body of `POST /api/v1/enrollment-tokens`; every field may be left out, none may be
/// `null`: the fields are not `Option`s, so serde refuses a `null` (400) as the OpenAPI
/// document says, instead of reading it as "the default".
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CreateTokenRequest {
    /// A label for the operator. Default `enrollment`.
    name: String,
    /// How many nodes may enroll with it. Default 1.
    uses: u32,
    /// Lifetime in seconds. Default 86400 (a day).
    ttl_seconds: u64,
}

impl Default for CreateTokenRequest {
    fn default() -> Self {
        CreateTokenRequest {
            name: "enrollment".into(),
            uses: 1,
            ttl_seconds: DEFAULT_TTL_SECONDS,
        }
    }
}

/// Reads the body of `POST /api/v1/enrollment-tokens`; an empty body means "all defaults".
fn parse_create_token_request(body: &[u8]) -> Result<CreateTokenRequest, ApiError> {
    let Some(first) = body.iter().find(|byte| !byte.is_ascii_whitespace()) else {
        return Ok(CreateTokenRequest::default());
    };
    // serde reads a struct from a JSON array too (`[]` would be "all defaults"); the
    // document says an object.
    if *first != b'{' {
        return Err(ApiError::BadRequest(format!(
            "invalid enrollment token request: expected a JSON object, got {}",
            String::from_utf8_lossy(&body[..body.len().min(64)])
        )));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid enrollment token request: {error}")))
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
    let request = parse_create_token_request(&body)?;
    let uses = request.uses;
    if uses == 0 || uses > MAX_USES {
        return Err(ApiError::BadRequest(format!(
            "invalid uses {uses}: expected 1 to {MAX_USES}"
        )));
    }
    let ttl_seconds = request.ttl_seconds;
    if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
        return Err(ApiError::BadRequest(format!(
            "invalid ttl_seconds {ttl_seconds}: expected 1 to {MAX_TTL_SECONDS}"
        )));
    }
    let name = request.name;
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
    let token_id = parse_unsigned_integer(&token_id).ok_or_else(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        match parse_create_token_request(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn left_out_fields_take_their_defaults() {
        for body in ["", "  \n", "{}"] {
            let request = parse_create_token_request(body.as_bytes()).unwrap();
            assert_eq!(
                (request.name.as_str(), request.uses, request.ttl_seconds),
                ("enrollment", 1, DEFAULT_TTL_SECONDS),
                "{body:?}"
            );
        }
        let request =
            parse_create_token_request(br#"{"name":"rack-2","uses":3,"ttl_seconds":60}"#).unwrap();
        assert_eq!(
            (request.name.as_str(), request.uses, request.ttl_seconds),
            ("rack-2", 3, 60)
        );
    }

    /// The OpenAPI document does not mark these fields nullable: `null` is refused, not
    /// read as "the default".
    #[test]
    fn null_fields_and_bodies_other_than_an_object_are_refused() {
        for field in ["name", "uses", "ttl_seconds"] {
            let message = refusal(&format!("{{\"{field}\": null}}"));
            assert!(message.contains("invalid type: null"), "{field}: {message}");
        }
        assert!(refusal(r#"{"colour": "red"}"#).contains("unknown field `colour`"));
        for not_an_object in ["[]", "[\"rack-2\", 3, 60]", "null", "7", "\"x\""] {
            assert!(
                refusal(not_an_object).contains("expected a JSON object"),
                "{not_an_object}"
            );
        }
        assert!(refusal(r#"{"uses": -1}"#).contains("invalid value: integer `-1`"));
    }
}
