//! Where poison records go: a port with an in-memory adapter here and an SQS adapter in `orderflow-aws`.
//!
//! A processor acknowledges a [`HandlerError::Permanent`](crate::HandlerError::Permanent) record only once its
//! dead letter is sent, so a sink that fails loses nothing: the record is reported as failed and comes back.
//!
//! ```
//! use aws_lambda_events::event::sqs::SqsEvent;
//! use orderflow_toolkit::{DeadLetter, DeadLetterSink, MemoryDeadLetters, SqsBatchProcessor, SqsRecord};
//!
//! /// A dead-letter queue that cannot be reached.
//! struct Unreachable;
//! impl DeadLetterSink for Unreachable {
//!     async fn send(&self, _: DeadLetter) -> Result<(), String> {
//!         Err("DLQ unreachable".into())
//!     }
//! }
//!
//! let event = || -> SqsEvent {
//!     let origin = serde_json::json!({"origin": {"stringValue": "legacy", "dataType": "String"}});
//!     let message = serde_json::json!({"messageId": "m-1", "body": "{oops", "messageAttributes": origin});
//!     serde_json::from_value(serde_json::json!({"Records": [message]})).unwrap()
//! };
//! let poison = |record: SqsRecord| async move { record.json::<serde_json::Value>().map(drop) };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let letters = MemoryDeadLetters::default();
//! let response = SqsBatchProcessor::new(letters.clone()).process(event(), poison).await.unwrap();
//! assert!(response.batch_item_failures.is_empty(), "acknowledged: it is in the DLQ");
//! let letter = &letters.letters()[0];
//! assert_eq!((letter.body.as_str(), letter.error_class.as_str()), ("{oops", "Permanent"));
//! assert!(letter.reason.starts_with("body of message m-1 does not parse"), "{}", letter.reason);
//! assert_eq!(letter.attributes["origin"], "legacy", "kept for redrive");
//!
//! let response = SqsBatchProcessor::new(Unreachable).process(event(), poison).await.unwrap();
//! assert_eq!(response.batch_item_failures[0].item_identifier, "m-1");
//! # });
//! ```

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
