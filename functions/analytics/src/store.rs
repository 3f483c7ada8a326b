//! Where the windowed counters live: the port. Adapters: [`crate::dynamo`], and `crate::memory` for tests.

use std::future::Future;

use orderflow_aws::StoreError;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use uuid::Uuid;

/// The units of one SKU an order adds to its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuUnits {
    pub sku: String,
    pub units: u64,
}

/// Everything one `OrderPlaced` adds, written at once or not at all:
/// - `EVENT#<event id>` / `EVENT`, only if absent (the event is counted exactly once);
/// - `CUSTOMER#<customer>` / `<window start>`: orders += 1, only if it still holds `expected_customer_orders`;
/// - `SALES#<sku>` / `<window start>`: units += n, orders += 1, per SKU;
/// - the `FraudSuspected` outbox record, when this order takes the customer past the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub event_id: Uuid,
    pub order_id: String,
    pub customer_id: String,
    /// The start of the tumbling window.
    pub window_start: OffsetDateTime,
    /// One entry per SKU (a transaction may touch an item once).
    pub sales: Vec<SkuUnits>,
    /// The customer's orders in the window as read before deciding; the write applies only if it still holds.
    pub expected_customer_orders: u32,
    pub fraud_signal: Option<OutboxRecord>,
    pub counted_at: OffsetDateTime,
}

/// What a count did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOutcome {
    Counted,
    /// The event was counted before: nothing was written.
    Duplicate,
    /// A concurrent write changed the customer's count (or conflicted with this transaction): nothing was written;
    /// read again and decide again.
    Contended,
}

/// The analytics counters.
pub trait AnalyticsStore: Send + Sync {
    /// The customer's orders in the window (0 when none), read consistently.
    fn customer_orders(
        &self,
        customer_id: &str,
        window_start: OffsetDateTime,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Applies a [`Count`] atomically (see its docs).
    fn count(&self, count: &Count) -> impl Future<Output = Result<CountOutcome, StoreError>> + Send;
}
