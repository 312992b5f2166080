//! Protocol v2 message types (node ↔ core), exactly as the wire contract names them.
//!
//! These are wire types: the Core and the Node convert them to their own domain types at
//! the boundary. Unknown fields are ignored on input; optional fields are omitted on output.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::json_object::JsonObject;
use crate::variant::externally_tagged_enum;

/// The only protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u64 = 2;

/// Extension: commands carry a `command_id` and the node ends each command with a
/// `CommandAnswer` carrying the same id (and the data of logs, metrics and info answers).
pub const CAPABILITY_COMMAND_ANSWERS: &str = "command_answers";
/// Extension: the node understands the `UninstallPot` command.
pub const CAPABILITY_UNINSTALL_POT: &str = "uninstall_pot";
/// Extension: acknowledged delivery. `PotEvent`s carry a per-node `seq`; the Core answers
/// with cumulative `EventAck`s once events are durably stored, stores each (node, seq)
/// once, and tells a registering node the highest seq it holds (`RegistrationAck.acked_seq`).
pub const CAPABILITY_ACKED_DELIVERY: &str = "acked_delivery";

/// `{"version": 2, "message": {…}}`: the unit of framing on the node ↔ core wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u64,
    pub message: Message,
}

impl Envelope {
    /// Wraps a message in a version 2 envelope.
    pub fn new(message: Message) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            message,
        }
    }
}

/// Appends `message` as one envelope plus `\n` to `buffer`; callers batch several
/// envelopes into one buffer before writing it to the socket.
pub fn encode_envelope(message: &Message, buffer: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct BorrowedEnvelope<'a> {
        version: u64,
        message: &'a Message,
    }
    let envelope = BorrowedEnvelope {
        version: PROTOCOL_VERSION,
        message,
    };
    // Serialising these types into a Vec cannot fail: every map key is a string and no
    // value has a fallible Serialize impl.
    serde_json::to_writer(&mut *buffer, &envelope).expect("wire types always serialise");
    buffer.push(b'\n');
}

/// Every message of the node ↔ core wire, in both directions.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    NodeRegistration(NodeRegistration),
    NodeStatusUpdate(NodeStatusUpdate),
    PotStatusUpdate(PotStatusUpdate),
    PotEvent(PotEvent),
    NodeEvent(NodeEvent),
    NodeDrop,
    RegistrationAck(RegistrationAck),
    NodeCommand(NodeCommand),
    /// Extension ([`CAPABILITY_COMMAND_ANSWERS`]): the outcome of one command.
    CommandAnswer(CommandAnswer),
    /// Extension ([`CAPABILITY_ACKED_DELIVERY`]): every event of the node up to `seq` is
    /// stored.
    EventAck(EventAck),
}

externally_tagged_enum!(
    Message,
    "message",
    payload {
        NodeRegistration,
        NodeStatusUpdate,
        PotStatusUpdate,
        PotEvent,
        NodeEvent,
        RegistrationAck,
        NodeCommand,
        CommandAnswer,
        EventAck,
    },
    unit { NodeDrop }
);

impl Message {
    /// The variant name, for logs and metrics.
    pub fn variant_name(&self) -> &'static str {
        match self {
            Message::NodeRegistration(_) => "NodeRegistration",
            Message::NodeStatusUpdate(_) => "NodeStatusUpdate",
            Message::PotStatusUpdate(_) => "PotStatusUpdate",
            Message::PotEvent(_) => "PotEvent",
            Message::NodeEvent(_) => "NodeEvent",
            Message::NodeDrop => "NodeDrop",
            Message::RegistrationAck(_) => "RegistrationAck",
            Message::NodeCommand(_) => "NodeCommand",
            Message::CommandAnswer(_) => "CommandAnswer",
            Message::EventAck(_) => "EventAck",
        }
    }
}

