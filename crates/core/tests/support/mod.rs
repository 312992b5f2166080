//! What the attack tests share: an in-process Core on loopback, TCP clients bound to a
//! chosen loopback address (all of 127/8 is loopback on Linux, so 127.0.0.2 and 127.0.0.3
//! are different hosts to the Core), raw HTTP, and polling with a deadline.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use honeybee_core::CoreConfig;
use honeybee_protocol::{EnvelopeDecoder, Message};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TestCore {
    pub node_address: SocketAddr,
    pub api_address: SocketAddr,
    /// Whether the API speaks TLS (`tls.api`).
    api_tls: bool,
    shutdown: CancellationToken,
    running: Option<honeybee_core::RunningCore>,
    _dir: tempfile::TempDir,
}

impl TestCore {
    /// A Core on free loopback ports with an open API (these tests attack the listeners,
    /// not the token check).
    pub async fn start(adjust: impl FnOnce(&mut CoreConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = CoreConfig::default();
        config.server.node_port = 0;
        config.server.backend_port = 0;
        config.storage.data_dir = dir.path().to_path_buf();
        config.api.auth = honeybee_core::config::ApiAuth::None;
        adjust(&mut config);
        // Enrollment has its own tests (which ask for tokens): here any node may enroll,
        // where the Core allows that at all (on loopback).
        if config.server.enrollment.is_none() && config.server.is_loopback() {
            config.server.enrollment = Some(honeybee_core::config::EnrollmentPolicy::Open);
        }
        let api_tls = config.tls.api;
        let shutdown = CancellationToken::new();
        let running = honeybee_core::start(config, shutdown.clone())
            .await
            .unwrap();
        TestCore {
            node_address: running.node_address,
            api_address: running.api_address,
            api_tls,
            shutdown,
            running: Some(running),
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.running.take().unwrap().wait())
            .await
            .expect("core stops within 15 s")
            .unwrap();
    }

    /// The Core's state directory (its generated TLS CA is `tls/ca.pem`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The value of the metric line starting with `series` (name and labels), if any.
    pub async fn metric(&self, series: &str) -> Option<u64> {
        let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let body = if self.api_tls {
            let stream = connect_from("127.0.0.1", self.api_address).await;
            let mut tls = tls_handshake(self, stream).await;
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            // A TLS peer may close without close_notify; what was read still counts.
            let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
                .await
                .expect("the API answers within 10 s");
            String::from_utf8_lossy(&response).into_owned()
        } else {
            http_request(self.api_address, "127.0.0.1", request).await.1
        };
        body.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// A TCP connection to `to` from the loopback address `from` (e.g. "127.0.0.2").
pub async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits until the peer closes `stream` (or resets it), reading and discarding what it
/// sends; panics when it is still open after `within`.
pub async fn expect_closed_within(stream: &mut TcpStream, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!("{what}: the connection is still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends one raw HTTP/1.1 request (which should say `Connection: close`) from the loopback
/// address `from` and returns the status and the body.
pub async fn http_request(to: SocketAddr, from: &str, request: &str) -> (u16, String) {
    let mut stream = connect_from(from, to).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    read_http_response(&mut stream).await
}

/// Reads a response until the server closes the connection.
pub async fn read_http_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the API answers within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Protocol v2 peer on a raw TCP connection.
pub struct RawPeer {
    pub stream: TcpStream,
    decoder: EnvelopeDecoder,
}

impl RawPeer {
    /// A peer speaking over an already open connection (e.g. one made by another user).
    pub fn over(stream: TcpStream) -> Self {
        RawPeer {
            stream,
            decoder: EnvelopeDecoder::default(),
        }
    }

    pub async fn connect_from(from: &str, core: &TestCore) -> Self {
        RawPeer {
            stream: connect_from(from, core.node_address).await,
            decoder: EnvelopeDecoder::default(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next message from the Core, or `None` when it closed the connection.
    pub async fn receive(&mut self) -> Option<Message> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(envelope) = self.decoder.next_envelope().unwrap() {
                return Some(envelope.message);
            }
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                .await
                .expect("the core answers within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(count) => self.decoder.push(&buffer[..count]),
            }
        }
    }

    /// Registers a new node id (the test Cores enroll openly on loopback).
    pub async fn register(&mut self, node_id: u64, name: &str) {
        self.send(&registration(node_id, name)).await;
        match self.receive().await {
            Some(Message::RegistrationAck(ack)) if ack.accepted => {}
            other => panic!("expected an accepting RegistrationAck, got {other:?}"),
        }
    }
}

pub fn registration(node_id: u64, name: &str) -> String {
    envelope(json!({"NodeRegistration": {
        "node_id": node_id, "node_name": name, "address": "10.0.0.5", "port": 0,
        "node_type": "Agent",
    }}))
}

pub fn envelope(message: Value) -> String {
    json!({"version": 2, "message": message}).to_string() + "\n"
}

/// A TLS 1.3 client trusting the Core's generated CA (`<data_dir>/tls/ca.pem`).
pub fn tls_connector(core: &TestCore) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        rustls_pki_types::CertificateDer::pem_file_iter(core.data_dir().join("tls/ca.pem")).unwrap()
    {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Completes a TLS handshake with the Core over `stream`.
pub async fn tls_handshake(
    core: &TestCore,
    stream: TcpStream,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        tls_connector(core).connect(name, stream),
    )
    .await
    .expect("the TLS handshake ends within 10 s")
    .expect("the TLS handshake succeeds")
}
