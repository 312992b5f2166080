//! Bearer-token authentication of the REST API: `GET` needs a `read` (or `admin`) token,
//! every other method (and anything about enrollment tokens, and reading command answers)
//! an `admin` token; `GET /health` stays open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use honeybee_store::ApiRole;

use super::commands::COMMANDS_PATH;
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
    // Enrollment tokens admit nodes: even listing them is for admins. Command answers carry
    // pot configuration and install output: reading them is for admins too.
    let path = request.uri().path();
    let admin_only = under(path, ENROLLMENT_TOKENS_PATH) || under(path, COMMANDS_PATH);
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

/// Whether `path` is `prefix` or below it (`/api/v1/commands/7`, not `/api/v1/commandsx`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_only_paths_are_matched_by_whole_segments() {
        assert!(under("/api/v1/commands/7", COMMANDS_PATH));
        assert!(under("/api/v1/commands", COMMANDS_PATH));
        assert!(!under("/api/v1/commandsx", COMMANDS_PATH));
        assert!(under("/api/v1/enrollment-tokens/3", ENROLLMENT_TOKENS_PATH));
    }
}
