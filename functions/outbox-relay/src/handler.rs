//! The outbox relay: publishes the records the services write to the Outbox table, and the events of the orders
//! event store (the Orders table), to the event bus, from the tables' DynamoDB streams.
//!
//! Stream semantics (one shard, records in order; the outbox key puts an order's events in one partition), with the
//! toolkit's [`DynamoDbStreamProcessor`] handing the relay the whole batch:
//! - INSERT records become bus entries, published in stream order with
//!   [`publish_in_order`] (batched, failed entries retried with backoff, never two entries of one order in one
//!   call).
//! - When an entry still cannot be published after its retries, that record AND every later record of the batch
//!   are reported as batch item failures. Lambda checkpoints before the lowest reported sequence number and
//!   delivers the rest again, so no event is dropped and no later event of the same order overtakes it. Records
//!   after the failed one that reached the bus anyway (other orders in the same `PutEvents` call) are published
//!   again on the retry: delivery is at least once, and every consumer recognises redeliveries by the event id.
//! - An INSERT whose image is not an outbox record is a permanent failure: retrying cannot repair it, and reporting
//!   it would hold the whole shard back until the event source mapping gives up on the batch. It is logged with the
//!   reason and skipped; the item stays in the Outbox table (until its TTL) for an operator to repair and write
//!   again.
//! - Other records are not events and are ignored: the REMOVEs of TTL expiry, any MODIFY, and the INSERT of an item
//!   with none of the event attributes (an order's head, an idempotency record in the Orders table). An item with
//!   some but not all of them is malformed, as above.

