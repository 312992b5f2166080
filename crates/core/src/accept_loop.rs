//! The one accept loop behind the node port and the REST API: every connection takes a
//! slot of its listener's [`ConnectionLimiter`] before it is served, in all and per
//! address (a local peer: per unix user, `connection_limits.rs`), and nothing is accepted
//! once shutdown began (what still waits in the backlog is closed with the listener, never
//! served past the limits).
//!
//! The loop itself only takes a slot and accepts: finding a local peer's owner reads the
//! kernel's socket tables (large on a sensor) on the blocking pool, in the connection's own
//! task, so a pot connecting in a loop cannot stall the accepting of everyone else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection_limits::{AddressGroup, ConnectionLimiter, ConnectionPermit};
use crate::metrics::CoreMetrics;
use crate::peer_log::{PeerKey, PeerLogLimiter};

/// What the loop needs besides the listener.
pub(crate) struct AcceptSettings {
    /// `node` or `api`: the metric label and log field naming the listener.
    pub port_name: &'static str,
    pub limiter: Arc<ConnectionLimiter>,
    /// For the refusal log line, which names the limit.
    pub max_per_address: usize,
    pub metrics: Arc<CoreMetrics>,
    pub log_limiter: Arc<PeerLogLimiter>,
}

/// Accepts connections until `shutdown` and runs `serve` for each admitted one in a task
/// of the returned tracker (closed: wait on it for the connections to end). The permit
/// handed to `serve` holds the connection's slot until it is dropped.
pub(crate) async fn accept_until_shutdown<Serve, Served>(
    listener: TcpListener,
    settings: AcceptSettings,
    shutdown: CancellationToken,
    serve: Serve,
) -> TaskTracker
where
    Serve: Fn(TcpStream, SocketAddr, ConnectionPermit) -> Served + Send + Sync + 'static,
    Served: Future<Output = ()> + Send + 'static,
{
    let settings = Arc::new(settings);
    let serve = Arc::new(serve);
    let tasks = TaskTracker::new();
    loop {
        // The slot first: a full listener leaves new connections in the backlog.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = settings.limiter.free_slot() => slot,
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(port = settings.port_name, %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let settings = settings.clone();
        let serve = serve.clone();
        tasks.spawn(async move {
            // A local peer is grouped by the owner of its socket, looked up once, before
            // anything is read from the connection (a peer that closed already is unknown).
            let group = match stream.local_addr() {
                Ok(local) => AddressGroup::of_connection(remote, local).await,
                Err(_) => AddressGroup::of(remote.ip()),
            };
            let Some(permit) = settings.limiter.admit(slot, group) else {
                refuse_over_address_limit(&settings, remote, group);
                // Dropping the stream closes it before anything was read or allocated for it.
                drop(stream);
                return;
            };
            serve(stream, remote, permit).await;
        });
    }
    tasks.close();
    tasks
}

fn refuse_over_address_limit(settings: &AcceptSettings, remote: SocketAddr, group: AddressGroup) {
    settings
        .metrics
        .connection_refused(settings.port_name, "per_address_limit");
    if let Some(suppressed) = settings.log_limiter.allow(&PeerKey::Address(group)) {
        tracing::warn!(
            port = settings.port_name,
            %remote,
            address_group = %group,
            limit = settings.max_per_address,
            suppressed,
            "refused a connection: this address already holds its share of connections"
        );
    }
}
