//! The `Host` check of the REST API. A web page an operator opens can make the browser
//! send requests to `127.0.0.1` under the page's own name (DNS rebinding); the browser
//! then lets the page read the answers. Refusing every `Host` that is not a loopback name
//! (or a name the operator listed, e.g. a reverse proxy's) keeps such pages out.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::peer_log::{peer_text, PeerKey};

/// Which `Host` headers the API answers.
#[derive(Debug, Clone)]
pub(crate) struct HostPolicy {
    /// Off when the API listens beyond loopback and no names were configured: it cannot
    /// know every name it is reached by, and rebinding to a remote address gains nothing a
    /// page could not do directly.
    enforced: bool,
    /// `api.allowed_hosts`, lowercased, without a trailing dot.
    allowed_names: Vec<String>,
}

impl HostPolicy {
    pub fn new(api_is_loopback: bool, allowed_hosts: &[String]) -> Self {
        HostPolicy {
            enforced: api_is_loopback || !allowed_hosts.is_empty(),
            allowed_names: allowed_hosts
                .iter()
                .map(|name| normalise_name(name))
                .collect(),
        }
    }

    /// Whether a request with this `Host` header value may be served.
    pub fn allows(&self, host_header: Option<&str>) -> bool {
        if !self.enforced {
            return true;
        }
        // HTTP/1.1 requires Host; a browser always sends one.
        let Some(value) = host_header else {
            return false;
        };
        let name = normalise_name(strip_port(value.trim()));
        is_loopback_name(&name) || self.allowed_names.contains(&name)
    }
}

/// `name:port` → `name`, `[v6]:port` → `[v6]`; a bare IPv6 address is kept whole.
fn strip_port(value: &str) -> &str {
    if value.starts_with('[') {
        return match value.find(']') {
            Some(end) => &value[..=end],
            None => value,
        };
    }
    match value.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => value,
    }
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(name: &str) -> bool {
    if name == "localhost" {
        return true;
    }
    let address = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    address
        .parse::<IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

/// Refuses requests whose `Host` the policy does not allow, before authentication.
pub(super) async fn require_known_host(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    if state.host_policy.allows(host.as_deref()) {
        return next.run(request).await;
    }
    state.metrics.api_request_refused("host_not_allowed");
    let shown = peer_text(host.as_deref().unwrap_or("(none)")).into_owned();
    if let Some(ConnectInfo(remote)) = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
    {
        if let Some(suppressed) = state
            .log_limiter
            .allow(&PeerKey::of_request(request.extensions()))
        {
            tracing::warn!(%remote, host = %shown, suppressed, "refused an API request for a host name this API does not serve (DNS rebinding?)");
        }
    }
    ApiError::MisdirectedHost(format!(
        "this API answers requests for localhost, 127.0.0.1 or [::1] only, not for host {shown:?}; a reverse proxy's name goes into api.allowed_hosts"
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_and_others_do_not() {
        let policy = HostPolicy::new(true, &["Api.Example.org".into()]);
        for host in [
            "localhost",
            "LOCALHOST:9002",
            "localhost.",
            "127.0.0.1:9002",
            "127.8.9.10",
            "[::1]:9002",
            "[::1]",
            "api.example.org:443",
        ] {
            assert!(policy.allows(Some(host)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9002",
            "localhost.evil.example",
            "10.0.0.1:9002",
            "[::2]:9002",
            "",
        ] {
            assert!(!policy.allows(Some(host)), "{host}");
        }
        assert!(!policy.allows(None));
    }

    #[test]
    fn a_public_api_without_names_checks_nothing() {
        assert!(HostPolicy::new(false, &[]).allows(Some("anything.example")));
        assert!(!HostPolicy::new(false, &["api.example.org".into()]).allows(Some("x.example")));
    }
}
