//! What the handler tests of orderflow's functions share: the sample events of `events/<function>/` ([`Samples`]),
//! the SQS batches and EventBridge events the rules deliver ([`sqs_batch`], [`bus_event`], [`bus_body`]), and an
//! SQS consumer's runtime with its dead letters kept in memory ([`SqsHarness`]). It is a dev-dependency of the
//! functions only, so none of it reaches a release binary.
//!
//! ```
//! use orderflow_test_support::{Samples, SqsHarness, failed_ids};
//! use orderflow_toolkit::HandlerError;
//!
//! const SAMPLES: Samples = Samples::of("inventory");
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sqs = SqsHarness::default();
//! let response = sqs
//!     .process(SAMPLES.event("malformed.json"), |record| async move {
//!         Err(HandlerError::permanent(format!("cannot read {}", record.message_id)))
//!     })
//!     .await;
//! assert!(failed_ids(&response).is_empty(), "a poison record is acknowledged");
//! assert_eq!(sqs.dead_letters().len(), 1, "and dead-lettered");
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod events;
pub mod harness;
pub mod samples;

pub use events::{bus_body, bus_event, sqs_batch};
pub use harness::{SqsHarness, envelopes, failed_ids};
pub use samples::Samples;
