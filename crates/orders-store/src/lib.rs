//! The Orders table of orderflow, shared by the orders API and the order saga.
//!
//! A port, [`OrderStore`], with two adapters that keep the same conditional and transactional semantics:
//! [`InMemoryOrders`] for handler tests and [`DynamoOrders`] for the DynamoDB table. Every write that changes an
//! order carries the event it causes (an [`OutboxRecord`]) in the same transaction, and is conditional:
//! - [`OrderStore::place`] creates an order only if its id is new, and claims the request's idempotency key only
//!   if it is new (or expired), so a retried `POST /orders` returns the order it created the first time;
//! - [`OrderStore::save`] writes an order only if it still has the version it was read at (optimistic
//!   concurrency), so a duplicate or concurrent saga step fails with [`StoreError::Conflict`] instead of applying
//!   twice.
//!
//! Items (see docs/architecture.md): `ORDER#<id>` / `ORDER` holds the order as JSON in `order`, with `status`
//! (S), `version` (N), `order_id`, `customer_id`, `total` (S, once priced) and `created_at` as their own
//! attributes; `IDEMPOTENCY#<key>` / `IDEMPOTENCY` holds `order_id`, `request_hash` and `expires_at` (TTL, 24 h).
#![forbid(unsafe_code)]

use std::future::Future;

use orderflow_domain::order::Order;
use orderflow_toolkit::OutboxRecord;

pub mod dynamo;
pub mod memory;

pub use dynamo::DynamoOrders;
pub use memory::InMemoryOrders;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 3600;

/// The idempotency key of a request and a hash of its body: the same key with another body is a client error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// What placing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The order and its event were written.
    Placed,
    /// The idempotency key was already used with the same request: nothing was written, this is the order the
    /// first request created.
    Existing { order_id: String },
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The idempotency key was already used with a different request body.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyKeyReused { key: String },
    /// A condition failed: the order changed since it was read (or already exists). Reload and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The table could not be reached or refused the request for now (network, throttling, contention).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An item does not have the shape this store writes.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

/// The Orders table: orders, their events (through the outbox) and HTTP idempotency keys.
pub trait OrderStore: Send + Sync {
    /// Writes a new order (`order.version` is its first version) with the event that announces it, and claims
    /// `idempotency` when given, all in one transaction.
    fn place(
        &self,
        order: &Order,
        event: &OutboxRecord,
        idempotency: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<Placement, StoreError>> + Send;

    /// The order as last written (strongly consistent), `None` when unknown.
    fn get(&self, order_id: &str) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send;

    /// Writes `order` with the event its change causes, in one transaction, only if the stored order still has
    /// `expected_version` (`None`: only if there is no such order yet). Fails with [`StoreError::Conflict`]
    /// otherwise, writing nothing.
    fn save(
        &self,
        order: &Order,
        expected_version: Option<u64>,
        event: &OutboxRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The partition key of an order item.
pub fn order_pk(order_id: &str) -> String {
    format!("ORDER#{order_id}")
}

/// The partition key of an idempotency item.
pub fn idempotency_pk(key: &str) -> String {
    format!("IDEMPOTENCY#{key}")
}

/// The sort keys of the Orders table's items.
pub const ORDER_SK: &str = "ORDER";
pub const IDEMPOTENCY_SK: &str = "IDEMPOTENCY";
