//! The in-memory adapter of the shipment store, for the handler's tests.

use std::ops::Deref;

use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::{MemoryOutboxStore, Written};

use crate::store::{Shipment, ShipmentStore, StoreError};

/// Shipments by order, with DynamoDB's semantics (a conditional, all-or-nothing transaction).
#[derive(Debug, Clone, Default)]
pub struct MemoryShipments(MemoryOutboxStore<Shipment>);

impl MemoryShipments {
    /// How many shipments are scheduled.
    pub fn shipments(&self) -> usize {
        self.0.count()
    }
}

impl Deref for MemoryShipments {
    type Target = MemoryOutboxStore<Shipment>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ShipmentStore for MemoryShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        self.put_new_with_event(&shipment.order_id, shipment, outbox).map_err(StoreError::Unavailable)
    }
}
