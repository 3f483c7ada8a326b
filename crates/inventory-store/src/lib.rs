//! The Inventory table of orderflow, shared by the orders API (the catalogue: restock and read a SKU's stock) and
//! the inventory function (reservations against that stock); the bench's DynamoDB stub fakes its items with
//! [`item`]'s encoders. This crate owns every item encoding of the table.
//!
//! Two ports, each with the same conditional and transactional semantics in both adapters ([`MemoryInventory`] for
//! handler tests, [`DynamoInventory`] for the table): [`StockStore`], the catalogue, and [`InventoryStore`], the
//! reservations. Every reservation write is ONE conditional request holding the business change and, when the
//! change emits an event, its outbox record. The conditions carry the idempotency: a reservation is written only
//! if none exists for the order, a release or shipment only moves a reservation that is still `RESERVED`. An order
//! cancelled before its stock was reserved gets a `RELEASED` reservation without lines (a tombstone), so a later
//! `OrderPlaced` finds it and reserves nothing. Failures are [`StoreError`]s: transient or permanent.
//!
//! Items (key `pk`/`sk`; names in [`item`]):
//! - `SKU#<sku>` / `STOCK`: `sku` (S), `available`, `reserved`, `shipped` (N), `price` (S, decimal string). The
//!   restock writes them all; `reserved` and `shipped` read as 0 when absent (items written before those counters
//!   existed), every other attribute is required.
//! - `RESERVATION#<order>` / `RESERVATION`: `order_id`, `status` (RESERVED, REJECTED, RELEASED, SHIPPED), `lines`
//!   (JSON order lines), `reason` (REJECTED, and the line-less RELEASED tombstone), `updated_at` (RFC 3339).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

use orderflow_aws::StoreError;
use orderflow_domain::events::{OrderLine, PricedLine};
use orderflow_domain::inventory::{Restock, Stock};
use orderflow_toolkit::OutboxRecord;

pub mod dynamo;
pub mod item;
pub mod memory;

pub use dynamo::DynamoInventory;
pub use memory::MemoryInventory;

/// The status of an order's reservation item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Every line's units are held (moved from available to reserved).
    Reserved,
    /// Nothing was reserved; the decision is recorded so a redelivery decides nothing again.
    Rejected,
    /// The units went back to available (compensation of a declined payment or a cancelled order); or, without
    /// lines, the order was cancelled before anything was reserved.
    Released,
    /// The units left with the shipment (moved from reserved to shipped).
    Shipped,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Rejected => "REJECTED",
            Self::Released => "RELEASED",
            Self::Shipped => "SHIPPED",
        }
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReservationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RESERVED" => Ok(Self::Reserved),
            "REJECTED" => Ok(Self::Rejected),
            "RELEASED" => Ok(Self::Released),
            "SHIPPED" => Ok(Self::Shipped),
            other => Err(format!("unknown reservation status {other:?}")),
        }
    }
}

/// An order's reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub status: ReservationStatus,
    /// The order's lines merged by SKU (for a reservation: the units held per SKU).
    pub lines: Vec<OrderLine>,
}

/// What a reservation decision is taken on: the order's reservation, if any, and the stock of its SKUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reservation: Option<ReservationStatus>,
    /// The stock of every requested SKU that is in the catalogue.
    pub stock: BTreeMap<String, Stock>,
}

/// The outcome of a conditional transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was written.
    Committed,
    /// Nothing was written: the reservation is not in the required state (it exists already, for a new
    /// reservation; it is no longer `RESERVED`, for a release or a shipment).
    ReservationConflict,
    /// Nothing was written: the stock of these SKUs no longer satisfies the condition (empty: another
    /// transaction touched the same items at the same time). Read again and decide again.
    StockConflict(Vec<String>),
}

/// The catalogue: each SKU's stock and price (`PUT`/`GET /inventory/{sku}`).
pub trait StockStore: Send + Sync {
    /// Sets the units available and the price of `sku`, keeping its reserved and shipped units (0 for a new SKU);
    /// returns the stock as written.
    fn restock(&self, sku: &str, restock: &Restock) -> impl Future<Output = Result<Stock, StoreError>> + Send;

    /// The stock of `sku` (a consistent read), `None` when it is not in the catalogue.
    fn get(&self, sku: &str) -> impl Future<Output = Result<Option<Stock>, StoreError>> + Send;
}

/// The orders' reservations against the stock.
pub trait InventoryStore: Send + Sync {
    /// A consistent read of the order's reservation status and of the stock of `skus` (one read request).
    fn snapshot(&self, order_id: &str, skus: &[String]) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// A consistent read of the order's reservation.
    fn reservation(&self, order_id: &str) -> impl Future<Output = Result<Option<Reservation>, StoreError>> + Send;

    /// One transaction: per line `available -= q, reserved += q` if `available >= q` and `reserved` stays within
    /// `u32`; the reservation
    /// (`RESERVED`, the priced lines) if none exists for the order; the outbox record.
    fn reserve(
        &self,
        order_id: &str,
        lines: &[PricedLine],
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// One transaction: the reservation (`REJECTED`, the lines, the reason) if none exists for the order; the
    /// outbox record.
    fn reject(
        &self,
        order_id: &str,
        lines: &[OrderLine],
        reason: &str,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// One transaction: the reservation `RESERVED -> RELEASED`; per line `available += q, reserved -= q` if
    /// `reserved >= q` and `available` stays within `u32`; the outbox record.
    fn release(
        &self,
        order_id: &str,
        lines: &[OrderLine],
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// One write: a `RELEASED` reservation without lines if none exists for the order (the tombstone of an order
    /// cancelled before its stock was reserved). [`Outcome::ReservationConflict`]: the order has a reservation.
    fn tombstone(&self, order_id: &str) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// One transaction: the reservation `RESERVED -> SHIPPED`; per line `reserved -= q, shipped += q` if
    /// `reserved >= q` and `shipped` stays within `u32`.
    fn ship(&self, order_id: &str, lines: &[OrderLine]) -> impl Future<Output = Result<Outcome, StoreError>> + Send;
}
