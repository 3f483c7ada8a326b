//! `DynamoOrders` and the deadline index against a real emulator (see [`support`]), so the index these queries use
//! is the one AWS gets.

mod support;

use orderflow_domain::events::{OrderCancelled, OrderLine, OrderPlaced, PaymentRequested};
use orderflow_domain::order::{Order, OrderEvent};
use orderflow_orders_store::{OrderStore, deadline_shard};
use orderflow_toolkit::Envelope;
use support::World;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const PLACED_AT: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

impl World {
    /// Places an order `seconds_later` than [`PLACED_AT`]; its deadline is a minute after that.
    async fn place(&self, order_id: &str, seconds_later: i64) -> Order {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let placed = OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            lines,
        };
        let placed = at(Envelope::new(order_id, placed), seconds_later);
        self.store.place(&placed, None).await.unwrap();
        self.store.get(order_id).await.unwrap().expect("the placed order")
    }

    /// The order head's deadline index keys, as stored.
    async fn index_keys(&self, order_id: &str) -> (Option<String>, Option<String>) {
        let item = self.item(&format!("ORDER#{order_id}"), "HEAD").await.expect("the order's head");
        let text = |name: &str| item.get(name).map(|v| v.as_s().or(v.as_n()).unwrap().to_owned());
        (text("deadline_shard"), text("deadline_at"))
    }
}

/// `envelope` as if it occurred `seconds` after [`PLACED_AT`].
fn at<T>(mut envelope: Envelope<T>, seconds: i64) -> Envelope<T> {
    envelope.occurred_at = PLACED_AT + Duration::seconds(seconds);
    envelope
}

fn cancelled(order_id: &str) -> OrderEvent {
    let cancelled = OrderCancelled { order_id: order_id.into(), customer_id: "c-1".into(), reason: "deadline".into() };
    OrderEvent::Cancelled(Envelope::new(order_id, cancelled))
}

/// The payment request of `order`, nine minutes after [`PLACED_AT`]: RESERVED, due a minute later.
fn payment_requested(order: &Order) -> OrderEvent {
    let request = PaymentRequested {
        order_id: order.order_id.clone(),
        customer_id: "c-1".into(),
        amount: "1.00".parse().unwrap(),
    };
    OrderEvent::PaymentRequested(at(Envelope::new(order.order_id.clone(), request), 540))
}

#[tokio::test]
async fn the_deadline_index_lists_open_overdue_orders_in_every_shard_and_drops_an_order_once_final() {
    let world = World::start().await;
    let ids: Vec<String> = (0..12).map(|i| format!("o-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        world.place(id, i64::try_from(i).unwrap()).await;
    }
    let not_yet = world.place("o-not-yet", 600).await;
    let shards: std::collections::BTreeSet<String> = ids.iter().map(|id| deadline_shard(id)).collect();
    assert!(shards.len() > 1, "the orders span several shards: {shards:?}");
    let deadline = not_yet.deadline_at.unwrap().unix_timestamp().to_string();
    assert_eq!(world.index_keys("o-not-yet").await, (Some(deadline_shard("o-not-yet")), Some(deadline)));

    let now = PLACED_AT + Duration::minutes(5);
    let mut overdue = world.store.overdue(now, 100).await.unwrap();
    overdue.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(overdue, expected, "every overdue order of every shard, and not the one due later");
    assert_eq!(world.store.overdue(now, 4).await.unwrap().len(), 4, "bounded by the limit");

    // A final order leaves the index; an order that moved on is indexed by its new deadline.
    let open = world.store.get("o-0").await.unwrap().unwrap();
    world.store.append(Some(&open), &[cancelled("o-0")]).await.unwrap();
    assert_eq!(world.index_keys("o-0").await, (None, None));
    let pending = world.store.get("o-1").await.unwrap().unwrap();
    let moved_on = world.store.append(Some(&pending), &[payment_requested(&pending)]).await.unwrap();
    assert_eq!(moved_on.deadline_at, Some(PLACED_AT + Duration::minutes(10)));

    let overdue = world.store.overdue(now, 100).await.unwrap();
    assert!(!overdue.contains(&"o-0".to_owned()) && !overdue.contains(&"o-1".to_owned()), "{overdue:?}");
    assert_eq!(overdue.len(), ids.len() - 2);
}
