//! Correlation of commands and their answers (the `command_answers` extension): command
//! ids, callers waiting for an answer, and the most recent answers for later retrieval.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

/// Answers kept for `GET /api/v1/commands/{id}`; older ones are forgotten.
const ANSWERS_KEPT: usize = 4096;

/// A node's answer to one command, as the Core keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandOutcome {
    pub command_id: u64,
    pub node_id: u64,
    pub command: String,
    pub pot_id: Option<String>,
    pub success: bool,
    pub message: Option<String>,
    pub data: Option<Value>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct CommandTracker {
    next_id: AtomicU64,
    /// Recently issued command ids and the node each went to: only that node may answer.
    issued: Mutex<(HashMap<u64, u64>, VecDeque<u64>)>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<CommandOutcome>>>,
    answers: Mutex<VecDeque<CommandOutcome>>,
}

impl Default for CommandTracker {
    fn default() -> Self {
        // Ids start from the clock so that a restarted Core does not reuse recent ids.
        let start = Utc::now().timestamp_micros().max(1) as u64;
        CommandTracker {
            next_id: AtomicU64::new(start),
            issued: Mutex::default(),
            waiters: Mutex::default(),
            answers: Mutex::default(),
        }
    }
}

impl CommandTracker {
    /// A new command id for a command to `node_id`.
    pub fn issue(&self, node_id: u64) -> u64 {
        let command_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let (targets, order) = &mut *issued;
        if order.len() == ANSWERS_KEPT {
            if let Some(oldest) = order.pop_front() {
                targets.remove(&oldest);
            }
        }
        targets.insert(command_id, node_id);
        order.push_back(command_id);
        command_id
    }

    /// Registers interest in the answer to `command_id`.
    pub fn wait_for(&self, command_id: u64) -> oneshot::Receiver<CommandOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(command_id, sender);
        receiver
    }

    /// Drops interest in an answer that did not come in time.
    pub fn forget_waiter(&self, command_id: u64) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&command_id);
    }

    /// Records an answer and hands it to whoever waits for it. An answer from a node the
    /// command was not sent to (or to an unknown id) is refused: returns false.
    pub fn record(&self, outcome: CommandOutcome) -> bool {
        let addressee = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(&outcome.command_id)
            .copied();
        if addressee != Some(outcome.node_id) {
            return false;
        }
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&outcome.command_id);
        {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            if answers.len() == ANSWERS_KEPT {
                answers.pop_front();
            }
            answers.push_back(outcome.clone());
        }
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
        true
    }

    pub fn answer(&self, command_id: u64) -> Option<CommandOutcome> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|outcome| outcome.command_id == command_id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(command_id: u64) -> CommandOutcome {
        CommandOutcome {
            command_id,
            node_id: 1,
            command: "GetPotLogs".into(),
            pot_id: Some("p".into()),
            success: true,
            message: None,
            data: None,
            received_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_waiter_gets_its_answer_and_the_answer_is_kept() {
        let tracker = CommandTracker::default();
        let first = tracker.issue(1);
        assert_eq!(tracker.issue(1), first + 1);
        let waiting = tracker.wait_for(first);
        assert!(tracker.record(outcome(first)));
        assert_eq!(waiting.await.unwrap().command_id, first);
        assert_eq!(tracker.answer(first).unwrap().command, "GetPotLogs");
        assert!(tracker.answer(first + 1).is_none());
    }

    #[test]
    fn only_the_most_recent_answers_are_kept() {
        let tracker = CommandTracker::default();
        let ids: Vec<u64> = (0..ANSWERS_KEPT + 10).map(|_| tracker.issue(1)).collect();
        for id in &ids {
            tracker.record(outcome(*id));
        }
        assert!(tracker.answer(ids[5]).is_none());
        assert!(tracker.answer(ids[ANSWERS_KEPT + 9]).is_some());
    }

    #[test]
    fn only_the_addressed_node_may_answer() {
        let tracker = CommandTracker::default();
        let command_id = tracker.issue(2);
        let mut forged = outcome(command_id);
        forged.node_id = 3;
        assert!(!tracker.record(forged));
        assert!(tracker.answer(command_id).is_none());
        assert!(!tracker.record(outcome(command_id + 1000)), "never issued");
    }
}
