//! Per-record processing of an SQS batch with the partial batch response.
//!
//! Each record's outcome decides its fate:
//! - `Ok(())`: acknowledged (Lambda deletes it).
//! - [`HandlerError::Transient`]: reported in `batchItemFailures`; the queue delivers it again after the visibility
//!   timeout and moves it to the DLQ after `maxReceiveCount`.
//! - [`HandlerError::Permanent`]: sent to the [`DeadLetterSink`] with its reason and acknowledged, so a poison
//!   message does not burn retries; if that send fails, it is reported as a failure instead, so nothing is lost.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use futures::stream;

use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::error::HandlerError;

/// The parts of an SQS message a handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecord {
    pub message_id: String,
    pub body: String,
    /// How many times the queue has delivered this message, this delivery included.
    pub receive_count: u32,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

impl SqsRecord {
    fn from_message(message: SqsMessage) -> Option<Self> {
        let attributes = message
            .message_attributes
            .into_iter()
            .filter_map(|(name, value)| value.string_value.map(|v| (name, v)))
            .collect();
        Some(Self {
            message_id: message.message_id?,
            receive_count: message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|count| count.parse().ok())
                .unwrap_or(1),
            body: message.body.unwrap_or_default(),
            attributes,
        })
    }
}

/// Waits for `applying`, what a handler does with `record`, and logs its effect as `record applied` with the
/// record's message id; a failure becomes the record's [`HandlerError`].
pub async fn log_effect<T, E>(
    record: &SqsRecord,
    applying: impl Future<Output = Result<T, E>>,
) -> Result<(), HandlerError>
where
    T: Debug,
    E: Into<HandlerError>,
{
    let effect = applying.await.map_err(Into::into)?;
    tracing::info!(message_id = record.message_id, ?effect, "record applied");
    Ok(())
}

/// A batch Lambda cannot answer with a partial response.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("SQS record {0} has no messageId, so its failure could not be reported; failing the whole batch")]
    MissingMessageId(usize),
}

/// Processes SQS batches record by record, with up to `concurrency` records in flight.
#[derive(Debug, Clone)]
pub struct SqsBatchProcessor<S> {
    dead_letters: S,
    concurrency: usize,
}

impl<S: DeadLetterSink> SqsBatchProcessor<S> {
    /// One record at a time; see [`Self::with_concurrency`].
    pub fn new(dead_letters: S) -> Self {
        Self { dead_letters, concurrency: 1 }
    }

    /// Records of a standard queue have no order to keep, so they may be processed concurrently.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Runs `handler` on every record and builds the partial batch response.
    ///
    /// ```
    /// use aws_lambda_events::event::sqs::SqsEvent;
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
    ///
    /// # tokio_test();
    /// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let event: SqsEvent = serde_json::from_str(r#"{"Records": [
    ///     {"messageId": "a", "body": "1"}, {"messageId": "b", "body": "oops"}, {"messageId": "c", "body": "-1"}]}"#).unwrap();
    /// let dead_letters = MemoryDeadLetters::default();
    /// let processor = SqsBatchProcessor::new(dead_letters.clone());
    /// let response = processor.process(event, |record| async move {
    ///     match record.body.parse::<i32>() {
    ///         Ok(n) if n >= 0 => Ok(()),
    ///         Ok(_) => Err(HandlerError::transient("negative, try later")),
    ///         Err(e) => Err(HandlerError::permanent(e)),
    ///     }
    /// }).await.unwrap();
    /// let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    /// assert_eq!(failed, ["c"]);
    /// assert_eq!(dead_letters.letters()[0].message_id, "b");
    /// # }) }
    /// ```
    pub async fn process<F, Fut>(&self, event: SqsEvent, handler: F) -> Result<SqsBatchResponse, BatchError>
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let records = event
            .records
            .into_iter()
            .enumerate()
            .map(|(index, message)| SqsRecord::from_message(message).ok_or(BatchError::MissingMessageId(index)))
            .collect::<Result<Vec<_>, _>>()?;
        let handler = &handler;
        let failed: Vec<String> = stream::iter(records)
            .map(|record| async move {
                let outcome = handler(record.clone()).await;
                self.settle(record, outcome).await
            })
            .buffer_unordered(self.concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok(response)
    }

