//! A pot's user on a `honeybee up` sensor that connects to the node port, sends a
//! registration with a wrong TOTP code and closes at once. By the time the Core looks up
//! the owner of the peer's socket, the kernel shows the closed socket as root's (uid 0 for
//! orphaned and `TIME_WAIT` entries): believed, every such guess would count against root's
//! source — the real node's — and lock the real node out. The Core must count them as a
//! peer of unknown owner instead.

mod support;

use std::net::SocketAddr;

use honeybee_protocol::{base32_decode, totp_code, totp_step_at, Message};
use serde_json::json;
use support::{envelope, eventually, RawPeer, TestCore};

/// Connects `count` times to `target` as `nobody`, sends `payload` on each connection and
/// closes them all right away.
const CONNECT_SEND_CLOSE: &str = r#"
import socket, sys
target = (sys.argv[1], int(sys.argv[2]))
count = int(sys.argv[3])
payload = sys.argv[4].encode()
sockets = []
for _ in range(count):
    s = socket.socket()
    s.connect(target)
    sockets.append(s)
for s in sockets:
    s.sendall(payload)
for s in sockets:
    s.close()
print("done", flush=True)
"#;

async fn connect_send_close_as_nobody(target: SocketAddr, count: usize, payload: &str) {
    let output = tokio::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            CONNECT_SEND_CLOSE,
        ])
        .arg(target.ip().to_string())
        .arg(target.port().to_string())
        .arg(count.to_string())
        .arg(payload)
        .current_dir("/")
        .output()
        .await
        .expect("setpriv and python3 are installed (the tests run as root)");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "done",
        "the connections as nobody failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Entries of `/proc/net/tcp` connected to `port` that the kernel shows as root's closed
/// sockets (`FIN_WAIT2` timewait: uid 0, inode 0).
fn closed_sockets_towards(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote_port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 10
                && fields[2].ends_with(&remote_port)
                && fields[3] == "05"
                && fields[7] == "0"
                && fields[9] == "0"
        })
        .count()
}

fn registration_with_code(node_id: u64, code: &str) -> String {
    envelope(json!({"NodeRegistration": {
        "node_id": node_id, "node_name": "sensor", "address": "10.0.0.5", "port": 0,
        "node_type": "Agent", "totp_code": code,
    }}))
}

fn current_step() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_step_at(now)
}

#[tokio::test]
async fn guesses_from_closed_local_connections_do_not_lock_out_the_real_node() {
    const NODE_ID: u64 = 901;
    const GUESSES: u64 = 12;
    // Two slots: while the test holds both, new connections wait in the Core's backlog, so
    // the guesses below are closed before the Core accepts them and looks up their owner.
    let core = TestCore::start(|config| {
        config.server.max_node_connections = 2;
        config.server.handshake_timeout = 60.0;
    })
    .await;

    // The real node (root, like this test) enrolls and confirms its secret.
    let mut node = RawPeer::connect_from("127.0.0.1", &core).await;
    node.send(&support::registration(NODE_ID, "sensor")).await;
    let secret = match node.receive().await {
        Some(Message::RegistrationAck(ack)) if ack.accepted => {
            base32_decode(&ack.totp_key.expect("a new node gets a secret")).unwrap()
        }
        other => panic!("expected an accepting ack, got {other:?}"),
    };
    node.send(&envelope(
        json!({"NodeStatusUpdate": {"node_id": NODE_ID, "status": "Running"}}),
    ))
    .await;
    drop(node);
    // It registers with a code from root's socket: that is its trusted source now.
    let first_step = current_step() - 1;
    let mut node = RawPeer::connect_from("127.0.0.1", &core).await;
    node.send(&registration_with_code(
        NODE_ID,
        &totp_code(&secret, first_step),
    ))
    .await;
    assert!(
        matches!(node.receive().await, Some(Message::RegistrationAck(ack)) if ack.accepted),
        "the real node registers with a code"
    );
    drop(node);

    // Both slots held (connections that send nothing yet).
    let accepted_before = core
        .metric("honeybee_core_node_connections_total")
        .await
        .unwrap_or(0);
    let holders = [
        tokio::net::TcpStream::connect(core.node_address)
            .await
            .unwrap(),
        tokio::net::TcpStream::connect(core.node_address)
            .await
            .unwrap(),
    ];
    eventually("both slots taken", || async {
        let accepted = core.metric("honeybee_core_node_connections_total").await?;
        (accepted >= accepted_before + 2).then_some(())
    })
    .await;
    // The pot's user: wrong codes on connections it closes at once, many times.
    connect_send_close_as_nobody(
        core.node_address,
        GUESSES as usize,
        &registration_with_code(NODE_ID, "000000"),
    )
    .await;
    // The attacker's moment: the kernel has turned its closed sockets into timewait
    // entries, which it prints with uid 0 and inode 0.
    eventually("the guesses' sockets in timewait", || async {
        (closed_sockets_towards(core.node_address.port()) >= GUESSES as usize).then_some(())
    })
    .await;
    // Now the Core takes the closed connections from its backlog.
    drop(holders);
    // Every guess was read and refused (as invalid, or once locked, as locked).
    eventually("every guess refused", || async {
        let invalid = core
            .metric("honeybee_core_registrations_refused_total{reason=\"totp_invalid\"}")
            .await
            .unwrap_or(0);
        let locked = core
            .metric("honeybee_core_registrations_refused_total{reason=\"totp_locked\"}")
            .await
            .unwrap_or(0);
        (invalid + locked >= GUESSES).then_some(())
    })
    .await;

    // The real node, from root's socket, still registers with its next code.
    let next_step = (first_step + 1).max(current_step() - 1);
    let mut node = RawPeer::connect_from("127.0.0.1", &core).await;
    node.send(&registration_with_code(
        NODE_ID,
        &totp_code(&secret, next_step),
    ))
    .await;
    match node.receive().await {
        Some(Message::RegistrationAck(ack)) => assert!(
            ack.accepted,
            "the real node was locked out by guesses counted as root's: {ack:?}"
        ),
        other => panic!("expected an ack, got {other:?}"),
    }
    drop(node);
    core.stop().await;
}
