//! The Orders table of orderflow: the event store of orders, shared by the orders API and the order saga.
//!
//! An order is its events: one item per event, keyed by order id and version, and its state is their fold
//! ([`Order::from_events`]), derived on every read and never stored. Every write is an append of the next
//! versions under the condition that no other writer took them (optimistic concurrency): of two writers racing on
//! one order exactly one wins, the other fails with [`StoreError::Conflict`] and decides again on the order as it
//! now is. The table's DynamoDB stream carries each new event to the bus through the outbox relay: the event store
//! is the orders' outbox, and nothing is written and then published.
//!
//! A port, [`OrderStore`], with two adapters that keep the same conditional and transactional semantics:
//! [`InMemoryOrders`] for handler tests and [`DynamoOrders`] for the DynamoDB table.
//! - [`OrderStore::place`] starts an order's stream with its `OrderPlaced` only if the order is new, and writes
//!   the `COMPLETED` idempotency record of the request's key (the toolkit's, see [`placement_record`]) only if the
//!   key has no live record, so a retried `POST /orders` returns the order it created the first time
//!   ([`Placement::Existing`]), and the same key with another request is refused ([`Placement::KeyReused`]): the
//!   toolkit's replay of the record found ([`IdempotencyRecord::replay`]);
//! - [`OrderStore::append`] appends events after the version the order was read at.
//!
//! [`saga::apply`] is the saga's step on this store (load, decide, append, and again on a conflict), shared by the
//! order saga and the deadline sweeper, which finds the orders to check with [`OrderStore::overdue`].
//!
//! Items (see docs/architecture.md):
//! - `ORDER#<id>` / `EVENT#<version, 10 digits>`: one event; `source`, `detail_type` and `detail` (the envelope as
//!   JSON) are the attributes the relay publishes, with `order_id`, `version` (N) and `event_id`.
//! - `ORDER#<id>` / `HEAD`: the order's latest `version`, `status`, `customer_id`, `total` (once priced) and, while
//!   it is not final, `deadline_at` (N, epoch seconds) and `deadline_shard` (S, [`deadline_shard`]): the keys of
//!   the sparse index [`DEADLINE_INDEX`]. Written in the same transaction as the events it sums up, so the index
//!   is never ahead of the stream; reads never need it.
//! - `IDEMPOTENCY#<key>` / `IDEMPOTENCY`: the idempotency record of a caller's request key (`<key>` is
//!   [`placement_record`]'s, scoped to the caller) in the layout of
//!   `orderflow_aws::idempotency` (`status` `COMPLETED`, `payload_hash`, `expiration` (the TTL attribute, epoch
//!   seconds), and `response`, the [`PlacedOrder`] as JSON).
//!
//! Orders written before the event store (one `ORDER#<id>` / `ORDER` snapshot item) are not read any more.
//!
//! Failures: a reused idempotency key is an answer to the request, so it is a [`Placement`]; a failed version
//! condition stays an error, [`StoreError::Conflict`], because no caller may take it for success and the saga's
//! loop answers it by reloading; a stream that does not fold is corrupt; every other failure is the table's,
//! classed transient or permanent once for every store by [`orderflow_aws::StoreError`] ([`StoreError::Table`]).
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, SystemTime};

use orderflow_aws::ConfigError;
use orderflow_aws::config::env_or;
use orderflow_domain::events::OrderPlaced;
use orderflow_domain::order::{Deadlines, Order, OrderEvent};
use orderflow_domain::stable_hash;
use orderflow_toolkit::idempotency::{IdempotencyError, IdempotencyRecord};
use orderflow_toolkit::{Envelope, HandlerError, OutboxRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod dynamo;
pub mod memory;
pub mod saga;

pub use dynamo::DynamoOrders;
pub use memory::InMemoryOrders;

/// The response an idempotency record of a placement stores: the order its request placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub order_id: String,
}

/// The `COMPLETED` idempotency record that binds `principal`'s `key` and `request` to the placement of `order_id`,
/// to write with it ([`OrderStore::place`]); it answers repeats until `expires_after` after `now`. Keys are each
/// principal's own: the record's key is the principal's (its length first, so no two pairs make one key) and theirs.
pub fn placement_record<R: Serialize + ?Sized>(
    principal: &str,
    key: &str,
    request: &R,
    order_id: &str,
    now: SystemTime,
    expires_after: Duration,
) -> Result<IdempotencyRecord, IdempotencyError<Infallible>> {
    let scoped = format!("{}:{principal}:{key}", principal.len());
    IdempotencyRecord::completed(&scoped, request, &PlacedOrder { order_id: order_id.to_owned() }, now, expires_after)
}

/// What placing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The order and its event were written, with the idempotency record when one was given.
    Placed,
    /// The idempotency key was already used with the same request: nothing was written, this is the order the
    /// first request created.
    Existing { order_id: String },
    /// The idempotency key was already used with a different request body: nothing was written.
    KeyReused { key: String },
}

