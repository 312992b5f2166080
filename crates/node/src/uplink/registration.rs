//! Registering with the Core: connect (within `server.connect_timeout`), TLS, the check that
//! a plaintext Core on this machine is run by root or by this node's own user, the
//! `NodeRegistration` with its proof, and the answer — the secret of an enrollment is kept,
//! one the node did not ask for is refused.

use super::*;

pub(super) async fn connect_and_register(
    context: &UplinkContext,
) -> Result<CoreSession, UplinkError> {
    // Before connecting: finding an unused TOTP step may wait, and the Core's handshake
    // timeout must not run meanwhile.
    let proof = match &context.credentials {
        Some(credentials) => credentials.next_proof().await,
        None => RegistrationProof::default(),
    };
    let address = context.server.address.clone();
    let timeout = context.server.connect_timeout();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
        Err(_) => {
            return Err(UplinkError::Timeout {
                address,
                what: "connecting",
            })
        }
        Ok(Err(source)) => return Err(UplinkError::Connect { address, source }),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    if context.tls.is_none() {
        verify_local_core_owner(&stream, &address, Instant::now() + timeout).await?;
    }
    let local_ip = stream
        .local_addr()
        .map(|local| local.ip().to_string())
        .unwrap_or_else(|_| "0.0.0.0".into());
    type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
    type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;
    let (reader, writer): (Reader, Writer) = match &context.tls {
        None => {
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
        Some((connector, server_name)) => {
            let handshake = connector.connect(server_name.clone(), stream);
            match tokio::time::timeout(timeout, handshake).await {
                Err(_) => {
                    return Err(UplinkError::Timeout {
                        address,
                        what: "in the TLS handshake",
                    })
                }
                Ok(Err(error)) => {
                    return Err(UplinkError::Tls {
                        address,
                        reason: error.to_string(),
                    })
                }
                Ok(Ok(tls)) => {
                    let (reader, writer) = tokio::io::split(tls);
                    (Box::new(reader), Box::new(writer))
                }
            }
        }
    };
    let mut session = CoreSession {
        reader,
        writer,
        decoder: EnvelopeDecoder::new(context.server.max_envelope_bytes),
        node_id: context.node_id,
        outgoing: Vec::new(),
        address: address.clone(),
        capabilities: Vec::new(),
        spool_reader: context.spool.reader(),
        spooled: SpooledBatch::default(),
        last_sent_seq: 0,
    };
    // A registration with a code proves the node holds a secret already: a Core that
    // answers it with a new one is not the Core that issued it (`UnrequestedTotpKey`).
    let registered_with_code = proof.totp_code.is_some();
    let registration = Message::NodeRegistration(NodeRegistration {
        node_id: context.node_id,
        node_name: context.node_name.clone(),
        address: local_ip,
        port: 0,
        node_type: context.node_type,
        totp_code: proof.totp_code,
        enrollment_token: proof.enrollment_token,
        capabilities: context.capabilities(),
    });
    session
        .write_messages(std::slice::from_ref(&registration))
        .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, session.next_message(context)).await {
            Err(_) => {
                return Err(UplinkError::Timeout {
                    address,
                    what: "waiting for the registration acknowledgement",
                })
            }
            Ok(message) => message?,
        };
        match message {
            Message::RegistrationAck(ack) if ack.accepted => {
                if ack.totp_key.is_some() && registered_with_code {
                    context
                        .metrics
                        .core_message_rejected("unrequested_totp_key");
                    context.metrics.core_refused("unrequested_totp_key");
                    return Err(UplinkError::UnrequestedTotpKey { address });
                }
                if let Some(totp_key) = ack.totp_key.as_deref() {
                    match &context.credentials {
                        Some(credentials) => {
                            credentials.store_issued_key(totp_key)?;
                            tracing::info!(
                                node_id = context.node_id,
                                secret_file = %credentials.secret_file().display(),
                                "enrolled with the core; the TOTP secret is kept for later registrations"
                            );
                        }
                        None => tracing::warn!(
                            "the core issued a TOTP secret but auth.totp_enabled is false: this node will be refused when it registers again"
                        ),
                    }
                }
                session.capabilities = ack.capabilities;
                if let Some(stored) = ack.acked_seq {
                    if stored > HIGHEST_VALID_SEQ {
                        return Err(UplinkError::Protocol(format!(
                            "RegistrationAck.acked_seq {stored} is beyond any seq a core stores"
                        )));
                    }
                    // The Core holds everything up to there: never send it again, and never
                    // number a new event at or below it.
                    let acknowledged = acknowledge_in_spool(&context.spool, stored).await;
                    context.metrics.events_acknowledged.add(acknowledged);
                    context.spool.raise_seq_floor(stored);
                }
                session.spool_reader = context.spool.reader();
                break;
            }
            Message::RegistrationAck(ack) => {
                return Err(UplinkError::Refused {
                    message: ack.message.unwrap_or_else(|| "no reason given".into()),
                })
            }
            other => {
                context.metrics.core_message_rejected("before_ack");
                tracing::debug!(
                    variant = other.variant_name(),
                    "ignored a message before the registration ack"
                );
            }
        }
    }
    session
        .write_messages(&[session.status(NodeStatus::Running)])
        .await?;
    Ok(session)
}

/// How often the owner of a local Core's socket is looked up again while the Core has not
/// accepted the connection yet (until then the kernel names no owner).
const CORE_OWNER_POLL: Duration = Duration::from_millis(20);

/// Before a plaintext registration with a Core on this machine (loopback, or our own
/// address): the Core's socket must belong to root or to this node's own user. Any local
/// user — a pot's included — can bind a loopback port a restarting Core left free; without
/// TLS nothing else tells that impostor from the Core, and registering with it would hand
/// it codes and let it send commands. The owner is read from the kernel's socket tables
/// (`honeybee-local-peer`, on the blocking pool); a connection still waiting in the Core's
/// backlog has no owner yet, so the lookup is repeated until `deadline`.
async fn verify_local_core_owner(
    stream: &TcpStream,
    address: &str,
    deadline: Instant,
) -> Result<(), UplinkError> {
    let (Ok(core), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return Ok(());
    };
    let core_ip = core.ip().to_canonical();
    if !core_ip.is_loopback() && core_ip != local.ip().to_canonical() {
        return Ok(());
    }
    let own_uid = rustix::process::geteuid().as_raw();
    let started = Instant::now();
    loop {
        let owner =
            tokio::task::spawn_blocking(move || honeybee_local_peer::peer_socket_uid(core, local))
                .await
                .ok()
                .flatten();
        match owner {
            Some(owner) if owner == 0 || owner == own_uid => return Ok(()),
            Some(owner) => {
                return Err(UplinkError::ImpostorCore {
                    address: address.to_owned(),
                    owner,
                    own_uid,
                })
            }
            None if Instant::now() >= deadline => {
                return Err(UplinkError::UnverifiedCore {
                    address: address.to_owned(),
                    seconds: deadline.duration_since(started).as_secs(),
                })
            }
            None => tokio::time::sleep(CORE_OWNER_POLL).await,
        }
    }
}
