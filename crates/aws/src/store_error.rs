//! The one classification of a failed store operation, shared by every store over DynamoDB: may a retry succeed?
//!
//! [`StoreError`] comes from the SDK's error kinds and service codes (`?` on a request), from an item that does not
//! have the shape its store writes ([`ItemError`]), from a request that could not be built, and from a cancelled
//! transaction's reasons ([`StoreError::from_transaction`]). A handler turns it into a [`HandlerError`] with `?`:
//! transient failures are retried by the queue, permanent ones go to the dead-letter queue at once.
//!
//! ```
//! use orderflow_aws::StoreError;
//! use orderflow_toolkit::HandlerError;
//!
//! let throttled = StoreError::Transient("ProvisionedThroughputExceededException".into());
//! let throttled = throttled.context("Inventory: reserve o-1");
//! assert_eq!(throttled.to_string(), "Inventory: reserve o-1: ProvisionedThroughputExceededException");
//! assert_eq!(HandlerError::from(throttled).class(), "Transient");
//! let corrupt = StoreError::Corrupt("item attribute status: is missing".into());
//! assert_eq!(HandlerError::from(corrupt).class(), "Permanent");
//! ```

use std::fmt::Display;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use orderflow_toolkit::HandlerError;

use crate::dynamo::{ItemError, cancellation_codes, describe};

/// Service error codes no retry can fix: the service calls the request invalid, or a condition failed that the
/// caller did not expect (one it expects, it answers as an outcome before converting the error). Every other code
/// is transient, known (throttling, `InternalServerError`, `ServiceUnavailable`, `TransactionConflictException`,
/// `TransactionInProgressException`) or not: an unknown code gets the retry budget, then the DLQ.
const PERMANENT_CODES: [&str; 3] = ["ValidationException", "SerializationException", "ConditionalCheckFailedException"];

/// The cancellation reasons of a transaction that no retry can fix (the rest: `TransactionConflict`,
/// `ThrottlingError`, `ProvisionedThroughputExceeded`, `None` beside them, are transient).
const PERMANENT_CANCELLATION_CODES: [&str; 2] = ["ValidationError", "ConditionalCheckFailed"];

/// A failed store operation, by whether retrying may succeed. The message says what failed: the store adds its
/// table and operation with [`StoreError::context`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Retrying may succeed: a timeout, a dispatch or IO failure, a response that could not be read, throttling
    /// (`ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`), the service
    /// failing (5xx, `InternalServerError`, `ServiceUnavailable`), a transaction conflict, an unknown code.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot succeed: the request is invalid (`ValidationException`, `SerializationException`), a
    /// condition failed where none was expected, or the request could not be built.
    #[error("{0}")]
    Permanent(String),
    /// An item does not have the shape its store writes: retrying cannot succeed.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// The same error with what failed (the table, the operation, the item) in front of its message.
    pub fn context(self, context: impl Display) -> Self {
        match self {
            Self::Transient(message) => Self::Transient(format!("{context}: {message}")),
            Self::Permanent(message) => Self::Permanent(format!("{context}: {message}")),
            Self::Corrupt(message) => Self::Corrupt(format!("{context}: {message}")),
        }
    }

    /// A `TransactWriteItems` that failed in a way its caller does not answer as an outcome: a cancelled one is
    /// classed by its per-item reasons, any other failure as every request is.
    pub fn from_transaction(err: &SdkError<TransactWriteItemsError, HttpResponse>) -> Self {
        let Some(codes) = cancellation_codes(err) else { return classify(err) };
        let message = format!("transaction cancelled ({}): {}", codes.join(", "), describe(err));
        if codes.iter().any(|code| PERMANENT_CANCELLATION_CODES.contains(&code.as_str())) {
            Self::Permanent(message)
        } else {
            Self::Transient(message)
        }
    }
}

fn classify<E>(err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let permanent = match err {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(_) => err.code().is_some_and(|code| PERMANENT_CODES.contains(&code)),
        // Timeouts, dispatch failures, unreadable responses, and any kind a later SDK adds.
        _ => false,
    };
    if permanent { StoreError::Permanent(describe(err)) } else { StoreError::Transient(describe(err)) }
}

