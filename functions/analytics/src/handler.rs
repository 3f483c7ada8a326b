//! The analytics function: event stream processing of `OrderPlaced` (v2; v1 and the legacy `OrderCreated`, v0,
//! upcast) from the AnalyticsQueue.
//!
//! Tumbling windows by the event's `occurred_at`: per SKU, units sold and orders per window; per customer, orders
//! per window. Each event is counted exactly once: ONE transaction puts the `EVENT#<id>` marker (only if absent) and
//! adds to the counters, so a redelivered event is cancelled on the marker and changes nothing. The order that takes
//! a customer past `FRAUD_ORDERS_PER_WINDOW` also writes the `FraudSuspected` outbox record in that transaction.
//! The customer's count is read first and the update is conditional on it (optimistic concurrency), so of two
//! concurrent orders one is counted and the other reads again: exactly one of them raises the signal.

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_aws::StoreError;
use orderflow_domain::analytics::{raises_fraud_signal, window_start};
use orderflow_domain::events::{FraudSuspected, OrderPlaced, registry};
use orderflow_toolkit::{Envelope, EnvelopeError, HandlerError, OutboxRecord, Registry, SqsRecord};
use time::OffsetDateTime;

use crate::store::{AnalyticsStore, Count, CountOutcome, SkuUnits};

/// How often one event is read and written again when concurrent writes keep changing its customer's count, before
/// it is left to the queue's redelivery.
pub const MAX_ATTEMPTS: u32 = 5;

/// The most distinct SKUs one order may have: a transaction holds 100 items, three of them are the event marker, the
/// customer's counter and the fraud signal.
pub const MAX_SKUS_PER_ORDER: usize = 97;

/// The window and threshold (`ANALYTICS_WINDOW_SECONDS`, `FRAUD_ORDERS_PER_WINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub window_seconds: u32,
    pub fraud_orders_per_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { window_seconds: 60, fraud_orders_per_window: 5 }
    }
}

/// Why an event could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("order {order_id} has {skus} distinct SKUs; one transaction can count at most {MAX_SKUS_PER_ORDER}")]
    TooManySkus { order_id: String, skus: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the count of customer {customer_id} in window {window_start} kept changing ({MAX_ATTEMPTS} attempts)")]
    Contended { customer_id: String, window_start: OffsetDateTime },
}

impl From<AnalyticsError> for HandlerError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Envelope(_) | AnalyticsError::TooManySkus { .. } => Self::permanent(error),
            AnalyticsError::Store(error) => error.into(),
            AnalyticsError::Contended { .. } => Self::transient(error),
        }
    }
}

/// What counting an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Counted; `orders_in_window` is the customer's count including this order.
    New { orders_in_window: u32, fraud_signal: bool },
    /// Counted before: nothing changed.
    Duplicate,
}

/// Counts `OrderPlaced` events into an [`AnalyticsStore`].
#[derive(Debug, Clone)]
pub struct Analytics<S> {
    store: S,
    registry: Registry,
    config: Config,
}

impl<S: AnalyticsStore> Analytics<S> {
    pub fn new(store: S, config: Config) -> Self {
        Self { store, registry: registry(), config }
    }

    /// Handles one SQS record whose body is an EventBridge event.
    pub async fn handle_record(&self, record: SqsRecord) -> Result<(), HandlerError> {
        let raw = self.registry.read_bus_event(&record.body)?;
        let placed = raw.decode::<OrderPlaced>()?;
        let counted = self.count(&placed).await?;
        match counted {
            Counted::New { orders_in_window, fraud_signal } => tracing::info!(
                message_id = record.message_id,
                event_id = %placed.id,
                order_id = placed.data.order_id,
                customer_id = placed.data.customer_id,
                orders_in_window,
                fraud_signal,
                "order counted"
            ),
            Counted::Duplicate => tracing::info!(
                message_id = record.message_id,
                event_id = %placed.id,
                "event counted before, acknowledged without effect"
            ),
        }
        Ok(())
    }

