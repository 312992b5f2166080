//! Access in SQLite: API tokens, enrollment tokens, node credentials, TOTP steps and
//! revocations.

use super::*;

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO api_tokens (token_hash, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![token.token_hash, token.name, token.role.as_str(), micros(token.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_token_role(&self, token_hash: String) -> Result<Option<ApiRole>, StoreError> {
        self.with_reader(move |connection| {
            let role: Option<String> = connection
                .query_row(
                    "SELECT role FROM api_tokens WHERE token_hash = ?1",
                    [token_hash],
                    |row| row.get(0),
                )
                .optional()?;
            role.map(|role| parse_text("role", role, ApiRole::parse))
                .transpose()
        })
        .await
    }

    async fn count_api_tokens(&self) -> Result<u64, StoreError> {
        self.with_reader(|connection| {
            let count: i64 =
                connection.query_row("SELECT COUNT(*) FROM api_tokens", [], |row| row.get(0))?;
            Ok(count as u64)
        })
        .await
    }

    async fn create_enrollment_token(&self, token: NewEnrollmentToken) -> Result<u64, StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO enrollment_tokens (token_hash, name, uses_total, uses_left, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
                params![
                    token.token_hash,
                    token.name,
                    token.uses,
                    token.expires_at.map(micros),
                    micros(token.created_at)
                ],
            )?;
            Ok(connection.last_insert_rowid() as u64)
        })
        .await
    }

    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, name, uses_total, uses_left, expires_at, created_at, revoked_at \
                 FROM enrollment_tokens ORDER BY id",
            )?;
            collect_rows(&mut statement, [], |row| {
                Ok(EnrollmentTokenRecord {
                    id: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    uses_total: row.get(2)?,
                    uses_left: row.get(3)?,
                    expires_at: optional_micros(row.get(4)?)?,
                    created_at: from_micros(row.get(5)?)?,
                    revoked_at: optional_micros(row.get(6)?)?,
                })
            })
        })
        .await
    }

    async fn revoke_enrollment_token(
        &self,
        id: u64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.with_writer(move |connection| {
            let changed = connection.execute(
                "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id as i64, micros(at)],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn enroll_node(
        &self,
        node_id: u64,
        totp_secret: String,
        token_hash: Option<String>,
        at: DateTime<Utc>,
        open_reissue_window: std::time::Duration,
    ) -> Result<EnrollmentOutcome, StoreError> {
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            // (enrolled at, confirmed, revoked)
            let existing: Option<(i64, bool, bool)> = transaction
                .query_row(
                    "SELECT enrolled_at, confirmed, revoked_at IS NOT NULL FROM node_credentials WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            // Only a secret that never reached its node may be replaced.
            if matches!(existing, Some((_, confirmed, revoked)) if confirmed || revoked) {
                return Ok(EnrollmentOutcome::AlreadyEnrolled);
            }
            let mut token_id = None;
            if let Some(token_hash) = &token_hash {
                let token: Option<(i64, i64, Option<i64>, Option<i64>)> = transaction
                    .query_row(
                        "SELECT id, uses_left, expires_at, revoked_at FROM enrollment_tokens WHERE token_hash = ?1",
                        [token_hash],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()?;
                let Some((id, uses_left, expires_at, revoked_at)) = token else {
                    return Ok(EnrollmentOutcome::TokenUnknown);
                };
                if revoked_at.is_some() {
                    return Ok(EnrollmentOutcome::TokenRevoked);
                }
                if expires_at.is_some_and(|expires_at| expires_at <= micros(at)) {
                    return Ok(EnrollmentOutcome::TokenExpired);
                }
                // A new secret for an id enrolled before costs a use too: a spent token
                // must not let whoever holds it replace a node's secret.
                if uses_left <= 0 {
                    return Ok(EnrollmentOutcome::TokenUsedUp);
                }
                transaction.execute(
                    "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1",
                    [id],
                )?;
                token_id = Some(id);
            } else if let Some((enrolled_at, _, _)) = existing {
                let window = i64::try_from(open_reissue_window.as_micros()).unwrap_or(i64::MAX);
                if enrolled_at.saturating_add(window) <= micros(at) {
                    return Ok(EnrollmentOutcome::ReissueWindowClosed);
                }
            }
            // An open re-issue keeps the first enrollment's time, so its window never grows.
            transaction.execute(
                "INSERT INTO node_credentials (node_id, totp_secret, last_totp_step, enrolled_at, enrolled_with, confirmed) \
                 VALUES (?1, ?2, 0, ?3, ?4, 0) \
                 ON CONFLICT (node_id) DO UPDATE SET totp_secret = excluded.totp_secret, \
                 last_totp_step = 0, enrolled_with = COALESCE(excluded.enrolled_with, enrolled_with), \
                 enrolled_at = CASE WHEN excluded.enrolled_with IS NULL THEN enrolled_at ELSE excluded.enrolled_at END",
                params![node_id_to_sql(node_id), totp_secret, micros(at), token_id],
            )?;
            transaction.commit()?;
            Ok(EnrollmentOutcome::Enrolled)
        })
        .await
    }

    async fn confirm_node_credential(
        &self,
        node_id: u64,
        totp_secret: String,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE node_credentials SET confirmed = 1 \
                 WHERE node_id = ?1 AND totp_secret = ?2 AND confirmed = 0",
                params![node_id_to_sql(node_id), totp_secret],
            )?;
            Ok(())
        })
        .await
    }

    async fn node_credential(&self, node_id: u64) -> Result<Option<NodeCredential>, StoreError> {
        self.with_reader(move |connection| {
            connection
                .query_row(
                    "SELECT totp_secret, last_totp_step, enrolled_at, revoked_at, confirmed FROM node_credentials WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                            row.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?
                .map(|(totp_secret, last_totp_step, enrolled_at, revoked_at, confirmed)| {
                    Ok(NodeCredential {
                        node_id,
                        totp_secret,
                        last_totp_step: last_totp_step as u64,
                        enrolled_at: from_micros(enrolled_at)?,
                        confirmed,
                        revoked_at: optional_micros(revoked_at)?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn use_totp_step(&self, node_id: u64, step: u64) -> Result<bool, StoreError> {
        self.with_writer(move |connection| {
            let changed = connection.execute(
                "UPDATE node_credentials SET last_totp_step = ?2, confirmed = 1 \
                 WHERE node_id = ?1 AND last_totp_step < ?2 AND revoked_at IS NULL",
                params![node_id_to_sql(node_id), step as i64],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn revoke_node(
        &self,
        node_id: u64,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            // An id with no credential gets a revoked one with an unusable (empty) secret.
            transaction.execute(
                "INSERT INTO node_credentials (node_id, totp_secret, last_totp_step, enrolled_at, revoked_at) \
                 VALUES (?1, '', 0, ?2, ?2) \
                 ON CONFLICT (node_id) DO UPDATE SET revoked_at = COALESCE(revoked_at, excluded.revoked_at)",
                params![node_id_to_sql(node_id), micros(at)],
            )?;
            let revoked_at: i64 = transaction.query_row(
                "SELECT revoked_at FROM node_credentials WHERE node_id = ?1",
                [node_id_to_sql(node_id)],
                |row| row.get(0),
            )?;
            transaction.commit()?;
            from_micros(revoked_at)
        })
        .await
    }
}
