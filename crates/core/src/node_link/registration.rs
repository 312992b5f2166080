//! A node connection's registration: the authenticator's decision, the session it opens
//! (registry first, then the store), the ack with the node's resume point — and the
//! confirmation that an enrolled node's new secret arrived.

use super::*;

impl NodeLink {
    /// The node spoke after the ack that carried its new secret, so the secret arrived: from
    /// now on its id registers with a TOTP code only (nobody can be handed a new secret for
    /// it, with or without a token).
    pub(super) async fn confirm_secret_once(&mut self, node_id: u64) {
        let Some(secret) = self
            .session
            .as_mut()
            .and_then(|session| session.unconfirmed_secret.take())
        else {
            return;
        };
        match self
            .context
            .store
            .confirm_node_credential(node_id, secret)
            .await
        {
            Ok(()) => tracing::debug!(
                node_id,
                "the enrolled node confirmed that it holds its secret"
            ),
            Err(error) => {
                tracing::error!(node_id, %error, "recording that a node holds its secret failed; it is confirmed by its first TOTP code instead")
            }
        }
    }

    pub(super) async fn register(&mut self, registration: NodeRegistration) -> Flow {
        let node_id = registration.node_id;
        if node_id == 0 {
            self.context.metrics.registration_refused("invalid_node_id");
            let _ = self
                .send_refusal(0, "node_id 0 is reserved; use a non-zero id".into())
                .await;
            return Flow::Close;
        }
        let authenticated = match self
            .context
            .authenticator
            .authenticate(&registration, self.remote.ip(), self.group, Utc::now())
            .await
        {
            Ok(authenticated) => authenticated,
            Err(refusal) => {
                self.context.metrics.registration_refused(refusal.reason);
                if let Some(suppressed) = self.context.log_limiter.allow(&self.peer_key()) {
                    tracing::warn!(
                        node_id,
                        remote = %self.remote,
                        reason = refusal.reason,
                        detail = %refusal.message,
                        suppressed,
                        "refused a node registration"
                    );
                }
                let _ = self.send_refusal(node_id, refusal.message).await;
                return Flow::Close;
            }
        };
        if authenticated.new_totp_key.is_some() {
            self.context.metrics.nodes_enrolled.increment();
            tracing::info!(node_id, remote = %self.remote, "node enrolled; its TOTP secret is in the registration ack");
        }
        // The registry first: from here on an older connection of this node is no longer
        // current. The store then records this session as the one that may disconnect it.
        let (commands_sender, commands) = mpsc::channel(COMMAND_QUEUE);
        let replaced = CancellationToken::new();
        let revoked = CancellationToken::new();
        let session_id = self.context.sessions.new_session_id();
        let capabilities: Vec<String> = registration
            .capabilities
            .iter()
            .filter(|capability| SUPPORTED_CAPABILITIES.contains(&capability.as_str()))
            .cloned()
            .collect();
        let inserted = self.context.sessions.insert(
            node_id,
            SessionHandle {
                session_id,
                commands: commands_sender,
                replaced: replaced.clone(),
                revoked: revoked.clone(),
                capabilities: capabilities.clone(),
            },
        );
        if inserted.is_err() {
            self.context.metrics.registration_refused("revoked");
            let _ = self.send_refusal(node_id, revoked_message(node_id)).await;
            return Flow::Close;
        }
        let acked_delivery = capabilities
            .iter()
            .any(|capability| capability == CAPABILITY_ACKED_DELIVERY);
        // Where the node resumes: the highest seq already stored (events of an older
        // session still queued are simply sent again and skipped as repeats).
        let acked_seq = if acked_delivery {
            match self.context.store.last_event_seq(node_id).await {
                Ok(seq) => Some(seq.unwrap_or(0)),
                Err(error) => {
                    tracing::warn!(node_id, %error, "reading the node's last stored seq failed; it resends from its own position");
                    None
                }
            }
        } else {
            None
        };
        let record = NodeRegistrationRecord {
            node_id,
            name: registration.node_name.clone(),
            address: registration.address.clone(),
            port: registration.port,
            kind: match registration.node_type {
                NodeType::Full => NodeKind::Full,
                NodeType::Agent => NodeKind::Agent,
            },
            remote_address: self.remote.to_string(),
            session_id,
            at: Utc::now(),
        };
        if let Err(error) = self.context.store.register_node(record).await {
            tracing::error!(node_id, %error, "storing a registration failed");
            self.context.sessions.remove_if_current(node_id, session_id);
            self.context.metrics.registration_refused("store_error");
            let _ = self
                .send_refusal(
                    node_id,
                    "the core could not record the registration; retry later".into(),
                )
                .await;
            return Flow::Close;
        }
        // Registered: from now on the node may send envelopes of the full size.
        self.decoder
            .set_max_envelope_bytes(self.context.max_envelope_bytes);
        self.session = Some(Session {
            node_id,
            session_id,
            commands,
            replaced,
            revoked,
            delivery: acked_delivery.then(|| Arc::new(DeliveryProgress::default())),
            acknowledged_seq: acked_seq.unwrap_or(0),
            last_touch: Instant::now(),
            last_state_write: None,
            pot_statuses: HashMap::new(),
            unconfirmed_secret: authenticated.new_totp_key.clone(),
        });
        self.context.metrics.registrations_accepted.increment();
        self.context.metrics.node_sessions_active.increment();
        tracing::info!(
            node_id,
            node_name = %peer_text(&registration.node_name),
            node_type = ?registration.node_type,
            remote = %self.remote,
            "node registered"
        );
        let ack = Message::RegistrationAck(RegistrationAck {
            node_id,
            accepted: true,
            message: Some("registration accepted".into()),
            totp_key: authenticated.new_totp_key,
            capabilities,
            acked_seq,
        });
        match self.write_message(&ack).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Close,
        }
    }
}
