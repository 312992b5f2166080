//! Attacks on the REST API over real TCP on loopback: clients that trickle their headers
//! or bodies (slowloris) or never read their responses, one host opening every connection, a web page rebinding its
//! DNS name to the Core (`Host: evil.example`), and configurations that would expose the
//! API.

mod other_user;
mod support;

use std::time::Duration;

use support::{connect_from, expect_closed_within, http_request, read_http_response, TestCore};
use tokio::io::AsyncWriteExt;

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn clients_trickling_headers_are_closed_and_others_are_served() {
    let core = TestCore::start(|config| {
        config.api.header_read_timeout = 0.5;
    })
    .await;
    let mut trickling = Vec::new();
    for _ in 0..8 {
        let mut stream = connect_from("127.0.0.2", core.api_address).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        trickling.push(stream);
    }
    // They keep sending header bytes, never the end of the headers.
    let trickler = tokio::spawn(async move {
        let mut closed = 0;
        for stream in &mut trickling {
            expect_closed_while_trickling(stream).await;
            closed += 1;
        }
        closed
    });
    let (status, body) = http_request(core.api_address, "127.0.0.1", HEALTH).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(trickler.await.unwrap(), 8);
    let closed = core
        .metric(
            "honeybee_core_connections_refused_total{port=\"api\",reason=\"header_read_timeout\"}",
        )
        .await;
    assert!(closed.is_some_and(|count| count >= 8), "{closed:?}");
    core.stop().await;
}

/// Writes one header byte every 50 ms until the server closes the connection (at most
/// for 10 s).
async fn expect_closed_while_trickling(stream: &mut tokio::net::TcpStream) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if stream.write_all(b"X").await.is_err() {
            return;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(
            Duration::from_millis(50),
            tokio::io::AsyncReadExt::read(stream, &mut probe),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            _ => {}
        }
    }
    panic!("a client trickling its headers was still connected after 10 s");
}

#[tokio::test]
async fn a_client_that_pipelines_requests_and_never_reads_is_closed() {
    // A long header timeout: only the write timeout can end this connection.
    let core = TestCore::start(|config| {
        config.api.write_timeout = 0.5;
        config.api.header_read_timeout = 60.0;
    })
    .await;
    let mut stream = connect_from("127.0.0.2", core.api_address).await;
    // Keep-alive requests, written until the Core closes the connection; nothing is read,
    // so the responses fill the socket buffers and the Core's writes block.
    let pipelined = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(1000);
    let writer = tokio::spawn(async move {
        let mut written = 0usize;
        loop {
            if stream.write_all(pipelined.as_bytes()).await.is_err() {
                return written;
            }
            written += 1000;
        }
    });
    let requests = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("a client that never reads was still connected after 20 s")
        .unwrap();
    assert!(requests > 0);
    let (status, body) = http_request(core.api_address, "127.0.0.3", HEALTH).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let closed = core
        .metric("honeybee_core_connections_refused_total{port=\"api\",reason=\"write_timeout\"}")
        .await;
    assert_eq!(closed, Some(1));
    core.stop().await;
}

#[tokio::test]
async fn a_trickled_body_gets_a_408_within_the_request_deadline() {
    let core = TestCore::start(|config| {
        config.api.request_timeout = 0.5;
    })
    .await;
    let mut stream = connect_from("127.0.0.2", core.api_address).await;
    stream
        .write_all(
            b"POST /api/v1/enrollment-tokens HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let (status, body) = read_http_response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("api.request_timeout"), "{body}");
    core.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_api_connections() {
    let core = TestCore::start(|config| {
        config.api.max_connections_per_address = 4;
        config.api.header_read_timeout = 60.0;
    })
    .await;
    // The greedy host is another local user (a pot's user on the sensor), spreading its
    // connections over loopback addresses: it is one group all the same.
    let greedy = other_user::OtherUser::relay_to(core.api_address).await;
    let mut held = Vec::new();
    for n in 2..6 {
        held.push(greedy.connect_from(&format!("127.0.0.{n}")).await);
    }
    // Each held connection is admitted (it gets an answer) before the next is tried.
    for stream in &mut held {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(stream, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    let mut over_the_cap = greedy.connect_from("127.0.0.9").await;
    expect_closed_within(
        &mut over_the_cap,
        Duration::from_secs(10),
        "a fifth API connection",
    )
    .await;
    let (status, _) = http_request(core.api_address, "127.0.0.3", HEALTH).await;
    assert_eq!(status, 200);
    assert_eq!(
        core.metric(
            "honeybee_core_connections_refused_total{port=\"api\",reason=\"per_address_limit\"}"
        )
        .await,
        Some(1)
    );
    drop(held);
    core.stop().await;
}

#[tokio::test]
async fn requests_for_a_foreign_host_name_are_refused_on_a_loopback_api() {
    let core = TestCore::start(|config| {
        config.api.allowed_hosts = vec!["proxy.example".into()];
    })
    .await;
    let request = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let (status, body) = http_request(
        core.api_address,
        "127.0.0.1",
        &request("evil.example", "/api/v1/nodes"),
    )
    .await;
    assert_eq!(status, 421, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("evil.example") && message.contains("api.allowed_hosts"),
        "{message}"
    );
    let port = core.api_address.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "proxy.example".to_owned(),
    ] {
        let (status, body) = http_request(
            core.api_address,
            "127.0.0.1",
            &request(&host, "/api/v1/nodes"),
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    assert_eq!(
        core.metric("honeybee_core_api_requests_refused_total{reason=\"host_not_allowed\"}")
            .await,
        Some(1)
    );
    core.stop().await;
}

#[tokio::test]
async fn a_core_refuses_to_expose_a_plaintext_or_unauthenticated_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = honeybee_core::CoreConfig::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.server.node_port = 0;
    config.server.backend_port = 0;
    config.server.api_host = "0.0.0.0".into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = match honeybee_core::start(config.clone(), shutdown.clone()).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a plaintext API on 0.0.0.0 started"),
    };
    assert!(
        error.contains("server.api_host") && error.contains("tls.allow_plaintext_api"),
        "{error}"
    );

    config.tls.allow_plaintext_api = true;
    config.api.auth = honeybee_core::config::ApiAuth::None;
    let error = match honeybee_core::start(config, shutdown).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("an unauthenticated API on 0.0.0.0 started"),
    };
    assert!(
        error.contains("api.auth") && error.contains("none"),
        "{error}"
    );
}

#[tokio::test]
async fn a_core_whose_node_port_listens_everywhere_keeps_its_api_on_loopback() {
    // The README's remote-node setup: `server.host = "0.0.0.0"` with TLS, `api_host` left
    // at its default. The node port must be reachable from everywhere, the API only from
    // this machine.
    let core = TestCore::start(|config| {
        config.server.host = "0.0.0.0".into();
        config.tls.enabled = true;
    })
    .await;
    assert!(
        core.node_address.ip().is_unspecified(),
        "the node port listens on {}",
        core.node_address
    );
    assert!(
        core.api_address.ip().is_loopback(),
        "the API listens on {}",
        core.api_address
    );
    let (status, _) = http_request(core.api_address, "127.0.0.1", HEALTH).await;
    assert_eq!(status, 200);
    core.stop().await;
}
