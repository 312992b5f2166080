//! API and enrollment tokens: generated here, stored as SHA-256 hashes only.

use chrono::{DateTime, Utc};
use honeybee_store::{
    ApiRole, ApiTokenRecord, EnrollmentTokenRecord, NewEnrollmentToken, Store, StoreError,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// API tokens start with this, so they are recognisable in a config file or a leak scanner.
const API_TOKEN_PREFIX: &str = "hb_";
/// Enrollment tokens start with this, so the two kinds are never confused.
const ENROLLMENT_TOKEN_PREFIX: &str = "hbe_";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 of `bytes`, lowercase hex (token hashes, certificate fingerprints).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The hash under which a token is stored and looked up.
pub(crate) fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// 256 random bits after `prefix`, hex.
fn new_secret(prefix: &str) -> String {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    format!("{prefix}{}", hex(&secret))
}

/// Creates a token with `role`; the secret is returned once and never stored.
pub(crate) async fn create_token(
    store: &dyn Store,
    name: &str,
    role: ApiRole,
) -> Result<String, StoreError> {
    let token = new_secret(API_TOKEN_PREFIX);
    store
        .create_api_token(ApiTokenRecord {
            token_hash: token_hash(&token),
            name: name.to_owned(),
            role,
            created_at: Utc::now(),
        })
        .await?;
    Ok(token)
}

/// A created enrollment token: the secret (shown once) and what is stored about it.
pub(crate) struct CreatedEnrollmentToken {
    pub id: u64,
    pub token: String,
    pub record: EnrollmentTokenRecord,
}

/// Creates an enrollment token for `uses` nodes, valid until `expires_at`.
pub(crate) async fn create_enrollment_token(
    store: &dyn Store,
    name: &str,
    uses: u32,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<CreatedEnrollmentToken, StoreError> {
    let token = new_secret(ENROLLMENT_TOKEN_PREFIX);
    let id = store
        .create_enrollment_token(NewEnrollmentToken {
            token_hash: token_hash(&token),
            name: name.to_owned(),
            uses,
            expires_at: Some(expires_at),
            created_at: now,
        })
        .await?;
    Ok(CreatedEnrollmentToken {
        id,
        token,
        record: EnrollmentTokenRecord {
            id,
            name: name.to_owned(),
            uses_total: uses,
            uses_left: uses,
            expires_at: Some(expires_at),
            created_at: now,
            revoked_at: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
