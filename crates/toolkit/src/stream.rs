//! In-order processing of a DynamoDB Streams batch with Lambda's stream semantics.
//!
//! A shard's records must be applied in order, so [`DynamoDbStreamProcessor`] stops at the first record that
//! failed: that record and every later one are returned in `batchItemFailures` by `SequenceNumber`. Lambda
//! checkpoints before the lowest reported sequence number and delivers the rest again, so nothing is skipped and
//! nothing overtakes the failed record.
//!
//! It has two forms with one way of settling failures:
//! - [`process`](DynamoDbStreamProcessor::process) runs a handler on each record, one after another, until one
//!   fails: for effects applied record by record.
//! - [`process_batch`](DynamoDbStreamProcessor::process_batch) hands the handler the whole batch, for an effect
//!   that takes many records at once (the outbox relay publishes them with batched `PutEvents`), and takes back
//!   the records that failed ([`RecordFailure`]); they are settled in batch order as if each had failed in
//!   `process`. A record after the stop is delivered again even if the handler did handle it: at least once.
//!
//! What a failure means:
//! - [`HandlerError::Transient`]: the batch stops here; Lambda retries from this record.
//! - [`HandlerError::Permanent`]: retrying cannot succeed and would hold the whole shard back until the event source
//!   mapping gives up, so the record goes to the [`DeadLetterSink`] with its reason (the body is the stream record
//!   as JSON, the id its sequence number) and the batch goes on; if that send fails, the batch stops here instead.
//!
//! [`new_image`], [`old_image`] and [`keys`] are the typed parse step: an image that does not deserialise is a
//! [`HandlerError::Permanent`], never a panic.

use std::collections::BTreeMap;
use std::future::Future;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::de::DeserializeOwned;

use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::error::HandlerError;

/// A stream batch Lambda cannot answer with a partial response.
#[derive(Debug, thiserror::Error)]
pub enum StreamBatchError {
    #[error("stream record {0} has no SequenceNumber, so its failure could not be reported; failing the whole batch")]
    MissingSequenceNumber(usize),
    #[error("the handler reported a failure of record {index} of a batch of {records}; failing the whole batch")]
    NoSuchRecord { index: usize, records: usize },
}

/// A record that failed in a batch handled as a whole: its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    pub index: usize,
    pub error: HandlerError,
}

/// Processes DynamoDB Streams batches in order, stopping at the first failure.
#[derive(Debug, Clone)]
pub struct DynamoDbStreamProcessor<S> {
    dead_letters: S,
}

impl<S: DeadLetterSink> DynamoDbStreamProcessor<S> {
    pub fn new(dead_letters: S) -> Self {
        Self { dead_letters }
    }

