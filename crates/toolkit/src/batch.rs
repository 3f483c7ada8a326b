//! Per-record processing of an SQS batch with the partial batch response.
//!
//! Each record's outcome decides its fate:
//! - `Ok(())`: acknowledged (Lambda deletes it).
//! - [`HandlerError::Transient`]: reported in `batchItemFailures`; the queue delivers it again after the visibility
//!   timeout and moves it to the DLQ after `maxReceiveCount`. A wait it asks for
//!   ([`HandlerError::transient_after`]) is in [`BatchOutcome::retry_after`], for the consumer's backoff.
//! - [`HandlerError::Permanent`]: sent to the [`DeadLetterSink`] with its reason and acknowledged, so a poison
//!   message does not burn retries; if that send fails, it is reported as a failure instead, so nothing is lost.
//!
//! A FIFO queue ([`SqsBatchProcessor::fifo`]) keeps the order of each message group: once a record of a group is
//! reported as failed, the later records of that group in the batch are reported as failed too, without running,
//! while the other groups go on. Records of a standard queue ([`SqsBatchProcessor::new`]) have no order to keep.
//!
//! [`SqsRecord::json`] is the typed parse step: a body that does not parse is a [`HandlerError::Permanent`], never
//! a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use futures::stream;
use serde::de::DeserializeOwned;

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

/// The system attribute of a FIFO queue's message that names its message group.
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";

impl SqsRecord {
    /// The typed parse step: the body as JSON of type `T`, or a [`HandlerError::Permanent`] naming why it is not
    /// one (retrying cannot make a malformed body parse).
    ///
    /// ```
    /// use orderflow_toolkit::{HandlerError, SqsRecord};
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Reserve { sku: String, quantity: u32 }
    ///
    /// let record = |body: &str| SqsRecord {
    ///     message_id: "m-1".into(), body: body.into(), receive_count: 1, attributes: Default::default() };
    /// let reserve: Reserve = record(r#"{"sku": "SKU-1", "quantity": 2}"#).json().unwrap();
    /// assert_eq!((reserve.sku.as_str(), reserve.quantity), ("SKU-1", 2));
    /// let err = record("not json").json::<Reserve>().unwrap_err();
    /// assert!(matches!(err, HandlerError::Permanent(_)), "{err}");
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(&self.body).map_err(|error| {
            HandlerError::permanent(format!("body of message {} does not parse: {error}", self.message_id))
        })
    }

    fn from_message(message: SqsMessage) -> Option<Self> {
        let receive_count = receive_count(&message);
        let attributes = message
            .message_attributes
            .into_iter()
            .filter_map(|(name, value)| value.string_value.map(|v| (name, v)))
            .collect();
        Some(Self {
            message_id: message.message_id?,
            receive_count,
            body: message.body.unwrap_or_default(),
            attributes,
        })
    }
}

/// How many times the queue has delivered `message`, this delivery included (`ApproximateReceiveCount`; 1 when
/// absent or not a number, as for a message that was never received before).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|count| count.parse().ok()).unwrap_or(1)
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

/// What processing one SQS batch decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The partial batch response: the records to deliver again.
    pub response: SqsBatchResponse,
    /// The failed records whose handler asked to wait at least this long before the next delivery
    /// ([`HandlerError::transient_after`]), by message id.
    pub retry_after: BTreeMap<String, Duration>,
}

/// A record to report as failed, and the wait its handler asked for.
#[derive(Debug)]
struct FailedRecord {
    message_id: String,
    retry_after: Option<Duration>,
}

impl FailedRecord {
    fn without_wait(message_id: String) -> Self {
        Self { message_id, retry_after: None }
    }
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
    fifo: bool,
}

impl<S: DeadLetterSink> SqsBatchProcessor<S> {
    /// One record at a time; see [`Self::with_concurrency`].
    pub fn new(dead_letters: S) -> Self {
        Self { dead_letters, concurrency: 1, fifo: false }
    }