/// `Full` nodes run honeypots; `Agent` nodes only forward events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    Full,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub node_id: u64,
    pub node_name: String,
    pub address: String,
    pub port: u16,
    pub node_type: NodeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_code: Option<String>,
    /// Extension: the enrollment token a node without a TOTP secret presents to enroll.
    /// Sent before any announcement (there is none yet); a Core that does not know the field
    /// ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<String>,
    /// Extension announcement: the extensions this node speaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Connected,
    Deploying,
    Running,
    Stopped,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatusUpdate {
    pub node_id: u64,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PotStatus {
    Installing,
    Running,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PotStatusUpdate {
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub status: PotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extension ([`CAPABILITY_COMMAND_ANSWERS`]): the command this update answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
}

/// One honeypot event as it travels from node to core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PotEvent {
    pub node_id: u64,
    pub pot_id: String,
    pub pot_type: String,
    pub event_type: String,
    /// RFC 3339; the node always sends UTC with `Z`.
    pub timestamp: String,
    /// A JSON object, carried as text.
    #[serde(default)]
    pub data: JsonObject,
    /// Extension ([`CAPABILITY_ACKED_DELIVERY`]): the node's sequence number of this event,
    /// increasing by one per accepted event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A [`PotEvent`] borrowed from bytes the sender already holds (the node's spool record):
/// encoding it copies `data` as JSON text instead of building a map and serialising it
/// again. It encodes to exactly the JSON of the equal [`PotEvent`].
#[derive(Debug, Clone, Copy)]
pub struct PotEventRef<'a> {
    pub node_id: u64,
    pub pot_id: &'a str,
    pub pot_type: &'a str,
    pub event_type: &'a str,
    pub timestamp: &'a str,
    /// The text of one JSON object, copied into the envelope as it is: the caller vouches
    /// for it (the node's spool holds only payloads it took from parsed objects, under a
    /// checksum), since checking would mean parsing every event once more.
    pub data: &'a [u8],
    pub seq: Option<u64>,
}

/// Appends `event` as one `PotEvent` envelope plus `\n` to `buffer`, like
/// [`encode_envelope`] does for an owned [`PotEvent`], field for field.
pub fn encode_pot_event(event: &PotEventRef<'_>, buffer: &mut Vec<u8>) {
    buffer.extend_from_slice(b"{\"version\":");
    write_json(buffer, &PROTOCOL_VERSION);
    buffer.extend_from_slice(b",\"message\":{\"PotEvent\":{\"node_id\":");
    write_json(buffer, &event.node_id);
    for (key, value) in [
        (&b",\"pot_id\":"[..], event.pot_id),
        (b",\"pot_type\":", event.pot_type),
        (b",\"event_type\":", event.event_type),
        (b",\"timestamp\":", event.timestamp),
    ] {
        buffer.extend_from_slice(key);
        write_json(buffer, value);
    }
    buffer.extend_from_slice(b",\"data\":");
    buffer.extend_from_slice(event.data);
    if let Some(seq) = event.seq {
        buffer.extend_from_slice(b",\"seq\":");
        write_json(buffer, &seq);
    }
    buffer.extend_from_slice(b"}}}\n");
}

/// Appends one string or integer as JSON (escaped as `encode_envelope` escapes it).
fn write_json<T: Serialize + ?Sized>(buffer: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *buffer, value).expect("strings and integers always serialise");
}

/// Extension ([`CAPABILITY_ACKED_DELIVERY`]): cumulative acknowledgement of stored events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub node_id: u64,
    /// Every event of this node with a `seq` up to this one is stored.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeEventKind {
    Started,
    Stopped,
    Alarm,
    Error,
}

impl NodeEventKind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "Started" => Some(NodeEventKind::Started),
            "Stopped" => Some(NodeEventKind::Stopped),
            "Alarm" => Some(NodeEventKind::Alarm),
            "Error" => Some(NodeEventKind::Error),
            _ => None,
        }
    }
}

/// A node-level happening. Sent as `{"type": "Started", "message": "…"}`; the older forms
/// `"Started"`, `{"Error": {"message": …}}` and `{"Alarm": {"description": …}}` are read too.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    pub kind: NodeEventKind,
    pub message: Option<String>,
}

