//! `redrive`: messages of a DLQ back to their source queue (or another), each deleted from the DLQ only once it
//! was sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_sdk_sqs::types::MessageAttributeValue;

use crate::client::{DeadLetterQueues, IDLE_RECEIVES};
use crate::error::{DlqError, describe, is_missing_queue, sqs_error};
use crate::message::DeadLetterMessage;
use crate::queue::QueueRef;

/// Seconds a message a redrive received but did not move stays hidden if the tool dies before it releases it.
pub const REDRIVE_HOLD_SECONDS: i32 = 300;

/// The message group of a message redriven into a FIFO queue when the DLQ message has none.
const DEFAULT_MESSAGE_GROUP: &str = "orderflow-dlq-redrive";

/// Which messages a redrive moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every message in the DLQ.
    All,
    /// The messages with these message ids.
    Ids(BTreeSet<String>),
}

impl Selection {
    fn contains(&self, id: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(id),
        }
    }
}

/// The outcome of [`DeadLetterQueues::redrive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// The DLQ.
    pub dlq: QueueRef,
    /// Where the messages went.
    pub target: QueueRef,
    /// Ids of the messages sent to the target and deleted from the DLQ.
    pub moved: Vec<String>,
    /// Messages whose send failed, with the reason: they are still in the DLQ, visible again.
    pub failed: Vec<(String, String)>,
    /// Messages sent to the target whose delete from the DLQ failed, with the reason: they are in both queues now
    /// (delete them from the DLQ by hand, or expect a duplicate on the next redrive).
    pub not_deleted: Vec<(String, String)>,
    /// Selected message ids that were not in the DLQ (or not visible: received by someone else meanwhile).
    pub not_found: Vec<String>,
    /// Why the redrive stopped before it had read the whole DLQ (a receive failed): the messages it did not get to
    /// are still in the DLQ.
    pub interrupted: Option<String>,
    /// Problems that lost nothing (a message that could not be made visible again at once reappears after
    /// [`REDRIVE_HOLD_SECONDS`]).
    pub warnings: Vec<String>,
}

impl RedriveReport {
    /// Whether every selected message was moved.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.not_deleted.is_empty() && self.not_found.is_empty() && self.interrupted.is_none()
    }
}

impl DeadLetterQueues {
    /// The queues whose RedrivePolicy names `dlq` (ListDeadLetterSourceQueues), sorted by name.
    pub async fn sources(&self, dlq: &QueueRef) -> Result<Vec<QueueRef>, DlqError> {
        let mut sources = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sqs
                .list_dead_letter_source_queues()
                .queue_url(&dlq.url)
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|err| match is_missing_queue(&err) {
                    true => DlqError::QueueNotFound(dlq.name.clone()),
                    false => sqs_error("ListDeadLetterSourceQueues", &dlq.name, &err),
                })?;
            for url in page.queue_urls() {
                sources.push(QueueRef::from_url(url)?);
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        sources.sort();
        Ok(sources)
    }

    /// Where a redrive of `dlq` goes without an explicit target: its only source queue.
    pub async fn redrive_target(&self, dlq: &QueueRef) -> Result<QueueRef, DlqError> {
        let mut sources = self.sources(dlq).await?;
        match sources.len() {
            0 => Err(DlqError::NoSource { dlq: dlq.name.clone() }),
            1 => Ok(sources.remove(0)),
            _ => Err(DlqError::AmbiguousSource {
                dlq: dlq.name.clone(),
                sources: sources.into_iter().map(|s| s.name).collect(),
            }),
        }
    }

