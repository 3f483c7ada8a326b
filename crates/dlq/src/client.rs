//! The SQS client every command goes through: finding a queue and its depth, and receiving and releasing
//! messages.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};

use crate::error::{DlqError, describe, is_missing_queue, sqs_error};
use crate::message::DeadLetterMessage;
use crate::queue::{Depth, QueueRef, is_queue_name};

/// Long-poll wait of each receive: a receive that comes back empty after it means the queue has nothing visible.
const RECEIVE_WAIT_SECONDS: i32 = 1;

/// Receives in a row that bring only messages already seen, after which a scan stops.
pub(crate) const IDLE_RECEIVES: u32 = 3;

/// The DLQ operations, over one SQS client.
#[derive(Debug, Clone)]
pub struct DeadLetterQueues {
    pub(crate) sqs: Client,
}

impl DeadLetterQueues {
    /// Operations through `sqs` (its region, credentials and endpoint).
    pub fn new(sqs: Client) -> DeadLetterQueues {
        DeadLetterQueues { sqs }
    }

    /// Finds a queue by URL (taken as it is), ARN or name (looked up with GetQueueUrl).
    pub async fn resolve(&self, queue: &str) -> Result<QueueRef, DlqError> {
        let queue = queue.trim();
        if queue.starts_with("http://") || queue.starts_with("https://") {
            return QueueRef::from_url(queue);
        }
        let (name, owner) = match queue.strip_prefix("arn:") {
            // arn:<partition>:sqs:<region>:<account>:<name>
            Some(_) => match queue.split(':').collect::<Vec<_>>().as_slice() {
                [_, _, "sqs", _, account, name] => (*name, Some(*account)),
                _ => return Err(DlqError::InvalidQueue(queue.to_owned())),
            },
            None => (queue, None),
        };
        if !is_queue_name(name) {
            return Err(DlqError::InvalidQueue(queue.to_owned()));
        }
        let found = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(owner.map(str::to_owned))
            .send()
            .await;
        match found {
            Ok(out) => Ok(QueueRef {
                name: name.to_owned(),
                url: out.queue_url().ok_or_else(|| DlqError::QueueNotFound(name.to_owned()))?.to_owned(),
            }),
            Err(err) if is_missing_queue(&err) => Err(DlqError::QueueNotFound(name.to_owned())),
            Err(err) => Err(sqs_error("GetQueueUrl", name, &err)),
        }
    }

    /// The queue's depth.
    pub async fn depth(&self, queue: &QueueRef) -> Result<Depth, DlqError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|err| match is_missing_queue(&err) {
                true => DlqError::QueueNotFound(queue.name.clone()),
                false => sqs_error("GetQueueAttributes", &queue.name, &err),
            })?;
        let count = |name: QueueAttributeName| {
            out.attributes().and_then(|a| a.get(&name)).and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        Ok(Depth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// Receives up to `max` (<= 10) messages with every attribute, hiding them for `hold` seconds.
    pub(crate) async fn receive(
        &self,
        queue: &QueueRef,
        max: usize,
        hold: i32,
    ) -> Result<Vec<DeadLetterMessage>, DlqError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(hold)
            .wait_time_seconds(RECEIVE_WAIT_SECONDS)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|err| match is_missing_queue(&err) {
                true => DlqError::QueueNotFound(queue.name.clone()),
                false => sqs_error("ReceiveMessage", &queue.name, &err),
            })?;
        Ok(out.messages().iter().filter_map(DeadLetterMessage::from_sqs).collect())
    }

    /// Makes received messages (id, receipt handle) visible again at once; returns what could not be released.
    pub(crate) async fn release(&self, queue: &QueueRef, handles: &[(String, String)], hold: i32) -> Vec<String> {
        let mut warnings = Vec::new();
        for chunk in handles.chunks(10) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            let later = format!("it becomes visible again within {hold} s");
            match self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for failed in out.failed() {
                        let id =
                            failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i)).map(|(id, _)| id.as_str());
                        warnings.push(format!(
                            "message {} was not made visible again ({}: {}); {later}",
                            id.unwrap_or("?"),
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        ));
                    }
                }
                Err(err) => warnings.push(format!(
                    "{} messages were not made visible again ({}); each becomes visible again within {hold} s",
                    chunk.len(),
                    describe(&err)
                )),
            }
        }
        warnings
    }
}
