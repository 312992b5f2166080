//! The project's Protocol v2 extensions (docs/protocol.md): they round-trip, and a message
//! that uses none of them is byte-for-byte what a peer without extensions expects.

use honeybee_protocol::{
    decode_envelope, encode_envelope, Command, CommandAnswer, EventAck, Message, NodeCommand,
    NodeRegistration, NodeType, PotEvent, PotStatus, PotStatusUpdate, RegistrationAck,
    CAPABILITY_ACKED_DELIVERY, CAPABILITY_COMMAND_ANSWERS, CAPABILITY_UNINSTALL_POT,
};
use serde_json::{json, Value};

fn round_trip(message: Message) -> Value {
    let mut encoded = Vec::new();
    encode_envelope(&message, &mut encoded);
    assert_eq!(decode_envelope(&encoded).unwrap().message, message);
    serde_json::from_slice(&encoded).unwrap()
}

#[test]
fn extension_fields_and_messages_round_trip() {
    let registration = round_trip(Message::NodeRegistration(NodeRegistration {
        node_id: 7,
        node_name: "n".into(),
        address: "10.0.0.1".into(),
        port: 0,
        node_type: NodeType::Full,
        totp_code: None,
        enrollment_token: None,
        capabilities: vec![
            CAPABILITY_COMMAND_ANSWERS.into(),
            CAPABILITY_UNINSTALL_POT.into(),
        ],
    }));
    assert_eq!(
        registration["message"]["NodeRegistration"]["capabilities"],
        json!(["command_answers", "uninstall_pot"])
    );
    let command = round_trip(Message::NodeCommand(NodeCommand {
        node_id: 7,
        command: Command::UninstallPot("p1".into()),
        command_id: Some(99),
    }));
    assert_eq!(
        command["message"]["NodeCommand"],
        json!({"node_id": 7, "command": {"UninstallPot": "p1"}, "command_id": 99})
    );
    let answer = round_trip(Message::CommandAnswer(CommandAnswer {
        node_id: 7,
        command_id: Some(99),
        command: "GetPotLogs".into(),
        pot_id: Some("p1".into()),
        success: true,
        message: Some("2 lines".into()),
        data: Some(json!({"lines": ["a", "b"]})),
    }));
    assert_eq!(answer["message"]["CommandAnswer"]["data"]["lines"][1], "b");
    round_trip(Message::PotStatusUpdate(PotStatusUpdate {
        node_id: 7,
        pot_id: "p1".into(),
        pot_type: "t".into(),
        status: PotStatus::Installing,
        message: Some("step 1/2".into()),
        command_id: Some(99),
    }));
}

#[test]
fn without_extensions_nothing_extra_is_written() {
    let ack = round_trip(Message::RegistrationAck(RegistrationAck {
        node_id: 7,
        accepted: true,
        message: None,
        totp_key: None,
        capabilities: Vec::new(),
        acked_seq: None,
    }));
    assert_eq!(
        ack["message"],
        json!({"RegistrationAck": {"node_id": 7, "accepted": true}})
    );
    let command = round_trip(Message::NodeCommand(NodeCommand {
        node_id: 7,
        command: Command::StopPot("p1".into()),
        command_id: None,
    }));
    assert_eq!(
        command["message"],
        json!({"NodeCommand": {"node_id": 7, "command": {"StopPot": "p1"}}})
    );
}

#[test]
fn acked_delivery_fields_and_the_event_ack_round_trip() {
    let event = round_trip(Message::PotEvent(PotEvent {
        node_id: 7,
        pot_id: "p".into(),
        pot_type: "cowrie".into(),
        event_type: "login".into(),
        timestamp: "2024-01-15T10:30:00Z".into(),
        data: honeybee_protocol::JsonObject::empty(),
        seq: Some(1_700_000_000_000_001),
    }));
    assert_eq!(
        event["message"]["PotEvent"]["seq"],
        1_700_000_000_000_001u64
    );
    let ack = round_trip(Message::EventAck(EventAck {
        node_id: 7,
        seq: 42,
    }));
    assert_eq!(
        ack["message"],
        json!({"EventAck": {"node_id": 7, "seq": 42}})
    );
    let registration_ack = round_trip(Message::RegistrationAck(RegistrationAck {
        node_id: 7,
        accepted: true,
        message: None,
        totp_key: None,
        capabilities: vec![CAPABILITY_ACKED_DELIVERY.into()],
        acked_seq: Some(41),
    }));
    assert_eq!(
        registration_ack["message"]["RegistrationAck"]["acked_seq"],
        41
    );
}
