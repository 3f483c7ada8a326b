//! `DynamoOrders` as an event store against a real emulator (see [`support`]): one item per event under its
//! version, the order derived by folding them, and optimistic concurrency that lets exactly one of two racing
//! writers append.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use orderflow_aws::dynamo::{get_n, get_s};
use orderflow_domain::events::{OrderCancelled, OrderLine, OrderPlaced, PaymentRequested};
use orderflow_domain::order::{OrderEvent, OrderStatus};
use orderflow_orders_store::{EventLog, OrderStore, StoreError};
use orderflow_toolkit::Envelope;
use support::World;

fn placed(order_id: &str) -> Envelope<OrderPlaced> {
    let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
    Envelope::new(
        order_id,
        OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            lines,
        },
    )
}

fn payment_requested(order_id: &str) -> OrderEvent {
    let request =
        PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount: "25.00".parse().unwrap() };
    OrderEvent::PaymentRequested(Envelope::new(order_id, request))
}

fn cancelled(order_id: &str) -> OrderEvent {
    let cancelled = OrderCancelled { order_id: order_id.into(), customer_id: "c-1".into(), reason: "customer".into() };
    OrderEvent::Cancelled(Envelope::new(order_id, cancelled))
}

impl World {
    /// The sort keys of the order's items, in key order.
    async fn sort_keys(&self, order_id: &str) -> Vec<String> {
        let output = self
            .client
            .query()
            .table_name(&self.orders_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("ORDER#{order_id}")))
            .consistent_read(true)
            .send()
            .await
            .expect("Query");
        output.items().iter().map(|item| get_s(item, "sk").unwrap().to_owned()).collect()
    }
}

#[tokio::test]
async fn every_event_is_its_own_item_and_the_order_is_their_fold() {
    let world = World::start().await;
    world.store.place(&placed("o-1"), None).await.unwrap();
    let pending = world.store.get("o-1").await.unwrap().unwrap();

    let reserved = world.store.append(Some(&pending), &[payment_requested("o-1")]).await.unwrap();

    assert_eq!(world.sort_keys("o-1").await, ["EVENT#0000000001", "EVENT#0000000002", "HEAD"]);
    let read = world.store.get("o-1").await.unwrap().unwrap();
    assert_eq!(read, reserved, "the fold of the stored events is the order the append returned");
    assert_eq!((read.status, read.version, read.total), (OrderStatus::Reserved, 2, Some("25.00".parse().unwrap())));
    let history: Vec<&str> = read.history.iter().map(|entry| entry.event_type.as_str()).collect();
    assert_eq!(history, ["OrderPlaced", "PaymentRequested"]);
    let event = world.item("ORDER#o-1", "EVENT#0000000002").await.unwrap();
    assert_eq!(get_s(&event, "source").unwrap(), "orderflow.saga");
    assert_eq!(get_s(&event, "detail_type").unwrap(), "PaymentRequested");
    let detail: serde_json::Value = serde_json::from_str(get_s(&event, "detail").unwrap()).unwrap();
    assert_eq!((detail["type"].as_str(), detail["data"]["amount"].as_str()), (Some("PaymentRequested"), Some("25.00")));
    let head = world.item("ORDER#o-1", "HEAD").await.unwrap();
    assert_eq!((get_s(&head, "status").unwrap(), get_n::<u64>(&head, "version").unwrap()), ("RESERVED", 2));
    assert!(world.store.get("o-unknown").await.unwrap().is_none());
}

#[tokio::test]
async fn of_two_writers_appending_to_one_version_exactly_one_wins_and_the_other_decides_again() {
    let world = World::start().await;
    world.store.place(&placed("o-1"), None).await.unwrap();
    let read = world.store.get("o-1").await.unwrap().unwrap();

    let payment = [payment_requested("o-1")];
    let cancel = [cancelled("o-1")];
    let (first, second) =
        tokio::join!(world.store.append(Some(&read), &payment), world.store.append(Some(&read), &cancel));

    let won = [first.is_ok(), second.is_ok()];
    assert_eq!(won.iter().filter(|ok| **ok).count(), 1, "exactly one append wins: {first:?} / {second:?}");
    let lost = if won[0] { second } else { first };
    assert!(matches!(lost, Err(StoreError::Conflict(_))), "the loser is told to re-read: {lost:?}");
    let order = world.store.get("o-1").await.unwrap().unwrap();
    assert_eq!(order.version, 2, "one event appended, not two");
    assert_eq!(world.sort_keys("o-1").await, ["EVENT#0000000001", "EVENT#0000000002", "HEAD"]);
    // The loser, deciding again on the order as it now is, appends after it.
    if order.status == OrderStatus::Reserved {
        let after = world.store.append(Some(&order), &cancel).await.unwrap();
        assert_eq!((after.status, after.version), (OrderStatus::Cancelled, 3));
    }
}

#[tokio::test]
async fn stored_events_are_the_items_as_written_by_order_or_by_the_time_they_occurred() {
    let world = World::start().await;
    let mut early = placed("o-early");
    early.occurred_at = time::macros::datetime!(2026-12-01 10:00 UTC);
    world.store.place(&early, None).await.unwrap();
    world.store.place(&placed("o-now"), None).await.unwrap();
    let pending = world.store.get("o-now").await.unwrap().unwrap();
    world.store.append(Some(&pending), &[payment_requested("o-now")]).await.unwrap();

    let stored = world.store.stored_events("o-now").await.unwrap();

    let versions: Vec<(u64, &str)> = stored.iter().map(|e| (e.version, e.record.detail_type.as_str())).collect();
    assert_eq!(versions, [(1, "OrderPlaced"), (2, "PaymentRequested")]);
    let item = world.item("ORDER#o-now", "EVENT#0000000002").await.unwrap();
    assert_eq!(stored[1].record.detail, get_s(&item, "detail").unwrap(), "the detail as stored, byte for byte");
    assert_eq!((stored[1].record.partition.as_str(), stored[1].record.source.as_str()), ("o-now", "orderflow.saga"));
    let from = time::macros::datetime!(2026-12-01 09:00 UTC);
    let range = world.store.stored_between(from, time::macros::datetime!(2026-12-01 11:00 UTC)).await.unwrap();
    let orders: Vec<&str> = range.iter().map(|event| event.order_id.as_str()).collect();
    assert_eq!(orders, ["o-early"]);
    assert!(world.store.stored_events("o-unknown").await.unwrap().is_empty());
}
