//! The one error type of the API: every failure becomes `{"error": "..."}` with a status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use honeybee_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request is wrong; the message says which parameter and value.
    BadRequest(String),
    NotFound(String),
    /// No token, or an unknown one.
    Unauthorized(String),
    /// A token whose role does not allow the request.
    Forbidden(String),
    /// The `Host` header names a host this API does not serve (421).
    MisdirectedHost(String),
    /// The request did not complete within `api.request_timeout` (408).
    RequestTimeout(String),
    /// The request is valid but cannot be carried out now (node offline, queue full).
    Conflict(String),
    /// A fault on the Core's side that is not the store's (e.g. a corrupt stored value).
    Internal(String),
    /// The store failed; logged with detail, answered generically.
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidCursor(_) => ApiError::BadRequest(error.to_string()),
            other => ApiError::Store(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message),
            ApiError::MisdirectedHost(message) => (StatusCode::MISDIRECTED_REQUEST, message),
            ApiError::RequestTimeout(message) => (StatusCode::REQUEST_TIMEOUT, message),
            ApiError::Internal(message) => {
                tracing::error!(message, "api request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {message}"),
                )
            }
            ApiError::Store(error) => {
                tracing::error!(%error, "api request failed in the store");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {error}"),
                )
            }
        };
        (status, Json(json!({"error": message}))).into_response()
    }
}
