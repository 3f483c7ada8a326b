//! The DynamoDB adapter of the shipment store.
//!
//! Item (table SHIPMENTS_TABLE, key `pk`/`sk`): `SHIPMENT#<order>` / `SHIPMENT` with order_id, status (SCHEDULED or
//! CANCELLED; items written before statuses existed have none and are SCHEDULED), shipment_id and scheduled_at
//! (RFC 3339) once scheduled, cancelled_at once cancelled. Scheduling and cancelling are ONE `TransactWriteItems`
//! request each (the conditional write and the outbox put); the tombstone is ONE conditional `PutItem`.

use std::fmt::Display;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{Item, cancellation_codes, get_s, key, put_new, s, timestamp};
use orderflow_aws::outbox::{outbox_put, put_new_with_event};
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;

use crate::store::{Shipment, ShipmentStatus, ShipmentStore};

const SK: &str = "SHIPMENT";

fn pk(order_id: &str) -> String {
    format!("SHIPMENT#{order_id}")
}

/// The status of a stored item; one without a status was scheduled before statuses existed.
fn status_from_item(item: &Item) -> Result<ShipmentStatus, StoreError> {
    if !item.contains_key("status") {
        return Ok(ShipmentStatus::Scheduled);
    }
    get_s(item, "status")?.parse().map_err(StoreError::Corrupt)
}

/// The DynamoDB shipment store.
#[derive(Debug, Clone)]
pub struct DynamoShipments {
    client: Client,
    table: String,
    outbox_table: String,
}

impl DynamoShipments {
    pub fn new(client: Client, table: impl Into<String>, outbox_table: impl Into<String>) -> Self {
        Self { client, table: table.into(), outbox_table: outbox_table.into() }
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("shipments table {}, {what}", self.table)
    }
}

impl ShipmentStore for DynamoShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        let mut item = key(pk(&shipment.order_id), SK);
        item.insert("order_id".into(), s(&shipment.order_id));
        item.insert("status".into(), s(ShipmentStatus::Scheduled.as_str()));
        item.insert("shipment_id".into(), s(&shipment.shipment_id));
        item.insert("scheduled_at".into(), timestamp(shipment.scheduled_at)?);
        // Duplicate: the order's item or the event exists, written by an earlier delivery or a cancellation.
        put_new_with_event(&self.client, &self.table, item, &self.outbox_table, outbox).await
    }

    async fn status(&self, order_id: &str) -> Result<Option<ShipmentStatus>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(order_id), SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(self.context(format_args!("shipment of {order_id}"))))?;
        let status = output.item().map(status_from_item).transpose();
        status.map_err(|e| e.context(self.context(format_args!("shipment of {order_id}"))))
    }

    async fn cancel(
        &self,
        order_id: &str,
        cancelled_at: OffsetDateTime,
        outbox: &OutboxRecord,
    ) -> Result<Written, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(order_id), SK)))
            .update_expression("SET #status = :cancelled, cancelled_at = :at")
            .condition_expression("attribute_exists(pk) AND (#status = :scheduled OR attribute_not_exists(#status))")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":cancelled", s(ShipmentStatus::Cancelled.as_str()))
            .expression_attribute_values(":scheduled", s(ShipmentStatus::Scheduled.as_str()))
            .expression_attribute_values(":at", timestamp(cancelled_at)?)
            .build()?;
        let items = vec![TransactWriteItem::builder().update(update).build(), outbox_put(&self.outbox_table, outbox)?];
        let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(Written::Committed),
            Err(err) => err,
        };
        match cancellation_codes(&err) {
            // Not SCHEDULED (any more), or the event exists: nothing to cancel here.
            Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => Ok(Written::Duplicate),
            _ => Err(StoreError::from_transaction(&err).context(self.context(format_args!("cancel {order_id}")))),
        }
    }

    async fn tombstone(&self, order_id: &str, cancelled_at: OffsetDateTime) -> Result<Written, StoreError> {
        let mut item = key(pk(order_id), SK);
        item.insert("order_id".into(), s(order_id));
        item.insert("status".into(), s(ShipmentStatus::Cancelled.as_str()));
        item.insert("cancelled_at".into(), timestamp(cancelled_at)?);
        put_new(&self.client, &self.table, item)
            .await
            .map_err(|e| e.context(self.context(format_args!("tombstone of {order_id}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_without_a_status_was_scheduled_and_an_unknown_status_is_invalid() {
        let mut item = key(pk("o-1"), SK);
        assert_eq!(status_from_item(&item), Ok(ShipmentStatus::Scheduled));
        item.insert("status".into(), s("CANCELLED"));
        assert_eq!(status_from_item(&item), Ok(ShipmentStatus::Cancelled));
        item.insert("status".into(), s("LOST"));
        assert_eq!(status_from_item(&item), Err(StoreError::Corrupt("unknown shipment status \"LOST\"".into())));
    }
}
