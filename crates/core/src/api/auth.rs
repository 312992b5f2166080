//! Bearer-token authentication of the REST API: `GET` needs a `read` (or `admin`) token,
//! every other method (and anything about enrollment tokens) an `admin` token; `GET /health`
//! stays open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use honeybee_store::ApiRole;

use super::enrollment::ENROLLMENT_TOKENS_PATH;
use super::{ApiError, ApiState};
use crate::config::ApiAuth;
use crate::tokens::token_hash;

pub(super) async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.auth == ApiAuth::None || request.uri().path() == "/health" {
        return next.run(request).await;
    }
    // Enrollment tokens admit nodes: even listing them is for admins.
    let admin_only = request.uri().path().starts_with(ENROLLMENT_TOKENS_PATH);
    let needed = if !admin_only && matches!(*request.method(), Method::GET | Method::HEAD) {
        ApiRole::Read
    } else {
        ApiRole::Admin
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::Unauthorized(
            "missing API token: send Authorization: Bearer <token>".into(),
        )
        .into_response();
    };
    match state.store.api_token_role(token_hash(token)).await {
        Err(error) => ApiError::from(error).into_response(),
        Ok(None) => ApiError::Unauthorized("unknown API token".into()).into_response(),
        Ok(Some(role)) if role < needed => ApiError::Forbidden(format!(
            "this token's role is {}; {} {} needs {}",
            role.as_str(),
            request.method(),
            request.uri().path(),
            needed.as_str()
        ))
        .into_response(),
        Ok(Some(_)) => next.run(request).await,
    }
}
