//! TLS 1.3 on the node port with the real binaries: a Core that generates its own CA, nodes
//! that trust it by CA file or by pinned fingerprint, and nodes and clients it refuses.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn online_nodes(client: &reqwest::Client, api_base: &str) -> usize {
    get_json(client, &format!("{api_base}/api/v1/nodes"))
        .await
        .and_then(|nodes| {
            Some(
                nodes["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|node| node["online"] == true)
                    .count(),
            )
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn nodes_trust_the_core_by_ca_file_or_pinned_fingerprint_and_nothing_else() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "[tls]\nenabled = true\n");
    let tls_dir = dir.path().join("core-data/tls");
    let fingerprint_file = tls_dir.join("ca.fingerprint");
    let fingerprint = eventually(Duration::from_secs(15), "the core's CA fingerprint", || {
        let file = fingerprint_file.clone();
        async move {
            std::fs::read_to_string(file)
                .ok()
                .map(|text| text.trim().to_owned())
        }
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(tls_dir.join("ca.key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "private keys are private");

    let node_dir = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let by_file = node_dir("by-file");
    let _node_a = start_node_with(
        &by_file,
        &ports,
        free_port(),
        &format!(
            "tls:\n  enabled: true\n  ca_file: {}\n",
            tls_dir.join("ca.pem").display()
        ),
    );
    let pinned = node_dir("pinned");
    let event_port = free_port();
    let _node_b = start_node_with(
        &pinned,
        &ports,
        event_port,
        &format!("tls:\n  enabled: true\n  ca_fingerprint: \"{fingerprint}\"\n"),
    );
    eventually(Duration::from_secs(20), "both TLS nodes online", || {
        let client = client.clone();
        let api = ports.api_base();
        async move { (online_nodes(&client, &api).await == 2).then_some(()) }
    })
    .await;
    // Events travel over TLS.
    let line = serde_json::json!({"pot_id": "over-tls", "event_type": "tls.event"}).to_string();
    send_lines(event_port, &[line]).await;
    wait_for_events(&client, &ports.api_base(), "pot_id=over-tls", 1).await;

    // A wrong pin: refused by the node itself, with the reason in its log.
    let wrong = node_dir("wrong-pin");
    let node_c = start_node_with(
        &wrong,
        &ports,
        free_port(),
        &format!(
            "tls:\n  enabled: true\n  ca_fingerprint: \"{}\"\n",
            "00".repeat(32)
        ),
    );
    eventually(Duration::from_secs(20), "the wrong pin reported", || {
        let log = node_c.log();
        async move {
            log.contains("no CA with the pinned fingerprint")
                .then_some(())
        }
    })
    .await;
    assert_eq!(online_nodes(&client, &ports.api_base()).await, 2);

    // A plaintext peer on the TLS port gets no Protocol v2 answer, and is closed.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", ports.node_port))
        .await
        .unwrap();
    plain
        .write_all(b"{\"version\":2,\"message\":{\"NodeRegistration\":{\"node_id\":9,\"node_name\":\"x\",\"address\":\"a\",\"port\":0,\"node_type\":\"Agent\"}}}\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the plaintext peer was closed");
    assert!(!String::from_utf8_lossy(&answer).contains("RegistrationAck"));
    assert!(Path::new(&tls_dir.join("server.pem")).exists());
}
