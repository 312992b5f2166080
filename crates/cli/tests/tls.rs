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

/// A CA of the operator's and a node certificate signed by it, as PEM files in `dir`;
/// returns (ca.pem, node.pem, node.key.pem).
fn operator_client_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sensor fleet CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node_params = rcgen::CertificateParams::new(vec!["sensor-1".to_owned()]).unwrap();
    let node = node_params.signed_by(&node_key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("fleet-ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, node.pem()).unwrap();
    std::fs::write(&paths.2, node_key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

#[tokio::test]
async fn mutual_tls_admits_only_nodes_with_a_client_certificate_and_the_api_speaks_https() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet_ca, node_cert, node_key) = operator_client_ca(dir.path());
    let ports = CorePorts::free();
    let _core = start_core(
        dir.path(),
        &ports,
        &format!(
            "[api]\nauth = \"tokens\"\n[tls]\nenabled = true\napi = true\nclient_ca_file = \"{}\"\n",
            fleet_ca.display()
        ),
    );
    let core_ca = dir.path().join("core-data/tls/ca.pem");
    let admin_file = dir.path().join("core-data/admin-token");
    // The Core writes its admin token and its CA at start, in either order: wait for both.
    let (admin, core_ca_pem) =
        eventually(Duration::from_secs(15), "the admin token and CA", || {
            let (token_file, ca_file) = (admin_file.clone(), core_ca.clone());
            async move {
                let admin = std::fs::read_to_string(token_file).ok()?.trim().to_owned();
                let ca = std::fs::read(ca_file).ok()?;
                reqwest::Certificate::from_pem(&ca).ok()?;
                Some((admin, ca))
            }
        })
        .await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&core_ca_pem).unwrap())
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {admin}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let api = format!("https://localhost:{}", ports.api_port);

    let with_certificate = dir.path().join("with-certificate");
    std::fs::create_dir_all(&with_certificate).unwrap();
    let _admitted = start_node_with(
        &with_certificate,
        &ports,
        free_port(),
        &format!(
            "tls:\n  enabled: true\n  ca_file: {}\n  server_name: localhost\n  cert_file: {}\n  key_file: {}\n",
            core_ca.display(),
            node_cert.display(),
            node_key.display()
        ),
    );
    let without_certificate = dir.path().join("without-certificate");
    std::fs::create_dir_all(&without_certificate).unwrap();
    let refused = start_node_with(
        &without_certificate,
        &ports,
        free_port(),
        &format!(
            "tls:\n  enabled: true\n  ca_file: {}\n  server_name: localhost\n",
            core_ca.display()
        ),
    );
    eventually(
        Duration::from_secs(20),
        "the node with a certificate online over https",
        || {
            let https = https.clone();
            let api = api.clone();
            async move { (online_nodes(&https, &api).await == 1).then_some(()) }
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the refusal in the other node's log",
        || {
            let log = refused.log();
            async move { log.contains("CertificateRequired").then_some(()) }
        },
    )
    .await;
    assert_eq!(
        online_nodes(&https, &api).await,
        1,
        "the node without a certificate stays out"
    );

    // Plain HTTP on the https port gets no API answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", ports.api_port)).await;
    assert!(plain.map_or(true, |response| !response.status().is_success()));
    // The CLI speaks https with the core's CA, and says what it needs without it.
    let cli = |ca_file: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_honeybee"));
        command.args(["--api", &api]).env("HONEYBEE_TOKEN", &admin);
        if let Some(ca_file) = ca_file {
            command.arg("--ca-file").arg(ca_file);
        }
        let output = command.arg("nodes").output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, output) = cli(Some(&core_ca));
    assert!(ok && output.contains("e2e-node"), "{output}");
    let (ok, output) = cli(None);
    assert!(!ok && output.contains("--ca-file"), "{output}");
}
