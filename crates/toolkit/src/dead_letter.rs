//! Where poison records go: a port with an in-memory adapter here and an SQS adapter in `orderflow-aws`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A record that can never be processed, with the reason, on its way to a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The id of the message in its source queue.
    pub message_id: String,
    /// The original body, unchanged, so the record can be redriven once the cause is fixed.
    pub body: String,
    /// Why it failed, e.g. `unknown event type "Teleported"`.
    pub reason: String,
    /// The error class (`Permanent`).
    pub error_class: String,
    /// The original string message attributes, kept for redrive.
    pub attributes: BTreeMap<String, String>,
}

/// Sends dead letters somewhere durable. A failed send makes the record a batch item failure, so nothing is lost.
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letter: DeadLetter) -> impl Future<Output = Result<(), String>> + Send;
}

/// Keeps dead letters in memory: for handler tests, and to see what a batch rejected.
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetters {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryDeadLetters {
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().expect("dead letters lock").clone()
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letter: DeadLetter) -> Result<(), String> {
        self.letters.lock().expect("dead letters lock").push(letter);
        Ok(())
    }
}
