//! DynamoDB item helpers shared by the stores.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

/// An item read from a table, keyed by attribute name.
pub type Item = HashMap<String, AttributeValue>;

/// An item that does not have the shape its store writes.
#[derive(Debug, thiserror::Error)]
#[error("item attribute {attribute}: {problem}")]
pub struct ItemError {
    pub attribute: String,
    pub problem: String,
}

fn item_error(attribute: &str, problem: impl Into<String>) -> ItemError {
    ItemError { attribute: attribute.to_owned(), problem: problem.into() }
}

/// A string attribute.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, ItemError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(item_error(name, "is not a string")),
        None => Err(item_error(name, "is missing")),
    }
}

/// A number attribute parsed as `T`.
pub fn get_n<T: FromStr>(item: &Item, name: &str) -> Result<T, ItemError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => {
            value.parse().map_err(|_| item_error(name, format!("{value} is out of range")))
        }
        Some(_) => Err(item_error(name, "is not a number")),
        None => Err(item_error(name, "is missing")),
    }
}

/// A string attribute value.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The `pk`/`sk` key of an item.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// A transaction's `Put` of `item` that fails its condition when an item with its key exists.
pub fn put_if_absent(table: &str, item: Item) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table, item and key are set");
    TransactWriteItem::builder().put(put).build()
}

/// A failed DynamoDB request, by whether retrying may succeed; each store turns it into its own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The service calls the request invalid: retrying cannot succeed.
    #[error("{0}")]
    Invalid(String),
    /// Throttling, a timeout, the service unavailable, a cancelled transaction: retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl RequestError {
    /// A store's own error for this one: `invalid` or `unavailable` of the message.
    pub fn into_store_error<T>(self, invalid: impl FnOnce(String) -> T, unavailable: impl FnOnce(String) -> T) -> T {
        match self {
            Self::Invalid(message) => invalid(message),
            Self::Unavailable(message) => unavailable(message),
        }
    }
}

/// A request the service calls invalid (`ValidationException`, `SerializationException`) cannot succeed on retry;
/// throttling, timeouts and everything else may.
impl<E, R> From<SdkError<E, R>> for RequestError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    fn from(err: SdkError<E, R>) -> Self {
        match err.code() {
            Some("ValidationException" | "SerializationException") => Self::Invalid(describe(&err)),
            _ => Self::Unavailable(describe(&err)),
        }
    }
}

/// The whole error chain of an SDK error, e.g. the service's message, not just "service error".
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    DisplayErrorContext(err).to_string()
}

/// The per-item cancellation codes of a cancelled transaction (`ConditionalCheckFailed`, `None`, ...), in the
/// order of the transaction's items; `None` when the error is not a cancelled transaction.
pub fn cancellation_codes(
    err: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => Some(
            cancelled.cancellation_reasons().iter().map(|reason| reason.code().unwrap_or("None").to_owned()).collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_attribute_types_are_named() {
        let item = Item::from([("n".to_owned(), s("x")), ("s".to_owned(), n(3))]);
        assert_eq!(get_s(&item, "s").unwrap_err().to_string(), "item attribute s: is not a string");
        assert_eq!(get_n::<u32>(&item, "n").unwrap_err().to_string(), "item attribute n: is not a number");
        assert_eq!(get_s(&item, "missing").unwrap_err().to_string(), "item attribute missing: is missing");
        let big = Item::from([("n".to_owned(), n(-1))]);
        assert_eq!(get_n::<u32>(&big, "n").unwrap_err().to_string(), "item attribute n: -1 is out of range");
    }
}