    /// Counts one order exactly once (see the module docs).
    pub async fn count(&self, placed: &Envelope<OrderPlaced>) -> Result<Counted, AnalyticsError> {
        let window = window_start(placed.occurred_at, self.config.window_seconds);
        let sales = units_per_sku(&placed.data);
        if sales.len() > MAX_SKUS_PER_ORDER {
            return Err(AnalyticsError::TooManySkus { order_id: placed.data.order_id.clone(), skus: sales.len() });
        }
        let customer_id = &placed.data.customer_id;
        for attempt in 1..=MAX_ATTEMPTS {
            let orders_before = self.store.customer_orders(customer_id, window).await?;
            let orders_in_window = orders_before.saturating_add(1);
            let fraud_signal = raises_fraud_signal(orders_in_window, self.config.fraud_orders_per_window)
                .then(|| fraud_suspected(placed, window, orders_in_window));
            let count = Count {
                event_id: placed.id,
                order_id: placed.data.order_id.clone(),
                customer_id: customer_id.clone(),
                window_start: window,
                sales: sales.clone(),
                expected_customer_orders: orders_before,
                fraud_signal,
                counted_at: OffsetDateTime::now_utc(),
            };
            match self.store.count(&count).await? {
                CountOutcome::Counted => {
                    if count.fraud_signal.is_some() {
                        tracing::warn!(customer_id, window_start = %window, orders_in_window, "fraud suspected");
                    }
                    return Ok(Counted::New { orders_in_window, fraud_signal: count.fraud_signal.is_some() });
                }
                CountOutcome::Duplicate => return Ok(Counted::Duplicate),
                CountOutcome::Contended => {
                    tracing::debug!(
                        attempt,
                        customer_id,
                        window_start = %window,
                        "customer count changed, reading again"
                    );
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
            }
        }
        Err(AnalyticsError::Contended { customer_id: customer_id.clone(), window_start: window })
    }
}

/// The order's units per SKU, one entry per SKU (lines of the same SKU are added up).
fn units_per_sku(order: &OrderPlaced) -> Vec<SkuUnits> {
    let mut units: BTreeMap<&str, u64> = BTreeMap::new();
    for line in &order.lines {
        *units.entry(line.sku.as_str()).or_default() += u64::from(line.quantity);
    }
    units.into_iter().map(|(sku, units)| SkuUnits { sku: sku.to_owned(), units }).collect()
}

/// The `FraudSuspected` outbox record this order raises. Its id derives from the order's event id, so however
/// often the decision is taken again, it is the same event.
fn fraud_suspected(placed: &Envelope<OrderPlaced>, window: OffsetDateTime, orders_in_window: u32) -> OutboxRecord {
    OutboxRecord::caused_by(
        placed,
        FraudSuspected { customer_id: placed.data.customer_id.clone(), window_start: window, orders_in_window },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryAnalytics, Sales};
    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_test_support::{Samples, SqsHarness, failed_ids};
    use serde_json::{Value, json};
    use time::macros::datetime;

    const SAMPLES: Samples = Samples::of("analytics");
    const ORDER_PLACED: &str = "order-placed.json";
    const LEGACY_ORDER_CREATED: &str = "legacy-order-created.json";
    const MALFORMED: &str = "malformed.json";

    /// The window of the samples (10:00:42 and 10:00:50 in one-minute windows).
    const WINDOW: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    struct Harness {
        store: MemoryAnalytics,
        analytics: Analytics<MemoryAnalytics>,
        sqs: SqsHarness,
    }

    impl Harness {
        fn new(config: Config) -> Self {
            let store = MemoryAnalytics::default();
            Self { analytics: Analytics::new(store.clone(), config), store, sqs: SqsHarness::default() }
        }

        async fn handle(&self, event: SqsEvent) -> Vec<String> {
            failed_ids(&self.sqs.process(event, |record| self.analytics.handle_record(record)).await)
        }
    }

    /// The order-placed sample as another order: event id, order, customer and time changed.
    fn order(event_id: &str, order_id: &str, customer_id: &str, occurred_at: &str) -> SqsEvent {
        let mut event: Value = SAMPLES.event(ORDER_PLACED);
        let record = &mut event["Records"][0];
        let mut body: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        body["time"] = json!(occurred_at);
        body["detail"]["id"] = json!(event_id);
        body["detail"]["occurred_at"] = json!(occurred_at);
        body["detail"]["correlation_id"] = json!(order_id);
        body["detail"]["data"]["order_id"] = json!(order_id);
        body["detail"]["data"]["customer_id"] = json!(customer_id);
        record["messageId"] = json!(format!("m-{order_id}"));
        record["body"] = json!(body.to_string());
        serde_json::from_value(event).unwrap()
    }

    fn event_id(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    #[tokio::test]
    async fn order_placed_counts_units_per_sku_and_the_customers_order_in_its_window() {
        let harness = Harness::new(Config::default());

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(harness.store.sales("SKU-1", WINDOW), Sales { units: 2, orders: 1 });
        assert_eq!(harness.store.sales("SKU-2", WINDOW), Sales { units: 1, orders: 1 });
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
        assert_eq!(harness.store.counted_events(), 1);
        assert!(harness.store.outbox().is_empty(), "one order is no fraud");
    }

    #[tokio::test]
    async fn legacy_order_created_is_counted_as_order_placed() {
        let harness = Harness::new(Config::default());

        let failed = harness.handle(SAMPLES.event(LEGACY_ORDER_CREATED)).await;

        assert!(failed.is_empty());
        assert_eq!(harness.store.sales("SKU-1", WINDOW), Sales { units: 3, orders: 1 });
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
    }

    #[tokio::test]
    async fn a_redelivered_event_is_acknowledged_and_counted_once() {
        let harness = Harness::new(Config::default());
        harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty(), "a duplicate is acknowledged");
        assert!(harness.sqs.dead_letters().is_empty(), "a duplicate is not poison");
        assert_eq!(harness.store.sales("SKU-1", WINDOW), Sales { units: 2, orders: 1 });
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
    }

    #[tokio::test]
    async fn a_malformed_event_goes_to_the_dead_letter_queue_with_its_reason() {
        let harness = Harness::new(Config::default());

        let failed = harness.handle(SAMPLES.event(MALFORMED)).await;

        assert!(failed.is_empty(), "poison is acknowledged, not retried");
        let letters = harness.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].message_id, "6e8b9a3c-4d5e-4f6a-8b1c-2d3e4f5a6b7c");
        assert!(letters[0].reason.starts_with("invalid data for OrderPlaced v2"), "{}", letters[0].reason);
        assert_eq!(harness.store.counted_events(), 0);
    }

    #[tokio::test]
    async fn an_event_other_than_order_placed_is_poison() {
        let harness = Harness::new(Config::default());
        let mut event: Value = SAMPLES.event(ORDER_PLACED);
        let mut body: Value = serde_json::from_str(event["Records"][0]["body"].as_str().unwrap()).unwrap();
        body["detail-type"] = json!("OrderCancelled");
        body["detail"]["type"] = json!("OrderCancelled");
        body["detail"]["data"] = json!({"order_id": "o-11", "customer_id": "c-7", "reason": "r"});
        event["Records"][0]["body"] = json!(body.to_string());

        harness.handle(serde_json::from_value(event).unwrap()).await;

        assert_eq!(harness.sqs.dead_letters()[0].reason, "this consumer does not handle OrderCancelled");
    }

    #[tokio::test]
    async fn orders_fall_into_the_tumbling_window_of_their_occurred_at() {
        let harness = Harness::new(Config::default());

        harness.handle(order(&event_id(1), "o-1", "c-1", "2026-11-24T10:00:59Z")).await;
        harness.handle(order(&event_id(2), "o-2", "c-1", "2026-11-24T10:01:00Z")).await;

        assert_eq!(harness.store.customer_orders_in("c-1", datetime!(2026-11-24 10:00 UTC)), 1);
        assert_eq!(harness.store.customer_orders_in("c-1", datetime!(2026-11-24 10:01 UTC)), 1);
        assert_eq!(harness.store.sales("SKU-1", datetime!(2026-11-24 10:01 UTC)), Sales { units: 2, orders: 1 });
    }

    #[tokio::test]
    async fn the_order_that_crosses_the_threshold_raises_one_fraud_signal() {
        // Given a threshold of two orders per window
        let harness = Harness::new(Config { window_seconds: 60, fraud_orders_per_window: 2 });

        // When one customer places four orders in one window
        for n in 1..=4 {
            let failed = harness.handle(order(&event_id(n), &format!("o-{n}"), "c-9", "2026-11-24T10:00:10Z")).await;
            assert!(failed.is_empty());
        }

        // Then the third order alone raised the signal, through the outbox
        let outbox = harness.store.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].detail_type, "FraudSuspected");
        assert_eq!(outbox[0].source, "orderflow.analytics");
        assert_eq!(outbox[0].partition, "o-3");
        let detail: Value = serde_json::from_str(&outbox[0].detail).unwrap();
        assert_eq!(
            detail["data"],
            json!({"customer_id": "c-9", "window_start": "2026-11-24T10:00:00Z", "orders_in_window": 3})
        );
        assert_eq!(detail["causation_id"], json!(event_id(3)));
        assert_eq!(harness.store.customer_orders_in("c-9", WINDOW), 4);
    }

    #[tokio::test]
    async fn a_concurrent_order_between_read_and_write_makes_the_handler_read_again() {
        // Given a threshold of one, and another writer counting an order of the same customer between this handler's
        // read (0 orders) and its write
        let harness = Harness::new(Config { window_seconds: 60, fraud_orders_per_window: 1 });
        harness.store.interleave_orders("c-7", WINDOW, 1, 1);

        // When the order is handled
        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        // Then the stale write was refused and the retry counted it as the second order, raising the signal that a
        // blind increment of the stale count (1, below the threshold) would have missed
        assert!(failed.is_empty());
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 2);
        let outbox = harness.store.outbox();
        assert_eq!(outbox.len(), 1);
        let detail: Value = serde_json::from_str(&outbox[0].detail).unwrap();
        assert_eq!(detail["data"]["orders_in_window"], 2);
    }

    #[tokio::test]
    async fn a_count_that_keeps_changing_is_left_to_the_queue_to_redeliver() {
        let harness = Harness::new(Config::default());
        harness.store.interleave_orders("c-7", WINDOW, 1, MAX_ATTEMPTS);

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        assert_eq!(failed, ["4c6f7e1a-2b3c-4d5e-8f9a-0b1c2d3e4f5a"]);
        assert!(harness.sqs.dead_letters().is_empty());
        assert_eq!(harness.store.counted_events(), 0);
    }

    #[tokio::test]
    async fn a_store_failure_is_reported_for_redelivery_and_counts_nothing() {
        let harness = Harness::new(Config::default());
        harness.store.fail_next(1);

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;
        assert_eq!(failed, ["4c6f7e1a-2b3c-4d5e-8f9a-0b1c2d3e4f5a"]);
        assert_eq!(harness.store.counted_events(), 0);

        assert!(harness.handle(SAMPLES.event(ORDER_PLACED)).await.is_empty(), "the redelivery is counted");
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
    }

    #[test]
    fn lines_of_one_sku_are_added_up() {
        let order = OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: "o".into(),
            customer_id: "c".into(),
            lines: serde_json::from_value(json!([
                {"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 4}
            ]))
            .unwrap(),
        };
        assert_eq!(
            units_per_sku(&order),
            [SkuUnits { sku: "A".into(), units: 2 }, SkuUnits { sku: "B".into(), units: 5 }]
        );
    }

    #[test]
    fn a_corrupt_counter_is_permanent_and_a_throttled_store_transient() {
        let corrupt = AnalyticsError::Store(StoreError::Corrupt("item attribute orders: is not a number".into()));
        assert_eq!(HandlerError::from(corrupt).class(), "Permanent");
        let throttled = AnalyticsError::Store(StoreError::Transient("ThrottlingException".into()));
        assert_eq!(HandlerError::from(throttled).class(), "Transient");
    }
}