use aws_lambda_events::event::dynamodb::{Event, EventRecord, StreamRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use orderflow_aws::outbox::attributes;
use orderflow_toolkit::publish::{BusEntry, EventBus, RetryPolicy, publish_in_order};
use orderflow_toolkit::stream::{RecordFailure, StreamBatchError};
use orderflow_toolkit::{DeadLetter, DeadLetterSink, DynamoDbStreamProcessor, HandlerError};
use serde_json::Value;

/// Why a new image cannot become a bus entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("attribute {0} is missing")]
    Missing(&'static str),
    #[error("attribute {0} is not a string")]
    NotAString(&'static str),
    #[error("attribute detail is not a JSON object: {0}")]
    DetailNotAnObject(String),
}

/// Publishes outbox records to a bus.
#[derive(Debug, Clone)]
pub struct Relay<B> {
    bus: B,
    retry: RetryPolicy,
    processor: DynamoDbStreamProcessor<LeftInOutbox>,
}

impl<B: EventBus> Relay<B> {
    pub fn new(bus: B) -> Self {
        Self { bus, retry: RetryPolicy::default(), processor: DynamoDbStreamProcessor::new(LeftInOutbox) }
    }

    /// Tests retry quickly; the function uses the toolkit's default policy.
    #[cfg(test)]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Publishes the batch's INSERT records and answers with the records Lambda must deliver again.
    pub async fn handle(&self, event: Event) -> Result<DynamoDbEventResponse, StreamBatchError> {
        self.processor.process_batch(event, async |records| self.publish(records).await).await
    }

    /// Publishes the records' bus entries in order; the failures are the records that are not outbox records
    /// (permanent) and the first that could not be published (transient).
    async fn publish(&self, records: &[EventRecord]) -> Vec<RecordFailure> {
        let mut failures = Vec::new();
        // The entries to publish, and for each the index of its record in the batch.
        let mut entries = Vec::with_capacity(records.len());
        let mut positions = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            if record.event_name != "INSERT" {
                tracing::debug!(
                    event_name = record.event_name,
                    sequence_number = record.change.sequence_number.as_deref().unwrap_or("-"),
                    "not a new outbox record, ignored"
                );
                continue;
            }
            if !is_event(&record.change) {
                tracing::debug!(key = %keys(record), "a new item that is not an event, ignored");
                continue;
            }
            match bus_entry(&record.change) {
                Ok(entry) => {
                    entries.push(entry);
                    positions.push(index);
                }
                Err(reason) => failures.push(RecordFailure {
                    index,
                    error: HandlerError::permanent(format!("outbox record {}: {reason}", keys(record))),
                }),
            }
        }

        let report = publish_in_order(&self.bus, &entries, self.retry).await;
        match report.failed {
            None => tracing::info!(published = report.published, records = records.len(), "outbox records published"),
            Some((failed, reason)) => {
                let index = positions[failed];
                tracing::error!(
                    published = report.published,
                    key = %keys(&records[index]),
                    reason,
                    "an outbox record could not be published; it and every later record will be delivered again"
                );
                failures.push(RecordFailure { index, error: HandlerError::transient(reason) });
            }
        }
        failures
    }
}

/// Where the relay's poison records go: nowhere but the log, because their items are still in the Outbox table
/// (until their TTL), where an operator repairs them and writes them again.
#[derive(Debug, Clone, Copy)]
struct LeftInOutbox;

impl DeadLetterSink for LeftInOutbox {
    async fn send(&self, letter: DeadLetter) -> Result<(), String> {
        tracing::error!(
            sequence_number = letter.message_id,
            reason = letter.reason,
            "malformed outbox record skipped; it stays in the Outbox table for an operator"
        );
        Ok(())
    }
}

/// Whether a new image is meant as an event: it has at least one of the attributes the relay publishes.
fn is_event(change: &StreamRecord) -> bool {
    [attributes::SOURCE, attributes::DETAIL_TYPE, attributes::DETAIL]
        .iter()
        .any(|name| change.new_image.contains_key(*name))
}

/// The bus entry of an outbox record's new image.
pub fn bus_entry(change: &StreamRecord) -> Result<BusEntry, ImageError> {
    let detail = string_attribute(change, attributes::DETAIL)?;
    if let Err(error) = serde_json::from_str::<serde_json::Map<String, Value>>(&detail) {
        return Err(ImageError::DetailNotAnObject(error.to_string()));
    }
    Ok(BusEntry {
        partition: string_attribute(change, "pk")?,
        source: string_attribute(change, attributes::SOURCE)?,
        detail_type: string_attribute(change, attributes::DETAIL_TYPE)?,
        detail,
    })
}

fn string_attribute(change: &StreamRecord, name: &'static str) -> Result<String, ImageError> {
    let value = change.new_image.get(name).ok_or(ImageError::Missing(name))?;
    // The stream's attribute values serialise to DynamoDB JSON: {"S": "..."} for a string.
    match serde_json::to_value(value) {
        Ok(Value::Object(mut typed)) => match typed.remove("S") {
            Some(Value::String(text)) => Ok(text),
            _ => Err(ImageError::NotAString(name)),
        },
        _ => Err(ImageError::NotAString(name)),
    }
}

/// The record's key as `pk/sk`, for logs.
fn keys(record: &EventRecord) -> String {
    let part = |name| match record.change.keys.get(name).map(serde_json::to_value) {
        Some(Ok(Value::Object(typed))) => typed.get("S").and_then(Value::as_str).unwrap_or("?").to_owned(),
        _ => "?".to_owned(),
    };
    format!("{}/{}", part("pk"), part("sk"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_test_support::Samples;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    const SAMPLES: Samples = Samples::of("outbox-relay");
    const INSERT_ORDER_PLACED: &str = "insert-order-placed.json";
    const INSERT_TWO_ORDERS: &str = "insert-two-orders.json";
    const REMOVE_IGNORED: &str = "remove-ignored.json";
    const INSERT_MALFORMED: &str = "insert-malformed.json";
    const INSERT_EVENT_STORE: &str = "insert-event-store.json";

    /// An in-memory bus: records what it accepted, and rejects the entries of chosen event types a chosen number
    /// of times (`u32::MAX`: always).
    #[derive(Default)]
    struct MemoryBus {
        failures: Mutex<HashMap<String, u32>>,
        accepted: Mutex<Vec<BusEntry>>,
        calls: Mutex<usize>,
    }

    impl MemoryBus {
        fn failing(detail_type: &str, times: u32) -> Self {
            let bus = Self::default();
            bus.failures.lock().unwrap().insert(detail_type.to_owned(), times);
            bus
        }

        fn accepted(&self) -> Vec<(String, String)> {
            self.accepted.lock().unwrap().iter().map(|e| (e.partition.clone(), e.detail_type.clone())).collect()
        }
    }

    impl EventBus for MemoryBus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            *self.calls.lock().unwrap() += 1;
            let mut failures = self.failures.lock().unwrap();
            Ok(entries
                .iter()
                .map(|entry| match failures.get_mut(&entry.detail_type) {
                    Some(left) if *left > 0 => {
                        *left = left.saturating_sub(1);
                        Some("ThrottlingException: Rate exceeded".to_owned())
                    }
                    _ => {
                        self.accepted.lock().unwrap().push(entry.clone());
                        None
                    }
                })
                .collect())
        }
    }

    fn relay(bus: &MemoryBus) -> Relay<&MemoryBus> {
        Relay::new(bus).with_retry(RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        })
    }

    fn failed_sequence_numbers(response: &DynamoDbEventResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_deref().unwrap()).collect()
    }

    // EventBus is implemented for references so a test can keep the bus it hands to the relay.
    impl EventBus for &MemoryBus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            (**self).put_events(entries).await
        }
    }

    #[tokio::test]
    async fn an_inserted_outbox_record_is_published_as_it_was_written() {
        let bus = MemoryBus::default();

        let response = relay(&bus).handle(SAMPLES.event(INSERT_ORDER_PLACED)).await.unwrap();

        assert!(response.batch_item_failures.is_empty());
        let accepted = bus.accepted.lock().unwrap().clone();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].partition, "o-1");
        assert_eq!(accepted[0].source, "orderflow.orders");
        assert_eq!(accepted[0].detail_type, "OrderPlaced");
        let detail: Value = serde_json::from_str(&accepted[0].detail).unwrap();
        assert_eq!(detail["id"], "6f1c2b9a-3d4e-4f5a-8b6c-7d8e9f0a1b2c");
        assert_eq!(detail["data"]["customer_id"], "c-1");
    }

    #[tokio::test]
    async fn events_are_published_in_stream_order_and_one_order_never_twice_in_one_call() {
        let bus = MemoryBus::default();

        let response = relay(&bus).handle(SAMPLES.event(INSERT_TWO_ORDERS)).await.unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(
            bus.accepted(),
            [
                ("o-1".into(), "OrderPlaced".into()),
                ("o-2".into(), "OrderPlaced".into()),
                ("o-1".into(), "InventoryReserved".into()),
                ("o-2".into(), "InventoryRejected".into()),
            ]
        );
        assert_eq!(*bus.calls.lock().unwrap(), 2, "o-1's second event waits for the next call");
    }

    #[tokio::test]
    async fn a_failed_entry_that_succeeds_on_retry_reports_nothing() {
        let bus = MemoryBus::failing("OrderPlaced", 2);

        let response = relay(&bus).handle(SAMPLES.event(INSERT_ORDER_PLACED)).await.unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(bus.accepted().len(), 1);
    }

    #[tokio::test]
    async fn an_entry_that_keeps_failing_is_reported_with_every_later_record() {
        // Given o-2's OrderPlaced (the second record) that the bus always rejects.
        let bus = MemoryBus::failing("Failing", u32::MAX);
        let batch = event_with(INSERT_TWO_ORDERS, |json| {
            json["Records"][1]["dynamodb"]["NewImage"]["detail_type"]["S"] = "Failing".into();
        });

        // When the relay handles the batch
        let response = relay(&bus).handle(batch).await.unwrap();

        // Then the failed record and all after it are reported, so Lambda retries from it
        assert_eq!(
            failed_sequence_numbers(&response),
            ["100000000000000000012", "100000000000000000013", "100000000000000000014"]
        );
        // and o-1's later event did not overtake the failed record.
        assert_eq!(bus.accepted(), [("o-1".into(), "OrderPlaced".into())]);
    }

    #[tokio::test]
    async fn a_bus_that_is_down_fails_the_whole_batch_from_its_first_record() {
        let bus = MemoryBus::default();
        bus.failures.lock().unwrap().insert("OrderPlaced".into(), u32::MAX);

        let response = relay(&bus).handle(SAMPLES.event(INSERT_TWO_ORDERS)).await.unwrap();

        assert_eq!(failed_sequence_numbers(&response).len(), 4);
        assert_eq!(failed_sequence_numbers(&response)[0], "100000000000000000011");
        assert!(bus.accepted().is_empty());
    }

    #[tokio::test]
    async fn the_event_store_stream_publishes_its_events_and_ignores_heads_and_idempotency_records() {
        let bus = MemoryBus::default();

        let response = relay(&bus).handle(SAMPLES.event(INSERT_EVENT_STORE)).await.unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(bus.accepted(), [("ORDER#o-1".into(), "OrderPlaced".into())], "the event, partitioned by order");
    }

    #[tokio::test]
    async fn ttl_removals_are_ignored() {
        let bus = MemoryBus::default();

        let response = relay(&bus).handle(SAMPLES.event(REMOVE_IGNORED)).await.unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(*bus.calls.lock().unwrap(), 0, "nothing to publish, no call");
    }

    #[tokio::test]
    async fn a_malformed_record_is_skipped_and_the_rest_is_published() {
        let bus = MemoryBus::default();

        let response = relay(&bus).handle(SAMPLES.event(INSERT_MALFORMED)).await.unwrap();

        assert!(response.batch_item_failures.is_empty(), "retrying cannot repair a malformed image");
        assert_eq!(bus.accepted(), [("o-2".into(), "OrderPlaced".into())]);
    }

    #[tokio::test]
    async fn a_malformed_record_before_one_that_cannot_be_published_is_skipped_not_delivered_again() {
        let bus = MemoryBus::failing("OrderPlaced", u32::MAX);

        let response = relay(&bus).handle(SAMPLES.event(INSERT_MALFORMED)).await.unwrap();

        assert_eq!(failed_sequence_numbers(&response), ["100000000000000000032"]);
        assert!(bus.accepted().is_empty());
    }

    #[test]
    fn a_malformed_image_names_what_is_wrong() {
        let records = SAMPLES.event::<Event>(INSERT_MALFORMED).records;
        assert_eq!(bus_entry(&records[0].change), Err(ImageError::Missing("detail")));

        let not_a_string = event_with(INSERT_ORDER_PLACED, |json| {
            json["Records"][0]["dynamodb"]["NewImage"]["source"] = serde_json::json!({"N": "7"});
        });
        assert_eq!(bus_entry(&not_a_string.records[0].change), Err(ImageError::NotAString("source")));

        let not_json = event_with(INSERT_ORDER_PLACED, |json| {
            json["Records"][0]["dynamodb"]["NewImage"]["detail"]["S"] = "not json".into();
        });
        assert!(matches!(bus_entry(&not_json.records[0].change), Err(ImageError::DetailNotAnObject(_))));
    }

    #[tokio::test]
    async fn a_failed_record_without_a_sequence_number_fails_the_whole_batch() {
        let bus = MemoryBus::failing("OrderPlaced", u32::MAX);
        let mut batch: Event = SAMPLES.event(INSERT_ORDER_PLACED);
        batch.records[0].change.sequence_number = None;

        let result = relay(&bus).handle(batch).await;

        assert!(matches!(result, Err(StreamBatchError::MissingSequenceNumber(0))));
    }

    /// The sample event with `edit` applied to its JSON first.
    fn event_with(sample: &str, edit: impl FnOnce(&mut Value)) -> Event {
        let mut value: Value = SAMPLES.event(sample);
        edit(&mut value);
        serde_json::from_value(value).unwrap()
    }
}
