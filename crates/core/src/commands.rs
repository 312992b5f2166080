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
    waiters: Mutex<HashMap<u64, oneshot::Sender<CommandOutcome>>>,
    answers: Mutex<VecDeque<CommandOutcome>>,
}

impl Default for CommandTracker {
    fn default() -> Self {
        // Ids start from the clock so that a restarted Core does not reuse recent ids.
        let start = Utc::now().timestamp_micros().max(1) as u64;
        CommandTracker {
            next_id: AtomicU64::new(start),
            waiters: Mutex::default(),
            answers: Mutex::default(),
        }
    }
}

impl CommandTracker {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
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

    /// Records an answer and hands it to whoever waits for it.
    pub fn record(&self, outcome: CommandOutcome) {
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
        let first = tracker.next_id();
        assert_eq!(tracker.next_id(), first + 1);
        let waiting = tracker.wait_for(first);
        tracker.record(outcome(first));
        assert_eq!(waiting.await.unwrap().command_id, first);
        assert_eq!(tracker.answer(first).unwrap().command, "GetPotLogs");
        assert!(tracker.answer(first + 1).is_none());
    }

    #[test]
    fn only_the_most_recent_answers_are_kept() {
        let tracker = CommandTracker::default();
        for id in 0..ANSWERS_KEPT as u64 + 10 {
            tracker.record(outcome(id));
        }
        assert!(tracker.answer(5).is_none());
        assert!(tracker.answer(ANSWERS_KEPT as u64 + 9).is_some());
    }
}
