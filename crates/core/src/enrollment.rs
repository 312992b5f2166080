//! Node authentication at registration: enrollment of new node ids (by token or, on
//! loopback, openly) and TOTP codes for enrolled ones, as the contract's "Authentication"
//! section fixes them.
//!
//! Invariant: a registration is accepted only after this module said so, and before the
//! session registry or the store learn anything about the connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use honeybee_protocol::{
    base32_decode, base32_encode, totp_matching_step, totp_step_at, NodeRegistration,
    TOTP_SECRET_BYTES,
};
use honeybee_store::{EnrollmentOutcome, Store, StoreError};
use rand::RngCore;

use crate::config::EnrollmentPolicy;
use crate::guess_limiter::GuessLimiter;
use crate::tokens::token_hash;
use honeybee_accept::AddressGroup;

/// A registration the authenticator let through.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authenticated {
    /// The secret of a node that just enrolled, for `RegistrationAck.totp_key`.
    pub new_totp_key: Option<String>,
}

/// Why a registration was refused: a metric label and the text the node is told.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: String) -> Self {
        Refusal { reason, message }
    }
}

/// How long an openly enrolled node id whose secret never came back may be enrolled again
/// without a token (the acknowledgement carrying it was lost). Its enrolling session confirms
/// the secret with its very next message, so a real node needs this only after a lost ack.
pub(crate) const OPEN_REISSUE_WINDOW: Duration = Duration::from_secs(60);

/// Whether an enrollment is the node's first, or a repeat because the secret it was given
/// never came back as a code (the acknowledgement may have been lost on the way).
#[derive(Clone, Copy)]
enum EnrollmentAttempt {
    First,
    Again,
}

pub(crate) struct NodeAuthenticator {
    store: Arc<dyn Store>,
    policy: EnrollmentPolicy,
    guesses: GuessLimiter,
}

impl NodeAuthenticator {
    pub fn new(store: Arc<dyn Store>, policy: EnrollmentPolicy) -> Self {
        NodeAuthenticator {
            store,
            policy,
            guesses: GuessLimiter::default(),
        }
    }

    /// Decides whether `registration` may speak for its node id; a node that enrolls here
    /// gets its new secret stored before this returns.
    pub async fn authenticate(
        &self,
        registration: &NodeRegistration,
        peer: IpAddr,
        source: AddressGroup,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, Refusal> {
        let node_id = registration.node_id;
        let credential = self
            .store
            .node_credential(node_id)
            .await
            .map_err(store_refusal)?;
        match credential {
            Some(credential) if credential.revoked_at.is_some() => Err(Refusal::new(
                "revoked",
                format!("node {node_id} is revoked; it may not register again (enroll it under a new node id)"),
            )),
            // Enrolled, but the node never showed that the secret reached it: it may be given
            // a new one at the price of a token use (or, open, only briefly), which the
            // store decides in one transaction.
            Some(credential) if !credential.confirmed && registration.totp_code.is_none() => {
                self.enroll(registration, now, EnrollmentAttempt::Again).await
            }
            Some(credential) => {
                if let Some(wait) = self.guesses.locked_for(node_id, source) {
                    return Err(Refusal::new(
                        "totp_locked",
                        format!("too many invalid totp codes for node {node_id} from {peer}; retry in {} s", wait.as_secs() + 1),
                    ));
                }
                let Some(code) = registration.totp_code.as_deref() else {
                    return Err(Refusal::new(
                        "totp_missing",
                        format!("node {node_id} is enrolled, so its registration needs a totp_code; if the node lost its TOTP secret, give it a new node id and enroll it again"),
                    ));
                };
                let secret = base32_decode(&credential.totp_secret).ok_or_else(|| {
                    Refusal::new(
                        "store_error",
                        "the core could not read the node's stored secret".into(),
                    )
                })?;
                let now_step = totp_step_at(now.timestamp().max(0) as u64);
                let window = now_step.saturating_sub(1)..=now_step + 1;
                let Some(step) = totp_matching_step(&secret, code, window) else {
                    self.guesses.record_failure(node_id, source);
                    return Err(Refusal::new(
                        "totp_invalid",
                        format!("the totp_code is not valid for node {node_id} now (check that the node's clock is right)"),
                    ));
                };
                if !self
                    .store
                    .use_totp_step(node_id, step)
                    .await
                    .map_err(store_refusal)?
                {
                    self.guesses.record_failure(node_id, source);
                    return Err(Refusal::new(
                        "totp_replayed",
                        format!("the totp_code for node {node_id} was already used (or an older one); each code registers once"),
                    ));
                }
                self.guesses.record_success(node_id, source);
                Ok(Authenticated { new_totp_key: None })
            }
            None => self.enroll(registration, now, EnrollmentAttempt::First).await,
        }
    }

    async fn enroll(
        &self,
        registration: &NodeRegistration,
        now: DateTime<Utc>,
        attempt: EnrollmentAttempt,
    ) -> Result<Authenticated, Refusal> {
        let node_id = registration.node_id;
        // Open enrollment consumes no token even when one is presented.
        let token = match self.policy {
            EnrollmentPolicy::Open => None,
            EnrollmentPolicy::Token => match registration.enrollment_token.as_deref() {
                Some(token) => Some(token_hash(token.trim())),
                None => {
                    let message = match attempt {
                        EnrollmentAttempt::First => format!("node {node_id} is not enrolled and this core requires an enrollment token (create one with `honeybee enroll create`, give it to the node as auth.enrollment_token)"),
                        EnrollmentAttempt::Again => format!("node {node_id} was enrolled but has not yet registered with a totp_code; send one, or present a usable enrollment token to receive a new secret (this spends one of its uses)"),
                    };
                    return Err(Refusal::new("enrollment_token_missing", message));
                }
            },
        };
        let mut secret = [0u8; TOTP_SECRET_BYTES];
        rand::thread_rng().fill_bytes(&mut secret);
        let totp_key = base32_encode(&secret);
        let outcome = self
            .store
            .enroll_node(node_id, totp_key.clone(), token, now, OPEN_REISSUE_WINDOW)
            .await
            .map_err(store_refusal)?;
        let problem = match outcome {
            EnrollmentOutcome::Enrolled => {
                return Ok(Authenticated {
                    new_totp_key: Some(totp_key),
                })
            }
            EnrollmentOutcome::AlreadyEnrolled => {
                return Err(Refusal::new(
                    "enrollment_race",
                    format!("node {node_id} was enrolled by another connection at the same time"),
                ))
            }
            EnrollmentOutcome::ReissueWindowClosed => {
                return Err(Refusal::new(
                    "enrollment_closed",
                    format!("node {node_id} was enrolled more than {} s ago and never used its secret; it may not enroll again without a token (give it a new node id, or an enrollment token)", OPEN_REISSUE_WINDOW.as_secs()),
                ))
            }
            EnrollmentOutcome::TokenUnknown => "unknown",
            EnrollmentOutcome::TokenUsedUp => "used up",
            EnrollmentOutcome::TokenExpired => "expired",
            EnrollmentOutcome::TokenRevoked => "revoked",
        };
        Err(Refusal::new(
            "enrollment_token_invalid",
            format!("the enrollment token presented by node {node_id} is {problem}"),
        ))
    }
}

fn store_refusal(error: StoreError) -> Refusal {
    tracing::error!(%error, "checking a node's credentials failed in the store");
    Refusal::new(
        "store_error",
        "the core could not check the node's credentials; retry later".into(),
    )
}
