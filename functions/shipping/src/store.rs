//! The shipping's storage port (the in-memory adapter is in `memory.rs`, the DynamoDB one in `dynamo.rs`).
//!
//! Scheduling is ONE conditional transaction: the `SHIPMENT#<order>` item, written only if none exists (the
//! idempotency: one shipment per order), and the outbox record of `ShipmentScheduled`.

use std::future::Future;

use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;

/// A shipment scheduled for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub order_id: String,
    pub shipment_id: String,
    pub scheduled_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a timeout, the service unavailable: retrying may succeed.
    #[error("shipments store unavailable: {0}")]
    Unavailable(String),
    /// The request is invalid: retrying cannot succeed.
    #[error("shipments store rejected the request: {0}")]
    Invalid(String),
}

pub trait ShipmentStore: Send + Sync {
    /// One transaction: the shipment if none exists for its order, and the outbox record. [`Written::Duplicate`]:
    /// the order's shipment is already scheduled, nothing was written.
    fn schedule(
        &self,
        shipment: &Shipment,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}
