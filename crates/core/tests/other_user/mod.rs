//! Connections made by another unix user, for tests of what the Core decides by the owner
//! of a local peer's socket (the per-address caps and TOTP guess budgets group loopback
//! peers by uid). A small relay runs as `nobody` (`setpriv`, so the tests need root, as
//! in CI): each connection the test makes to it is carried on to the target by a socket
//! `nobody` owns, bound to a loopback address the test names — what a pot's user on a
//! `honeybee up` sensor can do.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The relay: reads one line naming the source address, connects to the target from it,
/// then copies bytes both ways and passes on each side's end of stream.
const RELAY: &str = r#"
import socket, sys, threading
target = (sys.argv[1], int(sys.argv[2]))
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)

def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for closing in (lambda: sink.shutdown(socket.SHUT_WR), lambda: source.shutdown(socket.SHUT_RD)):
        try:
            closing()
        except OSError:
            pass

def serve(client):
    line = b""
    while not line.endswith(b"\n"):
        byte = client.recv(1)
        if not byte:
            client.close()
            return
        line += byte
    upstream = socket.socket()
    try:
        upstream.bind((line.decode().strip(), 0))
        upstream.connect(target)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    pump(upstream, client)
    client.close()
    upstream.close()

while True:
    client, _ = server.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"#;

/// A relay running as `nobody` towards one target; killed when dropped.
pub struct OtherUser {
    relay: SocketAddr,
    _child: Child,
}

impl OtherUser {
    /// Starts a relay to `target` as the user `nobody`.
    pub async fn relay_to(target: SocketAddr) -> Self {
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                // The system's python: an interpreter under root's home is not nobody's.
                "/usr/bin/python3",
                "-c",
                RELAY,
            ])
            .arg(target.ip().to_string())
            .arg(target.port().to_string())
            .current_dir("/")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("setpriv and python3 are installed (the tests run as root)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!("the relay did not start as nobody (are the tests running as root?): {line:?}")
        });
        OtherUser {
            relay: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }

    /// A connection to the target made by `nobody` from the loopback address `from`.
    pub async fn connect_from(&self, from: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.relay).await.unwrap();
        stream
            .write_all(format!("{from}\n").as_bytes())
            .await
            .unwrap();
        stream
    }
}
