//! What can go wrong in a DLQ operation, and how an SQS error reads in one.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// What can go wrong in a DLQ operation.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No queue with this name (or URL) exists in the account and region.
    #[error("queue {0} does not exist")]
    QueueNotFound(String),
    /// The argument is neither a queue URL, a queue ARN nor a valid queue name.
    #[error("{0:?} is not a queue name, URL or ARN")]
    InvalidQueue(String),
    /// An SQS call failed.
    #[error("{operation} on {queue} failed: {message}")]
    Sqs {
        /// The SQS action, e.g. `ReceiveMessage`.
        operation: &'static str,
        /// The queue it was called on.
        queue: String,
        /// The service's `Code: message`, or the chain of causes of a transport error.
        message: String,
    },
    /// A redrive without a target, from a DLQ no queue's RedrivePolicy names.
    #[error("no queue has {dlq} as its dead-letter queue, so there is no source to redrive to: name the target (--to)")]
    NoSource {
        /// The DLQ's name.
        dlq: String,
    },
    /// A redrive without a target, from a DLQ that several queues use.
    #[error("several queues have {dlq} as their dead-letter queue ({}): name the target (--to)", sources.join(", "))]
    AmbiguousSource {
        /// The DLQ's name.
        dlq: String,
        /// The names of the queues that redrive to it.
        sources: Vec<String>,
    },
    /// A redrive whose target is the DLQ itself.
    #[error("refusing to redrive {0} into itself")]
    SameQueue(String),
    /// A purge without `--yes` when there is no terminal to ask for confirmation on.
    #[error("refusing to purge {queue}: no terminal to confirm on (pass --yes to purge without confirmation)")]
    NoTerminal {
        /// The DLQ's name.
        queue: String,
    },
    /// A purge whose confirmation was not the queue's name.
    #[error("purge of {queue} not confirmed (typed {typed:?}, not the queue name); nothing was purged")]
    NotConfirmed {
        /// The DLQ's name.
        queue: String,
        /// What was typed instead.
        typed: String,
    },
    /// Reading the confirmation or writing the prompt failed.
    #[error("asking for confirmation: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether an SQS error says the queue does not exist.
pub(crate) fn is_missing_queue<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code().is_some_and(|code| code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist"))
}

pub(crate) fn sqs_error<E, R>(operation: &'static str, queue: &str, err: &SdkError<E, R>) -> DlqError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    DlqError::Sqs { operation, queue: queue.to_owned(), message: describe(err) }
}

/// `Code: message` for an error the service answered, the chain of causes otherwise (connection refused, no
/// credentials, ...), on one line.
pub(crate) fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let text = match err.as_service_error() {
        Some(service) => {
            format!("{}: {}", service.code().unwrap_or("unknown error"), service.message().unwrap_or("(no message)"))
        }
        None => {
            // The chain of causes; DisplayErrorContext would append a Debug dump of the whole error too.
            let mut parts: Vec<String> = Vec::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(current) = cause {
                let text = current.to_string();
                if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                cause = current.source();
            }
            parts.join(": ")
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
