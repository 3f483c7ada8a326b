//! Reliability toolkit for Rust Lambda event handlers.
//!
//! What Powertools for AWS Lambda gives Python, for Rust, and what it does not have:
//! - [`envelope`]: the versioned event envelope, typed events and an event [`Registry`] that upcasts older
//!   versions (including legacy, envelope-less shapes) on read and rejects unknown types and versions with a reason.
//!   Both live in `orderflow-envelope`, which a crate of event types (the domain) can depend on without the rest
//!   of this one; the [`envelope`] and [`registry`] modules and their names here are its re-exports.
//! - [`batch`]: per-record processing of SQS batches with the partial batch response, error classes
//!   ([`HandlerError`]) and poison records sent to a dead-letter sink with their reason.
//! - [`stream`]: DynamoDB Streams batches in order, stopping at the first failure (Lambda's stream semantics);
//!   [`batch`] also keeps the order of each message group of a FIFO queue ([`SqsBatchProcessor::fifo`]).
//! - [`eventbridge`]: the typed parse step and handler wrapper of a function an EventBridge rule invokes directly,
//!   for one event type or an enum of several ([`EventSet`], [`event_set!`]).
//! - [`idempotency`]: Powertools-style idempotency: a record per key runs a handler's effect once and replays its
//!   result to repeats, behind a store port (in-memory here, DynamoDB in `orderflow-aws`).
//! - [`circuit`]: a circuit breaker (closed, open, half-open) for calls to a dependency that may fail.
//! - [`outbox`]: the transactional-outbox record an event becomes before the relay publishes it, and an in-memory
//!   store that writes an item once together with the record of its event.
//! - [`publish`]: publishing to a bus in order per partition, at most 10 entries and 256 KB per call, failed
//!   entries retried with backoff.
//! - [`logging`]: structured JSON logs for Lambda.
//!
//! AWS adapters (DynamoDB, EventBridge, SQS) live in the `orderflow-aws` crate so this one stays free of the SDK.
//!
//! # An SQS consumer, end to end
//!
//! The handler reads each record through the registry (typed, upcast, or a permanent failure with the reason),
//! applies it, and classes every failure; the processor turns the outcomes into the partial batch response and
//! dead letters. In a Lambda, `orderflow_aws::run_sqs_consumer` does the processing, with the SQS DLQ as the sink.
//!
//! ```
//! use std::collections::HashSet;
//! use aws_lambda_events::event::sqs::SqsEvent;
//! use orderflow_toolkit::{Envelope, Event, HandlerError, MemoryDeadLetters, Registry, SqsBatchProcessor, SqsRecord};
//! use serde_json::json;
//! # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
//!
//! /// Version 2; version 1 called `order_id` `order`.
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct OrderShipped { order_id: String }
//! impl Event for OrderShipped {
//!     const TYPE: &'static str = "OrderShipped";
//!     const VERSION: u32 = 2;
//!     const SOURCE: &'static str = "orderflow.shipping";
//! }
//!
//! async fn handle(registry: &Registry, orders: &HashSet<&str>, record: SqsRecord) -> Result<(), HandlerError> {
//!     let shipped: Envelope<OrderShipped> = registry.read_bus_event(&record.body)?.decode()?;
//!     let order_id = shipped.data.order_id.as_str();
//!     if !orders.contains(order_id) {
//!         // Delivered before the event that creates the order: a later delivery can succeed.
//!         return Err(HandlerError::transient(format!("order {order_id} not known yet")));
//!     }
//!     Ok(())
//! }
//!
//! let registry = Registry::new()
//!     .register::<OrderShipped>()
//!     .upcaster("OrderShipped", 1, |v1| Ok(json!({"order_id": v1.get("order").ok_or("no order")?})));
//!
//! // SQS messages whose bodies are bus events, as an EventBridge rule puts them on the queue.
//! let message = |id: &str, detail_type: &str, version: u32, data: serde_json::Value| {
//!     let detail = json!({"id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": detail_type, "version": version,
//!         "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-1", "causation_id": null, "data": data});
//!     json!({"messageId": id, "body": json!({"detail-type": detail_type, "detail": detail}).to_string()})
//! };
//! let event: SqsEvent = serde_json::from_value(json!({"Records": [
//!     message("m-1", "OrderShipped", 2, json!({"order_id": "o-1"})),
//!     message("m-2", "OrderShipped", 1, json!({"order": "o-1"})),
//!     message("m-3", "OrderShipped", 2, json!({"order_id": "o-2"})),
//!     message("m-4", "Teleported", 1, json!({})),
//! ]})).unwrap();
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (orders, dead_letters) = (HashSet::from(["o-1"]), MemoryDeadLetters::default());
//! let processor = SqsBatchProcessor::new(dead_letters.clone());
//! let response = processor.process(event, |record| handle(&registry, &orders, record)).await.unwrap();
//!
//! // m-1 and m-2 (upcast from v1) are applied; m-3 comes back later; m-4 is in the DLQ with its reason.
//! let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
//! assert_eq!(failed, ["m-3"]);
//! let letter = &dead_letters.letters()[0];
//! assert_eq!((letter.message_id.as_str(), letter.reason.as_str()), ("m-4", r#"unknown event type "Teleported""#));
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod batch;
pub mod circuit;
pub mod dead_letter;
pub mod error;
pub mod eventbridge;
pub mod idempotency;
pub mod logging;
pub mod outbox;
pub mod publish;
pub mod stream;

pub use orderflow_envelope::{envelope, registry};

pub use batch::{SqsBatchProcessor, SqsRecord};
pub use dead_letter::{DeadLetter, DeadLetterSink, MemoryDeadLetters};
pub use envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
pub use error::HandlerError;
pub use eventbridge::EventSet;
pub use idempotency::{Idempotency, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore};
pub use outbox::OutboxRecord;
pub use registry::Registry;
pub use stream::DynamoDbStreamProcessor;
