//! The deadline sweeper: every run (one invocation of its schedule) drives the orders whose deadline has passed
//! to CANCELLED, emitting `OrderCancelled` with the reason `deadline`; inventory, payment and shipping compensate
//! on it (stock released, an authorized payment voided, a scheduled shipment cancelled).
//!
//! - Which orders: at most [`MAX_ORDERS_PER_RUN`] from the Orders table's deadline index
//!   ([`OrderStore::overdue`]); the next run continues with the rest.
//! - Each order goes through the saga's own step ([`saga::apply`] with [`SagaInput::DeadlinePassed`]): loaded,
//!   decided, its cancellation appended conditionally on its version. A reply racing the deadline is resolved by that condition:
//!   exactly one of them applies, and the other is decided again on the order as it now is, then ignored. An order
//!   that moved on or ended since the index was read is ignored too.
//! - One order's failure does not stop the others; the run then fails, so Lambda's asynchronous retry (and the
//!   next run) tries again. The summary `{"overdue", "cancelled", "ignored", "failed"}` is the response, and logged.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use futures::{StreamExt, stream};
use orderflow_domain::order::SagaInput;
use orderflow_orders_store::OrderStore;
use orderflow_orders_store::saga::{self, Applied, ApplyError};
use orderflow_toolkit::HandlerError;
use serde::Serialize;
use time::OffsetDateTime;

/// The most orders one run handles, so a run stays well within the function's timeout.
pub const MAX_ORDERS_PER_RUN: usize = 500;

/// Orders handled at once: each is a read and a transaction on its own item.
const CONCURRENCY: usize = 8;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Orders the deadline index listed as overdue.
    pub overdue: usize,
    /// Of those, cancelled by this run.
    pub cancelled: usize,
    /// Of those, found final or with a later deadline when loaded.
    pub ignored: usize,
    /// Of those, not applied (the run fails so that it is tried again).
    pub failed: usize,
}

/// The sweeper over the Orders table.
#[derive(Debug, Clone)]
pub struct Sweeper<S> {
    store: S,
}

