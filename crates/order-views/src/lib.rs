//! The read models of orders (CQRS): the OrderViews table, one view per order, kept by the order-views function
//! from the event store's stream and read by the orders API (`GET /orders/{id}`, `GET /orders`).
//!
//! A view is derived, never decided on: [`OrderView::of`] the order its events make. The projection
//! ([`project`]) takes an order the stream says changed, folds it from the event store (one strongly consistent
//! Query) and writes its view unless the stored one is newer ([`ViewStore::put`]: a condition on the version).
//! So a view moves only forward, per order and in order, whatever the stream redelivers or reorders, and a
//! projection that missed a record is repaired by the order's next event. [`rebuild`] is the same step for every
//! order of the event store: it gives the views the stream keeps, which is what its test compares.
//!
//! A port, [`ViewStore`], with two adapters: [`InMemoryViews`] for handler tests and [`DynamoViews`] for the
//! table. Items (see docs/architecture.md): `order_id` (the key), `customer_id`, `status` (public), `version`,
//! `view` (the [`OrderView`] as JSON), and the keys of two indexes that list a customer's orders newest first:
//! `listed_at` (sort key of both, [`listed_at`]) under `customer_id` ([`BY_CUSTOMER`]) and under
//! `customer_status` ([`BY_CUSTOMER_STATUS`], `<customer>#<STATUS>`).
#![forbid(unsafe_code)]

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt, TryStreamExt};
use orderflow_domain::Decimal;
use orderflow_domain::events::OrderLine;
use orderflow_domain::order::{Deadlines, HistoryEntry, Order, OrderEvent, OrderStatus};
use orderflow_orders_store::{EventLog, OrderStore};
use orderflow_toolkit::HandlerError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod dynamo;
pub mod memory;

pub use dynamo::DynamoViews;
pub use memory::InMemoryViews;

/// The table's failures: the class of every store's ([`orderflow_aws::StoreError`]).
pub use orderflow_aws::StoreError;

/// The index of a customer's orders (partition `customer_id`, sort [`listed_at`]).
pub const BY_CUSTOMER: &str = "ByCustomer";
/// The index of a customer's orders in one status (partition `customer_status`, sort [`listed_at`]).
pub const BY_CUSTOMER_STATUS: &str = "ByCustomerStatus";
/// The most orders one page of a list holds.
pub const MAX_PAGE: u16 = 100;

/// An order as `GET /orders/{id}` and `GET /orders` show it: its public status ([`OrderStatus::public`]), lines,
/// total once priced, and history, as of event `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    /// The ISO 4217 code of the currency of `total`.
    pub currency: String,
    pub total: Option<Decimal>,
    pub history: Vec<HistoryEntry>,
    /// The order's event this view is of: a view is only ever replaced by one of a later version.
    pub version: u64,
    /// When the order's first event occurred: the order of a customer's list.
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
}

impl OrderView {
    /// The view of `order`.
    pub fn of(order: &Order) -> Self {
        Self {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            status: order.status.public(),
            lines: order.lines.clone(),
            currency: order.currency.clone(),
            total: order.total,
            history: order.history.clone(),
            version: order.version,
            // A folded order has at least its first event.
            placed_at: order.history.first().map_or(OffsetDateTime::UNIX_EPOCH, |first| first.at),
        }
    }

    /// Its position in its customer's list: [`listed_at`].
    pub fn listed_at(&self) -> String {
        listed_at(self.placed_at, &self.order_id)
    }
}

/// The sort key of an order in its customer's list: the nanoseconds of `placed_at` (20 digits, so strings sort as
/// numbers), `#`, the order id (orders placed in the same nanosecond still have an order).
pub fn listed_at(placed_at: OffsetDateTime, order_id: &str) -> String {
    let nanos = u64::try_from(placed_at.unix_timestamp_nanos()).unwrap_or(0);
    format!("{nanos:020}#{order_id}")
}

/// Where a page of a list ends: the [`listed_at`] of its last order. Clients see it as an opaque string
/// ([`Cursor::encode`]); it holds no customer, so a cursor can only move within the list of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    listed_at: String,
}

/// A string that is not a cursor this API gave out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor returned by this API (next_cursor of an earlier page)")]
pub struct InvalidCursor;

impl Cursor {
    /// The cursor after `view`.
    pub fn after(view: &OrderView) -> Self {
        Self { listed_at: view.listed_at() }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.listed_at)
    }

    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        let listed_at = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
        let (nanos, order_id) = listed_at.split_once('#').ok_or(InvalidCursor)?;
        if nanos.len() != 20 || !nanos.bytes().all(|b| b.is_ascii_digit()) || order_id.is_empty() {
            return Err(InvalidCursor);
        }
        Ok(Self { listed_at })
    }

    /// The list's sort key where the page ends.
    pub fn listed_at(&self) -> &str {
        &self.listed_at
    }

    /// The order the page ends with.
    pub fn order_id(&self) -> &str {
        self.listed_at.split_once('#').map_or("", |(_, order_id)| order_id)
    }
}

/// A page of a customer's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: String,
    /// Only orders in this (public) status.
    pub status: Option<OrderStatus>,
    /// At most this many orders, 1..=[`MAX_PAGE`].
    pub limit: u16,
    /// The page after this one.
    pub after: Option<Cursor>,
}

/// A page of a list: its orders, and the cursor of the next page when there may be one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub views: Vec<OrderView>,
    pub next: Option<Cursor>,
}

/// The OrderViews table.
pub trait ViewStore: Send + Sync {
    /// Writes `view` unless the stored view of its order is of a later version. Returns whether it wrote.
    fn put(&self, view: &OrderView) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The view of an order, `None` while the projection has not seen it (or it does not exist).
    fn get(&self, order_id: &str) -> impl Future<Output = Result<Option<OrderView>, StoreError>> + Send;

