//! The SQLite control store against a real database file: nodes, pots, tokens,
//! enrollment and persistence across reopening (events: `event_store.rs`).

use chrono::{DateTime, Duration, Utc};
use honeybee_store::{
    AccessStore, FleetStore, NodeKind, NodeRegistrationRecord, NodeState, PotRecord, PotState,
    SqliteOptions, SqliteStore, SqliteSynchronous,
};

fn options(dir: &tempfile::TempDir) -> SqliteOptions {
    SqliteOptions::new(SqliteStore::path_in(dir.path()), SqliteSynchronous::Normal)
}

fn base_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-15T10:30:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn registration(node_id: u64, name: &str) -> NodeRegistrationRecord {
    NodeRegistrationRecord {
        node_id,
        name: name.into(),
        address: "0.0.0.0".into(),
        port: 0,
        kind: NodeKind::Full,
        remote_address: "127.0.0.1:5000".into(),
        session_id: 1,
        at: base_time(),
    }
}

#[tokio::test]
async fn nodes_and_pots_are_tracked_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(&options(&dir)).unwrap();
        store
            .register_node(registration(7, "sensor-a"))
            .await
            .unwrap();
        store
            .update_node_state(7, NodeState::Running, base_time() + Duration::seconds(30))
            .await
            .unwrap();
        store
            .upsert_pot(PotRecord {
                node_id: 7,
                pot_id: "cowrie-01".into(),
                pot_type: "cowrie".into(),
                state: PotState::Running,
                message: Some("started".into()),
                updated_at: base_time(),
            })
            .await
            .unwrap();
        store.disconnect_node(7, 1, base_time()).await.unwrap();
    }
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let node = store.get_node(7).await.unwrap().expect("node 7 persisted");
    assert_eq!(node.name, "sensor-a");
    assert_eq!(node.reported_state, NodeState::Running);
    assert!(!node.connected);
    assert_eq!(node.last_seen, base_time() + Duration::seconds(30));
    assert_eq!(node.first_seen, base_time());
    assert!(store.get_node(8).await.unwrap().is_none());
    let pots = store.list_pots(Some(7)).await.unwrap();
    assert_eq!(pots.len(), 1);
    assert_eq!(pots[0].state, PotState::Running);
    assert!(store.list_pots(Some(8)).await.unwrap().is_empty());
    assert_eq!(store.list_pots(None).await.unwrap().len(), 1);
    store.delete_pot(7, "other".into()).await.unwrap();
    assert_eq!(store.list_pots(None).await.unwrap().len(), 1);

    // Registering again keeps first_seen and marks the node connected.
    let mut again = registration(7, "sensor-a-renamed");
    again.at = base_time() + Duration::seconds(60);
    store.register_node(again).await.unwrap();
    let node = store.get_node(7).await.unwrap().unwrap();
    assert!(node.connected);
    assert_eq!(node.name, "sensor-a-renamed");
    assert_eq!(node.first_seen, base_time());
    store.disconnect_all_nodes().await.unwrap();
    assert!(!store.list_nodes().await.unwrap()[0].connected);
    store.delete_pot(7, "cowrie-01".into()).await.unwrap();
    assert!(store.list_pots(Some(7)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_late_disconnect_of_a_replaced_session_does_not_disconnect_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let mut newer = registration(9, "reconnecting");
    newer.session_id = 2;
    store
        .register_node(registration(9, "reconnecting"))
        .await
        .unwrap();
    store.register_node(newer).await.unwrap();
    // The old session (1) finishes after the new one (2) registered.
    store.disconnect_node(9, 1, base_time()).await.unwrap();
    assert!(store.get_node(9).await.unwrap().unwrap().connected);
    store.disconnect_node(9, 2, base_time()).await.unwrap();
    assert!(!store.get_node(9).await.unwrap().unwrap().connected);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(&options(&dir)).unwrap());
    let connection = rusqlite::Connection::open(SqliteStore::path_in(dir.path())).unwrap();
    connection
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    drop(connection);
    let error = SqliteStore::open(&options(&dir)).err().unwrap().to_string();
    assert!(error.contains("99") && error.contains("newer"), "{error}");
}

