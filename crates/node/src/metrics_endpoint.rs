//! `GET /metrics` on the node (`metrics.listen`): its counters in Prometheus text format,
//! for a scraper on the sensor or a test. Deliberately tiny (HTTP/1.1, one request per
//! connection, no keep-alive) so the node stays small; anything else gets 404 or 400.

use std::sync::Arc;
use std::time::Duration;

use honeybee_telemetry::MetricsRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request head larger than this is refused.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown`.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<MetricsRegistry>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let registry = registry.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await;
        });
    }
    tasks.close();
    tasks.wait().await;
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
    match (parts.next(), parts.next()) {
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
