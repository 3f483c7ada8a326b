//! The projection of the read models: for each order whose events a stream batch of the orders event store
//! carries, [`project`] it (fold it from the event store, write its view unless a newer one is stored).
//!
//! Stream semantics, with the toolkit's [`DynamoDbStreamProcessor`] handing over the whole batch:
//! - Only the INSERTs of event items (`EVENT#<version>`) name an order to project; the INSERT of a head or an
//!   idempotency record, and every MODIFY, are not events and are ignored.
//! - An order is projected once per batch however many of its events the batch holds: its view is the fold of
//!   the event store, which holds them all (and maybe later ones: a view may run ahead of the stream, never
//!   behind it, and never backwards, so a redelivered or reordered batch changes nothing).
//! - A transient failure (the tables throttle, say) stops the batch at the order's first record: it and every
//!   later record are delivered again. An order whose events do not fold, or that the event store does not
//!   hold, cannot be projected by retrying: its records go to the function's DLQ with the reason, and the batch
//!   goes on.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use orderflow_order_views::{Projected, ViewStore, project};
use orderflow_orders_store::{EVENT_SK_PREFIX, OrderStore};
use orderflow_toolkit::stream::{RecordFailure, StreamBatchError, keys, new_image};
use orderflow_toolkit::{DeadLetterSink, DynamoDbStreamProcessor, HandlerError};
use serde::Deserialize;
use tracing::Instrument;

/// The key of an item of the event store.
#[derive(Debug, Deserialize)]
struct ItemKey {
    sk: String,
}

/// What the projection reads of an event item: whose event it is.
#[derive(Debug, Deserialize)]
struct EventItem {
    order_id: String,
}

/// Keeps the order views from the event store's stream.
#[derive(Debug, Clone)]
pub struct Projection<O, V, S> {
    orders: O,
    views: V,
    processor: DynamoDbStreamProcessor<S>,
}

impl<O: OrderStore, V: ViewStore, S: DeadLetterSink> Projection<O, V, S> {
    pub fn new(orders: O, views: V, dead_letters: S) -> Self {
        Self { orders, views, processor: DynamoDbStreamProcessor::new(dead_letters) }
    }

    /// Projects the orders of a batch and answers with the records Lambda must deliver again.
    pub async fn handle(&self, event: Event) -> Result<DynamoDbEventResponse, StreamBatchError> {
        self.processor.process_batch(event, async |records| self.project(records).await).await
    }

    async fn project(&self, records: &[EventRecord]) -> Vec<RecordFailure> {
        let (orders, mut failures) = orders_of(records);
        for (order_id, indices) in orders {
            let span = tracing::info_span!("order", order_id, events = indices.len());
            match project(&self.orders, &self.views, &order_id).instrument(span.clone()).await {
                Ok(Projected::Written { version }) => span.in_scope(|| tracing::info!(version, "view written")),
                Ok(Projected::Newer) => span.in_scope(|| tracing::info!("a newer view is stored, nothing written")),
                Err(error @ HandlerError::Transient { .. }) => {
                    failures.push(RecordFailure { index: indices[0], error });
                    break;
                }
                Err(error) => {
                    failures.extend(indices.into_iter().map(|index| RecordFailure { index, error: error.clone() }))
                }
            }
        }
        failures
    }
}

/// The orders a batch's event records name, in the order of their first record, each with the indices of its
/// records; and the records that are event items without an order id (permanent failures).
fn orders_of(records: &[EventRecord]) -> (Vec<(String, Vec<usize>)>, Vec<RecordFailure>) {
    let mut orders: Vec<(String, Vec<usize>)> = Vec::new();
    let mut failures = Vec::new();
    for (index, record) in records.iter().enumerate() {
        if record.event_name != "INSERT" {
            continue;
        }
        let order_id = match keys::<ItemKey>(record) {
            Ok(key) if !key.sk.starts_with(EVENT_SK_PREFIX) => continue,
            Ok(_) => new_image::<EventItem>(record).map(|item| item.order_id),
            Err(error) => Err(error),
        };
        match order_id {
            Ok(order_id) => match orders.iter_mut().find(|(id, _)| *id == order_id) {
                Some((_, indices)) => indices.push(index),
                None => orders.push((order_id, vec![index])),
            },
            Err(error) => failures.push(RecordFailure { index, error }),
        }
    }
    (orders, failures)
}

