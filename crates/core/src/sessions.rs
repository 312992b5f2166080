//! The registry of live node sessions held by this Core: which connection currently speaks
//! for which node id, which protocol extensions it negotiated, and how to reach it
//! (commands) or end it (replacement).

use std::collections::HashMap;
use std::sync::Mutex;

use honeybee_protocol::{Command, CAPABILITY_COMMAND_ANSWERS, CAPABILITY_UNINSTALL_POT};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A command on its way to a node's connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutgoingCommand {
    pub command: Command,
    /// Set only when the node negotiated [`CAPABILITY_COMMAND_ANSWERS`].
    pub command_id: Option<u64>,
}

/// How the rest of the Core reaches one node connection.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub session_id: u64,
    /// Commands to write to the node.
    pub commands: mpsc::Sender<OutgoingCommand>,
    /// Cancelled when a newer connection of the same node replaces this one.
    pub replaced: CancellationToken,
    /// Cancelled when an operator revokes the node: the session tells the node and ends.
    pub revoked: CancellationToken,
    /// Protocol extensions both sides speak on this session.
    pub capabilities: Vec<String>,
}

/// Why a command could not be queued for a node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendCommandError {
    /// No session of this node is held by this Core.
    NotConnected,
    /// The node is not reading its commands fast enough.
    QueueFull,
    /// The node did not announce the extension this command needs.
    Unsupported { capability: &'static str },
}

/// What happened to a queued command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommandDelivery {
    /// The node will echo the command id in its answers.
    pub correlated: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<u64, SessionHandle>>,
    /// Nodes revoked while this Core runs: a registration that passed authentication just
    /// before the revocation is still refused here, under the same lock.
    revoked: Mutex<std::collections::HashSet<u64>>,
}

/// The node was revoked; its session must not start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NodeRevoked;

impl SessionRegistry {
    /// A session id unique across Core restarts (and, later, across Cores sharing a store):
    /// random, positive as a SQL integer.
    pub fn new_session_id(&self) -> u64 {
        rand::random::<u64>() >> 1
    }

    /// Makes `handle` the session of `node_id`. A previous session of the same node (a
    /// reconnect whose old TCP connection is not dead yet) is told to close. Refused for a
    /// node revoked since this Core started.
    pub fn insert(&self, node_id: u64, handle: SessionHandle) -> Result<(), NodeRevoked> {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.contains(&node_id) {
            return Err(NodeRevoked);
        }
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, handle);
        drop(revoked);
        if let Some(previous) = previous {
            previous.replaced.cancel();
        }
        Ok(())
    }

    /// Ends the session of a revoked node at once; returns whether this Core held one.
    pub fn revoke(&self, node_id: u64) -> bool {
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.insert(node_id);
        let removed = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node_id);
        drop(revoked);
        match removed {
            Some(handle) => {
                handle.revoked.cancel();
                true
            }
            None => false,
        }
    }

    /// Removes the session of `node_id` if it is still `session_id`; returns whether it was.
    pub fn remove_if_current(&self, node_id: u64, session_id: u64) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&node_id)
            .is_some_and(|handle| handle.session_id == session_id)
        {
            sessions.remove(&node_id);
            true
        } else {
            false
        }
    }

    /// Queues a command for the node's session without waiting. `command_id` is sent only
    /// to a node that negotiated command answers.
    pub fn send_command(
        &self,
        node_id: u64,
        command: Command,
        command_id: u64,
    ) -> Result<CommandDelivery, SendCommandError> {
        let handle = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node_id)
            .cloned()
            .ok_or(SendCommandError::NotConnected)?;
        let speaks = |capability: &str| handle.capabilities.iter().any(|c| c == capability);
        if matches!(command, Command::UninstallPot(_)) && !speaks(CAPABILITY_UNINSTALL_POT) {
            return Err(SendCommandError::Unsupported {
                capability: CAPABILITY_UNINSTALL_POT,
            });
        }
        let correlated = speaks(CAPABILITY_COMMAND_ANSWERS);
        let outgoing = OutgoingCommand {
            command,
            command_id: correlated.then_some(command_id),
        };
        handle
            .commands
            .try_send(outgoing)
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendCommandError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendCommandError::NotConnected,
            })?;
        Ok(CommandDelivery { correlated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(
        registry: &SessionRegistry,
        capabilities: &[&str],
    ) -> (SessionHandle, mpsc::Receiver<OutgoingCommand>) {
        let (sender, receiver) = mpsc::channel(1);
        let handle = SessionHandle {
            session_id: registry.new_session_id(),
            commands: sender,
            replaced: CancellationToken::new(),
            revoked: CancellationToken::new(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        };
        (handle, receiver)
    }

    #[test]
    fn a_newer_session_replaces_and_cancels_the_older_one() {
        let registry = SessionRegistry::default();
        let (old, _old_commands) = handle(&registry, &[]);
        let (new, _new_commands) = handle(&registry, &[]);
        registry.insert(5, old.clone()).unwrap();
        registry.insert(5, new.clone()).unwrap();
        assert!(old.replaced.is_cancelled());
        assert!(!registry.remove_if_current(5, old.session_id));
        assert!(registry.remove_if_current(5, new.session_id));
        registry.insert(6, old.clone()).unwrap();
        assert!(registry.revoke(6));
        assert!(old.revoked.is_cancelled());
        // A registration that raced the revocation cannot start its session.
        assert!(!registry.revoke(5));
        assert_eq!(registry.insert(5, new), Err(NodeRevoked));
        assert_eq!(
            registry.send_command(5, Command::Restart, 1),
            Err(SendCommandError::NotConnected)
        );
    }

    #[test]
    fn commands_reach_the_current_session_until_its_queue_is_full() {
        let registry = SessionRegistry::default();
        let (session, mut receiver) = handle(&registry, &[CAPABILITY_COMMAND_ANSWERS]);
        registry.insert(9, session).unwrap();
        assert_eq!(
            registry.send_command(9, Command::Restart, 41),
            Ok(CommandDelivery { correlated: true })
        );
        assert_eq!(
            registry.send_command(9, Command::UpdateConfig, 42),
            Err(SendCommandError::QueueFull)
        );
        let sent = receiver.try_recv().unwrap();
        assert_eq!(sent.command, Command::Restart);
        assert_eq!(sent.command_id, Some(41));
    }

    #[test]
    fn extensions_are_used_only_with_nodes_that_speak_them() {
        let registry = SessionRegistry::default();
        let (session, mut receiver) = handle(&registry, &[]);
        registry.insert(3, session).unwrap();
        assert_eq!(
            registry.send_command(3, Command::UninstallPot("p".into()), 1),
            Err(SendCommandError::Unsupported {
                capability: CAPABILITY_UNINSTALL_POT
            })
        );
        assert_eq!(
            registry.send_command(3, Command::StopPot("p".into()), 2),
            Ok(CommandDelivery { correlated: false })
        );
        assert_eq!(receiver.try_recv().unwrap().command_id, None);
    }
}
