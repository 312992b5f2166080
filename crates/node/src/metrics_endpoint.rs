//! `GET /metrics` on the node (`metrics.listen`): its counters in Prometheus text format,
//! for a scraper on the sensor or a test. Deliberately tiny (HTTP/1.1, one request per
//! connection, no keep-alive) so the node stays small; anything else gets 404 or 400.

use std::sync::Arc;
use std::time::Duration;

use honeybee_accept::{accept_until_shutdown, AcceptSettings, AtShutdown, ConnectionLimiter};
use honeybee_telemetry::{LogRateLimiter, MetricsRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A request head larger than this is refused.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog. A scraper needs one.
const MAX_CONNECTIONS: usize = 16;
/// Connections one sender (a local unix user, a remote address) may hold: a pot's user
/// keeping silent connections open cannot shut the scraper out.
const MAX_CONNECTIONS_PER_SENDER: usize = 4;

/// Serves until `shutdown`, on the shared accept loop with its limits.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<MetricsRegistry>,
    shutdown: CancellationToken,
) {
    let refused = registry.counter(
        "honeybee_node_metrics_connections_refused_total",
        "Connections to the metrics endpoint closed at once: their sender held its share.",
        &[],
    );
    let log_limiter = LogRateLimiter::default();
    let settings = AcceptSettings {
        listener_name: "metrics",
        limiter: ConnectionLimiter::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SENDER),
        at_shutdown: AtShutdown::CloseBacklog,
        on_refused: Box::new(move |remote, group| {
            refused.increment();
            if let Some(suppressed) = log_limiter.allow() {
                tracing::warn!(%remote, sender = %group, limit = MAX_CONNECTIONS_PER_SENDER, suppressed, "closed a metrics connection: its sender holds its share already");
            }
        }),
    };
    let connections =
        accept_until_shutdown(listener, settings, shutdown, move |stream, _, permit| {
            let registry = registry.clone();
            async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await;
                drop(permit);
            }
        })
        .await;
    connections.wait().await;
}

async fn answer(mut stream: TcpStream, registry: &MetricsRegistry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > MAX_REQUEST_BYTES {
            return respond(&mut stream, "400 Bad Request", "request head too large\n").await;
        }
    }
    let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&byte| byte == b' ');
    // Scrapers may add a query (`/metrics?format=…`); it selects nothing here.
    let path = |target: &[u8]| {
        target
            .split(|&byte| byte == b'?')
            .next()
            .map(<[u8]>::to_vec)
    };
    match (parts.next(), parts.next().and_then(path).as_deref()) {
        (Some(b"GET"), Some(b"/metrics")) => {
            respond(&mut stream, "200 OK", &registry.render_prometheus()).await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "only GET /metrics is served\n",
            )
            .await
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: std::net::SocketAddr, target: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_are_served_with_a_query_and_silent_clients_do_not_shut_scrapers_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let registry = MetricsRegistry::new();
        registry.counter("honeybee_node_test_total", "a test counter", &[]);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(serve_metrics(listener, registry.clone(), shutdown.clone()));

        // A sender holding its share of silent connections gets no more: one over the share
        // is closed at once and counted.
        let mut silent = Vec::new();
        for _ in 0..=MAX_CONNECTIONS_PER_SENDER {
            silent.push(TcpStream::connect(address).await.unwrap());
        }
        let refused = registry.counter("honeybee_node_metrics_connections_refused_total", "", &[]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while refused.get() < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no connection over the share was refused"
            );
            tokio::task::yield_now().await;
        }
        // Once they go the sender is served again (a scraper retries, as Prometheus does
        // at its next interval, while the slots are being given back).
        silent.clear();
        let response = loop {
            let response = get(address, "/metrics?format=text").await;
            if response.starts_with("HTTP/1.1 200") {
                break response;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scraper was not served: {response}"
            );
            tokio::task::yield_now().await;
        };
        assert!(response.contains("honeybee_node_test_total"), "{response}");
        assert!(get(address, "/other").await.starts_with("HTTP/1.1 404"));
        assert_eq!(
            refused.get(),
            1,
            "no connection was refused under its share"
        );
        shutdown.cancel();
        serving.await.unwrap();
    }
}