/// The answer to a placement whose idempotency `record` found the live record `existing` of its key: the toolkit's
/// replay, read as a [`Placement`].
fn replay(existing: IdempotencyRecord, record: &IdempotencyRecord) -> Result<Placement, orderflow_aws::StoreError> {
    match existing.replay::<PlacedOrder, Infallible>(&record.payload_hash) {
        Ok(PlacedOrder { order_id }) => Ok(Placement::Existing { order_id }),
        Err(IdempotencyError::PayloadMismatch { key }) => Ok(Placement::KeyReused { key }),
        Err(IdempotencyError::Handler(never)) => match never {},
        // Placements write COMPLETED records of a `PlacedOrder` only.
        Err(err) => Err(orderflow_aws::StoreError::Corrupt(format!("the idempotency record of a placement: {err}"))),
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition failed: the order changed since it was read (or already exists). Reload and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The table failed the request or holds a corrupt item; its class says whether a retry may succeed.
    #[error(transparent)]
    Table(#[from] orderflow_aws::StoreError),
}

impl StoreError {
    /// Whether retrying may succeed: after a conflict it may (reloaded, the input is decided again).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Conflict(_) => true,
            Self::Table(err) => err.is_transient(),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        if err.is_transient() { HandlerError::transient(err) } else { HandlerError::permanent(err) }
    }
}

/// The event store of orders, with the idempotency records of HTTP requests.
pub trait OrderStore: Send + Sync {
    /// Starts the stream of a new order with `placed`, and writes `idempotency`, the record of the request's key
    /// ([`placement_record`] of this order), in one transaction, unless the key has a live record: then nothing is
    /// written and that record answers ([`Placement::Existing`] or [`Placement::KeyReused`]).
    fn place(
        &self,
        placed: &Envelope<OrderPlaced>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<Placement, StoreError>> + Send;

    /// The order its events make, read strongly consistent; `None` when it has none.
    fn get(&self, order_id: &str) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send;

    /// Appends `events` (all of one order) after `current`, the order as it was read (`None`: it had no events),
    /// in one transaction, and returns the order they make. Fails with [`StoreError::Conflict`], writing nothing,
    /// when another writer appended since `current` was read.
    fn append(
        &self,
        current: Option<&Order>,
        events: &[OrderEvent],
    ) -> impl Future<Output = Result<Order, StoreError>> + Send;

    /// Ids of at most `limit` non-final orders whose deadline is at or before `now`, oldest deadlines first
    /// within each shard. Read from an eventually consistent index: load each order before acting on it.
    fn overdue(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// The event store read as a log rather than as orders: what `GET /orders/{id}/events` and a rebuild of the read
/// models need, and the saga does not.
pub trait EventLog: Send + Sync {
    /// The order's events in version order, each read at the current version of its type, strongly consistent.
    fn events(&self, order_id: &str) -> impl Future<Output = Result<Vec<OrderEvent>, StoreError>> + Send;

    /// Every order's events in version order, each order's stream once, read eventually consistent (an append
    /// while it reads may be missed): for a rebuild of the read models, which folds every order.
    fn streams(&self) -> impl Future<Output = Result<Vec<Vec<OrderEvent>>, StoreError>> + Send;

    /// The order's events as stored (not upcast: what the relay published), in version order, read strongly
    /// consistent.
    fn stored_events(&self, order_id: &str) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Every stored event that occurred in `[from, to)`, order by order, each order's in version order (a scan,
    /// eventually consistent).
    fn stored_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;
}

/// An event as the event store holds it: the record the relay publishes for it, as it was written (a version 1
/// event stays version 1), with its place in its order's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub order_id: String,
    pub version: u64,
    pub occurred_at: OffsetDateTime,
    /// Partitioned by the order id.
    pub record: OutboxRecord,
}

/// The order after `events` are appended to `current`, or why the events cannot follow it (a bug of the writer:
/// permanent, nothing is written).
pub fn appended(current: Option<&Order>, events: &[OrderEvent], deadlines: &Deadlines) -> Result<Order, StoreError> {
    let first = events.first().ok_or_else(|| permanent("an append of no events".to_owned()))?;
    if let Some(other) = events.iter().find(|event| event.order_id() != first.order_id()) {
        return Err(permanent(format!("an append of events of orders {} and {}", first.order_id(), other.order_id())));
    }
    match Order::fold_onto(current, events, deadlines) {
        Ok(Some(order)) => Ok(order),
        Ok(None) => Err(permanent("an append of no events".to_owned())),
        Err(err) => Err(permanent(format!("order {}: {err}", first.order_id()))),
    }
}

fn permanent(reason: String) -> StoreError {
    StoreError::Table(orderflow_aws::StoreError::Permanent(reason))
}

/// The record the relay publishes for an event of the store: its envelope as the bus `detail`, partitioned by
/// order.
pub fn bus_record(event: &OrderEvent) -> OutboxRecord {
    let raw = event.raw();
    OutboxRecord {
        partition: raw.correlation_id.clone(),
        event_id: raw.id,
        source: event.source().to_owned(),
        detail_type: raw.event_type.clone(),
        detail: serde_json::to_string(&raw).expect("an envelope serialises to JSON"),
    }
}

/// The index of non-final orders by deadline (partition `deadline_shard`, sort `deadline_at`).
pub const DEADLINE_INDEX: &str = "ByDeadline";
/// How many partitions the deadline index spreads the open orders over, so no one partition takes every write.
pub const DEADLINE_SHARDS: u32 = 4;

/// The deadline index partition of an order: `OPEN#<0..DEADLINE_SHARDS>`, from the [`stable_hash`] of its id.
pub fn deadline_shard(order_id: &str) -> String {
    shard_key(stable_hash(order_id) % DEADLINE_SHARDS)
}

/// Every partition of the deadline index.
pub fn deadline_shards() -> impl Iterator<Item = String> {
    (0..DEADLINE_SHARDS).map(shard_key)
}

fn shard_key(index: u32) -> String {
    format!("OPEN#{index}")
}

/// The deadline the index holds for `order` (epoch seconds): only a non-final order has one.
pub fn indexed_deadline(order: &Order) -> Option<i64> {
    order.deadline_at.filter(|_| !order.status.is_final()).map(OffsetDateTime::unix_timestamp)
}

/// The environment variable of the order deadline, in seconds (every function that sets or enforces one).
pub const ORDER_DEADLINE_SECONDS: &str = "ORDER_DEADLINE_SECONDS";

/// The order deadline from [`ORDER_DEADLINE_SECONDS`] (an hour when unset).
pub fn deadlines_from_env() -> Result<Deadlines, ConfigError> {
    let seconds = env_or(ORDER_DEADLINE_SECONDS, Deadlines::DEFAULT_SECONDS)?;
    Deadlines::from_seconds(seconds).map_err(|e| ConfigError::Invalid {
        name: ORDER_DEADLINE_SECONDS,
        value: seconds.to_string(),
        reason: e.message,
    })
}

/// The partition key of an order's items.
pub fn order_pk(order_id: &str) -> String {
    format!("ORDER#{order_id}")
}

/// The sort key of an order's event `version`: zero-padded, so the events sort in version order.
pub fn event_sk(version: u64) -> String {
    format!("{EVENT_SK_PREFIX}{version:010}")
}

/// The sort key prefix of an order's events.
pub const EVENT_SK_PREFIX: &str = "EVENT#";

/// The partition key of an idempotency record: this prefix and the request's key.
pub const IDEMPOTENCY_PK_PREFIX: &str = "IDEMPOTENCY#";

/// The sort keys of the Orders table's other items: an order's head and an idempotency record.
pub const HEAD_SK: &str = "HEAD";
pub const IDEMPOTENCY_SK: &str = "IDEMPOTENCY";

#[cfg(test)]
mod tests {
    use orderflow_domain::events::OrderLine;
    use orderflow_domain::order::OrderStatus;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn orders_spread_over_every_deadline_shard_and_an_order_stays_in_its_own() {
        let shards: std::collections::BTreeSet<String> =
            (0..64).map(|i| deadline_shard(&uuid::Uuid::from_u128(i).to_string())).collect();
        assert_eq!(shards.into_iter().collect::<Vec<_>>(), deadline_shards().collect::<Vec<_>>());
        assert_eq!(deadline_shards().collect::<Vec<_>>(), ["OPEN#0", "OPEN#1", "OPEN#2", "OPEN#3"]);
        assert_eq!(deadline_shard("o-1"), deadline_shard("o-1"));
    }

    #[test]
    fn only_a_non_final_order_is_indexed_by_its_deadline() {
        let deadlines = Deadlines::from_seconds(60).unwrap();
        let lines = vec![OrderLine { sku: "S".into(), quantity: 1 }];
        let mut placed = Envelope::new(
            "o-1",
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: "o-1".into(),
                customer_id: "c-1".into(),
                lines,
            },
        );
        placed.occurred_at = datetime!(2026-11-24 10:00 UTC);
        let mut order = appended(None, &[OrderEvent::Placed(placed)], &deadlines).unwrap();
        assert_eq!(indexed_deadline(&order), Some(datetime!(2026-11-24 10:01 UTC).unix_timestamp()));
        order.status = OrderStatus::Cancelled;
        assert_eq!(indexed_deadline(&order), None, "even if a final order kept its deadline");
    }

    #[test]
    fn events_sort_by_version_and_an_append_that_does_not_fold_is_refused() {
        assert!(event_sk(9) < event_sk(10));
        assert_eq!(event_sk(7), "EVENT#0000000007");
        let err = appended(None, &[], &Deadlines::default()).unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }
}