#[tokio::test]
async fn large_node_ids_keep_their_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    store
        .register_node(registration(u64::MAX, "max"))
        .await
        .unwrap();
    assert_eq!(store.list_nodes().await.unwrap()[0].node_id, u64::MAX);
}

#[tokio::test]
async fn api_tokens_are_kept_by_hash_with_their_role() {
    use honeybee_store::{ApiRole, ApiTokenRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    assert_eq!(store.count_api_tokens().await.unwrap(), 0);
    store
        .create_api_token(ApiTokenRecord {
            token_hash: "ab12".into(),
            name: "ops".into(),
            role: ApiRole::Admin,
            created_at: base_time(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.api_token_role("ab12".into()).await.unwrap(),
        Some(ApiRole::Admin)
    );
    assert_eq!(store.api_token_role("other".into()).await.unwrap(), None);
    assert_eq!(store.count_api_tokens().await.unwrap(), 1);
}

#[tokio::test]
async fn enrollment_tokens_are_consumed_once_per_use_and_honour_expiry_and_revocation() {
    use honeybee_store::{EnrollmentOutcome, NewEnrollmentToken};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let token = |hash: &str, uses, expires_at| NewEnrollmentToken {
        token_hash: hash.into(),
        name: hash.into(),
        uses,
        expires_at,
        created_at: base_time(),
    };
    let now = base_time();
    store
        .create_enrollment_token(token("two", 2, None))
        .await
        .unwrap();
    let expired = Some(now - Duration::seconds(1));
    store
        .create_enrollment_token(token("old", 5, expired))
        .await
        .unwrap();
    let revoked = store
        .create_enrollment_token(token("gone", 5, None))
        .await
        .unwrap();
    assert!(store.revoke_enrollment_token(revoked, now).await.unwrap());
    assert!(!store.revoke_enrollment_token(9999, now).await.unwrap());

    let enroll = |node_id: u64, hash: Option<&str>| {
        store.enroll_node(
            node_id,
            format!("SECRET{node_id}"),
            hash.map(Into::into),
            now,
            WINDOW,
        )
    };
    assert_eq!(
        enroll(1, Some("two")).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(1, Some("old")).await.unwrap(),
        EnrollmentOutcome::TokenExpired
    );
    // Once node 1 proved itself with a code, its credential is settled.
    assert!(store.use_totp_step(1, 10).await.unwrap());
    assert_eq!(
        enroll(1, Some("two")).await.unwrap(),
        EnrollmentOutcome::AlreadyEnrolled
    );
    assert_eq!(
        enroll(2, Some("two")).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(3, Some("two")).await.unwrap(),
        EnrollmentOutcome::TokenUsedUp
    );
    // A new secret for node 2, whose first one was never confirmed, costs a use too: the
    // spent token no longer gives one.
    assert_eq!(
        enroll(2, Some("two")).await.unwrap(),
        EnrollmentOutcome::TokenUsedUp
    );
    assert_eq!(
        enroll(3, Some("old")).await.unwrap(),
        EnrollmentOutcome::TokenExpired
    );
    assert_eq!(
        enroll(3, Some("gone")).await.unwrap(),
        EnrollmentOutcome::TokenRevoked
    );
    assert_eq!(
        enroll(3, Some("nope")).await.unwrap(),
        EnrollmentOutcome::TokenUnknown
    );
    assert_eq!(enroll(3, None).await.unwrap(), EnrollmentOutcome::Enrolled);

    let listed = store.list_enrollment_tokens().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!((listed[0].uses_total, listed[0].uses_left), (2, 0));
    assert_eq!(listed[2].revoked_at, Some(now));
    let credential = store.node_credential(1).await.unwrap().unwrap();
    assert_eq!(credential.totp_secret, "SECRET1");
    assert_eq!(credential.last_totp_step, 10);
    assert_eq!(store.node_credential(4).await.unwrap(), None);
}

const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test]
async fn an_unconfirmed_secret_is_reissued_only_with_a_new_token_use_or_briefly_when_open() {
    use honeybee_store::{EnrollmentOutcome, NewEnrollmentToken};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let now = base_time();
    store
        .create_enrollment_token(NewEnrollmentToken {
            token_hash: "three".into(),
            name: "three".into(),
            uses: 3,
            expires_at: None,
            created_at: now,
        })
        .await
        .unwrap();
    let enroll = |node_id: u64, hash: Option<&str>, at| {
        store.enroll_node(
            node_id,
            format!("S{node_id}"),
            hash.map(Into::into),
            at,
            WINDOW,
        )
    };
    // Open enrollment: within the window the lost ack is made good; after it, never again,
    // and a later re-issue does not move the window.
    assert_eq!(
        enroll(5, None, now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    let inside = now + Duration::seconds(50);
    assert_eq!(
        enroll(5, None, inside).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    let after = now + Duration::seconds(61);
    assert_eq!(
        enroll(5, None, after).await.unwrap(),
        EnrollmentOutcome::ReissueWindowClosed
    );
    // A confirmed credential is settled even inside the window.
    assert_eq!(
        enroll(6, None, now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    // Confirming a secret the id no longer has changes nothing (a newer one was issued).
    store
        .confirm_node_credential(6, "older".into())
        .await
        .unwrap();
    assert!(!store.node_credential(6).await.unwrap().unwrap().confirmed);
    store.confirm_node_credential(6, "S6".into()).await.unwrap();
    assert!(store.node_credential(6).await.unwrap().unwrap().confirmed);
    assert_eq!(
        enroll(6, None, inside).await.unwrap(),
        EnrollmentOutcome::AlreadyEnrolled
    );
    // With a token, each new secret costs a use, window or not.
    assert_eq!(
        enroll(7, Some("three"), now).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        enroll(7, Some("three"), after).await.unwrap(),
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        store.node_credential(7).await.unwrap().unwrap().totp_secret,
        "S7"
    );
    let uses_left = store.list_enrollment_tokens().await.unwrap()[0].uses_left;
    assert_eq!(uses_left, 1);
}

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = SqliteStore::path_in(dir.path());
    // A database and a side file left world-readable by an older run are tightened too.
    let shared_memory = format!("{}-shm", path.display());
    for file in [path.display().to_string(), shared_memory] {
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = SqliteStore::open(&options(&dir)).unwrap();
    store
        .enroll_node(1, "S".into(), None, base_time(), WINDOW)
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
}

#[tokio::test]
async fn a_totp_step_is_used_once_and_a_revoked_node_uses_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let now = base_time();
    store
        .enroll_node(7, "S".into(), None, now, WINDOW)
        .await
        .unwrap();
    assert!(store.use_totp_step(7, 100).await.unwrap());
    assert!(!store.use_totp_step(7, 100).await.unwrap(), "replayed step");
    assert!(!store.use_totp_step(7, 99).await.unwrap(), "older step");
    assert!(store.use_totp_step(7, 101).await.unwrap());
    assert!(!store.use_totp_step(8, 101).await.unwrap(), "unknown node");

    let revoked_at = store.revoke_node(7, now).await.unwrap();
    assert_eq!(revoked_at, now);
    let later = now + Duration::seconds(5);
    assert_eq!(
        store.revoke_node(7, later).await.unwrap(),
        now,
        "first revocation kept"
    );
    assert!(!store.use_totp_step(7, 200).await.unwrap());
    assert_eq!(
        store.node_credential(7).await.unwrap().unwrap().revoked_at,
        Some(now)
    );
    // An id that never enrolled is revoked too and can no longer enroll.
    store.revoke_node(9, now).await.unwrap();
    assert_eq!(
        store
            .enroll_node(9, "S".into(), None, now, WINDOW)
            .await
            .unwrap(),
        honeybee_store::EnrollmentOutcome::AlreadyEnrolled
    );
}