/// A failed request of any SDK client (DynamoDB, SQS, EventBridge: they share the error type), classed by its kind
/// and service code.
impl<E> From<SdkError<E, HttpResponse>> for StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        classify(&err)
    }
}

impl From<ItemError> for StoreError {
    fn from(err: ItemError) -> Self {
        Self::Corrupt(err.to_string())
    }
}

/// A request or transaction item the SDK's builder refused: the code is wrong, not the service.
impl From<BuildError> for StoreError {
    fn from(err: BuildError) -> Self {
        Self::Permanent(format!("request not built: {err}"))
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        if err.is_transient() { HandlerError::transient(err) } else { HandlerError::permanent(err) }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;

    use super::*;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), "".into())
    }

    /// A `GetItem` the service answered with `code` and `status`, as the SDK builds it from the response.
    fn service_error(code: &str, status: u16) -> StoreError {
        let meta = ErrorMetadata::builder().code(code).message("from the service").build();
        StoreError::from(SdkError::service_error(GetItemError::generic(meta), response(status)))
    }

    fn cancelled(codes: &[&str]) -> StoreError {
        let reasons = codes.iter().map(|code| CancellationReason::builder().code(*code).build()).collect();
        let cancelled = TransactionCanceledException::builder().set_cancellation_reasons(Some(reasons)).build();
        let err = TransactWriteItemsError::TransactionCanceledException(cancelled);
        StoreError::from_transaction(&SdkError::service_error(err, response(400)))
    }

    #[test]
    fn throttling_the_service_failing_conflicts_and_unknown_codes_are_transient() {
        for (code, status) in [
            ("ProvisionedThroughputExceededException", 400),
            ("ThrottlingException", 400),
            ("RequestLimitExceeded", 400),
            ("InternalServerError", 500),
            ("ServiceUnavailable", 503),
            ("TransactionConflictException", 400),
            ("TransactionInProgressException", 400),
            ("SomethingNewException", 400),
        ] {
            let err = service_error(code, status);
            assert!(err.is_transient(), "{code}: {err:?}");
            assert!(err.to_string().contains(code), "the message names the code: {err}");
        }
    }

    #[test]
    fn invalid_requests_and_unexpected_failed_conditions_are_permanent() {
        for code in ["ValidationException", "SerializationException", "ConditionalCheckFailedException"] {
            assert!(matches!(service_error(code, 400), StoreError::Permanent(_)), "{code}");
        }
    }

    #[test]
    fn timeouts_dispatch_and_response_failures_are_transient_and_construction_failures_permanent() {
        let timeout = SdkError::<GetItemError, HttpResponse>::timeout_error("operation timed out");
        assert!(StoreError::from(timeout).is_transient());
        let reset = SdkError::<GetItemError, HttpResponse>::dispatch_failure(ConnectorError::io("reset".into()));
        assert!(StoreError::from(reset).is_transient());
        let truncated = SdkError::<GetItemError, HttpResponse>::response_error("truncated body", response(200));
        assert!(StoreError::from(truncated).is_transient());
        let unbuilt = SdkError::<GetItemError, HttpResponse>::construction_failure("no table name");
        assert!(matches!(StoreError::from(unbuilt), StoreError::Permanent(_)));
    }

    #[test]
    fn a_cancelled_transaction_is_classed_by_its_reasons() {
        assert!(cancelled(&["None", "TransactionConflict"]).is_transient());
        assert!(cancelled(&["ThrottlingError", "None"]).is_transient());
        assert!(matches!(cancelled(&["ValidationError", "None"]), StoreError::Permanent(_)));
        let unexpected = cancelled(&["None", "ConditionalCheckFailed"]);
        assert!(matches!(&unexpected, StoreError::Permanent(m) if m.contains("(None, ConditionalCheckFailed)")));
    }

    #[test]
    fn corrupt_items_are_permanent_and_name_the_attribute_and_the_context() {
        let err = StoreError::from(ItemError { attribute: "status".into(), problem: "is missing".into() });
        let err = err.context("Inventory table t, reservation of o-1");
        assert_eq!(
            err.to_string(),
            "corrupt item: Inventory table t, reservation of o-1: item attribute status: is missing"
        );
        assert_eq!(HandlerError::from(err).class(), "Permanent");
        assert_eq!(HandlerError::from(StoreError::Transient("throttled".into())).class(), "Transient");
    }
}
