//! Serving the REST API's connections, plain or TLS: the shared accept loop (connection
//! caps in all and per address), a deadline for the TLS handshake, and hyper's header-read
//! timeout armed with a Tokio timer, so clients that trickle bytes or idle on keep-alive
//! connections give their slots back, and a write deadline under both TLS and HTTP
//! (`write_deadline.rs`), so clients that never read their responses give theirs back
//! too. The request deadline is a router layer (`api/request_deadline.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::metrics::CoreMetrics;
use crate::peer_log::{report_refused_connection, ConnectionGroup, PeerKey, PeerLogLimiter};
use crate::write_deadline::{is_write_timeout, ResponseStarts, WriteDeadlineIo};
use honeybee_accept::AddressGroup;
use honeybee_accept::{accept_until_shutdown, AcceptSettings, AtShutdown};
use honeybee_accept::{ConnectionLimiter, ConnectionPermit};

/// How long open API requests may run on after shutdown began. A client that never
/// finishes its request would otherwise hold the Core open forever.
const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Most bytes hyper buffers for one connection (headers must fit): hyper's default of
/// about 400 KiB times every open connection would let clients that send huge headers pin
/// hundreds of MiB; the API's requests have small headers and stream their bodies.
const API_CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// How the API's connections are served.
pub(crate) struct ApiServerSettings {
    /// Present when the API speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// For the TLS handshake, then for each request's headers (and keep-alive idling).
    pub header_read_timeout: Duration,
    /// How long one write to the client (a response, a TLS record) may stay blocked.
    pub write_timeout: Duration,
    pub limiter: Arc<ConnectionLimiter>,
    pub metrics: Arc<CoreMetrics>,
    pub log_limiter: Arc<PeerLogLimiter>,
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in progress finish
/// for a grace period.
pub(crate) async fn run_api_server(
    listener: TcpListener,
    router: Router,
    settings: ApiServerSettings,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let accept = AcceptSettings {
        listener_name: "api",
        limiter: settings.limiter.clone(),
        at_shutdown: AtShutdown::CloseBacklog,
        on_refused: report_refused_connection(
            "api",
            settings.limiter.max_per_address(),
            settings.metrics.clone(),
            settings.log_limiter.clone(),
        ),
    };
    let connections = accept_until_shutdown(listener, accept, shutdown.clone(), {
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        move |stream, remote, permit| {
            serve_api_connection(
                stream,
                remote,
                permit,
                router.clone(),
                settings.clone(),
                shutdown.clone(),
            )
        }
    })
    .await;
    // Each connection ends itself within the grace period; this only bounds the wait.
    if tokio::time::timeout(API_SHUTDOWN_GRACE * 2, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "API connections still open after the shutdown grace period were left behind"
        );
    }
}

async fn serve_api_connection(
    stream: TcpStream,
    remote: SocketAddr,
    permit: ConnectionPermit,
    router: Router,
    settings: Arc<ApiServerSettings>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let group = permit.address_group();
    // Below TLS, so TLS records (the handshake included) are bounded like responses; each
    // request handed to the service starts a new response's allowance.
    let response_starts = ResponseStarts::default();
    let stream = WriteDeadlineIo::new(stream, settings.write_timeout, response_starts.clone());
    let http = HttpConnection {
        remote,
        group,
        response_starts,
    };
    match &settings.tls {
        None => serve_http(stream, http, router, &settings, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => serve_http(tls, http, router, &settings, shutdown).await,
                Ok(Err(error)) if is_write_timeout(&error) => {
                    refuse_slow_client(&settings, remote, group, "write_timeout")
                }
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake on the API port failed")
                }
                Err(_) => refuse_slow_client(&settings, remote, group, "tls_handshake_timeout"),
            }
        }
    }
    // The slot is held until the connection is closed.
    drop(permit);
}

/// Who one HTTP connection serves, and where it reports each new response.
struct HttpConnection {
    remote: SocketAddr,
    group: AddressGroup,
    response_starts: ResponseStarts,
}

/// HTTP/1.1 on one connection (the API does not speak HTTP/2).
async fn serve_http<Io>(
    io: Io,
    connection: HttpConnection,
    router: Router,
    settings: &ApiServerSettings,
    shutdown: CancellationToken,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let HttpConnection {
        remote,
        group,
        response_starts,
    } = connection;
    // Handlers and layers may ask who is calling (the log lines about refused requests).
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        response_starts.response_started();
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(ConnectionGroup(group));
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper silently ignores its header-read timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(API_CONNECTION_BUFFER_BYTES);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(API_SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = served {
        if error.is_timeout() {
            refuse_slow_client(settings, remote, group, "header_read_timeout");
        } else if is_write_timeout(&error) {
            refuse_slow_client(settings, remote, group, "write_timeout");
        } else {
            tracing::debug!(%remote, %error, "API connection ended with an error");
        }
    }
}

/// A connection closed because its client was too slow: a metric and a limited line.
fn refuse_slow_client(
    settings: &ApiServerSettings,
    remote: SocketAddr,
    group: AddressGroup,
    reason: &'static str,
) {
    settings.metrics.connection_refused("api", reason);
    if let Some(suppressed) = settings.log_limiter.allow(&PeerKey::Address(group)) {
        tracing::info!(%remote, reason, suppressed, "closed an API connection whose client did not send its request or read its response in time");
    }
}
