//! Reliability toolkit for Rust Lambda event handlers.
//!
//! What Powertools for AWS Lambda gives Python, for Rust, and what it does not have:
//! - [`envelope`]: the versioned event envelope, typed events and an event [`Registry`] that upcasts older
//!   versions (including legacy, envelope-less shapes) on read and rejects unknown types and versions with a reason.
//! - [`batch`]: per-record processing of SQS batches with the partial batch response, error classes
//!   ([`HandlerError`]) and poison records sent to a dead-letter sink with their reason.
//! - [`stream`]: DynamoDB Streams batches in order, stopping at the first failure (Lambda's stream semantics);
//!   [`batch`] also keeps the order of each message group of a FIFO queue ([`SqsBatchProcessor::fifo`]).
//! - [`eventbridge`]: the typed parse step and handler wrapper of a function an EventBridge rule invokes directly.
//! - [`idempotency`]: Powertools-style idempotency: a record per key runs a handler's effect once and replays its
//!   result to repeats, behind a store port (in-memory here, DynamoDB in `orderflow-aws`).
//! - [`circuit`]: a circuit breaker (closed, open, half-open) for calls to a dependency that may fail.
//! - [`outbox`]: the transactional-outbox record an event becomes before the relay publishes it, and an in-memory
//!   store that writes an item once together with the record of its event.
//! - [`logging`]: structured JSON logs for Lambda.
//! - [`faults`]: fault injection for chaos tests (crash after write, throttling), off unless configured.
//!
//! AWS adapters (DynamoDB, EventBridge, SQS) live in the `orderflow-aws` crate so this one stays free of the SDK.
#![forbid(unsafe_code)]

pub mod batch;
pub mod circuit;
pub mod dead_letter;
pub mod envelope;
pub mod error;
pub mod eventbridge;
pub mod faults;
pub mod idempotency;
pub mod logging;
pub mod outbox;
pub mod publish;
pub mod registry;
pub mod stream;

pub use batch::{SqsBatchProcessor, SqsRecord};
pub use dead_letter::{DeadLetter, DeadLetterSink, MemoryDeadLetters};
pub use envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
pub use error::HandlerError;
pub use idempotency::{Idempotency, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore};
pub use outbox::OutboxRecord;
pub use registry::Registry;
pub use stream::DynamoDbStreamProcessor;
