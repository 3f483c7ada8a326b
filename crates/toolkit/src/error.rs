//! The two classes of failure an event handler can have.

use std::fmt::Display;

use crate::envelope::EnvelopeError;

/// How a record failed, which decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Retrying may succeed (throttling, a timeout, a dependency down, an event that arrived before the state it
    /// needs): the record is reported as a batch item failure and the queue delivers it again.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Retrying cannot succeed (malformed, unknown type or version, invalid data): the record goes to the
    /// dead-letter queue at once with this reason, instead of burning its retries.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(reason: impl Display) -> Self {
        Self::Transient(reason.to_string())
    }

    pub fn permanent(reason: impl Display) -> Self {
        Self::Permanent(reason.to_string())
    }

    /// The error class as it appears in logs and dead-letter attributes.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Transient(_) => "Transient",
            Self::Permanent(_) => "Permanent",
        }
    }

    /// The error type a failed invocation reports to Lambda: `HandlerError::Transient` or `HandlerError::Permanent`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Transient(_) => "HandlerError::Transient",
            Self::Permanent(_) => "HandlerError::Permanent",
        }
    }

    /// The reason without the class prefix.
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient(reason) | Self::Permanent(reason) => reason,
        }
    }
}

impl From<EnvelopeError> for HandlerError {
    fn from(err: EnvelopeError) -> Self {
        Self::Permanent(err.to_string())
    }
}