    /// A page of a customer's orders, newest first. Read from an eventually consistent index.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// The id of every order that has a view (a scan; operators only).
    fn order_ids(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Deletes the view of an order.
    fn remove(&self, order_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What projecting an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// Its view is now at `version`.
    Written { version: u64 },
    /// Its stored view is already of a later version than the event store gave (a read that raced a newer
    /// projection): nothing was written.
    Newer,
}

/// Projects one order: folds it from the event store and writes its view unless a newer one is stored. An order
/// the event store does not hold is a permanent failure (its events were written, so the table is not the one
/// they were written to).
pub async fn project<O: OrderStore, V: ViewStore>(
    orders: &O,
    views: &V,
    order_id: &str,
) -> Result<Projected, HandlerError> {
    let order = orders
        .get(order_id)
        .await?
        .ok_or_else(|| HandlerError::permanent(format!("order {order_id} has no events in the event store")))?;
    let view = OrderView::of(&order);
    Ok(if views.put(&view).await? { Projected::Written { version: view.version } } else { Projected::Newer })
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rebuilt {
    /// Orders of the event store, each projected.
    pub projected: usize,
    /// Views of orders the event store does not hold, deleted.
    pub removed: usize,
}

/// How many views a rebuild writes at once.
const REBUILD_CONCURRENCY: usize = 16;

/// Re-derives every view from the event store: reads every order's stream in one pass ([`EventLog::streams`]),
/// folds each and writes its view unless a newer one is stored (so it is safe while the projection runs, and a
/// view the projection keeps is written again only if it lags), then deletes the views of orders the event
/// store does not hold. An order whose events do not fold fails the rebuild, naming it.
pub async fn rebuild<O: EventLog, V: ViewStore>(
    orders: &O,
    views: &V,
    deadlines: &Deadlines,
) -> Result<Rebuilt, HandlerError> {
    let streams = orders.streams().await?;
    let mut held = std::collections::HashSet::with_capacity(streams.len());
    let mut orders = Vec::with_capacity(streams.len());
    for events in &streams {
        let order = Order::from_events(events, deadlines).map_err(|err| {
            let order_id = events.first().map_or("?", OrderEvent::order_id);
            HandlerError::permanent(format!("order {order_id} does not fold: {err}"))
        })?;
        if let Some(order) = order {
            held.insert(order.order_id.clone());
            orders.push(OrderView::of(&order));
        }
    }
    futures::stream::iter(&orders)
        .map(|view| views.put(view))
        .buffer_unordered(REBUILD_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let mut removed = 0;
    for order_id in views.order_ids().await? {
        if !held.contains(&order_id) {
            views.remove(&order_id).await?;
            removed += 1;
        }
    }
    Ok(Rebuilt { projected: orders.len(), removed })
}

#[cfg(test)]
mod tests {
    use orderflow_domain::events::OrderPlaced;
    use orderflow_orders_store::InMemoryOrders;
    use orderflow_toolkit::Envelope;
    use time::macros::datetime;

    use super::*;

    fn placed(order_id: &str, customer_id: &str, at: OffsetDateTime) -> Envelope<OrderPlaced> {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let mut placed = Envelope::new(
            order_id,
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: order_id.into(),
                customer_id: customer_id.into(),
                lines,
            },
        );
        placed.occurred_at = at;
        placed
    }

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let view = OrderView::of(
            &Order::from_events(
                &[OrderEvent::Placed(placed("o-1", "c-1", datetime!(2026-12-03 10:00 UTC)))],
                &Deadlines::default(),
            )
            .unwrap()
            .unwrap(),
        );
        let cursor = Cursor::after(&view);
        assert_eq!(cursor.listed_at(), "01796292000000000000#o-1");
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor.clone()));
        assert_eq!(cursor.order_id(), "o-1");
        for bad in ["", "not base64!", &URL_SAFE_NO_PAD.encode("123#o-1"), &URL_SAFE_NO_PAD.encode("x")] {
            assert_eq!(Cursor::decode(bad), Err(InvalidCursor), "{bad:?}");
        }
    }

    #[test]
    fn the_list_order_is_the_placement_time_then_the_id() {
        let earlier = listed_at(datetime!(2026-12-03 09:59:59.999 UTC), "z");
        let later = listed_at(datetime!(2026-12-03 10:00 UTC), "a");
        assert!(earlier < later);
        assert!(listed_at(datetime!(2026-12-03 10:00 UTC), "a") < later.replace("#a", "#b"));
    }

    #[tokio::test]
    async fn a_rebuild_projects_every_order_and_drops_views_of_orders_the_store_does_not_hold() {
        let orders = InMemoryOrders::default();
        let views = InMemoryViews::default();
        for i in 0..3 {
            let at = datetime!(2026-12-03 10:00 UTC) + time::Duration::seconds(i);
            orders.place(&placed(&format!("o-{i}"), "c-1", at), None).await.unwrap();
        }
        let stray = OrderView { order_id: "gone".into(), ..views_of(&orders, "o-0").await };
        views.put(&stray).await.unwrap();

        let rebuilt = rebuild(&orders, &views, &Deadlines::default()).await.unwrap();

        assert_eq!(rebuilt, Rebuilt { projected: 3, removed: 1 });
        let mut ids = views.order_ids().await.unwrap();
        ids.sort();
        assert_eq!(ids, ["o-0", "o-1", "o-2"]);
        assert_eq!(views.get("o-2").await.unwrap(), Some(views_of(&orders, "o-2").await));
    }

    async fn views_of(orders: &InMemoryOrders, order_id: &str) -> OrderView {
        OrderView::of(&orders.get(order_id).await.unwrap().unwrap())
    }
}
