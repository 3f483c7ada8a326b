//! `show`: the messages of a DLQ with why they failed; they stay in the DLQ.

use std::collections::HashSet;

use crate::client::{DeadLetterQueues, IDLE_RECEIVES};
use crate::error::DlqError;
use crate::message::DeadLetterMessage;
use crate::queue::QueueRef;

/// Seconds a message [`DeadLetterQueues::show`] looks at stays hidden if the tool dies before it releases it.
pub const SHOW_HOLD_SECONDS: i32 = 60;

/// What [`DeadLetterQueues::show`] read.
#[derive(Debug, Clone, Default)]
pub struct Peek {
    /// The messages, oldest first.
    pub messages: Vec<DeadLetterMessage>,
    /// Problems that lost nothing (a message that could not be made visible again at once reappears after
    /// [`SHOW_HOLD_SECONDS`]).
    pub warnings: Vec<String>,
}

impl DeadLetterQueues {
    /// Up to `max` messages of `dlq`, oldest first, with their failure. Each message is received (which counts as a
    /// receive in its `ApproximateReceiveCount`), hidden while the others are read so none is read twice, and made
    /// visible again at the end.
    pub async fn show(&self, dlq: &QueueRef, max: usize) -> Result<Peek, DlqError> {
        let mut held: Vec<DeadLetterMessage> = Vec::new();
        let mut seen = HashSet::new();
        let mut idle = 0;
        let scanned = async {
            while held.len() < max && idle < IDLE_RECEIVES {
                let want = (max - held.len()).min(10);
                let batch = self.receive(dlq, want, SHOW_HOLD_SECONDS).await?;
                if batch.is_empty() {
                    break;
                }
                let before = held.len();
                for message in batch {
                    if seen.insert(message.message_id.clone()) {
                        held.push(message);
                    } else if let Some(old) = held.iter_mut().find(|m| m.message_id == message.message_id) {
                        // Its hold expired and it came back: only the newest receipt handle releases it.
                        old.receipt_handle = message.receipt_handle;
                    }
                }
                idle = if held.len() == before { idle + 1 } else { 0 };
            }
            Ok::<(), DlqError>(())
        }
        .await;
        let handles: Vec<(String, String)> =
            held.iter().map(|m| (m.message_id.clone(), m.receipt_handle.clone())).collect();
        let warnings = self.release(dlq, &handles, SHOW_HOLD_SECONDS).await;
        scanned?;
        held.sort_by_key(|m| m.sent_at);
        Ok(Peek { messages: held, warnings })
    }
}
