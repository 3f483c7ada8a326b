//! The two classes of failure an event handler can have.
//!
//! A handler returns `Result<(), HandlerError>`; its own error types say, in one `From` impl each, which of their
//! failures a retry can fix. Every [`EnvelopeError`] is permanent, so `?` on the typed parse step classes it.
//!
//! ```
//! use orderflow_toolkit::{HandlerError, Registry};
//!
//! /// A store's failures, as an adapter reports them.
//! enum StoreError { Throttled, Invalid(String) }
//!
//! impl From<StoreError> for HandlerError {
//!     fn from(err: StoreError) -> Self {
//!         match err {
//!             StoreError::Throttled => HandlerError::transient("store throttled"),
//!             StoreError::Invalid(reason) => HandlerError::permanent(reason),
//!         }
//!     }
//! }
//!
//! let throttled = HandlerError::from(StoreError::Throttled);
//! assert_eq!((throttled.class(), throttled.reason()), ("Transient", "store throttled"));
//! assert_eq!(throttled.to_string(), "transient failure: store throttled");
//! let invalid = HandlerError::from(StoreError::Invalid("price is not a decimal".into()));
//! assert_eq!(invalid.error_type(), "HandlerError::Permanent");
//!
//! fn parse(registry: &Registry, body: &str) -> Result<String, HandlerError> {
//!     Ok(registry.read_bus_event(body)?.event_type)
//! }
//! let garbage = parse(&Registry::new(), "not json").unwrap_err();
//! assert!(matches!(garbage, HandlerError::Permanent(_)), "{garbage}");
//! ```
//!
//! A failure that knows when a retry can succeed says so, and the SQS consumer then waits at least that long
//! before the next delivery (`orderflow_aws::SqsRetryBackoff`), instead of burning a receive on a dependency that
//! is known to be refusing calls:
//!
//! ```
//! use std::time::Duration;
//! use orderflow_toolkit::HandlerError;
//!
//! let open = HandlerError::transient_after("provider circuit open", Duration::from_secs(25));
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(25)));
//! assert_eq!(open.to_string(), "transient failure: provider circuit open");
//! assert_eq!(HandlerError::transient("throttled").retry_after(), None);
//! ```

use std::fmt::Display;
use std::time::Duration;

use crate::envelope::EnvelopeError;

/// How a record failed, which decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Retrying may succeed (throttling, a timeout, a dependency down, an event that arrived before the state it
    /// needs): the record is reported as a batch item failure and the queue delivers it again.
    #[error("transient failure: {reason}")]
    Transient {
        reason: String,
        /// The shortest wait after which a retry can succeed, when the failure knows it (e.g. an open circuit's
        /// cool-down): the next delivery comes no sooner, nor sooner than the usual backoff.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot succeed (malformed, unknown type or version, invalid data): the record goes to the
    /// dead-letter queue at once with this reason, instead of burning its retries.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(reason: impl Display) -> Self {
        Self::Transient { reason: reason.to_string(), retry_after: None }
    }

    /// A transient failure that a retry cannot fix before `retry_after` has passed.
    pub fn transient_after(reason: impl Display, retry_after: Duration) -> Self {
        Self::Transient { reason: reason.to_string(), retry_after: Some(retry_after) }
    }

    pub fn permanent(reason: impl Display) -> Self {
        Self::Permanent(reason.to_string())
    }

    /// The error class as it appears in logs and dead-letter attributes.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "Transient",
            Self::Permanent(_) => "Permanent",
        }
    }

    /// The error type a failed invocation reports to Lambda: `HandlerError::Transient` or `HandlerError::Permanent`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "HandlerError::Transient",
            Self::Permanent(_) => "HandlerError::Permanent",
        }
    }

    /// The reason without the class prefix.
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent(reason) => reason,
        }
    }

    /// How long a retry of a transient failure must wait at least, if the failure knows; `None` when permanent.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Permanent(_) => None,
        }
    }
}

impl From<EnvelopeError> for HandlerError {
    fn from(err: EnvelopeError) -> Self {
        Self::Permanent(err.to_string())
    }
}
