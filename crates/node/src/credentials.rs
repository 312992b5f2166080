//! The node's side of the contract's authentication: the enrollment token it presents while
//! it has no TOTP secret, the secret the Core issues (kept with mode 0600), and a TOTP code
//! for every registration, never one of a step it already used.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use honeybee_protocol::{
    base32_decode, totp_code, totp_step_at, TOTP_SECRET_BYTES, TOTP_STEP_SECONDS,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CredentialError {
    #[error("reading TOTP secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TOTP secret file {path} does not hold a base32 secret; remove it and give the node a new node id to enroll again")]
    Corrupt { path: PathBuf },
    #[error("writing TOTP secret file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the core sent a totp_key that is not a base32 secret of at least {minimum} bytes")]
    InvalidKey { minimum: usize },
}

/// What a registration carries to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RegistrationProof {
    pub totp_code: Option<String>,
    pub enrollment_token: Option<String>,
}

struct Secret {
    bytes: Vec<u8>,
    /// The newest step a code was sent for (also kept in the step file).
    last_step: u64,
}

pub(crate) struct NodeCredentials {
    secret_file: PathBuf,
    step_file: PathBuf,
    enrollment_token: Option<String>,
    secret: Mutex<Option<Secret>>,
}

impl NodeCredentials {
    /// Loads the secret from `secret_file` if the node enrolled before.
    pub fn load(
        secret_file: PathBuf,
        enrollment_token: Option<String>,
    ) -> Result<Self, CredentialError> {
        let step_file = secret_file.with_extension("step");
        let secret = match std::fs::read_to_string(&secret_file) {
            Ok(text) => {
                let bytes = base32_decode(text.trim())
                    .filter(|bytes| !bytes.is_empty())
                    .ok_or_else(|| CredentialError::Corrupt {
                        path: secret_file.clone(),
                    })?;
                warn_if_readable_by_others(&secret_file);
                let last_step = std::fs::read_to_string(&step_file)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0);
                Some(Secret { bytes, last_step })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(CredentialError::Read {
                    path: secret_file,
                    source,
                })
            }
        };
        Ok(NodeCredentials {
            secret_file,
            step_file,
            enrollment_token: enrollment_token.filter(|token| !token.trim().is_empty()),
            secret: Mutex::new(secret),
        })
    }

    pub fn is_enrolled(&self) -> bool {
        self.lock().is_some()
    }

    /// The proof for the next registration. With a secret, a code for the oldest step the
    /// Core still accepts (one step back) that is newer than the last one used: so a node
    /// on a flapping link can register three times per 30 s step before it has to wait for
    /// the next. (A node whose clock runs behind has its first code refused; the next one
    /// uses a newer step and passes.) The enrollment token goes along only while the node
    /// has no secret: once enrolled it is of no use to the node, and each registration that
    /// carried it would show it to whoever can read the connection.
    pub async fn next_proof(&self) -> RegistrationProof {
        loop {
            let now_step = totp_step_at(unix_seconds());
            let wait = {
                let mut secret = self.lock();
                let Some(secret) = secret.as_mut() else {
                    return RegistrationProof {
                        totp_code: None,
                        enrollment_token: self.enrollment_token.clone(),
                    };
                };
                let step = now_step.saturating_sub(1).max(secret.last_step + 1);
                if step <= now_step + 1 {
                    secret.last_step = step;
                    // Best effort: losing it costs at most one refused registration.
                    if let Err(error) = write_private(&self.step_file, &format!("{step}\n")) {
                        tracing::warn!(path = %self.step_file.display(), %error, "recording the used TOTP step failed");
                    }
                    return RegistrationProof {
                        totp_code: Some(totp_code(&secret.bytes, step)),
                        enrollment_token: None,
                    };
                }
                // `step - 1` must become the current step.
                (step - 1) * TOTP_STEP_SECONDS
            };
            let delay = Duration::from_secs(wait.saturating_sub(unix_seconds()).max(1));
            tracing::info!(
                delay_s = delay.as_secs(),
                "every TOTP code of this step was used; waiting for the next step"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Keeps the secret the Core issued in `RegistrationAck.totp_key`: written (0600,
    /// through a temporary file and a rename) before the node goes on.
    pub fn store_issued_key(&self, totp_key: &str) -> Result<(), CredentialError> {
        let bytes = base32_decode(totp_key)
            .filter(|bytes| bytes.len() >= TOTP_SECRET_BYTES / 2)
            .ok_or(CredentialError::InvalidKey {
                minimum: TOTP_SECRET_BYTES / 2,
            })?;
        write_private(&self.secret_file, &format!("{}\n", totp_key.trim())).map_err(|source| {
            CredentialError::Write {
                path: self.secret_file.clone(),
                source,
            }
        })?;
        let _ = std::fs::remove_file(&self.step_file);
        *self.lock() = Some(Secret {
            bytes,
            last_step: 0,
        });
        Ok(())
    }

    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Secret>> {
        self.secret.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    crate::data_dir::write_private_file(path, content.as_bytes())
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the TOTP secret file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_issued_key_is_kept_private_and_codes_never_reuse_a_step() {
        // The steps are read from the clock: retry a run that straddled a step boundary.
        loop {
            let before = totp_step_at(unix_seconds());
            let run = issue_and_use_codes().await;
            if before == totp_step_at(unix_seconds()) {
                run.unwrap();
                return;
            }
        }
    }

    /// Returns what went wrong instead of panicking, so a run that crossed a step boundary
    /// can be repeated.
    async fn issue_and_use_codes() -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("totp.key");
        let credentials = NodeCredentials::load(file.clone(), Some("hbe_x".into())).unwrap();
        assert!(!credentials.is_enrolled());
        assert_eq!(
            credentials.next_proof().await,
            RegistrationProof {
                totp_code: None,
                enrollment_token: Some("hbe_x".into())
            }
        );
        assert!(credentials.store_issued_key("short").is_err());
        let key = honeybee_protocol::base32_encode(&[7u8; TOTP_SECRET_BYTES]);
        credentials.store_issued_key(&key).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let now_step = totp_step_at(unix_seconds());
        let code_of = |step| Some(totp_code(&[7u8; TOTP_SECRET_BYTES], step));
        let first_proof = credentials.next_proof().await;
        if first_proof.enrollment_token.is_some() {
            panic!("an enrolled node never shows its enrollment token again");
        }
        let first = first_proof.totp_code;
        let second = credentials.next_proof().await.totp_code;
        let third = credentials.next_proof().await.totp_code;
        // A restarted node remembers the secret and the steps it used: a fourth code would
        // need a step the Core does not accept yet, so it waits for the next step (checked
        // without waiting: the step file says the next step is used).
        let reloaded = NodeCredentials::load(file, None).unwrap();
        assert!(reloaded.is_enrolled());
        assert_eq!(reloaded.lock().as_ref().unwrap().last_step, now_step + 1);
        let expected = [
            code_of(now_step - 1),
            code_of(now_step),
            code_of(now_step + 1),
        ];
        if [first, second, third] == expected {
            Ok(())
        } else {
            Err("codes were not those of the three acceptable steps, in order".into())
        }
    }

    #[test]
    fn a_corrupt_secret_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("totp.key");
        std::fs::write(&file, "not base32!\n").unwrap();
        let error = NodeCredentials::load(file, None).err().unwrap().to_string();
        assert!(error.contains("totp.key"), "{error}");
    }
}