    /// Records of a standard queue have no order to keep, so they may be processed concurrently.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// FIFO mode: the records of each message group (the `MessageGroupId` attribute) run one after another in
    /// batch order; at the first record of a group reported as failed, every later record of that group is reported
    /// as failed without running, so the queue delivers them again in order. Other groups keep going, up to
    /// `concurrency` groups at a time. Records without a group id count as one group.
    ///
    /// A [`HandlerError::Permanent`] record goes to the dead-letter sink and its group goes on, as SQS itself does
    /// once a message reaches `maxReceiveCount`; if that send fails, the record stops its group like a transient
    /// failure.
    ///
    /// ```
    /// use aws_lambda_events::event::sqs::SqsEvent;
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let record = |id: &str, group: &str, body: &str| serde_json::json!(
    ///     {"messageId": id, "body": body, "attributes": {"MessageGroupId": group}});
    /// let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
    ///     record("a1", "order-a", "ok"), record("a2", "order-a", "later"), record("b1", "order-b", "ok"),
    ///     record("a3", "order-a", "ok"), record("b2", "order-b", "ok")]})).unwrap();
    /// let processor = SqsBatchProcessor::new(MemoryDeadLetters::default()).fifo();
    /// let response = processor.process(event, |record| async move {
    ///     match record.body.as_str() {
    ///         "ok" => Ok(()),
    ///         _ => Err(HandlerError::transient("not yet")),
    ///     }
    /// }).await.unwrap();
    /// let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    /// // a3 did not run: it waits behind a2. Group order-b went on.
    /// assert_eq!(failed, ["a2", "a3"]);
    /// # })
    /// ```
    pub fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    /// Runs `handler` on every record and builds the partial batch response.
    ///
    /// ```
    /// use aws_lambda_events::event::sqs::SqsEvent;
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
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
    /// # })
    /// ```
    pub async fn process<F, Fut>(&self, event: SqsEvent, handler: F) -> Result<SqsBatchResponse, BatchError>
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        Ok(self.process_with_retry_hints(event, handler).await?.response)
    }

    /// [`Self::process`], also returning how long each failed record asked to wait before its next delivery.
    ///
    /// ```
    /// use std::time::Duration;
    /// use aws_lambda_events::event::sqs::SqsEvent;
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let event: SqsEvent = serde_json::from_str(r#"{"Records": [
    ///     {"messageId": "a", "body": "circuit open"}, {"messageId": "b", "body": "throttled"}]}"#).unwrap();
    /// let processor = SqsBatchProcessor::new(MemoryDeadLetters::default());
    /// let outcome = processor.process_with_retry_hints(event, |record| async move {
    ///     match record.body.as_str() {
    ///         "circuit open" => Err(HandlerError::transient_after("circuit open", Duration::from_secs(20))),
    ///         _ => Err(HandlerError::transient("throttled")),
    ///     }
    /// }).await.unwrap();
    /// assert_eq!(outcome.response.batch_item_failures.len(), 2);
    /// assert_eq!(outcome.retry_after.into_iter().collect::<Vec<_>>(), [("a".into(), Duration::from_secs(20))]);
    /// # })
    /// ```
    pub async fn process_with_retry_hints<F, Fut>(
        &self,
        event: SqsEvent,
        handler: F,
    ) -> Result<BatchOutcome, BatchError>
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        if self.fifo {
            return self.process_fifo(event, handler).await;
        }
        let records = event
            .records
            .into_iter()
            .enumerate()
            .map(|(index, message)| SqsRecord::from_message(message).ok_or(BatchError::MissingMessageId(index)))
            .collect::<Result<Vec<_>, _>>()?;
        let handler = &handler;
        let failed: Vec<FailedRecord> = stream::iter(records)
            .map(|record| async move {
                let outcome = handler(record.clone()).await;
                self.settle(record, outcome).await
            })
            .buffer_unordered(self.concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        Ok(batch_outcome(failed))
    }

    async fn process_fifo<F, Fut>(&self, event: SqsEvent, handler: F) -> Result<BatchOutcome, BatchError>
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        // The groups in order of first appearance, each with its records (and their batch positions) in order.
        let mut groups: Vec<MessageGroup> = Vec::new();
        let mut group_index: HashMap<Option<String>, usize> = HashMap::new();
        for (index, message) in event.records.into_iter().enumerate() {
            let group = message.attributes.get(MESSAGE_GROUP_ID).cloned();
            let record = SqsRecord::from_message(message).ok_or(BatchError::MissingMessageId(index))?;
            let position = *group_index.entry(group.clone()).or_insert_with(|| {
                groups.push((group, Vec::new()));
                groups.len() - 1
            });
            groups[position].1.push((index, record));
        }
        let handler = &handler;
        let mut failed: Vec<(usize, FailedRecord)> = stream::iter(groups)
            .map(|(group, records)| async move {
                let mut failed = Vec::new();
                let mut records = records.into_iter();
                for (index, record) in records.by_ref() {
                    let outcome = handler(record.clone()).await;
                    if let Some(failure) = self.settle(record, outcome).await {
                        failed.push((index, failure));
                        break;
                    }
                }
                let skipped = failed.len();
                // Not run, they ask for no wait of their own: they wait behind the failed record anyway.
                let not_run = records.map(|(index, record)| (index, FailedRecord::without_wait(record.message_id)));
                failed.extend(not_run);
                if failed.len() > skipped {
                    tracing::warn!(
                        message_group_id = group.as_deref().unwrap_or("-"),
                        skipped = failed.len() - skipped,
                        "later records of a failed message group not run, to keep the group's order"
                    );
                }
                failed
            })
            .buffer_unordered(self.concurrency)
            .flat_map(stream::iter)
            .collect()
            .await;
        failed.sort_unstable_by_key(|(index, _)| *index);
        Ok(batch_outcome(failed.into_iter().map(|(_, failure)| failure)))
    }