impl Serialize for NodeEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct TypedForm<'a> {
            #[serde(rename = "type")]
            kind: NodeEventKind,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
        }
        TypedForm {
            kind: self.kind,
            message: self.message.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // NodeEvents are rare, so reading through a Value keeps the many accepted forms simple.
        let value = Value::deserialize(deserializer)?;
        let unknown_kind =
            |name: &str| D::Error::custom(format_args!("unknown NodeEvent type {name:?}"));
        let text_field = |payload: &Value, key: &str| {
            payload.get(key).and_then(Value::as_str).map(str::to_owned)
        };
        match value {
            Value::String(name) => Ok(NodeEvent {
                kind: NodeEventKind::from_name(&name).ok_or_else(|| unknown_kind(&name))?,
                message: None,
            }),
            Value::Object(object) => {
                if let Some(kind) = object.get("type") {
                    let name = kind.as_str().ok_or_else(|| {
                        D::Error::custom(format_args!(
                            "NodeEvent \"type\" must be a string, found {kind}"
                        ))
                    })?;
                    return Ok(NodeEvent {
                        kind: NodeEventKind::from_name(name).ok_or_else(|| unknown_kind(name))?,
                        message: text_field(&Value::Object(object.clone()), "message"),
                    });
                }
                let mut entries = object.into_iter();
                let (name, payload) = entries
                    .next()
                    .ok_or_else(|| D::Error::custom("NodeEvent object is empty"))?;
                if let Some((extra, _)) = entries.next() {
                    return Err(D::Error::custom(format_args!(
                        "NodeEvent has more than one variant key ({name:?} and {extra:?})"
                    )));
                }
                Ok(NodeEvent {
                    kind: NodeEventKind::from_name(&name).ok_or_else(|| unknown_kind(&name))?,
                    message: text_field(&payload, "message")
                        .or_else(|| text_field(&payload, "description")),
                })
            }
            other => Err(D::Error::custom(format_args!(
                "NodeEvent must be a string or an object, found {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationAck {
    /// Absent in some refusals; read as 0.
    #[serde(default)]
    pub node_id: u64,
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Base32 TOTP secret, only when the core issues a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_key: Option<String>,
    /// Extension announcement: the extensions of the node's list this core speaks too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Extension ([`CAPABILITY_ACKED_DELIVERY`]): the highest `seq` of this node the Core
    /// has stored, so the node resumes right after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCommand {
    pub node_id: u64,
    pub command: Command,
    /// Extension ([`CAPABILITY_COMMAND_ANSWERS`]): echoed in the node's answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
}

/// Extension ([`CAPABILITY_COMMAND_ANSWERS`]): how one command ended on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    pub node_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
    /// The command's variant name.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pot_id: Option<String>,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Logs, metrics, info or the installed pots, depending on the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// What the core asks a node to do; pot commands carry the pot id.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    InstallPot(InstallPot),
    DeployPot(String),
    StopPot(String),
    RestartPot(String),
    GetPotStatus(String),
    GetPotInfo(String),
    GetPotLogs(String),
    GetPotMetrics(String),
    GetInstalledPots,
    Restart,
    UpdateConfig,
    /// Extension ([`CAPABILITY_UNINSTALL_POT`]): stop a pot and remove it from disk.
    UninstallPot(String),
}

externally_tagged_enum!(
    Command,
    "command",
    payload {
        InstallPot,
        DeployPot,
        StopPot,
        RestartPot,
        GetPotStatus,
        GetPotInfo,
        GetPotLogs,
        GetPotMetrics,
        UninstallPot,
    },
    unit {
        GetInstalledPots,
        Restart,
        UpdateConfig
    }
);

impl Command {
    /// The variant name, for logs and answers.
    pub fn variant_name(&self) -> &'static str {
        match self {
            Command::InstallPot(_) => "InstallPot",
            Command::DeployPot(_) => "DeployPot",
            Command::StopPot(_) => "StopPot",
            Command::RestartPot(_) => "RestartPot",
            Command::GetPotStatus(_) => "GetPotStatus",
            Command::GetPotInfo(_) => "GetPotInfo",
            Command::GetPotLogs(_) => "GetPotLogs",
            Command::GetPotMetrics(_) => "GetPotMetrics",
            Command::GetInstalledPots => "GetInstalledPots",
            Command::Restart => "Restart",
            Command::UpdateConfig => "UpdateConfig",
            Command::UninstallPot(_) => "UninstallPot",
        }
    }

    /// The pot a command is about, for commands that name one.
    pub fn pot_id(&self) -> Option<&str> {
        match self {
            Command::InstallPot(install) => Some(&install.pot_id),
            Command::DeployPot(pot_id)
            | Command::StopPot(pot_id)
            | Command::RestartPot(pot_id)
            | Command::GetPotStatus(pot_id)
            | Command::GetPotInfo(pot_id)
            | Command::GetPotLogs(pot_id)
            | Command::GetPotMetrics(pot_id)
            | Command::UninstallPot(pot_id) => Some(pot_id),
            Command::GetInstalledPots | Command::Restart | Command::UpdateConfig => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallPot {
    pub pot_id: String,
    pub honeypot_type: String,
    /// `None` installs from the node's potstore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub auto_start: bool,
}
