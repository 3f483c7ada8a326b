//! Operations on orderflow's dead-letter queues (DLQs), over the `aws-sdk-sqs` client, for the `orderflow-dlq`
//! operator tool: find the DLQs and where their messages come from ([`DeadLetterQueues::list`]), look at failed
//! messages with their failure reason ([`DeadLetterQueues::show`]), move them back to their source queue
//! ([`DeadLetterQueues::redrive`]) and empty a DLQ ([`DeadLetterQueues::purge`]).
//!
//! A failed message reaches a DLQ in one of three ways, and [`Failure`] reads the reason of each:
//!
//! - an SQS consumer sent it itself because it can never succeed (malformed, unknown type or version): the body is
//!   the original one, the reason is in the message attributes [`REASON_ATTRIBUTE`], [`CLASS_ATTRIBUTE`] and
//!   [`SOURCE_MESSAGE_ATTRIBUTE`] (see `orderflow_aws::dead_letter`);
//! - SQS moved it after `maxReceiveCount` receives (the queue's RedrivePolicy): no reason beyond the receive count;
//! - Lambda sent an asynchronous invocation's or a stream batch's failure record to an on-failure destination: the
//!   body is a JSON record with `requestContext` and, for async invokes, `responsePayload.errorMessage`.
//!
//! Nothing here loses a message: [`DeadLetterQueues::show`] only hides the messages it looks at while it reads
//! them, and [`DeadLetterQueues::redrive`] deletes a message from the DLQ only after it was sent to the target
//! queue. Messages that are looked at but not moved become visible again when the operation ends (or, if the
//! process dies, when their visibility timeout expires: at most [`SHOW_HOLD_SECONDS`] or [`REDRIVE_HOLD_SECONDS`]).
//!
//! Each command has its module (`list`, `show`, `redrive`, `purge`) adding its operation to [`DeadLetterQueues`];
//! what they share lives beside them: the SQS calls every command makes (`client`), queue names and depths
//! (`queue`), a received message and its [`Failure`] (`message`), the errors (`error`), and the text the CLI prints
//! ([`render`]).
#![forbid(unsafe_code)]

mod client;
mod error;
mod list;
mod message;
mod purge;
mod queue;
mod redrive;
pub mod render;
mod show;

pub use client::DeadLetterQueues;
pub use error::DlqError;
pub use list::DeadLetterQueue;
pub use message::{DeadLetterMessage, ERROR_ATTRIBUTE_PREFIX, Failure, LambdaFailure};
pub use orderflow_aws::dead_letter::{CLASS_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE};
pub use purge::confirm_purge;
pub use queue::{Depth, QueueRef, has_dlq_name};
pub use redrive::{REDRIVE_HOLD_SECONDS, RedriveReport, Selection};
pub use show::{Peek, SHOW_HOLD_SECONDS};
