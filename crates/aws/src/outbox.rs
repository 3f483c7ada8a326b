//! The outbox write that joins a business transaction.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;

use crate::StoreError;
use crate::dynamo::{Item, cancellation_codes, n, put_if_absent, s};

/// How long a published outbox record stays in the table before its TTL removes it.
pub const OUTBOX_RETENTION_SECONDS: i64 = 7 * 24 * 3600;

/// The outbox attributes the relay reads from the stream's new image.
pub mod attributes {
    pub const SOURCE: &str = "source";
    pub const DETAIL_TYPE: &str = "detail_type";
    pub const DETAIL: &str = "detail";
}

/// The `Put` of an outbox record, to add to the `TransactWriteItems` of the change that causes the event. The
/// condition makes a replayed transaction fail instead of publishing the event twice. An event the bus cannot
/// carry ([`OutboxRecord::ensure_publishable`]) is a [`StoreError::Permanent`] naming its size and the limit: once
/// written, the relay could never publish it.
///
/// ```
/// use orderflow_aws::dynamo::{key, put_if_absent};
/// use orderflow_aws::outbox::outbox_put;
/// use orderflow_toolkit::{Envelope, Event, OutboxRecord};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct PaymentCaptured { order_id: String }
/// impl Event for PaymentCaptured {
///     const TYPE: &'static str = "PaymentCaptured";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.payment";
/// }
///
/// # fn main() -> Result<(), orderflow_aws::StoreError> {
/// let record = OutboxRecord::new(&Envelope::new("o-1", PaymentCaptured { order_id: "o-1".into() }));
/// // The items of ONE `client.transact_write_items().set_transact_items(Some(items))`.
/// let items = vec![put_if_absent("Payments", key("PAYMENT#o-1", "PAYMENT"))?, outbox_put("Outbox", &record)?];
/// let outbox = items[1].put().unwrap();
/// assert_eq!(outbox.condition_expression(), Some("attribute_not_exists(pk)"));
/// // The correlation id is the partition: the stream keeps an order's events in order.
/// assert_eq!(outbox.item()["pk"].as_s().unwrap(), "o-1");
/// assert_eq!(outbox.item()["detail_type"].as_s().unwrap(), "PaymentCaptured");
/// # Ok(()) }
/// ```
pub fn outbox_put(table: &str, record: &OutboxRecord) -> Result<TransactWriteItem, StoreError> {
    ensure_publishable(record)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let put = Put::builder()
        .table_name(table)
        .item("pk", s(&record.partition))
        .item("sk", s(record.event_id.to_string()))
        .item(attributes::SOURCE, s(&record.source))
        .item(attributes::DETAIL_TYPE, s(&record.detail_type))
        .item(attributes::DETAIL, s(&record.detail))
        .item("created_at", n(now))
        .item("expires_at", n(now + OUTBOX_RETENTION_SECONDS))
        .condition_expression("attribute_not_exists(pk)")
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// [`OutboxRecord::ensure_publishable`] as a store failure: permanent, naming the event's size and the limit. Every
/// adapter that writes an outbox record checks it (the in-memory ones too, so handler tests see what DynamoDB does).
pub fn ensure_publishable(record: &OutboxRecord) -> Result<(), StoreError> {
    record.ensure_publishable().map_err(|err| StoreError::Permanent(err.to_string()))
}

/// ONE `TransactWriteItems`: `item` into `table` if no item has its key, and the outbox record of its event. When
/// either exists already (an earlier delivery wrote them), the transaction is cancelled on its condition and
/// nothing is written: [`Written::Duplicate`]. The example of [`crate::run_sqs_consumer`] is a handler built on it.
pub async fn put_new_with_event(
    client: &Client,
    table: &str,
    item: Item,
    outbox_table: &str,
    record: &OutboxRecord,
) -> Result<Written, StoreError> {
    let items = vec![put_if_absent(table, item)?, outbox_put(outbox_table, record)?];
    let err = match client.transact_write_items().set_transact_items(Some(items)).send().await {
        Ok(_) => return Ok(Written::Committed),
        Err(err) => err,
    };
    match cancellation_codes(&err) {
        Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => Ok(Written::Duplicate),
        _ => Err(StoreError::from_transaction(&err)
            .context(format_args!("{table} and {outbox_table}: new item with event {}", record.event_id))),
    }
}

#[cfg(test)]
mod tests {
    use orderflow_toolkit::publish::MAX_ENTRY_BYTES;
    use uuid::Uuid;

    use super::*;

    fn record(detail_bytes: usize) -> OutboxRecord {
        OutboxRecord {
            partition: "o-1".into(),
            event_id: Uuid::from_u128(1),
            source: "orderflow.saga".into(),
            detail_type: "OrderCancelled".into(),
            detail: "x".repeat(detail_bytes),
        }
    }

    #[test]
    fn an_event_the_bus_cannot_carry_is_a_permanent_error_naming_its_size_and_the_limit() {
        let fits = MAX_ENTRY_BYTES - "orderflow.saga".len() - "OrderCancelled".len();
        assert!(outbox_put("Outbox", &record(fits)).is_ok());

        let err = outbox_put("Outbox", &record(fits + 1)).unwrap_err();

        assert_eq!(
            err,
            StoreError::Permanent(format!(
                "event 00000000-0000-0000-0000-000000000001 (OrderCancelled) is {} bytes as a bus entry, more than \
                 the {MAX_ENTRY_BYTES} a PutEvents entry takes",
                MAX_ENTRY_BYTES + 1
            ))
        );
        assert_eq!(orderflow_toolkit::HandlerError::from(err).class(), "Permanent");
    }
}
