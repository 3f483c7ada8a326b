//! The analytics function: event stream processing of order events from the AnalyticsQueue.
//!
//! - `OrderPlaced` (v2; v1 and the legacy `OrderCreated`, v0, upcast) feeds the fraud signal: per customer, orders
//!   per tumbling window of `occurred_at`. Each event is counted exactly once: ONE transaction puts the
//!   `EVENT#<id>` marker (only if absent) and adds to the customer's counter, conditional on the count read
//!   before (optimistic concurrency), so of two concurrent orders exactly one raises the signal. The order that
//!   takes a customer past `FRAUD_ORDERS_PER_WINDOW` writes the `FraudSuspected` outbox record in that transaction.
//! - `InventoryReserved` (the prices), `OrderShipped` (its event time picks the window) and `OrderCancelled` feed
//!   the sales windows: each is a fact of the order's [`OrderSale`](orderflow_domain::analytics::OrderSale), which is stored with a revision. The sale's
//!   new state and its change to the window's counters (the order's shard of each SKU) are ONE conditional
//!   transaction, so a redelivered or reordered fact counts nothing twice, and a cancellation takes back exactly
//!   what was counted. Closing the windows is the sales-windows function's.
//! - Every event raises the watermark's latest event time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use orderflow_analytics_store::{Count, CountOutcome, FraudStore, SALES_SHARDS, SaleWrite, SalesStore, WindowChange};
use orderflow_aws::StoreError;
use orderflow_domain::analytics::{SaleChange, SaleFact, SalesError, raises_fraud_signal, shard_of, window_start};
use orderflow_domain::events::{
    FraudSuspected, InventoryReserved, OrderCancelled, OrderPlaced, OrderShipped, registry,
};
use orderflow_toolkit::eventbridge::EventSet;
use orderflow_toolkit::{Envelope, EnvelopeError, HandlerError, OutboxRecord, Registry, SqsRecord, event_set};
use time::OffsetDateTime;
use tracing::Instrument;

/// How often one event is read and written again when concurrent writes keep changing what it was decided on,
/// before it is left to the queue's redelivery.
pub const MAX_ATTEMPTS: u32 = 5;

/// The most distinct SKUs one sale may have: a transaction holds 100 items, one of them is the sale.
pub const MAX_SKUS_PER_SALE: usize = 99;

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

event_set! {
    /// The events analytics reads.
    pub enum AnalyticsEvent {
        Placed(Envelope<OrderPlaced>),
        Reserved(Envelope<InventoryReserved>),
        Shipped(Envelope<OrderShipped>),
        Cancelled(Envelope<OrderCancelled>),
    }
}

/// Why an event could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("order {order_id} has {skus} distinct SKUs; one transaction can count at most {MAX_SKUS_PER_SALE}")]
    TooManySkus { order_id: String, skus: usize },
    #[error("order {order_id}: {source}")]
    Sales { order_id: String, source: SalesError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} kept changing ({MAX_ATTEMPTS} attempts)")]
    Contended { what: String },
}

impl From<AnalyticsError> for HandlerError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Envelope(_) | AnalyticsError::TooManySkus { .. } | AnalyticsError::Sales { .. } => {
                Self::permanent(error)
            }
            AnalyticsError::Store(error) => error.into(),
            AnalyticsError::Contended { .. } => Self::transient(error),
        }
    }
}

/// What counting an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Counted for the fraud signal; `orders_in_window` is the customer's count including this order.
    Order { orders_in_window: u32, fraud_signal: bool },
    /// A fact of the order's sale stored, with what it changed in the sales windows.
    Sale(SaleChange),
    /// Counted before: nothing changed.
    Duplicate,
}

/// Counts order events into the Analytics table.
#[derive(Debug)]
pub struct Analytics<S> {
    store: S,
    registry: Registry,
    config: Config,
    /// The latest event time (unix seconds) this instance stored in the watermark: later ones only are written.
    watermark: AtomicI64,
}

impl<S: FraudStore + SalesStore> Analytics<S> {
    pub fn new(store: S, config: Config) -> Self {
        Self { store, registry: registry(), config, watermark: AtomicI64::new(i64::MIN) }
    }

    /// Handles one SQS record whose body is an EventBridge event.
    pub async fn handle_record(&self, record: SqsRecord) -> Result<(), HandlerError> {
        let raw = self.registry.read_bus_event(&record.body)?;
        let event = AnalyticsEvent::decode(&raw)?;
        let span = tracing::info_span!("event", message_id = record.message_id, event_id = %raw.id);
        self.apply(&event).instrument(span).await
    }