impl<S: OrderStore> Sweeper<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// One invocation: `event` is the schedule's tick, whose detail is not used.
    pub async fn handle(&self, event: EventBridgeEvent) -> Result<Summary, HandlerError> {
        tracing::info!(source = event.source, detail_type = event.detail_type, "sweeping overdue orders");
        self.sweep(OffsetDateTime::now_utc()).await
    }

    /// Applies the deadline to the orders overdue at `now`. `Err` when any of them failed, after trying them all.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<Summary, HandlerError> {
        let overdue = self.store.overdue(now, MAX_ORDERS_PER_RUN).await?;
        let outcomes: Vec<(String, Result<Applied, ApplyError>)> = stream::iter(overdue)
            .map(|order_id| async move {
                let input = SagaInput::DeadlinePassed { order_id: order_id.clone(), now };
                (order_id, saga::apply(&self.store, &input).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let mut summary = Summary { overdue: outcomes.len(), ..Summary::default() };
        let mut failure: Option<HandlerError> = None;
        for (order_id, outcome) in outcomes {
            match outcome {
                Ok(Applied::Advanced { status, emitted }) => {
                    summary.cancelled += 1;
                    tracing::info!(order_id, status, emitted, "deadline passed: order cancelled");
                }
                Ok(Applied::Ignored { reason, .. }) => {
                    summary.ignored += 1;
                    tracing::info!(order_id, reason, "deadline ignored");
                }
                Err(err) => {
                    summary.failed += 1;
                    tracing::warn!(order_id, error = %err, "deadline not applied");
                    let error = classify(&order_id, &err);
                    // The run is worth retrying if any of its failures is.
                    if failure.as_ref().is_none_or(|first| matches!(first, HandlerError::Permanent(_))) {
                        failure = Some(error);
                    }
                }
            }
        }
        let Summary { overdue, cancelled, ignored, failed } = summary;
        tracing::info!(overdue, cancelled, ignored, failed, "sweep done");
        match failure {
            None => Ok(summary),
            Some(HandlerError::Permanent(reason)) => {
                Err(HandlerError::permanent(format!("{failed} of {overdue} overdue orders failed, e.g. {reason}")))
            }
            Some(error) => Err(HandlerError::transient(format!(
                "{failed} of {overdue} overdue orders failed, e.g. {}",
                error.reason()
            ))),
        }
    }
}

/// A permanent failure of the table (a corrupt order, an invalid request) cannot be fixed by a retry; anything else
/// (the table unavailable, contention) can.
fn classify(order_id: &str, err: &ApplyError) -> HandlerError {
    let reason = format!("order {order_id}: {err}");
    if err.is_transient() { HandlerError::transient(reason) } else { HandlerError::permanent(reason) }
}

#[cfg(test)]
mod tests {
    use orderflow_aws::bus_function::handle_scheduled_invocation;
    use orderflow_domain::events::{
        InventoryReserved, OrderLine, OrderPlaced, PaymentAuthorized, PaymentDeclined, PricedLine, ShipmentScheduled,
    };
    use orderflow_domain::order::{Deadlines, Order, OrderEvent, OrderStatus};
    use orderflow_orders_store::{InMemoryOrders, Placement, StoreError};
    use orderflow_test_support::Samples;
    use orderflow_toolkit::Envelope;
    use orderflow_toolkit::idempotency::IdempotencyRecord;
    use serde_json::{Value, json};
    use time::Duration;

    use super::*;

    const SAMPLES: Samples = Samples::of("order-deadlines");
    const SCHEDULED_EVENT: &str = "scheduled-event.json";

    /// A store whose orders are due a minute after they enter a state.
    fn store() -> InMemoryOrders {
        InMemoryOrders::new(Deadlines::from_seconds(60).unwrap())
    }

    /// Places an order `minutes_ago`; in a [`store`] it is overdue from a minute after.
    async fn place(store: &impl OrderStore, order_id: &str, minutes_ago: i64) {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let mut placed = Envelope::new(
            order_id,
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: order_id.into(),
                customer_id: "c-1".into(),
                lines,
            },
        );
        placed.occurred_at = OffsetDateTime::now_utc() - Duration::minutes(minutes_ago);
        store.place(&placed, None).await.unwrap();
    }

    async fn status(store: &InMemoryOrders, order_id: &str) -> OrderStatus {
        store.get(order_id).await.unwrap().unwrap().status
    }

    fn cancellations(store: &InMemoryOrders) -> Vec<Value> {
        let records = store.outbox().into_iter().filter(|r| r.detail_type == "OrderCancelled");
        records.map(|r| serde_json::from_str(&r.detail).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_scheduled_run_cancels_every_overdue_order_with_the_reason_deadline_and_leaves_the_others() {
        let store = store();
        place(&store, "o-overdue-1", 5).await;
        place(&store, "o-overdue-2", 2).await;
        place(&store, "o-in-time", 0).await;
        let sweeper = Sweeper::new(store.clone());

        let summary =
            handle_scheduled_invocation(SAMPLES.event(SCHEDULED_EVENT), |tick| sweeper.handle(tick)).await.unwrap();

        assert_eq!(summary, Summary { overdue: 2, cancelled: 2, ignored: 0, failed: 0 });
        assert_eq!(
            serde_json::to_value(summary).unwrap(),
            json!({"overdue": 2, "cancelled": 2, "ignored": 0, "failed": 0})
        );
        assert_eq!(status(&store, "o-overdue-1").await, OrderStatus::Cancelled);
        assert_eq!(status(&store, "o-overdue-2").await, OrderStatus::Cancelled);
        assert_eq!(status(&store, "o-in-time").await, OrderStatus::Pending);
        let cancelled = cancellations(&store);
        assert_eq!(cancelled.len(), 2);
        assert!(cancelled.iter().all(|e| e["data"]["reason"] == "deadline" && e["causation_id"].is_null()));

        let again = sweeper.sweep(OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(again, Summary::default(), "cancelled orders left the index");
        assert_eq!(cancellations(&store).len(), 2);
    }

    #[tokio::test]
    async fn one_run_handles_at_most_its_bound_and_the_next_run_continues() {
        let store = store();
        for i in 0..=MAX_ORDERS_PER_RUN {
            place(&store, &format!("o-{i}"), 5).await;
        }
        let sweeper = Sweeper::new(store.clone());

        let first = sweeper.sweep(OffsetDateTime::now_utc()).await.unwrap();
        let second = sweeper.sweep(OffsetDateTime::now_utc()).await.unwrap();

        assert_eq!((first.overdue, first.cancelled), (MAX_ORDERS_PER_RUN, MAX_ORDERS_PER_RUN));
        assert_eq!((second.overdue, second.cancelled), (1, 1));
        assert!(store.orders().iter().all(|order| order.status == OrderStatus::Cancelled));
    }

    #[tokio::test]
    async fn an_order_releasing_its_stock_is_cancelled_by_its_deadline_like_every_non_final_order() {
        let store = store();
        place(&store, "o-releasing", 5).await;
        let mut reserved = Envelope::new(
            "o-releasing",
            InventoryReserved {
                order_id: "o-releasing".into(),
                customer_id: "c-1".into(),
                lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 1, unit_price: "12.50".parse().unwrap() }],
                total: "12.50".parse().unwrap(),
            },
        );
        let mut declined = Envelope::new(
            "o-releasing",
            PaymentDeclined {
                order_id: "o-releasing".into(),
                amount: "12.50".parse().unwrap(),
                reason: "limit".into(),
            },
        );
        reserved.occurred_at = OffsetDateTime::now_utc() - Duration::minutes(4);
        declined.occurred_at = OffsetDateTime::now_utc() - Duration::minutes(3);
        for input in [SagaInput::InventoryReserved(reserved), SagaInput::PaymentDeclined(declined)] {
            saga::apply(&store, &input).await.unwrap();
        }
        assert_eq!(status(&store, "o-releasing").await, OrderStatus::Releasing);

        let summary = Sweeper::new(store.clone()).sweep(OffsetDateTime::now_utc()).await.unwrap();

        assert_eq!(summary, Summary { overdue: 1, cancelled: 1, ignored: 0, failed: 0 });
        assert_eq!(status(&store, "o-releasing").await, OrderStatus::Cancelled);
        assert_eq!(cancellations(&store)[0]["data"]["reason"], "deadline");
    }

    /// The Orders table with a stale index (it still lists `extra`) and the reads of one order failing with `error`.
    struct Faulty {
        inner: InMemoryOrders,
        extra: Vec<String>,
        failing: Option<(String, StoreError)>,
    }

    impl OrderStore for Faulty {
        async fn place(
            &self,
            placed: &Envelope<OrderPlaced>,
            key: Option<&IdempotencyRecord>,
        ) -> Result<Placement, StoreError> {
            self.inner.place(placed, key).await
        }

        async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
            match &self.failing {
                Some((failing, error)) if failing == order_id => Err(error.clone()),
                _ => self.inner.get(order_id).await,
            }
        }

        async fn append(&self, current: Option<&Order>, events: &[OrderEvent]) -> Result<Order, StoreError> {
            self.inner.append(current, events).await
        }

        async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
            let mut overdue = self.inner.overdue(now, limit).await?;
            overdue.extend(self.extra.iter().cloned());
            Ok(overdue)
        }
    }

    #[tokio::test]
    async fn an_order_that_ended_since_the_index_was_read_is_ignored() {
        let store = store();
        place(&store, "o-shipped", 5).await;
        let reserved = InventoryReserved {
            order_id: "o-shipped".into(),
            customer_id: "c-1".into(),
            lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 1, unit_price: "12.50".parse().unwrap() }],
            total: "12.50".parse().unwrap(),
        };
        let authorized = PaymentAuthorized {
            order_id: "o-shipped".into(),
            payment_id: "p-1".into(),
            amount: "12.50".parse().unwrap(),
        };
        let scheduled = ShipmentScheduled { order_id: "o-shipped".into(), shipment_id: "s-1".into() };
        for input in [
            SagaInput::InventoryReserved(Envelope::new("o-shipped", reserved)),
            SagaInput::PaymentAuthorized(Envelope::new("o-shipped", authorized)),
            SagaInput::ShipmentScheduled(Envelope::new("o-shipped", scheduled)),
        ] {
            saga::apply(&store, &input).await.unwrap();
        }
        let faulty = Faulty { inner: store.clone(), extra: vec!["o-shipped".into(), "o-gone".into()], failing: None };

        let summary = Sweeper::new(faulty).sweep(OffsetDateTime::now_utc()).await.unwrap();

        assert_eq!(summary, Summary { overdue: 2, cancelled: 0, ignored: 2, failed: 0 });
        assert_eq!(status(&store, "o-shipped").await, OrderStatus::Shipped);
    }

    #[tokio::test]
    async fn one_failing_order_does_not_stop_the_others_and_fails_the_run_so_it_is_retried() {
        let store = store();
        for order_id in ["o-1", "o-2", "o-3"] {
            place(&store, order_id, 5).await;
        }
        let throttled =
            StoreError::Table(orderflow_aws::StoreError::Transient("ProvisionedThroughputExceededException".into()));
        let faulty = Faulty { inner: store.clone(), extra: vec![], failing: Some(("o-2".into(), throttled)) };

        let error = Sweeper::new(faulty).sweep(OffsetDateTime::now_utc()).await.unwrap_err();

        assert_eq!(error.class(), "Transient", "{error}");
        assert!(error.reason().starts_with("1 of 3 overdue orders failed, e.g. order o-2: "), "{error}");
        assert_eq!(status(&store, "o-1").await, OrderStatus::Cancelled);
        assert_eq!(status(&store, "o-2").await, OrderStatus::Pending);
        assert_eq!(status(&store, "o-3").await, OrderStatus::Cancelled);

        let retried = Sweeper::new(store.clone()).sweep(OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(retried, Summary { overdue: 1, cancelled: 1, ignored: 0, failed: 0 });
    }

    #[tokio::test]
    async fn a_corrupt_order_fails_the_run_as_permanent() {
        let store = store();
        place(&store, "o-1", 5).await;
        let corrupt = StoreError::Table(orderflow_aws::StoreError::Corrupt("item attribute order: is missing".into()));
        let faulty = Faulty { inner: store, extra: vec![], failing: Some(("o-1".into(), corrupt)) };

        let error = Sweeper::new(faulty).sweep(OffsetDateTime::now_utc()).await.unwrap_err();

        assert_eq!(error.class(), "Permanent", "{error}");
    }

    #[tokio::test]
    async fn a_payload_that_is_not_an_eventbridge_event_fails_permanently_and_writes_nothing() {
        let store = store();
        place(&store, "o-1", 5).await;

        let sweeper = Sweeper::new(store.clone());
        let error = handle_scheduled_invocation(json!({"Records": []}), |tick| sweeper.handle(tick)).await.unwrap_err();

        assert_eq!(error.error_type, "HandlerError::Permanent");
        assert!(
            error.error_message.starts_with("the payload is not an EventBridge event: "),
            "{}",
            error.error_message
        );
        assert_eq!(status(&store, "o-1").await, OrderStatus::Pending);
    }
}
