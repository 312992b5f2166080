//! Slow peers over TLS: a node that spends its registration time on a slow TLS handshake
//! does not get the time again afterwards, and the TLS API closes stalled handshakes and
//! clients trickling their headers while serving everyone else.

mod support;

use std::time::Duration;

use support::{connect_from, tls_handshake, TestCore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Reads until the peer closes `stream`; panics when it is still open at `deadline`.
async fn expect_closed_by<S: AsyncRead + Unpin>(stream: &mut S, deadline: Instant, what: &str) {
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!("{what}: still open at the deadline"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn the_tls_handshake_and_registration_share_one_deadline() {
    let core = TestCore::start(|config| {
        config.tls.enabled = true;
        config.server.handshake_timeout = 3.0;
    })
    .await;
    let stream = connect_from("127.0.0.2", core.node_address).await;
    let connected_at = Instant::now();
    // The attacker spends two of its three seconds before even starting the handshake,
    // then registers never. One deadline closes it three seconds after accept; a deadline
    // restarted after the handshake would keep it until five.
    tokio::time::sleep_until(connected_at + Duration::from_secs(2)).await;
    let mut tls = tls_handshake(&core, stream).await;
    expect_closed_by(
        &mut tls,
        connected_at + Duration::from_millis(4200),
        "a connection that never registered",
    )
    .await;
    assert_eq!(
        core.metric("honeybee_core_registrations_refused_total{reason=\"handshake_timeout\"}")
            .await,
        Some(1)
    );
    core.stop().await;
}

#[tokio::test]
async fn the_tls_api_closes_stalled_handshakes_and_trickled_headers_and_serves_others() {
    let core = TestCore::start(|config| {
        config.tls.enabled = true;
        config.tls.api = true;
        config.api.header_read_timeout = 0.5;
    })
    .await;
    // Says nothing, not even a ClientHello.
    let mut silent = connect_from("127.0.0.2", core.api_address).await;
    // Finishes the handshake, then trickles header bytes.
    let mut trickling =
        tls_handshake(&core, connect_from("127.0.0.2", core.api_address).await).await;
    trickling
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "a TLS client trickling headers is still connected"
            );
            if trickling.write_all(b"X").await.is_err() {
                return;
            }
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), trickling.read(&mut probe)).await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    });

    let mut client = tls_handshake(&core, connect_from("127.0.0.3", core.api_address).await).await;
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut response))
        .await
        .expect("the API answers within 10 s")
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    expect_closed_by(
        &mut silent,
        Instant::now() + Duration::from_secs(10),
        "a client that never started its TLS handshake",
    )
    .await;
    trickler.await.unwrap();
    assert_eq!(
        core.metric(
            "honeybee_core_connections_refused_total{port=\"api\",reason=\"tls_handshake_timeout\"}"
        )
        .await,
        Some(1)
    );
    core.stop().await;
}
