//! The shipping's storage port (the in-memory adapter is in `memory.rs`, the DynamoDB one in `dynamo.rs`).
//!
//! Every write is ONE conditional request. Scheduling: the `SHIPMENT#<order>` item, written only if none exists
//! (the idempotency: one shipment per order), and the outbox record of `ShipmentScheduled`, in one transaction.
//! Cancelling: `SCHEDULED -> CANCELLED` with the outbox record of `ShipmentCancelled`, in one transaction; or, for
//! an order with no shipment yet, a `CANCELLED` item (a tombstone), so a later `OrderConfirmed` schedules nothing.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use orderflow_aws::StoreError;
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

/// The status of an order's shipment item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    /// The shipment is scheduled (items written before statuses existed are read as this).
    Scheduled,
    /// The order was cancelled: its shipment is called off, or there never was one (a tombstone).
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ShipmentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SCHEDULED" => Ok(Self::Scheduled),
            "CANCELLED" => Ok(Self::Cancelled),
            other => Err(format!("unknown shipment status {other:?}")),
        }
    }
}

pub trait ShipmentStore: Send + Sync {
    /// One transaction: the shipment (`SCHEDULED`) if no item exists for its order, and the outbox record.
    /// [`Written::Duplicate`]: the order's item exists (scheduled earlier, or cancelled), nothing was written.
    fn schedule(
        &self,
        shipment: &Shipment,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// A consistent read of the status of the order's item, `None` when there is none.
    fn status(&self, order_id: &str) -> impl Future<Output = Result<Option<ShipmentStatus>, StoreError>> + Send;

    /// One transaction: the order's shipment `SCHEDULED -> CANCELLED` and the outbox record.
    /// [`Written::Duplicate`]: the shipment is not `SCHEDULED` (or the record exists), nothing was written.
    fn cancel(
        &self,
        order_id: &str,
        cancelled_at: OffsetDateTime,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// One write: a `CANCELLED` item for the order if none exists. [`Written::Duplicate`]: one exists.
    fn tombstone(
        &self,
        order_id: &str,
        cancelled_at: OffsetDateTime,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}
