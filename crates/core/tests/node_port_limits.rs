//! Attacks on the node port by peers that have not authenticated: holding every
//! connection slot from one host (or one local user on many loopback addresses), and sending envelopes far bigger than a registration.

mod other_user;
mod support;

use std::time::Duration;

use honeybee_protocol::Message;
use other_user::OtherUser;
use serde_json::json;
use support::{envelope, expect_closed_within, RawPeer, TestCore};

#[tokio::test]
async fn one_local_user_cannot_hold_more_than_its_share_of_node_slots_from_many_loopback_addresses()
{
    let core = TestCore::start(|config| {
        config.server.max_node_connections_per_address = 3;
        // Long enough that the held connections stay open for the whole test.
        config.server.handshake_timeout = 60.0;
    })
    .await;
    // A pot's user on the sensor binds 127.0.0.2 … 127.0.0.9, one connection each: by
    // address these would be eight hosts, but they are one user.
    let attacker = OtherUser::relay_to(core.node_address).await;
    let mut attempts = Vec::new();
    for n in 2..=9 {
        let stream = attacker.connect_from(&format!("127.0.0.{n}")).await;
        attempts.push(tokio::spawn(async move {
            let mut peer = RawPeer::over(stream);
            peer.send(&support::registration(100 + n, &format!("pot-user-{n}")))
                .await;
            let admitted = matches!(
                peer.receive().await,
                Some(Message::RegistrationAck(ack)) if ack.accepted
            );
            (admitted, peer)
        }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        let (admitted, peer) = attempt.await.unwrap();
        if admitted {
            held.push(peer);
        } else {
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (3, 5), "admitted and refused");
    let counted = support::eventually("the refusal metric", || async {
        core.metric(
            "honeybee_core_connections_refused_total{port=\"node\",reason=\"per_address_limit\"}",
        )
        .await
        .filter(|count| *count >= 5)
    })
    .await;
    assert_eq!(counted, 5);

    // Another user (the real node, root here) still gets in and registers, from any of
    // those addresses.
    let mut real_node = RawPeer::connect_from("127.0.0.3", &core).await;
    real_node.register(7, "real-node").await;

    // A held slot given back is usable again by the same user.
    drop(held.pop());
    support::eventually("a freed slot", || async {
        let mut peer = RawPeer::over(attacker.connect_from("127.0.0.9").await);
        peer.send(&support::registration(8, "came-back")).await;
        match peer.receive().await {
            Some(Message::RegistrationAck(ack)) if ack.accepted => Some(()),
            _ => None,
        }
    })
    .await;
    // Registered peers gone first, so the Core's stop does not wait out their drain.
    drop((held, real_node));
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