    /// Counts one event (see the module docs) and raises the watermark to its time.
    async fn apply(&self, event: &AnalyticsEvent) -> Result<(), HandlerError> {
        let (counted, occurred_at) = match event {
            AnalyticsEvent::Placed(placed) => (self.count(placed).await?, placed.occurred_at),
            AnalyticsEvent::Reserved(reserved) => {
                let fact = SaleFact::Reserved(reserved.data.lines.clone());
                (self.record_sale(&reserved.data.order_id, fact).await?, reserved.occurred_at)
            }
            AnalyticsEvent::Shipped(shipped) => {
                let fact = SaleFact::Shipped(shipped.occurred_at);
                (self.record_sale(&shipped.data.order_id, fact).await?, shipped.occurred_at)
            }
            AnalyticsEvent::Cancelled(cancelled) => {
                (self.record_sale(&cancelled.data.order_id, SaleFact::Cancelled).await?, cancelled.occurred_at)
            }
        };
        match counted {
            Counted::Order { orders_in_window, fraud_signal } => {
                tracing::info!(orders_in_window, fraud_signal, "order counted")
            }
            Counted::Sale(change) => tracing::info!(?change, "sale recorded"),
            Counted::Duplicate => tracing::info!("event counted before, acknowledged without effect"),
        }
        self.advance_watermark(occurred_at).await?;
        Ok(())
    }

    /// Counts one order for the fraud signal exactly once (see the module docs).
    pub async fn count(&self, placed: &Envelope<OrderPlaced>) -> Result<Counted, AnalyticsError> {
        let window = window_start(placed.occurred_at, self.config.window_seconds);
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
                expected_customer_orders: orders_before,
                fraud_signal,
                counted_at: OffsetDateTime::now_utc(),
            };
            match self.store.count(&count).await? {
                CountOutcome::Counted => {
                    if count.fraud_signal.is_some() {
                        tracing::warn!(customer_id, window_start = %window, orders_in_window, "fraud suspected");
                    }
                    return Ok(Counted::Order { orders_in_window, fraud_signal: count.fraud_signal.is_some() });
                }
                CountOutcome::Duplicate => return Ok(Counted::Duplicate),
                CountOutcome::Contended => contended(attempt, customer_id).await,
            }
        }
        Err(AnalyticsError::Contended { what: format!("the count of customer {customer_id} in window {window}") })
    }

    /// Applies one fact to the order's sale, and its change to the sales counters, exactly once.
    pub async fn record_sale(&self, order_id: &str, fact: SaleFact) -> Result<Counted, AnalyticsError> {
        let invalid = |source| AnalyticsError::Sales { order_id: order_id.to_owned(), source };
        for attempt in 1..=MAX_ATTEMPTS {
            let stored = self.store.sale(order_id).await?;
            let (sale, change) = stored.sale.clone().apply(fact.clone()).map_err(invalid)?;
            if sale == stored.sale {
                return Ok(Counted::Duplicate);
            }
            let write = SaleWrite {
                order_id: order_id.to_owned(),
                sale,
                expected_revision: stored.revision,
                change: self.window_change(order_id, &change)?,
            };
            match self.store.write_sale(&write).await? {
                CountOutcome::Counted => return Ok(Counted::Sale(change)),
                CountOutcome::Duplicate => return Ok(Counted::Duplicate),
                CountOutcome::Contended => contended(attempt, order_id).await,
            }
        }
        Err(AnalyticsError::Contended { what: format!("the sale of order {order_id}") })
    }

    /// Where a sale's change goes: the window of its shipping, the order's shard.
    fn window_change(&self, order_id: &str, change: &SaleChange) -> Result<Option<WindowChange>, AnalyticsError> {
        let (shipped_at, per_sku) = match change {
            SaleChange::Nothing => return Ok(None),
            SaleChange::Count { shipped_at, per_sku } | SaleChange::Uncount { shipped_at, per_sku } => {
                (*shipped_at, per_sku)
            }
        };
        if per_sku.len() > MAX_SKUS_PER_SALE {
            return Err(AnalyticsError::TooManySkus { order_id: order_id.to_owned(), skus: per_sku.len() });
        }
        Ok(Some(WindowChange {
            window_start: window_start(shipped_at, self.config.window_seconds),
            shard: shard_of(order_id, SALES_SHARDS),
            per_sku: per_sku.clone(),
        }))
    }

    /// Raises the watermark to `at`, unless this instance stored that second or a later one already.
    async fn advance_watermark(&self, at: OffsetDateTime) -> Result<(), StoreError> {
        let seconds = at.unix_timestamp();
        if seconds <= self.watermark.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.store.advance_watermark(at).await?;
        self.watermark.fetch_max(seconds, Ordering::Relaxed);
        Ok(())
    }
}

