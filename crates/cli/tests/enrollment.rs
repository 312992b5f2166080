//! Node enrollment with the real binaries: an operator creates a one-time token with the
//! CLI, a node enrolls with it over TLS and comes back later with TOTP codes only, a second
//! node with the same token is refused, and a revoked node is cut off within a second.

mod support;

use std::time::Duration;

use support::*;

/// Runs the operator CLI against the Core; returns its output, or panics with it.
fn honeybee(ports: &CorePorts, token: &str, arguments: &[&str]) -> String {
    let (success, output) = run_cli(&ports.api_base(), Some(token), arguments);
    assert!(success, "honeybee {arguments:?} failed: {output}");
    output
}

async fn node_view(client: &reqwest::Client, ports: &CorePorts, node_id: u64) -> serde_json::Value {
    get_json(
        client,
        &format!("{}/api/v1/nodes/{node_id}", ports.api_base()),
    )
    .await
    .unwrap_or_default()
}

#[tokio::test]
async fn a_node_enrolls_over_tls_with_a_token_returns_with_totp_and_is_cut_off_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(
        dir.path(),
        &ports,
        "[api]\nauth = \"tokens\"\n[server]\nenrollment = \"token\"\n[tls]\nenabled = true\n",
    );
    let admin =
        file_text_when_written(dir.path().join("core-data/admin-token"), "the admin token").await;
    let fingerprint = file_text_when_written(
        dir.path().join("core-data/tls/ca.fingerprint"),
        "the CA fingerprint",
    )
    .await;
    let client = authorized_client(&admin);

    let created = honeybee(
        &ports,
        &admin,
        &[
            "enroll", "create", "--uses", "1", "--ttl", "1h", "--name", "sensor-a",
        ],
    );
    let token = created
        .split_whitespace()
        .find(|word| word.starts_with("hbe_"))
        .unwrap_or_else(|| panic!("no token in {created:?}"))
        .to_owned();
    let tls = format!("tls:\n  enabled: true\n  ca_fingerprint: \"{fingerprint}\"\n");
    let with_token = format!("{tls}auth:\n  enrollment_token: \"{token}\"\n");

    let first_dir = dir.path().join("first");
    std::fs::create_dir_all(&first_dir).unwrap();
    let mut first = start_node_with(&first_dir, &ports, free_port(), &with_token);
    let node_id = wait_for_online_node(&client, &ports.api_base()).await;
    let secret_file = first_dir.join("node-data/totp.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "the TOTP secret is private"
    );
    assert!(
        first.log().contains("enrolled with the core"),
        "{}",
        first.log()
    );

    // The one-time token is spent: a second node is refused, and its log says why.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second = start_node_with(&second_dir, &ports, free_port(), &with_token);
    eventually(Duration::from_secs(15), "the second node's refusal", || {
        let log = second.log();
        async move {
            log.contains("enrollment token presented by node")
                .then_some(())
        }
    })
    .await;
    assert!(second.log().contains("is used up"), "{}", second.log());
    drop(second);
    let listed = honeybee(&ports, &admin, &["enroll", "list"]);
    assert!(
        listed.contains("0/1") && listed.contains("used_up"),
        "{listed}"
    );

    // Restarted without any token: the stored secret is enough.
    first.stop_with("TERM").await;
    eventually(Duration::from_secs(15), "the node seen disconnected", || {
        let client = client.clone();
        let ports = &ports;
        async move { (node_view(&client, ports, node_id).await["connected"] == false).then_some(()) }
    })
    .await;
    let mut first = start_node_with(&first_dir, &ports, free_port(), &tls);
    eventually(Duration::from_secs(15), "the node back online with TOTP only", || {
        let client = client.clone();
        let ports = &ports;
        async move { (node_view(&client, ports, node_id).await["online"] == true).then_some(()) }
    })
    .await;

    // Revoked: cut off at once (not at its next heartbeat, 30 s away), and refused when it
    // tries again.
    let listed = honeybee(&ports, &admin, &["nodes"]);
    assert!(listed.contains(&node_id.to_string()), "{listed}");
    let revoked = honeybee(&ports, &admin, &["nodes", "revoke", &node_id.to_string()]);
    assert!(revoked.contains("its connection was closed"), "{revoked}");
    eventually(
        Duration::from_secs(15),
        "the revocation in the node's log",
        || {
            let log = first.log();
            async move { log.contains("was revoked by an operator").then_some(()) }
        },
    )
    .await;
    eventually(Duration::from_secs(15), "a refused re-registration", || {
        let log = first.log();
        async move {
            log.contains("is revoked; it may not register again")
                .then_some(())
        }
    })
    .await;
    let view = node_view(&client, &ports, node_id).await;
    assert_eq!(
        (view["revoked"].as_bool(), view["online"].as_bool()),
        (Some(true), Some(false)),
        "{view}"
    );
    first.stop_with("TERM").await;
}

/// An impostor on the Core's port (the real Core is gone) reads what a node that enrolled
/// before sends: a code, never its enrollment token again. And a node refuses to speak
/// plaintext to a Core beyond this machine at all.
#[tokio::test]
async fn an_enrolled_node_never_shows_its_token_again_and_speaks_plaintext_only_on_loopback() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let mut core = start_core(
        dir.path(),
        &ports,
        "[api]\nauth = \"tokens\"\n[server]\nenrollment = \"token\"\n",
    );
    let admin =
        file_text_when_written(dir.path().join("core-data/admin-token"), "the admin token").await;
    let created = honeybee(&ports, &admin, &["enroll", "create", "--uses", "5"]);
    let token = created
        .split_whitespace()
        .find(|word| word.starts_with("hbe_"))
        .unwrap_or_else(|| panic!("no token in {created:?}"))
        .to_owned();
    let mut node = start_node_with(
        dir.path(),
        &ports,
        free_port(),
        &format!("auth:\n  enrollment_token: \"{token}\"\n"),
    );
    wait_for_online_node(&authorized_client(&admin), &ports.api_base()).await;
    core.kill_hard();

    // The impostor takes the port; the node, still configured with its token, reconnects.
    let impostor = eventually(Duration::from_secs(10), "the core's port free", || async {
        tokio::net::TcpListener::bind(("127.0.0.1", ports.node_port))
            .await
            .ok()
    })
    .await;
    let (connection, _) = tokio::time::timeout(Duration::from_secs(15), impostor.accept())
        .await
        .expect("the node reconnects")
        .unwrap();
    let mut registration = String::new();
    tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::BufReader::new(connection).read_line(&mut registration),
    )
    .await
    .expect("the node registers")
    .unwrap();
    assert!(registration.contains("NodeRegistration"), "{registration}");
    assert!(registration.contains("totp_code"), "{registration}");
    assert!(
        !registration.contains(&token) && !registration.contains("enrollment_token"),
        "an enrolled node sent its token: {registration}"
    );
    node.stop_with("TERM").await;

    // Plaintext to a Core that is not on this machine: refused before any connection.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_honeybee-node"))
        .args(["--data-dir"])
        .arg(dir.path().join("remote-node"))
        .args(["--core", "192.0.2.10:9001", "--event-port", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("tls.allow_plaintext"), "{stderr}");
}
