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
    /// The request is valid but too costly now (a query past the store's time limit): 503.
    Unavailable(String),
    /// A fault on the Core's side that is not the store's (e.g. a corrupt stored value).
    Internal(String),
    /// The store failed; logged with detail, answered generically.
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidCursor(_) => ApiError::BadRequest(error.to_string()),
            StoreError::QueryTimeLimit { .. } => ApiError::Unavailable(format!(
                "{error}; narrow it with since/until or a filter (the limit is [storage] query_time_limit)"
            )),
            StoreError::StatsTooLarge { .. } => ApiError::Unavailable(error.to_string()),
            other => ApiError::Store(other),
        }
    }
}

/// What a client is told of a fault on the Core's side: nothing of its detail (file paths,
/// SQL, stored values), only an id to find the detail in the Core's log.
fn internal_error(request_id: &str) -> (StatusCode, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error; the core's log has the details under request_id {request_id}"),
    )
}

/// A short random id that ties an answer to its log line.
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut request_id = None;
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message),
            ApiError::MisdirectedHost(message) => (StatusCode::MISDIRECTED_REQUEST, message),
            ApiError::RequestTimeout(message) => (StatusCode::REQUEST_TIMEOUT, message),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            ApiError::Internal(message) => {
                let id = request_id.insert(new_request_id());
                tracing::error!(request_id = %id, message, "api request failed");
                internal_error(id)
            }
            ApiError::Store(error) => {
                let id = request_id.insert(new_request_id());
                tracing::error!(request_id = %id, %error, "api request failed in the store");
                internal_error(id)
            }
        };
        let body = match request_id {
            Some(id) => json!({"error": message, "request_id": id}),
            None => json!({"error": message}),
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes, to read the log line back.
    #[derive(Clone, Default)]
    struct CapturedLog(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for CapturedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_store_failure_is_answered_without_its_detail_but_with_the_id_of_its_log_line() {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let error = StoreError::Checkpointer {
            path: "/var/lib/honeybee/secret-layout/honeybee.sqlite3".into(),
            source: std::io::Error::other("disk I/O error"),
        };
        let response =
            tracing::subscriber::with_default(subscriber, || ApiError::from(error).into_response());
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = body.to_string();
        assert!(
            !text.contains("secret-layout") && !text.contains("disk I/O"),
            "{text}"
        );
        let request_id = body["request_id"].as_str().unwrap();
        assert!(body["error"].as_str().unwrap().contains(request_id));
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains(request_id) && logged.contains("secret-layout"),
            "the detail is in the log under the id: {logged}"
        );
    }
}
