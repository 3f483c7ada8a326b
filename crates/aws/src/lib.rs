//! AWS adapters of the orderflow toolkit: the SDK configuration every function uses, the outbox write that joins
//! a business transaction, the SQS dead-letter sink, the EventBridge bus, and DynamoDB item helpers.
#![forbid(unsafe_code)]

pub mod config;
pub mod dead_letter;
pub mod dynamo;
pub mod event_bus;
pub mod outbox;

pub use config::{ConfigError, load_sdk_config, required_env};
pub use dead_letter::SqsDeadLetters;
pub use event_bus::EventBridgeBus;
