//! API tokens: generated here, stored as SHA-256 hashes only, checked on every request.

use chrono::Utc;
use honeybee_store::{ApiRole, ApiTokenRecord, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Tokens start with this, so they are recognisable in a config file or a leak scanner.
const TOKEN_PREFIX: &str = "hb_";

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

/// Creates a token with `role`; the secret is returned once and never stored.
pub(crate) async fn create_token(
    store: &dyn Store,
    name: &str,
    role: ApiRole,
) -> Result<String, StoreError> {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
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