/// Waits a little longer on each attempt before reading again what a concurrent writer changed.
async fn contended(attempt: u32, what: &str) {
    tracing::debug!(attempt, what, "changed concurrently, reading again");
    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
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
    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_analytics_store::{MemoryAnalytics, WindowStore};
    use orderflow_domain::analytics::SalesTotals;
    use orderflow_domain::events::{OrderLine, PricedLine};
    use orderflow_test_support::{Samples, SqsHarness, bus_body, failed_ids, sqs_batch};
    use serde_json::{Value, json};
    use time::macros::datetime;

    const SAMPLES: Samples = Samples::of("analytics");
    const ORDER_PLACED: &str = "order-placed.json";
    const LEGACY_ORDER_CREATED: &str = "legacy-order-created.json";
    const MALFORMED: &str = "malformed.json";
    /// InventoryReserved (10:00:43) and OrderShipped (10:00:50) of o-11: 2 x SKU-1 at 12.50, 1 x SKU-2 at 3.00.
    const SALE: &str = "sale-reserved-and-shipped.json";

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
    async fn order_placed_counts_the_customers_order_in_its_window_and_sells_nothing() {
        let harness = Harness::new(Config::default());

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), SalesTotals::default(), "placed is not sold");
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
        assert_eq!(harness.store.counted_events(), 1);
        assert!(harness.store.outbox().is_empty(), "one order is no fraud");
    }

    #[tokio::test]
    async fn legacy_order_created_is_counted_as_order_placed() {
        let harness = Harness::new(Config::default());

        let failed = harness.handle(SAMPLES.event(LEGACY_ORDER_CREATED)).await;

        assert!(failed.is_empty());
        assert_eq!(harness.store.customer_orders_in("c-7", WINDOW), 1);
    }

    #[tokio::test]
    async fn a_redelivered_event_is_acknowledged_and_counted_once() {
        let harness = Harness::new(Config::default());
        harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        let failed = harness.handle(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty(), "a duplicate is acknowledged");
        assert!(harness.sqs.dead_letters().is_empty(), "a duplicate is not poison");
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
    async fn an_event_analytics_does_not_read_is_poison() {
        let harness = Harness::new(Config::default());
        let mut event: Value = SAMPLES.event(ORDER_PLACED);
        let mut body: Value = serde_json::from_str(event["Records"][0]["body"].as_str().unwrap()).unwrap();
        body["detail-type"] = json!("PaymentAuthorized");
        body["detail"]["type"] = json!("PaymentAuthorized");
        body["detail"]["data"] = json!({"order_id": "o-11", "payment_id": "p-1", "amount": "28.00"});
        event["Records"][0]["body"] = json!(body.to_string());

        harness.handle(serde_json::from_value(event).unwrap()).await;

        assert_eq!(harness.sqs.dead_letters()[0].reason, "this consumer does not handle PaymentAuthorized");
    }

    #[tokio::test]
    async fn orders_fall_into_the_tumbling_window_of_their_occurred_at() {
        let harness = Harness::new(Config::default());

        harness.handle(order(&event_id(1), "o-1", "c-1", "2026-11-24T10:00:59Z")).await;
        harness.handle(order(&event_id(2), "o-2", "c-1", "2026-11-24T10:01:00Z")).await;

        assert_eq!(harness.store.customer_orders_in("c-1", datetime!(2026-11-24 10:00 UTC)), 1);
        assert_eq!(harness.store.customer_orders_in("c-1", datetime!(2026-11-24 10:01 UTC)), 1);
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
    fn a_corrupt_counter_is_permanent_and_a_throttled_store_transient() {
        let corrupt = AnalyticsError::Store(StoreError::Corrupt("item attribute orders: is not a number".into()));
        assert_eq!(HandlerError::from(corrupt).class(), "Permanent");
        let throttled = AnalyticsError::Store(StoreError::Transient("ThrottlingException".into()));
        assert_eq!(HandlerError::from(throttled).class(), "Transient");
    }

    /// The sale sample's two records in the opposite order.
    fn reversed(mut event: SqsEvent) -> SqsEvent {
        event.records.reverse();
        event
    }

    fn totals(units: i64, revenue: &str) -> SalesTotals {
        SalesTotals { units, revenue: revenue.parse().unwrap() }
    }

    /// An event of order `order_id` at `at`, as the queue delivers it.
    fn fact<T: orderflow_toolkit::Event>(order_id: &str, at: OffsetDateTime, data: T) -> String {
        let mut envelope = Envelope::new(order_id, data);
        envelope.occurred_at = at;
        bus_body(&envelope)
    }

    fn reserved(order_id: &str, sku: &str, quantity: u32, unit_price: &str) -> String {
        let line = PricedLine { sku: sku.into(), quantity, unit_price: unit_price.parse().unwrap() };
        let total = line.unit_price * orderflow_domain::Decimal::from(quantity);
        let data = InventoryReserved { order_id: order_id.into(), customer_id: "c-1".into(), lines: vec![line], total };
        fact(order_id, datetime!(2026-11-24 10:00:01 UTC), data)
    }

    fn shipped(order_id: &str, at: OffsetDateTime) -> String {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let data = OrderShipped {
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            shipment_id: format!("s-{order_id}"),
            lines,
        };
        fact(order_id, at, data)
    }

    #[tokio::test]
    async fn a_shipped_sale_is_counted_once_into_the_window_of_its_shipping_whatever_the_order_of_its_events() {
        for batch in [SAMPLES.event(SALE), reversed(SAMPLES.event(SALE))] {
            let harness = Harness::new(Config::default());

            assert!(harness.handle(batch.clone()).await.is_empty());
            assert!(harness.handle(batch).await.is_empty(), "a redelivered batch is acknowledged");

            assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), totals(2, "25.00"));
            assert_eq!(harness.store.counted_sales("SKU-2", WINDOW), totals(1, "3.00"));
            let latest = harness.store.watermark().await.unwrap().latest_event;
            assert_eq!(latest, Some(datetime!(2026-11-24 10:00:50 UTC)), "the watermark's latest event time");
        }
    }

    #[tokio::test]
    async fn a_reserved_order_that_never_ships_sells_nothing() {
        let harness = Harness::new(Config::default());
        let mut batch: SqsEvent = SAMPLES.event(SALE);
        batch.records.truncate(1);

        assert!(harness.handle(batch).await.is_empty());

        assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), SalesTotals::default());
    }

    #[tokio::test]
    async fn a_cancellation_of_a_counted_sale_takes_it_back_from_its_window_once() {
        let harness = Harness::new(Config::default());
        harness.handle(SAMPLES.event(SALE)).await;
        let cancelled = OrderCancelled { order_id: "o-11".into(), customer_id: "c-7".into(), reason: "test".into() };
        let cancel = fact("o-11", datetime!(2026-11-24 10:02:00 UTC), cancelled);

        assert!(harness.handle(sqs_batch(&[cancel.clone(), cancel])).await.is_empty());

        assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), SalesTotals::default());
        assert_eq!(harness.store.counted_sales("SKU-2", WINDOW), SalesTotals::default());
    }

    #[tokio::test]
    async fn the_sales_of_one_hot_sku_are_spread_over_every_shard() {
        let harness = Harness::new(Config::default());
        let at = datetime!(2026-11-24 10:00:30 UTC);
        let bodies: Vec<String> = (0..40)
            .flat_map(|i| [reserved(&format!("o-{i}"), "SKU-HOT", 1, "2.00"), shipped(&format!("o-{i}"), at)])
            .collect();

        for batch in bodies.chunks(10) {
            assert!(harness.handle(sqs_batch(batch)).await.is_empty());
        }

        assert_eq!(harness.store.counted_sales("SKU-HOT", WINDOW), totals(40, "80.00"));
        assert_eq!(harness.store.shards_used("SKU-HOT", WINDOW), SALES_SHARDS as usize);
    }

    #[tokio::test]
    async fn a_sale_whose_write_failed_is_counted_by_its_redelivery() {
        let harness = Harness::new(Config::default());
        let mut reserving: SqsEvent = SAMPLES.event(SALE);
        let mut shipping = reserving.clone();
        reserving.records.truncate(1);
        shipping.records.remove(0);
        harness.handle(reserving).await;
        harness.store.fail_next(1);

        let failed = harness.handle(shipping.clone()).await;
        assert_eq!(failed, ["2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b"]);
        assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), SalesTotals::default());

        assert!(harness.handle(shipping).await.is_empty());
        assert_eq!(harness.store.counted_sales("SKU-1", WINDOW), totals(2, "25.00"));
    }
}
