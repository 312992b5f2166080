//! The one accept loop behind every listener — the Core's node port and REST API, the
//! node's ingest port and its `/metrics` — with the same limits: every connection takes a
//! slot of its listener's [`ConnectionLimiter`] before it is served, in all and per
//! [`AddressGroup`], and once shutdown begins nothing gets past those limits (what waits in
//! the backlog is either closed with the listener or served within the same slots,
//! [`AtShutdown`]).
//!
//! The loop itself only takes a slot and accepts: finding a local peer's owner reads the
//! kernel's socket tables (large on a sensor) on the blocking pool, in the connection's own
//! task, so a peer connecting in a loop cannot stall the accepting of everyone else.

mod address_group;
mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use address_group::AddressGroup;
pub use limits::{ConnectionLimiter, ConnectionPermit};

/// How long shutdown waits for one more connection from the backlog
/// ([`AtShutdown::ServeBacklogWithinLimits`]).
const BACKLOG_POLL: Duration = Duration::from_millis(20);
/// After a failed accept (usually out of file descriptors), the pause before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What happens to connections still waiting in the kernel's backlog when shutdown begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtShutdown {
    /// They are closed with the listener (the peer reconnects to the next run).
    CloseBacklog,
    /// Those that fit into free slots are served (a honeypot that wrote its lines just
    /// before the stop still delivers them); the rest are closed with the listener, so a
    /// flood queued in the backlog never gets past the limits because the process stops.
    ServeBacklogWithinLimits,
}

/// What the loop needs besides the listener.
pub struct AcceptSettings {
    /// Names the listener in log lines (`node`, `api`, `ingest`, `metrics`).
    pub listener_name: &'static str,
    pub limiter: Arc<ConnectionLimiter>,
    pub at_shutdown: AtShutdown,
    /// Told about each connection closed because its group held its share already (the
    /// listener's owner counts it and logs it at its own rate per peer).
    pub on_refused: Box<dyn Fn(SocketAddr, AddressGroup) + Send + Sync>,
}

/// Accepts connections until `shutdown` and runs `serve` for each admitted one in a task
/// of the returned tracker (closed: wait on it for the connections to end). The permit
/// handed to `serve` holds the connection's slot until it is dropped.
pub async fn accept_until_shutdown<Serve, Served>(
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
        // Biased: once shutdown began nothing more is accepted here, whatever is ready.
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            slot = settings.limiter.free_slot() => slot,
        };
        let (stream, remote) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = settings.listener_name, %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        admit(stream, remote, slot, &settings, &serve, &tasks);
    }
    if settings.at_shutdown == AtShutdown::ServeBacklogWithinLimits {
        while let Some(slot) = settings.limiter.try_free_slot() {
            let Ok(Ok((stream, remote))) =
                tokio::time::timeout(BACKLOG_POLL, listener.accept()).await
            else {
                break;
            };
            admit(stream, remote, slot, &settings, &serve, &tasks);
        }
    }
    tasks.close();
    tasks
}

/// Serves one accepted connection in a task of its own, unless its group holds its share.
fn admit<Serve, Served>(
    stream: TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
    settings: &Arc<AcceptSettings>,
    serve: &Arc<Serve>,
    tasks: &TaskTracker,
) where
    Serve: Fn(TcpStream, SocketAddr, ConnectionPermit) -> Served + Send + Sync + 'static,
    Served: Future<Output = ()> + Send + 'static,
{
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
            (settings.on_refused)(remote, group);
            // Dropping the stream closes it before anything was read or allocated for it.
            drop(stream);
            return;
        };
        serve(stream, remote, permit).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;
    use tokio::time::Instant;

    /// What a test listener saw: connections served (each held open until the test releases
    /// them) and refused.
    #[derive(Default)]
    struct Seen {
        served: AtomicUsize,
        refused: Mutex<Vec<AddressGroup>>,
    }

    async fn run_listener(
        listener: TcpListener,
        limiter: Arc<ConnectionLimiter>,
        at_shutdown: AtShutdown,
        shutdown: CancellationToken,
        release: CancellationToken,
    ) -> (Arc<Seen>, TaskTracker) {
        let seen = Arc::new(Seen::default());
        let settings = AcceptSettings {
            listener_name: "test",
            limiter,
            at_shutdown,
            on_refused: Box::new({
                let seen = seen.clone();
                move |_, group| seen.refused.lock().unwrap().push(group)
            }),
        };
        let tasks = accept_until_shutdown(listener, settings, shutdown, {
            let seen = seen.clone();
            move |stream, _remote, permit| {
                seen.served.fetch_add(1, Ordering::SeqCst);
                let release = release.clone();
                async move {
                    release.cancelled().await;
                    drop((stream, permit));
                }
            }
        })
        .await;
        (seen, tasks)
    }

    /// Connections completed by the kernel and waiting in the listener's backlog.
    async fn backlog(listener: &TcpListener, count: usize) -> Vec<TcpStream> {
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..count {
            clients.push(TcpStream::connect(address).await.unwrap());
        }
        clients
    }

    async fn closed_by_the_listener(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn at_shutdown_the_backlog_is_closed_or_served_only_within_the_limit() {
        for (at_shutdown, expected_served) in [
            (AtShutdown::CloseBacklog, 0),
            (AtShutdown::ServeBacklogWithinLimits, 2),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut waiting = backlog(&listener, 5).await;
            let shutdown = CancellationToken::new();
            shutdown.cancel();
            let release = CancellationToken::new();
            let (seen, tasks) = run_listener(
                listener,
                ConnectionLimiter::new(2, 10),
                at_shutdown,
                shutdown,
                release.clone(),
            )
            .await;
            // The listener is gone: whatever was not served is closed.
            for client in &mut waiting[expected_served..] {
                assert!(closed_by_the_listener(client).await, "{at_shutdown:?}");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.served.load(Ordering::SeqCst) < expected_served {
                assert!(Instant::now() < deadline, "{at_shutdown:?}: not served");
                tokio::task::yield_now().await;
            }
            release.cancel();
            tasks.wait().await;
            assert_eq!(
                seen.served.load(Ordering::SeqCst),
                expected_served,
                "{at_shutdown:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_group_over_its_share_is_refused_and_closed_and_others_still_get_in() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let release = CancellationToken::new();
        let limiter = ConnectionLimiter::new(10, 1);
        let running = tokio::spawn(run_listener(
            listener,
            limiter.clone(),
            AtShutdown::CloseBacklog,
            shutdown.clone(),
            release.clone(),
        ));
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let _first = TcpStream::connect(address).await.unwrap();
        // The first is admitted before the second connects (the two owner lookups run side
        // by side, and either could finish first).
        let deadline = Instant::now() + Duration::from_secs(10);
        while limiter.open_from(AddressGroup::LocalUser(uid)) == 0 {
            assert!(
                Instant::now() < deadline,
                "the first connection was not served"
            );
            tokio::task::yield_now().await;
        }
        let mut second = TcpStream::connect(address).await.unwrap();
        assert!(closed_by_the_listener(&mut second).await);
        shutdown.cancel();
        let (seen, tasks) = running.await.unwrap();
        release.cancel();
        tasks.wait().await;
        assert_eq!(seen.served.load(Ordering::SeqCst), 1);
        assert_eq!(
            *seen.refused.lock().unwrap(),
            vec![AddressGroup::LocalUser(uid)]
        );
    }
}
