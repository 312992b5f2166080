//! The registry of live node sessions held by this Core: which connection currently speaks
//! for which node id, and how to reach it (commands) or end it (replacement).

use std::collections::HashMap;
use std::sync::Mutex;

use honeybee_protocol::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the rest of the Core reaches one node connection.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub session_id: u64,
    /// Commands to write to the node.
    pub commands: mpsc::Sender<Command>,
    /// Cancelled when a newer connection of the same node replaces this one.
    pub replaced: CancellationToken,
}

/// Why a command could not be queued for a node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendCommandError {
    /// No session of this node is held by this Core.
    NotConnected,
    /// The node is not reading its commands fast enough.
    QueueFull,
}

#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<u64, SessionHandle>>,
}

impl SessionRegistry {
    /// A session id unique across Core restarts (and, later, across Cores sharing a store):
    /// random, positive as a SQL integer.
    pub fn new_session_id(&self) -> u64 {
        rand::random::<u64>() >> 1
    }

    /// Makes `handle` the session of `node_id`. A previous session of the same node (a
    /// reconnect whose old TCP connection is not dead yet) is told to close.
    pub fn insert(&self, node_id: u64, handle: SessionHandle) {
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, handle);
        if let Some(previous) = previous {
            previous.replaced.cancel();
        }
    }

    /// Removes the session of `node_id` if it is still `session_id`; returns whether it was.
    /// A replaced session must not mark its node disconnected.
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

    /// Queues a command for the node's session without waiting.
    pub fn send_command(&self, node_id: u64, command: Command) -> Result<(), SendCommandError> {
        let sender = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node_id)
            .map(|handle| handle.commands.clone())
            .ok_or(SendCommandError::NotConnected)?;
        sender.try_send(command).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendCommandError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendCommandError::NotConnected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(registry: &SessionRegistry) -> SessionHandle {
        SessionHandle {
            session_id: registry.new_session_id(),
            commands: mpsc::channel(1).0,
            replaced: CancellationToken::new(),
        }
    }

    #[test]
    fn a_newer_session_replaces_and_cancels_the_older_one() {
        let registry = SessionRegistry::default();
        let old = handle(&registry);
        let new = handle(&registry);
        registry.insert(5, old.clone());
        registry.insert(5, new.clone());
        assert!(old.replaced.is_cancelled());
        assert!(!registry.remove_if_current(5, old.session_id));
        assert!(registry.remove_if_current(5, new.session_id));
        assert_eq!(
            registry.send_command(5, Command::Restart),
            Err(SendCommandError::NotConnected)
        );
    }

    #[test]
    fn commands_reach_the_current_session_until_its_queue_is_full() {
        let registry = SessionRegistry::default();
        let (sender, mut receiver) = mpsc::channel(1);
        registry.insert(
            9,
            SessionHandle {
                session_id: registry.new_session_id(),
                commands: sender,
                replaced: CancellationToken::new(),
            },
        );
        registry.send_command(9, Command::Restart).unwrap();
        assert_eq!(
            registry.send_command(9, Command::UpdateConfig),
            Err(SendCommandError::QueueFull)
        );
        assert_eq!(receiver.try_recv().unwrap(), Command::Restart);
    }
}