    /// Returns the failure to report when the record must be reported as failed.
    async fn settle(&self, record: SqsRecord, outcome: Result<(), HandlerError>) -> Option<FailedRecord> {
        let error = match outcome {
            Ok(()) => return None,
            Err(error) => error,
        };
        let message_id = record.message_id.clone();
        match error {
            HandlerError::Transient { reason, retry_after } => {
                tracing::warn!(
                    message_id,
                    receive_count = record.receive_count,
                    reason,
                    retry_after_seconds = retry_after.map(|wait| wait.as_secs_f64()),
                    "record failed, will be retried"
                );
                Some(FailedRecord { message_id, retry_after })
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
                        Some(FailedRecord::without_wait(message_id))
                    }
                }
            }
        }
    }
}

/// A FIFO message group's id and its records with their positions in the batch, in order.
type MessageGroup = (Option<String>, Vec<(usize, SqsRecord)>);

fn batch_outcome(failed: impl IntoIterator<Item = FailedRecord>) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    for FailedRecord { message_id, retry_after } in failed {
        if let Some(wait) = retry_after {
            outcome.retry_after.insert(message_id.clone(), wait);
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        outcome.response.batch_item_failures.push(failure);
    }
    outcome
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

    const CIRCUIT_RETRY_IN: Duration = Duration::from_secs(30);

    async fn classify(record: SqsRecord) -> Result<(), HandlerError> {
        match record.body.as_str() {
            "ok" => Ok(()),
            "later" => Err(HandlerError::transient("throttled")),
            "open" => Err(HandlerError::transient_after("circuit open", CIRCUIT_RETRY_IN)),
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
    async fn the_wait_a_transient_failure_asks_for_reaches_the_outcome_and_only_for_that_record() {
        let sink = MemoryDeadLetters::default();
        let outcome = SqsBatchProcessor::new(sink.clone())
            .with_concurrency(4)
            .process_with_retry_hints(event(&["open", "later", "garbage", "ok"]), classify)
            .await
            .unwrap();
        assert_eq!(failed_ids(&outcome.response), ["m0", "m1"]);
        assert_eq!(outcome.retry_after, BTreeMap::from([("m0".to_owned(), CIRCUIT_RETRY_IN)]));
        assert_eq!(sink.letters().len(), 1, "the poison record went to the dead-letter sink, not to a retry");
    }

    #[tokio::test]
    async fn fifo_records_skipped_behind_a_waiting_record_carry_no_wait_of_their_own() {
        let outcome = SqsBatchProcessor::new(MemoryDeadLetters::default())
            .fifo()
            .process_with_retry_hints(
                fifo_event(&[("a1", "A", "open"), ("a2", "A", "ok"), ("b1", "B", "later")]),
                classify,
            )
            .await
            .unwrap();
        assert_eq!(failed_ids(&outcome.response), ["a1", "a2", "b1"]);
        assert_eq!(outcome.retry_after, BTreeMap::from([("a1".to_owned(), CIRCUIT_RETRY_IN)]));
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

    /// A FIFO batch: `(message id, group, body)`.
    fn fifo_event(records: &[(&str, &str, &str)]) -> SqsEvent {
        let records: Vec<_> = records
            .iter()
            .map(|(id, group, body)| json!({"messageId": id, "body": body, "attributes": {"MessageGroupId": group}}))
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    /// Runs a FIFO batch, returning the failed ids in response order and the ids the handler ran, in order.
    async fn run_fifo(
        processor: SqsBatchProcessor<impl DeadLetterSink>,
        records: &[(&str, &str, &str)],
    ) -> (Vec<String>, Vec<String>) {
        let ran = std::sync::Mutex::new(Vec::new());
        let response = processor
            .fifo()
            .process(fifo_event(records), |record| {
                ran.lock().unwrap().push(record.message_id.clone());
                classify(record)
            })
            .await
            .unwrap();
        let failed = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        (failed, ran.into_inner().unwrap())
    }

    #[tokio::test]
    async fn fifo_stops_a_group_at_its_first_failure_and_other_groups_keep_going() {
        for concurrency in [1, 4] {
            let processor = SqsBatchProcessor::new(MemoryDeadLetters::default()).with_concurrency(concurrency);
            let (failed, ran) = run_fifo(
                processor,
                &[
                    ("a1", "A", "ok"),
                    ("b1", "B", "ok"),
                    ("a2", "A", "later"),
                    ("b2", "B", "ok"),
                    ("a3", "A", "ok"),
                    ("c1", "C", "later"),
                    ("b3", "B", "ok"),
                    ("a4", "A", "garbage"),
                ],
            )
            .await;
            assert_eq!(failed, ["a2", "a3", "c1", "a4"], "concurrency {concurrency}");
            let mut ran = ran;
            ran.sort_unstable();
            assert_eq!(ran, ["a1", "a2", "b1", "b2", "b3", "c1"], "a3 and a4 never ran");
        }
    }

    #[tokio::test]
    async fn fifo_runs_a_group_in_batch_order() {
        let processor = SqsBatchProcessor::new(MemoryDeadLetters::default()).with_concurrency(8);
        let (failed, ran) =
            run_fifo(processor, &[("a1", "A", "ok"), ("a2", "A", "ok"), ("a3", "A", "ok"), ("a4", "A", "ok")]).await;
        assert!(failed.is_empty());
        assert_eq!(ran, ["a1", "a2", "a3", "a4"]);
    }

    #[tokio::test]
    async fn fifo_all_failed_reports_every_record() {
        let processor = SqsBatchProcessor::new(MemoryDeadLetters::default()).with_concurrency(2);
        let (failed, ran) = run_fifo(
            processor,
            &[("a1", "A", "later"), ("b1", "B", "later"), ("a2", "A", "later"), ("b2", "B", "later")],
        )
        .await;
        assert_eq!(failed, ["a1", "b1", "a2", "b2"]);
        let mut ran = ran;
        ran.sort_unstable();
        assert_eq!(ran, ["a1", "b1"], "only the first record of each group ran");
    }

    #[tokio::test]
    async fn fifo_poison_goes_to_the_dead_letter_sink_and_its_group_goes_on() {
        let sink = MemoryDeadLetters::default();
        let (failed, ran) =
            run_fifo(SqsBatchProcessor::new(sink.clone()), &[("a1", "A", "garbage"), ("a2", "A", "ok")]).await;
        assert!(failed.is_empty());
        assert_eq!(ran, ["a1", "a2"]);
        assert_eq!(sink.letters()[0].message_id, "a1");

        // When the dead letter cannot be sent, the poison record holds its group back instead.
        let (failed, ran) =
            run_fifo(SqsBatchProcessor::new(FailingSink), &[("a1", "A", "garbage"), ("a2", "A", "ok")]).await;
        assert_eq!(failed, ["a1", "a2"]);
        assert_eq!(ran, ["a1"]);
    }

    #[tokio::test]
    async fn fifo_records_without_a_group_are_one_group() {
        let event: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "m0", "body": "later"}, {"messageId": "m1", "body": "ok"}]}))
        .unwrap();
        let response =
            SqsBatchProcessor::new(MemoryDeadLetters::default()).fifo().process(event, classify).await.unwrap();
        assert_eq!(failed_ids(&response), ["m0", "m1"]);
    }

    #[test]
    fn typed_parse_of_a_malformed_body_is_permanent() {
        let record = SqsRecord {
            message_id: "m-9".into(),
            body: "{\"count\": \"three\"}".into(),
            receive_count: 1,
            attributes: BTreeMap::new(),
        };
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Counted {
            count: u32,
        }
        let err = record.json::<Counted>().unwrap_err();
        assert!(matches!(&err, HandlerError::Permanent(reason) if reason.contains("m-9")), "{err}");
    }

    #[tokio::test]
    async fn a_record_without_message_id_fails_the_whole_batch() {
        let event: SqsEvent = serde_json::from_value(json!({"Records": [{"body": "ok"}]})).unwrap();
        let result = SqsBatchProcessor::new(MemoryDeadLetters::default()).process(event, classify).await;
        assert!(matches!(result, Err(BatchError::MissingMessageId(0))));
    }
}
