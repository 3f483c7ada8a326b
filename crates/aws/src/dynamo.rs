//! DynamoDB item helpers shared by the stores; their failures are a [`StoreError`].

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::StoreError;

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

/// The condition of a write that creates an item: no item has its key.
const NO_ITEM_WITH_ITS_KEY: &str = "attribute_not_exists(pk)";

/// A transaction's `Put` of `item` that fails its condition when an item with its key exists.
pub fn put_if_absent(table: &str, item: Item) -> Result<TransactWriteItem, StoreError> {
    let put =
        Put::builder().table_name(table).set_item(Some(item)).condition_expression(NO_ITEM_WITH_ITS_KEY).build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// ONE conditional `PutItem` of `item` into `table` (a tombstone, say), if no item has its key. When one exists,
/// nothing is written: [`Written::Duplicate`]. A failure names no table or item: the caller adds that context.
pub async fn put_new(client: &Client, table: &str, item: Item) -> Result<Written, StoreError> {
    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(NO_ITEM_WITH_ITS_KEY)
        .send()
        .await;
    match result {
        Ok(_) => Ok(Written::Committed),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
            Ok(Written::Duplicate)
        }
        Err(err) => Err(err.into()),
    }
}

/// The RFC 3339 string attribute of `at`, as every store writes its timestamps.
pub fn timestamp(at: OffsetDateTime) -> Result<AttributeValue, StoreError> {
    timestamp_text(at).map(AttributeValue::S)
}

/// The text of [`timestamp`], for a key that holds a time.
pub fn timestamp_text(at: OffsetDateTime) -> Result<String, StoreError> {
    at.format(&Rfc3339).map_err(|e| StoreError::Permanent(format!("timestamp {at} does not format as RFC 3339: {e}")))
}

/// The whole error chain of an SDK error, e.g. the service's message, not just "service error".
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    DisplayErrorContext(err).to_string()
}

/// The per-item cancellation reasons of a cancelled transaction (its code and, when asked for with
/// `ReturnValuesOnConditionCheckFailure`, the item found), in the order of the transaction's items; `None` when the
/// error is not a cancelled transaction.
pub fn cancellation_reasons(
    err: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> Option<&[aws_sdk_dynamodb::types::CancellationReason]> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => Some(cancelled.cancellation_reasons()),
        _ => None,
    }
}

/// The per-item cancellation codes of a cancelled transaction (`ConditionalCheckFailed`, `None`, ...), in the
/// order of the transaction's items; `None` when the error is not a cancelled transaction.
pub fn cancellation_codes(
    err: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> Option<Vec<String>> {
    Some(cancellation_reasons(err)?.iter().map(|reason| reason.code().unwrap_or("None").to_owned()).collect())
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