    /// Runs `handler` on the records in order until one fails, and reports that record and every later one. For a
    /// handler that applies records one at a time; the outbox relay publishes whole batches
    /// ([`Self::process_batch`]).
    ///
    /// ```
    /// use aws_lambda_events::event::dynamodb::Event;
    /// use orderflow_toolkit::stream::{DynamoDbStreamProcessor, new_image};
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Stock { sku: String, available: u32 }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let record = |sequence: &str, sku: &str, available: &str| serde_json::json!({
    ///     "eventID": sequence, "eventName": "INSERT", "awsRegion": "eu-west-1",
    ///     "dynamodb": {"SequenceNumber": sequence, "SizeBytes": 10, "StreamViewType": "NEW_IMAGE",
    ///                  "Keys": {"sku": {"S": sku}},
    ///                  "NewImage": {"sku": {"S": sku}, "available": {"N": available}}}});
    /// let event: Event = serde_json::from_value(serde_json::json!({"Records": [
    ///     record("100", "SKU-1", "5"), record("200", "SKU-2", "0"), record("300", "SKU-3", "7")]})).unwrap();
    /// let processor = DynamoDbStreamProcessor::new(MemoryDeadLetters::default());
    /// let response = processor.process(event, |record| async move {
    ///     let stock: Stock = new_image(&record)?;
    ///     if stock.available == 0 {
    ///         return Err(HandlerError::transient(format!("{} is sold out, try later", stock.sku)));
    ///     }
    ///     Ok(())
    /// }).await.unwrap();
    /// let failed: Vec<_> =
    ///     response.batch_item_failures.iter().map(|f| f.item_identifier.as_deref().unwrap()).collect();
    /// // SKU-3 did not run: it must not overtake SKU-2.
    /// assert_eq!(failed, ["200", "300"]);
    /// # })
    /// ```
    pub async fn process<F, Fut>(&self, event: Event, handler: F) -> Result<DynamoDbEventResponse, StreamBatchError>
    where
        F: Fn(EventRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let sequence_numbers = sequence_numbers(&event.records)?;
        for (index, record) in event.records.into_iter().enumerate() {
            let Err(error) = handler(record.clone()).await else { continue };
            if self.stops_at(&sequence_numbers[index], &record, error).await {
                return Ok(stopped_at(&sequence_numbers, index));
            }
        }
        Ok(DynamoDbEventResponse::default())
    }

    /// Hands `handler` the whole batch and settles the failures it reports, in batch order, as
    /// [`process`](Self::process) settles each record's: the first transient one stops the batch there, permanent
    /// ones before it are dead-lettered. Records it does not report are done.
    ///
    /// ```
    /// use aws_lambda_events::event::dynamodb::{Event, EventRecord};
    /// use orderflow_toolkit::stream::{DynamoDbStreamProcessor, RecordFailure, new_image};
    /// use orderflow_toolkit::{HandlerError, MemoryDeadLetters};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Stock { sku: String, available: u32 }
    ///
    /// /// Writes a batch's stock levels in one call to a store with room for `room` more.
    /// async fn write_levels(store: &mut Vec<Stock>, room: usize, records: &[EventRecord]) -> Vec<RecordFailure> {
    ///     let mut failures = Vec::new();
    ///     let mut levels = Vec::new(); // (index in the batch, level)
    ///     for (index, record) in records.iter().enumerate() {
    ///         match new_image::<Stock>(record) {
    ///             Ok(stock) => levels.push((index, stock)),
    ///             Err(poison) => failures.push(RecordFailure { index, error: poison }),
    ///         }
    ///     }
    ///     if let Some((index, _)) = levels.get(room) {
    ///         failures.push(RecordFailure { index: *index, error: HandlerError::transient("store full, try later") });
    ///     }
    ///     store.extend(levels.into_iter().take(room).map(|(_, stock)| stock));
    ///     failures
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let record = |sequence: &str, image: serde_json::Value| serde_json::json!({
    ///     "eventID": sequence, "eventName": "INSERT", "awsRegion": "eu-west-1",
    ///     "dynamodb": {"SequenceNumber": sequence, "SizeBytes": 10, "NewImage": image}});
    /// let stock = |sku: &str, available: &str| serde_json::json!({"sku": {"S": sku}, "available": {"N": available}});
    /// let event: Event = serde_json::from_value(serde_json::json!({"Records": [
    ///     record("100", stock("SKU-1", "5")), record("200", serde_json::json!({"sku": {"S": "SKU-2"}})),
    ///     record("300", stock("SKU-3", "7")), record("400", stock("SKU-4", "1"))]})).unwrap();
    ///
    /// let (dead_letters, mut store) = (MemoryDeadLetters::default(), Vec::new());
    /// let processor = DynamoDbStreamProcessor::new(dead_letters.clone());
    /// let response =
    ///     processor.process_batch(event, async |records| write_levels(&mut store, 2, records).await).await.unwrap();
    ///
    /// let written: Vec<_> = store.iter().map(|stock| (stock.sku.as_str(), stock.available)).collect();
    /// assert_eq!(written, [("SKU-1", 5), ("SKU-3", 7)]);
    /// // SKU-2 cannot parse: dead-lettered, so it does not hold the shard back; SKU-4 comes again.
    /// assert_eq!(dead_letters.letters()[0].message_id, "200");
    /// let failed: Vec<_> =
    ///     response.batch_item_failures.iter().map(|f| f.item_identifier.as_deref().unwrap()).collect();
    /// assert_eq!(failed, ["400"]);
    /// # })
    /// ```
    pub async fn process_batch<F>(&self, event: Event, handler: F) -> Result<DynamoDbEventResponse, StreamBatchError>
    where
        F: AsyncFnOnce(&[EventRecord]) -> Vec<RecordFailure>,
    {
        let (records, sequence_numbers) = (&event.records, sequence_numbers(&event.records)?);
        let mut failures = handler(records).await;
        failures.sort_by_key(|failure| failure.index);
        // Checked before any is settled: a batch that fails whole must not have dead-lettered a record first.
        let failures = failures
            .into_iter()
            .map(|RecordFailure { index, error }| match records.get(index) {
                Some(record) => Ok((index, record, error)),
                None => Err(StreamBatchError::NoSuchRecord { index, records: records.len() }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (index, record, error) in failures {
            if self.stops_at(&sequence_numbers[index], record, error).await {
                return Ok(stopped_at(&sequence_numbers, index));
            }
        }
        Ok(DynamoDbEventResponse::default())
    }

    /// Settles a failed record, and says whether the batch stops at it.
    async fn stops_at(&self, sequence_number: &str, record: &EventRecord, error: HandlerError) -> bool {
        match error {
            HandlerError::Transient { reason, .. } => {
                tracing::warn!(sequence_number, reason, "stream record failed, will be retried");
                true
            }
            HandlerError::Permanent(reason) => {
                tracing::error!(sequence_number, reason, "poison stream record, sending it to the dead-letter sink");
                let attributes = BTreeMap::from([
                    ("eventID".to_owned(), record.event_id.clone()),
                    ("eventName".to_owned(), record.event_name.clone()),
                ]);
                let letter = DeadLetter {
                    message_id: sequence_number.to_owned(),
                    body: serde_json::to_string(record).unwrap_or_default(),
                    reason,
                    error_class: "Permanent".into(),
                    attributes,
                };
                match self.dead_letters.send(letter).await {
                    Ok(()) => false,
                    Err(send_error) => {
                        tracing::error!(
                            sequence_number,
                            send_error,
                            "dead-letter send failed, stopping the batch here"
                        );
                        true
                    }
                }
            }
        }
    }
}

/// Every record's sequence number, which reporting any of them needs; checked before any record is handled.
fn sequence_numbers(records: &[EventRecord]) -> Result<Vec<String>, StreamBatchError> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            record.change.sequence_number.clone().ok_or(StreamBatchError::MissingSequenceNumber(index))
        })
        .collect()
}

/// The response of a batch stopped at record `index`: it and every later record are delivered again.
fn stopped_at(sequence_numbers: &[String], index: usize) -> DynamoDbEventResponse {
    tracing::warn!(
        sequence_number = sequence_numbers[index],
        later = sequence_numbers.len() - index - 1,
        "stream batch stopped at a failed record; it and every later record will be delivered again"
    );
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = sequence_numbers[index..]
        .iter()
        .map(|sequence_number| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number.clone());
            failure
        })
        .collect();
    response
}

/// The typed parse step of a stream record: its new image as a `T`, or a [`HandlerError::Permanent`] saying why not.
pub fn new_image<T: DeserializeOwned>(record: &EventRecord) -> Result<T, HandlerError> {
    parse_item(record, "NewImage", &record.change.new_image)
}

/// The old image as a `T` (MODIFY and REMOVE records of an `OLD_IMAGE` or `NEW_AND_OLD_IMAGES` stream).
pub fn old_image<T: DeserializeOwned>(record: &EventRecord) -> Result<T, HandlerError> {
    parse_item(record, "OldImage", &record.change.old_image)
}

/// The item's key attributes as a `T`.
pub fn keys<T: DeserializeOwned>(record: &EventRecord) -> Result<T, HandlerError> {
    parse_item(record, "Keys", &record.change.keys)
}

fn parse_item<T: DeserializeOwned>(
    record: &EventRecord,
    what: &str,
    item: &serde_dynamo::Item,
) -> Result<T, HandlerError> {
    serde_dynamo::from_item(item.clone()).map_err(|error| {
        HandlerError::permanent(format!(
            "{what} of stream record {} does not parse: {error}",
            record.change.sequence_number.as_deref().unwrap_or(&record.event_id)
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::MemoryDeadLetters;

    struct FailingSink;
    impl DeadLetterSink for FailingSink {
        async fn send(&self, _: DeadLetter) -> Result<(), String> {
            Err("queue unavailable".into())
        }
    }

    /// A batch whose records carry `(sequence number, outcome)`: `ok`, `later` (transient) or `bad` (no count).
    fn event(records: &[(&str, &str)]) -> Event {
        let records: Vec<_> = records
            .iter()
            .map(|(sequence, outcome)| {
                let image = match *outcome {
                    "bad" => json!({"outcome": {"S": outcome}}),
                    _ => json!({"outcome": {"S": outcome}, "count": {"N": "1"}}),
                };
                json!({"eventID": format!("e{sequence}"), "eventName": "INSERT", "awsRegion": "eu-west-1",
                       "dynamodb": {"SequenceNumber": sequence, "SizeBytes": 1, "Keys": {"pk": {"S": sequence}},
                                    "NewImage": image}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Image {
        outcome: String,
        #[allow(dead_code)]
        count: u32,
    }

    async fn run(
        processor: DynamoDbStreamProcessor<impl DeadLetterSink>,
        records: &[(&str, &str)],
    ) -> (Vec<String>, Vec<String>) {
        let ran = Mutex::new(Vec::new());
        let response = processor
            .process(event(records), |record| {
                ran.lock().unwrap().push(record.change.sequence_number.clone().unwrap());
                async move {
                    let image: Image = new_image(&record)?;
                    match image.outcome.as_str() {
                        "ok" => Ok(()),
                        _ => Err(HandlerError::transient("throttled")),
                    }
                }
            })
            .await
            .unwrap();
        let failed = response.batch_item_failures.into_iter().map(|f| f.item_identifier.unwrap()).collect();
        (failed, ran.into_inner().unwrap())
    }

    #[tokio::test]
    async fn stops_at_the_first_failure_and_reports_every_later_record() {
        let (failed, ran) = run(
            DynamoDbStreamProcessor::new(MemoryDeadLetters::default()),
            &[("1", "ok"), ("2", "later"), ("3", "ok")],
        )
        .await;
        assert_eq!(failed, ["2", "3"]);
        assert_eq!(ran, ["1", "2"], "the record after the failure did not run");
    }

    #[tokio::test]
    async fn a_batch_without_failures_reports_nothing() {
        let (failed, ran) =
            run(DynamoDbStreamProcessor::new(MemoryDeadLetters::default()), &[("1", "ok"), ("2", "ok")]).await;
        assert!(failed.is_empty());
        assert_eq!(ran, ["1", "2"]);
    }

    #[tokio::test]
    async fn all_failed_reports_every_record() {
        let (failed, ran) =
            run(DynamoDbStreamProcessor::new(MemoryDeadLetters::default()), &[("1", "later"), ("2", "later")]).await;
        assert_eq!(failed, ["1", "2"]);
        assert_eq!(ran, ["1"]);
    }

    #[tokio::test]
    async fn an_image_that_does_not_parse_is_dead_lettered_and_the_batch_goes_on() {
        let sink = MemoryDeadLetters::default();
        let (failed, ran) = run(DynamoDbStreamProcessor::new(sink.clone()), &[("1", "bad"), ("2", "ok")]).await;
        assert!(failed.is_empty());
        assert_eq!(ran, ["1", "2"]);
        let letters = sink.letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].message_id, "1");
        assert!(letters[0].reason.contains("NewImage of stream record 1 does not parse"), "{}", letters[0].reason);
        assert_eq!(letters[0].attributes["eventID"], "e1");
        let body: serde_json::Value = serde_json::from_str(&letters[0].body).unwrap();
        assert_eq!(body["dynamodb"]["SequenceNumber"], "1");
    }

    #[tokio::test]
    async fn a_poison_record_stops_the_batch_when_its_dead_letter_cannot_be_sent() {
        let (failed, ran) =
            run(DynamoDbStreamProcessor::new(FailingSink), &[("1", "ok"), ("2", "bad"), ("3", "ok")]).await;
        assert_eq!(failed, ["2", "3"]);
        assert_eq!(ran, ["1", "2"]);
    }

    /// Runs `process_batch` on a batch of `records` sequence numbers whose handler reports `failures`, as
    /// `(index, "transient" or "permanent")`; answers the sequence numbers reported as failed.
    async fn run_batch(
        processor: DynamoDbStreamProcessor<impl DeadLetterSink>,
        records: &[&str],
        failures: &[(usize, &str)],
    ) -> Result<Vec<String>, StreamBatchError> {
        let records: Vec<_> = records.iter().map(|sequence| (*sequence, "ok")).collect();
        let failures = failures
            .iter()
            .map(|&(index, class)| RecordFailure {
                index,
                error: match class {
                    "transient" => HandlerError::transient("throttled"),
                    _ => HandlerError::permanent("malformed"),
                },
            })
            .collect();
        let response = processor.process_batch(event(&records), async |_| failures).await?;
        Ok(response.batch_item_failures.into_iter().map(|f| f.item_identifier.unwrap()).collect())
    }

    fn dead_lettered(sink: &MemoryDeadLetters) -> Vec<String> {
        sink.letters().into_iter().map(|letter| letter.message_id).collect()
    }

    #[tokio::test]
    async fn a_batch_handled_whole_hands_the_handler_every_record_and_reports_nothing_when_all_succeed() {
        let processor = DynamoDbStreamProcessor::new(MemoryDeadLetters::default());
        let mut seen = Vec::new();
        let response = processor
            .process_batch(event(&[("1", "ok"), ("2", "ok")]), async |records| {
                seen = records.iter().map(|record| record.event_id.clone()).collect();
                Vec::new()
            })
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(seen, ["e1", "e2"]);
    }

    #[tokio::test]
    async fn a_transient_failure_in_a_batch_reports_that_record_and_every_later_one() {
        let failed = run_batch(
            DynamoDbStreamProcessor::new(MemoryDeadLetters::default()),
            &["1", "2", "3"],
            &[(1, "transient")],
        )
        .await
        .unwrap();
        assert_eq!(failed, ["2", "3"]);
    }

    #[tokio::test]
    async fn a_permanent_failure_in_a_batch_is_dead_lettered_and_the_batch_goes_on() {
        let sink = MemoryDeadLetters::default();
        let failed =
            run_batch(DynamoDbStreamProcessor::new(sink.clone()), &["1", "2", "3"], &[(1, "permanent")]).await.unwrap();
        assert!(failed.is_empty());
        assert_eq!(dead_lettered(&sink), ["2"]);
        assert_eq!(sink.letters()[0].reason, "malformed");
    }

    #[tokio::test]
    async fn batch_failures_are_settled_in_batch_order_whatever_order_they_are_reported_in() {
        let sink = MemoryDeadLetters::default();
        let failed = run_batch(
            DynamoDbStreamProcessor::new(sink.clone()),
            &["1", "2", "3", "4"],
            &[(3, "permanent"), (2, "transient"), (0, "permanent")],
        )
        .await
        .unwrap();
        assert_eq!(failed, ["3", "4"]);
        assert_eq!(dead_lettered(&sink), ["1"], "record 4 is after the stop: delivered again, not dead-lettered");
    }

    #[tokio::test]
    async fn a_poison_record_stops_a_batch_when_its_dead_letter_cannot_be_sent() {
        let failed =
            run_batch(DynamoDbStreamProcessor::new(FailingSink), &["1", "2", "3"], &[(1, "permanent")]).await.unwrap();
        assert_eq!(failed, ["2", "3"]);
    }

    #[tokio::test]
    async fn a_failure_of_a_record_the_batch_does_not_have_fails_it_whole_before_dead_lettering_any() {
        let sink = MemoryDeadLetters::default();
        let result =
            run_batch(DynamoDbStreamProcessor::new(sink.clone()), &["1", "2"], &[(0, "permanent"), (2, "transient")])
                .await;
        assert!(matches!(result, Err(StreamBatchError::NoSuchRecord { index: 2, records: 2 })), "{result:?}");
        assert!(sink.letters().is_empty());
    }

    #[tokio::test]
    async fn a_batch_with_a_record_without_sequence_number_is_not_handled_and_fails_whole() {
        let mut batch = event(&[("1", "ok"), ("2", "ok")]);
        batch.records[1].change.sequence_number = None;
        let mut handled = false;
        let result = DynamoDbStreamProcessor::new(MemoryDeadLetters::default())
            .process_batch(batch, async |_| {
                handled = true;
                Vec::new()
            })
            .await;
        assert!(matches!(result, Err(StreamBatchError::MissingSequenceNumber(1))), "{result:?}");
        assert!(!handled);
    }

    #[tokio::test]
    async fn a_record_without_sequence_number_fails_the_whole_batch() {
        let event: Event = serde_json::from_value(json!({"Records": [
            {"eventID": "e", "eventName": "INSERT", "awsRegion": "x", "dynamodb": {"SizeBytes": 1}}]}))
        .unwrap();
        let result =
            DynamoDbStreamProcessor::new(MemoryDeadLetters::default()).process(event, |_| async { Ok(()) }).await;
        assert!(matches!(result, Err(StreamBatchError::MissingSequenceNumber(0))));
    }
}
