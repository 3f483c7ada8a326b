//! The Analytics table, and every reader and writer of it: the analytics function (fraud counters, each order's
//! sale, the sales counters), the sales-windows function (closing windows) and the orders API
//! (`GET /analytics/sales`).
//!
//! Items (pk / sk; see docs/architecture.md):
//! - `EVENT#<event id>` / `EVENT`: an `OrderPlaced` counted for the fraud signal (exactly once).
//! - `CUSTOMER#<customer>` / `<window start>`: the customer's orders in a window.
//! - `SALE#<order id>` / `SALE`: the order's [`OrderSale`] and its revision (optimistic concurrency).
//! - `SALES#<window start>#<shard>` / `<sku>`: units and revenue counted into a window, spread over
//!   [`SALES_SHARDS`] items per SKU so a popular SKU's writes do not queue on one item. While it holds amounts
//!   not yet published, it carries `open_shard`, the key of the sparse [`OPEN_SALES`] index the closer reads.
//! - `CLOSED#<sku>` / `<window start>`: what was published of a closed window (totals and revision).
//! - `WATERMARK` / `WATERMARK`: the latest event time counted, and how far the closer has settled.
//!
//! Window starts are RFC 3339 in UTC, whole seconds, so they sort as times.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;

use orderflow_domain::analytics::{OrderSale, SalesTotals};
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use uuid::Uuid;

pub mod dynamo;
pub mod memory;

pub use dynamo::DynamoAnalytics;
pub use memory::MemoryAnalytics;
/// The table's failures: the class of every store's.
pub use orderflow_aws::StoreError;

/// The counter items one SKU's window is spread over.
pub const SALES_SHARDS: u32 = 8;

/// The sparse index of counter items holding amounts not yet published: partition `open_shard`, sort
/// `window_start`.
pub const OPEN_SALES: &str = "OpenSales";

/// Everything one `OrderPlaced` adds to the fraud counters, written at once or not at all:
/// - `EVENT#<event id>` / `EVENT`, only if absent (the event is counted exactly once);
/// - `CUSTOMER#<customer>` / `<window start>`: orders += 1, only if it still holds `expected_customer_orders`;
/// - the `FraudSuspected` outbox record, when this order takes the customer past the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub event_id: Uuid,
    pub order_id: String,
    pub customer_id: String,
    /// The start of the tumbling window.
    pub window_start: OffsetDateTime,
    /// The customer's orders in the window as read before deciding; the write applies only if it still holds.
    pub expected_customer_orders: u32,
    pub fraud_signal: Option<OutboxRecord>,
    pub counted_at: OffsetDateTime,
}

/// What a count (or a sale's write) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOutcome {
    Counted,
    /// The event was counted before: nothing was written.
    Duplicate,
    /// A concurrent write changed what the decision was made on (or conflicted with this transaction): nothing
    /// was written; read again and decide again.
    Contended,
}

/// The fraud counters.
pub trait FraudStore: Send + Sync {
    /// The customer's orders in the window (0 when none), read consistently.
    fn customer_orders(
        &self,
        customer_id: &str,
        window_start: OffsetDateTime,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Applies a [`Count`] atomically (see its docs).
    fn count(&self, count: &Count) -> impl Future<Output = Result<CountOutcome, StoreError>> + Send;
}

/// An order's sale as stored, with the revision its next write is conditional on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSale {
    pub sale: OrderSale,
    /// 0: not stored yet.
    pub revision: u64,
}

/// What a sale adds to (or, negative, takes from) the counters of one window: per SKU, into the order's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowChange {
    pub window_start: OffsetDateTime,
    pub shard: u32,
    pub per_sku: BTreeMap<String, SalesTotals>,
}

/// The new state of an order's sale and its change to the counters, written at once or not at all, only if the
/// stored sale is still at `expected_revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleWrite {
    pub order_id: String,
    pub sale: OrderSale,
    pub expected_revision: u64,
    pub change: Option<WindowChange>,
}

/// Each order's sale and the sales counters.
pub trait SalesStore: Send + Sync {
    /// The order's sale, read consistently (the default when none is stored).
    fn sale(&self, order_id: &str) -> impl Future<Output = Result<StoredSale, StoreError>> + Send;

    /// Applies a [`SaleWrite`]: [`CountOutcome::Counted`], or [`CountOutcome::Contended`] when the stored sale
    /// moved on.
    fn write_sale(&self, write: &SaleWrite) -> impl Future<Output = Result<CountOutcome, StoreError>> + Send;

    /// Raises the watermark's latest event time to `at` (whole seconds); never lowers it.
    fn advance_watermark(&self, at: OffsetDateTime) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A SKU's window with amounts not yet published, as the [`OPEN_SALES`] index lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenSales {
    pub window_start: OffsetDateTime,
    pub sku: String,
}

/// One counter item of a SKU's window, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount {
    pub shard: u32,
    pub totals: SalesTotals,
}

/// A closed window as published: its totals and how often they were corrected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedWindow {
    pub sku: String,
    pub window_start: OffsetDateTime,
    pub window_end: OffsetDateTime,
    pub totals: SalesTotals,
    /// 0 when closed; each correction adds one.
    pub revision: u64,
}

/// The state of the watermark item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatermarkState {
    /// The latest event time counted, `None` before any.
    pub latest_event: Option<OffsetDateTime>,
    /// A completed run of the closer settled every window starting at or before this: a SKU window first counted
    /// later was closed empty, and its first publication is a correction.
    pub settled_through: Option<OffsetDateTime>,
}

/// Closing windows, and reading the closed ones.
pub trait WindowStore: Send + Sync {
    /// The watermark item, read consistently.
    fn watermark(&self) -> impl Future<Output = Result<WatermarkState, StoreError>> + Send;

    /// Records that every window starting at or before `last_start` was settled; never moves back.
    fn record_settled_through(&self, last_start: OffsetDateTime)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// SKU windows starting at or before `last_start` with amounts not yet published, at most `limit` of them
    /// (an eventually consistent index: what it misses now, a later run finds).
    fn open_sales(
        &self,
        last_start: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OpenSales>, StoreError>> + Send;

    /// Every counter item of a SKU's window, read consistently.
    fn counted(
        &self,
        sku: &str,
        window_start: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<ShardCount>, StoreError>> + Send;

    /// What was published of a SKU's window, read consistently.
    fn published(
        &self,
        sku: &str,
        window_start: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<PublishedWindow>, StoreError>> + Send;

    /// Writes `window` with its event, only if what is published is still at `previous_revision` (`None`: nothing
    /// is). Returns whether it wrote: `false` when another run published first.
    fn publish(
        &self,
        window: &PublishedWindow,
        previous_revision: Option<u64>,
        event: &OutboxRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes the counter items `counted` read out of the [`OPEN_SALES`] index, each only if it still holds what
    /// was read (an amount counted since keeps it open for the next run).
    fn settle(
        &self,
        sku: &str,
        window_start: OffsetDateTime,
        counted: &[ShardCount],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The published windows of `sku` starting in `[from, to)`, in order.
    fn closed_windows(
        &self,
        sku: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<PublishedWindow>, StoreError>> + Send;
}