    /// Moves the selected messages of `dlq` to `target`: each one is sent with its body and its message attributes
    /// except ours starting with [`ERROR_ATTRIBUTE_PREFIX`](crate::ERROR_ATTRIBUTE_PREFIX) ([`DeadLetterMessage::redrive_attributes`]), and deleted
    /// from the DLQ only once the send succeeded. A message whose send fails stays in the DLQ and is reported in
    /// [`RedriveReport::failed`]. Into a FIFO target a message goes with its own message group (or
    /// `orderflow-dlq-redrive`) and its deduplication id (or its message id).
    ///
    /// The DLQ is read until a receive comes back empty (or every selected id was found); messages not selected
    /// are hidden meanwhile so they are not read twice, and made visible again at the end. In a FIFO DLQ a hidden
    /// message holds back the rest of its message group, so selected ids behind it are reported not found. A receive
    /// that fails ends the redrive early ([`RedriveReport::interrupted`]) with what moved until then reported.
    pub async fn redrive(
        &self,
        dlq: &QueueRef,
        target: &QueueRef,
        selection: &Selection,
    ) -> Result<RedriveReport, DlqError> {
        if dlq.is_same_queue(target) {
            return Err(DlqError::SameQueue(dlq.name.clone()));
        }
        let mut report = RedriveReport {
            dlq: dlq.clone(),
            target: target.clone(),
            moved: Vec::new(),
            failed: Vec::new(),
            not_deleted: Vec::new(),
            not_found: Vec::new(),
            interrupted: None,
            warnings: Vec::new(),
        };
        // Messages to make visible again at the end: id -> newest receipt handle.
        let mut to_release: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        let scanned = async {
            let mut idle = 0;
            while idle < IDLE_RECEIVES {
                if let Selection::Ids(ids) = selection
                    && ids.iter().all(|id| seen.contains(id))
                {
                    break;
                }
                let batch = self.receive(dlq, 10, REDRIVE_HOLD_SECONDS).await?;
                if batch.is_empty() {
                    break;
                }
                let mut new = 0;
                for message in batch {
                    if !seen.insert(message.message_id.clone()) {
                        // Came back after its hold expired (or a failed delete): release it with its newest handle.
                        to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        continue;
                    }
                    new += 1;
                    if !selection.contains(&message.message_id) {
                        to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        continue;
                    }
                    match self.send_to(target, &message).await {
                        Err(reason) => {
                            report.failed.push((message.message_id.clone(), reason));
                            to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        }
                        Ok(()) => match self.delete(dlq, &message).await {
                            Ok(()) => report.moved.push(message.message_id.clone()),
                            Err(reason) => {
                                report.not_deleted.push((message.message_id.clone(), reason));
                                to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                            }
                        },
                    }
                }
                idle = if new == 0 { idle + 1 } else { 0 };
            }
            Ok::<(), DlqError>(())
        }
        .await;
        let handles: Vec<(String, String)> = to_release.into_iter().collect();
        report.warnings = self.release(dlq, &handles, REDRIVE_HOLD_SECONDS).await;
        // What moved before a failing receive is reported all the same.
        report.interrupted = scanned.err().map(|err| err.to_string());
        if let Selection::Ids(ids) = selection
            && report.interrupted.is_none()
        {
            report.not_found = ids.iter().filter(|id| !seen.contains(*id)).cloned().collect();
        }
        Ok(report)
    }

    /// Sends one message to `target` as a redrive does; the error is the reason to report.
    async fn send_to(&self, target: &QueueRef, message: &DeadLetterMessage) -> Result<(), String> {
        let mut request = self.sqs.send_message().queue_url(&target.url).message_body(&message.body);
        for (name, value) in message.redrive_attributes() {
            let copy = MessageAttributeValue::builder()
                .data_type(value.data_type())
                .set_string_value(value.string_value().map(str::to_owned))
                .set_binary_value(value.binary_value().cloned())
                .build()
                .map_err(|err| format!("message attribute {name}: {err}"))?;
            request = request.message_attributes(name, copy);
        }
        if target.is_fifo() {
            request = request
                .message_group_id(message.message_group_id.as_deref().unwrap_or(DEFAULT_MESSAGE_GROUP))
                .message_deduplication_id(message.deduplication_id.as_deref().unwrap_or(&message.message_id));
        }
        request.send().await.map(|_| ()).map_err(|err| format!("SendMessage to {}: {}", target.name, describe(&err)))
    }

    /// Deletes a received message; the error is the reason to report.
    async fn delete(&self, queue: &QueueRef, message: &DeadLetterMessage) -> Result<(), String> {
        self.sqs
            .delete_message()
            .queue_url(&queue.url)
            .receipt_handle(&message.receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| format!("DeleteMessage from {}: {}", queue.name, describe(&err)))
    }
}
