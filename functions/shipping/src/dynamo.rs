//! The DynamoDB adapter of the shipment store.
//!
//! Item (table SHIPMENTS_TABLE, key `pk`/`sk`): `SHIPMENT#<order>` / `SHIPMENT` with order_id, shipment_id,
//! scheduled_at (RFC 3339). Scheduling is ONE `TransactWriteItems` request (the conditional put and the outbox put).

use aws_sdk_dynamodb::Client;
use orderflow_aws::dynamo::{RequestError, key, s};
use orderflow_aws::outbox::put_new_with_event;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::format_description::well_known::Rfc3339;

use crate::store::{Shipment, ShipmentStore, StoreError};

impl From<RequestError> for StoreError {
    fn from(err: RequestError) -> Self {
        err.into_store_error(Self::Invalid, Self::Unavailable)
    }
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
}

impl ShipmentStore for DynamoShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        let scheduled_at = shipment.scheduled_at.format(&Rfc3339).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut item = key(format!("SHIPMENT#{}", shipment.order_id), "SHIPMENT");
        item.insert("order_id".into(), s(&shipment.order_id));
        item.insert("shipment_id".into(), s(&shipment.shipment_id));
        item.insert("scheduled_at".into(), s(scheduled_at));
        // Duplicate: the shipment or its event exists, scheduled by an earlier delivery.
        Ok(put_new_with_event(&self.client, &self.table, item, &self.outbox_table, outbox).await?)
    }
}
