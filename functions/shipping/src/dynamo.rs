//! The DynamoDB adapter of the shipment store.
//!
//! Item (table SHIPMENTS_TABLE, key `pk`/`sk`): `SHIPMENT#<order>` / `SHIPMENT` with order_id, shipment_id,
//! scheduled_at (RFC 3339). Scheduling is ONE `TransactWriteItems` request (the conditional put and the outbox put).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use orderflow_aws::dynamo::{cancellation_codes, describe, key, s};
use orderflow_aws::outbox::outbox_put;
use orderflow_toolkit::OutboxRecord;
use time::format_description::well_known::Rfc3339;

use crate::store::{Scheduled, Shipment, ShipmentStore, StoreError};

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
}

impl ShipmentStore for DynamoShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Scheduled, StoreError> {
        let scheduled_at = shipment.scheduled_at.format(&Rfc3339).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut item = key(format!("SHIPMENT#{}", shipment.order_id), "SHIPMENT");
        item.insert("order_id".into(), s(&shipment.order_id));
        item.insert("shipment_id".into(), s(&shipment.shipment_id));
        item.insert("scheduled_at".into(), s(scheduled_at));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item and key are set");
        let items = vec![TransactWriteItem::builder().put(put).build(), outbox_put(&self.outbox_table, outbox)];
        let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(Scheduled::Committed),
            Err(err) => err,
        };
        match cancellation_codes(&err) {
            // The shipment or its event exists: scheduled by an earlier delivery.
            Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => Ok(Scheduled::Duplicate),
            Some(codes) => Err(StoreError::Unavailable(format!(
                "transaction cancelled ({}): {}",
                codes.join(", "),
                describe(&err)
            ))),
            None => match err.code() {
                Some("ValidationException" | "SerializationException") => Err(StoreError::Invalid(describe(&err))),
                _ => Err(StoreError::Unavailable(describe(&err))),
            },
        }
    }
}