    /// Returns the message id when the record must be reported as failed.
    async fn settle(&self, record: SqsRecord, outcome: Result<(), HandlerError>) -> Option<String> {
        let error = match outcome {
            Ok(()) => return None,
            Err(error) => error,
        };
        let message_id = record.message_id.clone();
        match error {
            HandlerError::Transient(reason) => {
                tracing::warn!(
                    message_id,
                    receive_count = record.receive_count,
                    reason,
                    "record failed, will be retried"
                );
                Some(message_id)
            }
            HandlerError::Permanent(reason) => {
                tracing::error!(message_id, reason, "poison record, sending it to the dead-letter queue");
                let letter = DeadLetter {
                    message_id: record.message_id,
                    body: record.body,
                    reason,
                    error_class: "Permanent".into(),
                    attributes: record.attributes,
                };
                match self.dead_letters.send(letter).await {
                    Ok(()) => None,
                    Err(send_error) => {
                        tracing::error!(
                            message_id,
                            send_error,
                            "dead-letter send failed, reporting the record as failed"
                        );
                        Some(message_id)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryDeadLetters;
    use serde_json::json;

    struct FailingSink;
    impl DeadLetterSink for FailingSink {
        async fn send(&self, _: DeadLetter) -> Result<(), String> {
            Err("queue unavailable".into())
        }
    }

    fn event(bodies: &[&str]) -> SqsEvent {
        let records: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                json!({"messageId": format!("m{i}"), "body": body,
                       "attributes": {"ApproximateReceiveCount": "2"},
                       "messageAttributes": {"origin": {"stringValue": "test", "dataType": "String"}}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    async fn classify(record: SqsRecord) -> Result<(), HandlerError> {
        match record.body.as_str() {
            "ok" => Ok(()),
            "later" => Err(HandlerError::transient("throttled")),
            _ => Err(HandlerError::permanent("not an event")),
        }
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
        let mut ids: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    #[tokio::test]
    async fn only_transient_failures_are_reported_and_poison_goes_to_the_dead_letter_sink() {
        let sink = MemoryDeadLetters::default();
        let response = SqsBatchProcessor::new(sink.clone())
            .with_concurrency(4)
            .process(event(&["ok", "later", "garbage", "ok"]), classify)
            .await
            .unwrap();
        assert_eq!(failed_ids(&response), ["m1"]);
        let letters = sink.letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].message_id, "m2");
        assert_eq!(letters[0].body, "garbage");
        assert_eq!(letters[0].reason, "not an event");
        assert_eq!(letters[0].attributes["origin"], "test");
    }

    #[tokio::test]
    async fn poison_is_reported_failed_when_the_dead_letter_send_fails() {
        let response = SqsBatchProcessor::new(FailingSink).process(event(&["garbage", "ok"]), classify).await.unwrap();
        assert_eq!(failed_ids(&response), ["m0"]);
    }

    #[tokio::test]
    async fn all_records_failing_reports_all_of_them() {
        let response = SqsBatchProcessor::new(MemoryDeadLetters::default())
            .process(event(&["later", "later", "later"]), classify)
            .await
            .unwrap();
        assert_eq!(failed_ids(&response), ["m0", "m1", "m2"]);
    }

    #[tokio::test]
    async fn receive_count_reaches_the_handler() {
        SqsBatchProcessor::new(MemoryDeadLetters::default())
            .process(event(&["ok"]), |record| async move {
                assert_eq!(record.receive_count, 2);
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_record_without_message_id_fails_the_whole_batch() {
        let event: SqsEvent = serde_json::from_value(json!({"Records": [{"body": "ok"}]})).unwrap();
        let result = SqsBatchProcessor::new(MemoryDeadLetters::default()).process(event, classify).await;
        assert!(matches!(result, Err(BatchError::MissingMessageId(0))));
    }
}
