//! A node played by the test over plain TCP, speaking Protocol v2 by hand: it registers,
//! sends the events it is given, and answers every command at once. Tests that need a
//! registered node with data, but not a real Node's spool or pots, use it.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A registered hand-played node; its connection stays open until it is dropped (or the
/// Core closes it, say on revocation).
pub struct RawNode {
    pub node_id: u64,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl RawNode {
    /// Connects to the Core's node port and registers `node_id` (enrollment must be open,
    /// as it is on a loopback Core by default), announcing `capabilities`.
    pub async fn register(node_port: u16, node_id: u64, capabilities: &[&str]) -> RawNode {
        let stream = TcpStream::connect(("127.0.0.1", node_port)).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let registration = json!({"version": 2, "message": {"NodeRegistration": {
            "node_id": node_id, "node_name": "raw-node", "address": "127.0.0.1", "port": 0,
            "node_type": "Full", "capabilities": capabilities}}});
        writer
            .write_all(format!("{registration}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(reader).lines();
        let answer = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the core answers the registration within 10 s")
            .unwrap()
            .expect("the core answers the registration before closing");
        assert!(answer.contains("\"accepted\":true"), "{answer}");
        RawNode {
            node_id,
            lines,
            writer,
        }
    }

    /// Sends one `PotEvent` per `(event_type, data)`, stamped with `pot_id` and a time a
    /// second apart each.
    pub async fn send_events(&mut self, pot_id: &str, events: &[(&str, Value)]) {
        let mut buffer = String::new();
        for (index, (event_type, data)) in events.iter().enumerate() {
            let envelope = json!({"version": 2, "message": {"PotEvent": {
                "node_id": self.node_id, "pot_id": pot_id, "pot_type": "cowrie",
                "event_type": event_type,
                "timestamp": format!("2024-01-15T10:30:{:02}Z", index % 60),
                "data": data}}});
            buffer.push_str(&format!("{envelope}\n"));
        }
        self.writer.write_all(buffer.as_bytes()).await.unwrap();
    }

    /// From now on answers each command with a successful `CommandAnswer` carrying the
    /// command's id, until the Core closes the connection. The task ends with it.
    pub fn answer_commands(self) -> JoinHandle<()> {
        let RawNode {
            node_id,
            mut lines,
            mut writer,
        } = self;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(envelope) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let command = &envelope["message"]["NodeCommand"];
                if command.is_null() {
                    continue;
                }
                let name = match &command["command"] {
                    Value::String(name) => name.clone(),
                    Value::Object(variant) => variant.keys().next().cloned().unwrap_or_default(),
                    _ => String::new(),
                };
                let answer = json!({"version": 2, "message": {"CommandAnswer": {
                    "node_id": node_id, "command_id": command["command_id"],
                    "command": name, "success": true, "message": "done by the raw node",
                    "data": {"answered": name}}}});
                if writer
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }
}
