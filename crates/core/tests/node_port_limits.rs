//! Attacks on the node port by peers that have not authenticated: holding every
//! connection slot from one host, and sending envelopes far bigger than a registration.

mod support;

use std::time::Duration;

use honeybee_protocol::Message;
use serde_json::json;
use support::{envelope, expect_closed_within, RawPeer, TestCore};

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_node_slots() {
    let core = TestCore::start(|config| {
        config.server.max_node_connections_per_address = 3;
        // Long enough that the held connections stay open for the whole test.
        config.server.handshake_timeout = 60.0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawPeer::connect_from("127.0.0.2", &core).await);
    }
    // The slots are taken once the Core accepted them; a fourth from the same address is
    // closed at once (before, it waited out the handshake timeout holding a slot).
    let mut over_the_cap = RawPeer::connect_from("127.0.0.2", &core).await;
    expect_closed_within(
        &mut over_the_cap.stream,
        Duration::from_secs(10),
        "a fourth connection from 127.0.0.2",
    )
    .await;
    let refused = support::eventually("the refusal metric", || async {
        core.metric(
            "honeybee_core_connections_refused_total{port=\"node\",reason=\"per_address_limit\"}",
        )
        .await
        .filter(|count| *count >= 1)
    })
    .await;
    assert_eq!(refused, 1);

    // Another host still gets in and registers.
    let mut other_host = RawPeer::connect_from("127.0.0.3", &core).await;
    other_host.register(7, "other-host").await;

    // A held slot given back is usable again by the same address.
    drop(held.pop());
    support::eventually("a freed slot", || async {
        let mut peer = RawPeer::connect_from("127.0.0.2", &core).await;
        peer.send(&support::registration(8, "came-back")).await;
        match peer.receive().await {
            Some(Message::RegistrationAck(ack)) if ack.accepted => Some(()),
            _ => None,
        }
    })
    .await;
    // Registered peers gone first, so the Core's stop does not wait out their drain.
    drop((held, other_host));
    core.stop().await;
}

#[tokio::test]
async fn an_unregistered_peer_cannot_send_a_big_envelope_but_a_registered_node_can() {
    let core = TestCore::start(|_| {}).await;
    let padding = "x".repeat(100 * 1024);

    // 100 KiB before registering: refused with the cap in the reason, then closed.
    let mut stranger = RawPeer::connect_from("127.0.0.2", &core).await;
    stranger.send(&support::registration(3, &padding)).await;
    match stranger.receive().await {
        Some(Message::RegistrationAck(ack)) => {
            assert!(!ack.accepted, "{ack:?}");
            let reason = ack.message.unwrap_or_default();
            assert!(reason.contains("16384"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    expect_closed_within(
        &mut stranger.stream,
        Duration::from_secs(10),
        "the stranger",
    )
    .await;
    let too_large = core
        .metric("honeybee_core_messages_rejected_total{reason=\"too_large\"}")
        .await;
    assert_eq!(too_large, Some(1));

    // Registered, the same size is an ordinary event.
    let mut node = RawPeer::connect_from("127.0.0.3", &core).await;
    node.register(4, "big-events").await;
    node.send(&envelope(json!({"PotEvent": {
        "node_id": 4, "pot_id": "p", "pot_type": "t", "event_type": "big",
        "timestamp": "2026-01-01T00:00:00Z", "data": {"padding": padding},
    }})))
    .await;
    support::eventually("the big event stored", || async {
        core.metric("honeybee_core_events_stored_total")
            .await
            .filter(|count| *count == 1)
    })
    .await;
    drop(node);
    core.stop().await;
}
