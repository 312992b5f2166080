//! The node port's listener: the shared accept loop with the node port's connection
//! limits, then per connection the TLS handshake (when configured) and the session, under
//! one deadline from accept to registration.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node_link::{ConnectionReader, ConnectionWriter, LinkContext, NodeLink};
use crate::peer_log::{report_refused_connection, PeerKey};
use honeybee_accept::{accept_until_shutdown, AcceptSettings, AtShutdown};
use honeybee_accept::{ConnectionLimiter, ConnectionPermit};

/// Accepts node connections until `shutdown` within `limiter`'s slots, then waits for
/// every session to end.
pub(crate) async fn run_node_listener(
    listener: TcpListener,
    context: Arc<LinkContext>,
    limiter: Arc<ConnectionLimiter>,
    shutdown: CancellationToken,
) {
    let settings = AcceptSettings {
        listener_name: "node",
        on_refused: report_refused_connection(
            "node",
            limiter.max_per_address(),
            context.metrics.clone(),
            context.log_limiter.clone(),
        ),
        limiter,
        at_shutdown: AtShutdown::CloseBacklog,
    };
    let sessions = accept_until_shutdown(listener, settings, shutdown.clone(), {
        let shutdown = shutdown.clone();
        move |stream, remote, permit| {
            serve_node_connection(stream, remote, permit, context.clone(), shutdown.clone())
        }
    })
    .await;
    sessions.wait().await;
}

/// One node connection: the TLS handshake (when configured) and the session, with one
/// deadline from accept to registration so a peer cannot spend it twice.
async fn serve_node_connection(
    stream: TcpStream,
    remote: SocketAddr,
    permit: ConnectionPermit,
    context: Arc<LinkContext>,
    shutdown: CancellationToken,
) {
    context.metrics.node_connections_accepted.increment();
    let _ = stream.set_nodelay(true);
    let registration_deadline = Instant::now() + context.handshake_timeout;
    let (reader, writer): (ConnectionReader, ConnectionWriter) = match &context.tls {
        None => {
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
        Some(acceptor) => {
            match tokio::time::timeout_at(registration_deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let (reader, writer) = tokio::io::split(tls);
                    (Box::new(reader), Box::new(writer))
                }
                outcome => {
                    context.metrics.registration_refused("tls_handshake");
                    let peer = PeerKey::Address(permit.address_group());
                    if let Some(suppressed) = context.log_limiter.allow(&peer) {
                        let reason = match outcome {
                            Ok(Err(error)) => error.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(%remote, reason, suppressed, "TLS handshake with a node failed");
                    }
                    return;
                }
            }
        }
    };
    NodeLink::new(writer, remote, permit.address_group(), context)
        .run(reader, registration_deadline, shutdown)
        .await;
    // The slot is held until the session is over.
    drop(permit);
}
