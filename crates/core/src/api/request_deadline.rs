//! One deadline per API request, from its headers to its response (reading the body
//! included): a client trickling a body, or a request stuck behind a slow store, does not
//! hold its connection slot forever. Reading the headers has its own timeout in the
//! connection (`api.header_read_timeout`). A command request that asks to wait for the
//! node's answer (`?wait=SECONDS`) gets that wait on top: the wait is the operator's
//! choice and is bounded by the commands API.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::peer_log::PeerKey;

pub(super) async fn enforce_request_deadline(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(remote)| *remote);
    let path = request.uri().path().to_owned();
    let peer = PeerKey::of_request(request.extensions());
    let deadline = state.request_timeout + requested_wait(request.uri().query());
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.api_request_refused("request_timeout");
            if let Some(remote) = remote {
                if let Some(suppressed) = state.log_limiter.allow(&peer) {
                    tracing::warn!(%remote, path = %crate::peer_log::peer_text(&path), suppressed, "an API request did not complete within api.request_timeout");
                }
            }
            let mut response = ApiError::RequestTimeout(format!(
                "the request did not complete within api.request_timeout ({} s)",
                state.request_timeout.as_secs_f64()
            ))
            .into_response();
            // The request's body may be half read: the connection cannot carry another.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// The `wait` query parameter in seconds (as the commands API reads it), capped at its
/// largest accepted value; zero when absent or not a number (that request is refused by
/// its handler anyway).
fn requested_wait(query: Option<&str>) -> std::time::Duration {
    query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter_map(|pair| pair.strip_prefix("wait="))
        .filter_map(|value| value.parse::<f64>().ok())
        .find(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| {
            std::time::Duration::from_secs_f64(seconds.min(super::commands::MAX_WAIT_SECONDS))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_wait_extends_the_deadline_within_its_bound() {
        use std::time::Duration;
        assert_eq!(requested_wait(None), Duration::ZERO);
        assert_eq!(requested_wait(Some("wait=30")), Duration::from_secs(30));
        assert_eq!(
            requested_wait(Some("x=1&wait=2.5")),
            Duration::from_millis(2500)
        );
        assert_eq!(requested_wait(Some("wait=1e9")), Duration::from_secs(600));
        assert_eq!(requested_wait(Some("wait=NaN")), Duration::ZERO);
    }
}