#[cfg(test)]
mod tests {
    use orderflow_domain::events::{OrderLine, OrderPlaced};
    use orderflow_domain::order::OrderEvent;
    use orderflow_order_views::{InMemoryViews, OrderView};
    use orderflow_orders_store::InMemoryOrders;
    use orderflow_test_support::Samples;
    use orderflow_toolkit::{Envelope, MemoryDeadLetters};
    use time::macros::datetime;

    use super::*;

    const SAMPLES: Samples = Samples::of("order-views");
    /// Two events of order o-1 (OrderPlaced, then the saga's PaymentRequested) and o-1's head between them.
    const TWO_EVENTS: &str = "insert-two-events.json";

    struct World {
        orders: InMemoryOrders,
        views: InMemoryViews,
        dead_letters: MemoryDeadLetters,
        projection: Projection<InMemoryOrders, InMemoryViews, MemoryDeadLetters>,
    }

    impl World {
        fn new() -> Self {
            let (orders, views, dead_letters) =
                (InMemoryOrders::default(), InMemoryViews::default(), MemoryDeadLetters::default());
            let projection = Projection::new(orders.clone(), views.clone(), dead_letters.clone());
            Self { orders, views, dead_letters, projection }
        }

        async fn place(&self, order_id: &str) -> OrderView {
            let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
            let mut placed = Envelope::new(
                order_id,
                OrderPlaced {
                    currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                    order_id: order_id.into(),
                    customer_id: "c-1".into(),
                    lines,
                },
            );
            placed.occurred_at = datetime!(2026-11-24 10:00:05 UTC);
            self.orders.append(None, &[OrderEvent::Placed(placed)]).await.unwrap();
            self.views_of(order_id).await
        }

        async fn views_of(&self, order_id: &str) -> OrderView {
            OrderView::of(&self.orders.get(order_id).await.unwrap().unwrap())
        }

        async fn handle(&self, sample: &str) -> Vec<String> {
            let response = self.projection.handle(SAMPLES.event(sample)).await.unwrap();
            response.batch_item_failures.into_iter().filter_map(|failure| failure.item_identifier).collect()
        }
    }

    #[tokio::test]
    async fn the_view_of_an_order_is_its_fold_in_the_event_store_whatever_the_batch_holds() {
        let world = World::new();
        let expected = world.place("o-1").await;

        assert_eq!(world.handle(TWO_EVENTS).await, Vec::<String>::new());

        assert_eq!(world.views.get("o-1").await.unwrap(), Some(expected));
        assert!(world.dead_letters.letters().is_empty());
    }

    #[tokio::test]
    async fn a_redelivered_batch_never_moves_a_view_backwards() {
        let world = World::new();
        world.place("o-1").await;
        let newer = OrderView { version: 7, ..world.views_of("o-1").await };
        world.views.put(&newer).await.unwrap();

        world.handle(TWO_EVENTS).await;

        assert_eq!(world.views.get("o-1").await.unwrap(), Some(newer));
    }

    #[tokio::test]
    async fn a_transient_failure_stops_the_batch_at_the_orders_first_record() {
        let world = World::new();
        world.place("o-1").await;
        world.orders.fail_next(orderflow_orders_store::StoreError::Table(orderflow_aws::StoreError::Transient(
            "throttled".into(),
        )));

        let again = ["20000000000000000001", "20000000000000000002", "20000000000000000003"];
        assert_eq!(world.handle(TWO_EVENTS).await, again, "from the order's first record on");
        assert_eq!(world.views.get("o-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn events_of_an_order_the_store_does_not_hold_go_to_the_dlq_with_the_reason() {
        let world = World::new();

        assert_eq!(world.handle(TWO_EVENTS).await, Vec::<String>::new(), "a poison order does not hold the shard");

        let letters = world.dead_letters.letters();
        assert_eq!(letters.len(), 2, "both events of o-1: {letters:?}");
        assert!(letters[0].reason.contains("order o-1 has no events in the event store"), "{}", letters[0].reason);
    }

    #[test]
    fn only_event_items_name_orders_to_project() {
        let event: Event = SAMPLES.event(TWO_EVENTS);
        let (orders, failures) = orders_of(&event.records);
        assert_eq!(orders, [("o-1".to_owned(), vec![0, 2])], "the head at index 1 is not an event");
        assert!(failures.is_empty());
    }
}
