//! A Core impostor on loopback: while a separately run Core restarts, any local user (a
//! pot's included) can bind its port first. A real `honeybee-node` (root, as the tests run)
//! must refuse a plaintext Core whose socket another user owns, and must never let a Core
//! replace its TOTP secret after it registered with a code from it.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A "Core" that accepts connections and reads them without answering, as `nobody`.
const SILENT_CORE: &str = r#"
import socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
print("listening", flush=True)
def drain(client):
    while client.recv(65536):
        pass
while True:
    client, _ = server.accept()
    threading.Thread(target=drain, args=(client,), daemon=True).start()
"#;

#[tokio::test]
async fn a_node_refuses_a_plaintext_loopback_core_run_by_another_user() {
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let port = ports.node_port.to_string();
    let mut impostor = tokio::process::Command::from(python_as_nobody(SILENT_CORE, &[&port]))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("setpriv and python3 are installed (the tests run as root)");
    let mut line = String::new();
    BufReader::new(impostor.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    assert_eq!(
        line.trim(),
        "listening",
        "the impostor did not start as nobody"
    );

    let node = start_node(dir.path(), &ports, free_port());
    let nobody_uid = 65534;
    eventually(
        Duration::from_secs(20),
        "the refusal in the node's log",
        || {
            let log = node.log();
            async move {
                log.contains(&format!("its socket belongs to uid {nobody_uid}"))
                    .then_some(())
            }
        },
    )
    .await;
    // It never registered: no secret, and it keeps refusing on every retry.
    assert!(!dir.path().join("node-data/totp.key").exists());
    drop(node);
    let _ = impostor.kill().await;
}

/// Reads the next registration from `lines` and answers it as accepted with `totp_key`.
async fn answer_registration(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    totp_key: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the node registers")
        .unwrap()
        .expect("the node sends its registration");
    let envelope: Value = serde_json::from_str(&line).unwrap();
    let registration = envelope["message"]["NodeRegistration"].clone();
    assert!(registration.is_object(), "{line}");
    let ack = json!({"version": 2, "message": {"RegistrationAck": {
        "node_id": registration["node_id"], "accepted": true, "totp_key": totp_key}}});
    writer
        .write_all(format!("{ack}\n").as_bytes())
        .await
        .unwrap();
    registration
}

#[tokio::test]
async fn a_core_cannot_replace_the_secret_of_a_node_that_registered_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    // A fake Core run by root (it passes the owner check): it enrolls the node, then, on its
    // next registration (with a code), hands it another secret.
    let listener = TcpListener::bind(("127.0.0.1", ports.node_port))
        .await
        .unwrap();
    let node = start_node(dir.path(), &ports, free_port());

    let (stream, _) = listener.accept().await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let first = answer_registration(&mut lines, &mut writer, "JBSWY3DPEHPK3PXP").await;
    assert!(first.get("totp_code").is_none_or(Value::is_null), "{first}");
    let secret_file = dir.path().join("node-data/totp.key");
    let stored = file_text_when_written(secret_file.clone(), "the issued secret").await;
    drop((lines, writer));

    let (stream, _) = listener.accept().await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let second = answer_registration(&mut lines, &mut writer, "GEZDGNBVGY3TQOJQ").await;
    assert!(second["totp_code"].is_string(), "{second}");
    eventually(
        Duration::from_secs(20),
        "the refusal in the node's log",
        || {
            let log = node.log();
            async move { log.contains("sent a new totp_key").then_some(()) }
        },
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim(),
        stored,
        "the stored secret was replaced"
    );
    drop(node);
}
