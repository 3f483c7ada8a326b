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
