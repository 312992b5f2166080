//! Correlation of commands and their answers (the `command_answers` extension): command
//! ids, callers waiting for an answer, and the most recent answers for later retrieval.
//!
//! The recent answers are bounded in count and in bytes (`[server]
//! command_answers_max_bytes`): an answer carries whatever a node put in it (logs, install
//! output) up to the envelope cap, so 4,096 of them could be gigabytes. The oldest go first;
//! an answer bigger than the whole budget is handed to the caller waiting for it and kept
//! without its `data`, with a message saying why.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

/// Answers kept for `GET /api/v1/commands/{id}`; older ones are forgotten.
const ANSWERS_KEPT: usize = 4096;

/// The recent answers and the bytes they take.
#[derive(Debug, Default)]
struct RecentAnswers {
    answers: VecDeque<(CommandOutcome, usize)>,
    bytes: usize,
}

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
    answers: Mutex<RecentAnswers>,
    answers_max_bytes: usize,
}

impl Default for CommandTracker {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_COMMAND_ANSWERS_MAX_BYTES)
    }
}

impl CommandTracker {
    /// A tracker keeping recent answers up to `answers_max_bytes`.
    pub fn new(answers_max_bytes: usize) -> Self {
        // Ids start from the clock so that a restarted Core does not reuse recent ids.
        let start = Utc::now().timestamp_micros().max(1) as u64;
        CommandTracker {
            next_id: AtomicU64::new(start),
            issued: Mutex::default(),
            waiters: Mutex::default(),
            answers: Mutex::default(),
            answers_max_bytes,
        }
    }

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
        self.keep(outcome.clone());
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
        true
    }

    /// Adds an answer to the recent ones, forgetting the oldest until it fits.
    fn keep(&self, outcome: CommandOutcome) {
        let mut kept = outcome;
        let mut bytes = outcome_bytes(&kept);
        if bytes > self.answers_max_bytes {
            tracing::warn!(
                command_id = kept.command_id,
                node_id = kept.node_id,
                answer_bytes = bytes,
                max_bytes = self.answers_max_bytes,
                "a command answer is larger than server.command_answers_max_bytes; it is kept without its data"
            );
            kept.message = Some(format!(
                "the answer of {bytes} bytes exceeds server.command_answers_max_bytes ({}): its data went only to the caller that waited for it",
                self.answers_max_bytes
            ));
            kept.data = None;
            bytes = outcome_bytes(&kept);
        }
        let mut recent = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        while recent.answers.len() >= ANSWERS_KEPT
            || (!recent.answers.is_empty() && recent.bytes + bytes > self.answers_max_bytes)
        {
            if let Some((_, oldest_bytes)) = recent.answers.pop_front() {
                recent.bytes -= oldest_bytes;
            }
        }
        recent.bytes += bytes;
        recent.answers.push_back((kept, bytes));
    }

    pub fn answer(&self, command_id: u64) -> Option<CommandOutcome> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answers
            .iter()
            .rev()
            .find(|(outcome, _)| outcome.command_id == command_id)
            .map(|(outcome, _)| outcome.clone())
    }
}

/// What a kept answer is charged: its text, with `data` counted as its JSON text (the
/// parsed value takes somewhat more; the budget is a bound on what nodes can make the Core
/// keep, not an allocator's count), plus the fixed part of the record.
fn outcome_bytes(outcome: &CommandOutcome) -> usize {
    std::mem::size_of::<CommandOutcome>()
        + outcome.command.len()
        + outcome.pot_id.as_ref().map_or(0, String::len)
        + outcome.message.as_ref().map_or(0, String::len)
        + outcome.data.as_ref().map_or(0, json_text_bytes)
}

/// The length of `value` as JSON text, counted without building the text.
fn json_text_bytes(value: &Value) -> usize {
    struct ByteCounter(usize);
    impl std::io::Write for ByteCounter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = ByteCounter(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
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

    fn answer_with_data(command_id: u64, data_bytes: usize) -> CommandOutcome {
        CommandOutcome {
            data: Some(Value::String("d".repeat(data_bytes))),
            ..outcome(command_id)
        }
    }

    #[test]
    fn the_oldest_answers_are_forgotten_when_the_byte_budget_is_used_up() {
        let tracker = CommandTracker::new(10_000);
        let ids: Vec<u64> = (0..5).map(|_| tracker.issue(1)).collect();
        for id in &ids {
            assert!(tracker.record(answer_with_data(*id, 3_000)));
        }
        // Three answers of a little over 3,000 bytes fit in 10,000; the two oldest went.
        let kept: Vec<bool> = ids.iter().map(|id| tracker.answer(*id).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        let recent = tracker.answers.lock().unwrap();
        assert!(recent.bytes <= 10_000, "{} bytes kept", recent.bytes);
    }

    #[tokio::test]
    async fn an_answer_bigger_than_the_budget_reaches_its_waiter_and_is_kept_without_data() {
        let tracker = CommandTracker::new(10_000);
        let small = tracker.issue(1);
        assert!(tracker.record(answer_with_data(small, 100)));
        let big = tracker.issue(1);
        let waiting = tracker.wait_for(big);
        assert!(tracker.record(answer_with_data(big, 50_000)));
        assert_eq!(
            waiting.await.unwrap().data,
            Some(Value::String("d".repeat(50_000))),
            "the caller waiting gets the whole answer"
        );
        let kept = tracker.answer(big).unwrap();
        assert_eq!(kept.data, None);
        let message = kept.message.unwrap();
        assert!(
            message.contains("server.command_answers_max_bytes (10000)")
                && message.contains("bytes"),
            "{message}"
        );
        assert!(tracker.answer(small).is_some(), "the stand-in is small");
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
