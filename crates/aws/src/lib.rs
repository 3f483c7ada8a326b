//! AWS adapters of the orderflow toolkit: the SDK configuration every function uses, the Lambda runtime of the SQS
//! consumers (with exponential retry backoff by message visibility) and that of the DynamoDB stream consumers, the
//! runtimes of functions an EventBridge rule invokes directly (alone, or with an SQS retry queue behind Lambda's
//! asynchronous retries), the outbox write that joins a business transaction, the SQS dead-letter sink, the
//! EventBridge bus, DynamoDB item helpers, and [`StoreError`], the one transient-or-permanent classification of every
//! store's failures.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod bus_function;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dynamo;
pub mod event_bus;
pub mod idempotency;
pub mod operator;
pub mod outbox;
pub mod retry_queue;
pub mod store_error;
pub mod stream_consumer;

pub use backoff::{BackoffPolicy, SqsRetryBackoff};
pub use bus_function::{run_bus_function, run_scheduled_function};
pub use config::{ConfigError, load_sdk_config, required_env};
pub use consumer::run_sqs_consumer;
pub use dead_letter::SqsDeadLetters;
pub use event_bus::EventBridgeBus;
pub use idempotency::DynamoIdempotencyStore;
pub use retry_queue::run_bus_function_with_retry_queue;
pub use store_error::StoreError;
pub use stream_consumer::run_stream_consumer;
