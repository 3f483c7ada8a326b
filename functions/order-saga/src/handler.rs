//! The order saga: reads the events that move an order on, asks the order state machine
//! ([`orderflow_domain::order::decide`]) what they mean for the order (the fold of its events in the event store),
//! and appends the events it decides after the version the order was read at (optimistic concurrency).
//!
//! - Duplicates and stale redeliveries: `decide` ignores an event that is no longer valid from the order's state,
//!   and the version condition stops a duplicate processed concurrently from applying twice (the loser reads the
//!   order again and decides again).
//! - Out-of-order delivery: an event that follows a state the order has not reached yet fails transiently, so the
//!   queue delivers it again later (and moves it to the DLQ after `maxReceiveCount`).
//! - Malformed, unknown or unhandled events go to the DLQ at once with their reason.
//! - A `PaymentAuthorized` for another amount than the order's total is refused: the step appends the order's
//!   compensation (`OrderCancelled`, reason `payment_amount_mismatch`: inventory releases its stock, payment voids
//!   the authorization) and fails permanently with the reason, so the record goes to the DLQ with it. The append is
//!   conditional on the order's version; a redelivery finds the order cancelled and is acknowledged unchanged.
//! - Every state an order moves into gets its deadline; the order-deadlines sweeper cancels the order when it
//!   passes, through the same step ([`orderflow_orders_store::saga::apply`]).

use orderflow_domain::events::{
    InventoryRejected, InventoryReleased, InventoryReserved, PaymentAuthorized, PaymentDeclined, ShipmentScheduled,
};
use orderflow_domain::order::SagaInput;
use orderflow_orders_store::OrderStore;
use orderflow_orders_store::saga::{self, Applied, ApplyError};
use orderflow_toolkit::{EnvelopeError, Event, HandlerError, Registry, SqsRecord};

/// How many records of one batch are processed at once (records of one order serialise on its version).
pub const CONCURRENCY: usize = 4;

/// Why an input was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("{event_type} has an empty order_id")]
    NoOrderId { event_type: String },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl From<SagaError> for HandlerError {
    fn from(err: SagaError) -> Self {
        match &err {
            SagaError::Envelope(_) | SagaError::NoOrderId { .. } => HandlerError::permanent(err),
            // Not yet applicable (an early event), contended, or the store unavailable: a later delivery may apply.
            SagaError::Apply(apply) if apply.is_transient() => HandlerError::transient(err),
            SagaError::Apply(_) => HandlerError::permanent(err),
        }
    }
}

/// The saga over an order store.
#[derive(Debug, Clone)]
pub struct Saga<S> {
    store: S,
    registry: Registry,
}

impl<S: OrderStore> Saga<S> {
    /// A saga over the event store `store` (whose deadlines every state it moves an order into gets).
    pub fn new(store: S) -> Self {
        Self { store, registry: orderflow_domain::events::registry() }
    }

    /// Reads an SQS body (an EventBridge event) as a saga input, upcasting older versions.
    pub fn decode(&self, body: &str) -> Result<SagaInput, SagaError> {
        let raw = self.registry.read_bus_event(body)?;
        let input = match raw.event_type.as_str() {
            InventoryReserved::TYPE => SagaInput::InventoryReserved(raw.decode()?),
            InventoryRejected::TYPE => SagaInput::InventoryRejected(raw.decode()?),
            PaymentAuthorized::TYPE => SagaInput::PaymentAuthorized(raw.decode()?),
            PaymentDeclined::TYPE => SagaInput::PaymentDeclined(raw.decode()?),
            InventoryReleased::TYPE => SagaInput::InventoryReleased(raw.decode()?),
            ShipmentScheduled::TYPE => SagaInput::ShipmentScheduled(raw.decode()?),
            other => return Err(EnvelopeError::NotHandled(other.to_owned()).into()),
        };
        if input.order_id().trim().is_empty() {
            return Err(SagaError::NoOrderId { event_type: raw.event_type });
        }
        Ok(input)
    }

    /// Applies one input ([`saga::apply`]: load, decide, append conditionally, and again on a version conflict).
    pub async fn apply(&self, input: &SagaInput) -> Result<Applied, SagaError> {
        Ok(saga::apply(&self.store, input).await?)
    }

    /// Handles one SQS record.
    pub async fn handle_record(&self, record: SqsRecord) -> Result<(), HandlerError> {
        let input = self.decode(&record.body)?;
        match self.apply(&input).await? {
            Applied::Advanced { status, emitted } => {
                tracing::info!(
                    message_id = record.message_id,
                    order_id = input.order_id(),
                    status,
                    emitted,
                    "advanced"
                );
            }
            Applied::Ignored { reason, .. } => {
                tracing::info!(message_id = record.message_id, order_id = input.order_id(), reason, "ignored");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use orderflow_domain::events::{CANCELLED_FOR_PAYMENT_MISMATCH, OrderAdopted, OrderLine, OrderPlaced, PricedLine};
    use orderflow_domain::order::{Deadlines, Order, OrderEvent, OrderStatus};
    use orderflow_orders_store::{InMemoryOrders, Placement, StoreError};
    use orderflow_test_support::{Samples, SqsHarness, bus_body, failed_ids, sqs_batch};
    use orderflow_toolkit::Envelope;
    use orderflow_toolkit::idempotency::IdempotencyRecord;
    use serde_json::{Value, json};
    use time::OffsetDateTime;

    use super::*;

    const SAMPLES: Samples = Samples::of("order-saga");
    const INVENTORY_RESERVED: &str = "inventory-reserved.json";
    const PAYMENT_AUTHORIZED: &str = "payment-authorized.json";
    const PAYMENT_DECLINED: &str = "payment-declined.json";
    const SHIPMENT_SCHEDULED: &str = "shipment-scheduled.json";
    const UNKNOWN_TYPE: &str = "unknown-type.json";
    /// The order the sample events are about.
    const SAMPLE_ORDER: &str = "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c13";

    struct World {
        store: InMemoryOrders,
        saga: Saga<InMemoryOrders>,
        sqs: SqsHarness,
    }

    impl World {
        fn new() -> Self {
            Self::with_deadlines(Deadlines::default())
        }

        fn with_deadlines(deadlines: Deadlines) -> Self {
            let store = InMemoryOrders::new(deadlines);
            Self { saga: Saga::new(store.clone()), store, sqs: SqsHarness::with_concurrency(CONCURRENCY) }
        }

        /// The order as the orders API places it.
        async fn with_placed_order(self, order_id: &str) -> Self {
            let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
            let placed = Envelope::new(
                order_id,
                OrderPlaced {
                    currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                    order_id: order_id.into(),
                    customer_id: "c-1".into(),
                    lines,
                },
            );
            let placement = self.store.place(&placed, None::<&IdempotencyRecord>).await;
            assert_eq!(placement, Ok(Placement::Placed));
            self
        }

        /// Handles an SQS batch as the function does: the response lists the records to deliver again.
        async fn process(&self, event: SqsEvent) -> SqsBatchResponse {
            self.sqs.process(event, |record| self.saga.handle_record(record)).await
        }

        /// Delivers a sample SQS event; returns the ids of the records reported as failed.
        async fn deliver(&self, sample: &str) -> Vec<String> {
            failed_ids(&self.process(SAMPLES.event(sample)).await)
        }

        async fn order(&self, order_id: &str) -> Order {
            self.store.get(order_id).await.unwrap().expect("order is stored")
        }

        /// Event types the saga appended after the order's first event (placed or adopted), in commit order.
        fn emitted(&self) -> Vec<String> {
            let decided = |t: &String| t != OrderPlaced::TYPE && t != OrderAdopted::TYPE;
            self.store.outbox().into_iter().map(|r| r.detail_type).filter(decided).collect()
        }
    }

    fn outbox_detail(store: &InMemoryOrders, detail_type: &str) -> Value {
        let record = store.outbox().into_iter().find(|r| r.detail_type == detail_type).expect("event in the outbox");
        serde_json::from_str(&record.detail).unwrap()
    }

    #[tokio::test]
    async fn a_reservation_prices_the_order_and_requests_its_payment_through_the_outbox() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;

        let failed = world.deliver(INVENTORY_RESERVED).await;

        assert!(failed.is_empty(), "{failed:?}");
        let order = world.order(SAMPLE_ORDER).await;
        assert_eq!(order.status, OrderStatus::Reserved);
        assert_eq!(order.total, Some("25.00".parse().unwrap()));
        assert_eq!(world.emitted(), ["PaymentRequested"]);
        let request = outbox_detail(&world.store, "PaymentRequested");
        assert_eq!(request["data"]["amount"], "25.00");
        assert_eq!(request["correlation_id"], SAMPLE_ORDER);
        assert_eq!(request["causation_id"], "0a3e2d1c-4b5a-4968-8776-655443322101", "caused by the reservation");
        let record = world.store.outbox().into_iter().find(|r| r.detail_type == "PaymentRequested").unwrap();
        assert_eq!(record.source, "orderflow.saga");
        assert_eq!(record.partition, SAMPLE_ORDER);
    }

    #[tokio::test]
    async fn a_redelivered_reservation_changes_nothing_and_emits_nothing_twice() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;
        let writes = world.store.writes();

        let failed = world.deliver(INVENTORY_RESERVED).await;

        assert!(failed.is_empty(), "a duplicate is acknowledged: {failed:?}");
        assert_eq!(world.store.writes(), writes, "a duplicate writes nothing");
        assert_eq!(world.emitted(), ["PaymentRequested"]);
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn authorized_payment_confirms_and_a_scheduled_shipment_ships_the_order() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;

        assert!(world.deliver(PAYMENT_AUTHORIZED).await.is_empty());
        assert_eq!(world.order(SAMPLE_ORDER).await.status, OrderStatus::Confirmed);
        assert!(world.deliver(SHIPMENT_SCHEDULED).await.is_empty());

        let order = world.order(SAMPLE_ORDER).await;
        assert_eq!(order.status, OrderStatus::Shipped);
        let history: Vec<_> = order.history.iter().map(|h| h.event_type.as_str()).collect();
        assert_eq!(history, ["OrderPlaced", "PaymentRequested", "OrderConfirmed", "OrderShipped"], "its own events");
        assert_eq!(order.version, 4);
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderConfirmed", "OrderShipped"]);
        let shipped = outbox_detail(&world.store, "OrderShipped");
        assert_eq!(shipped["data"]["shipment_id"], "ship-5d8c2a1e");
        assert_eq!(shipped["data"]["lines"], json!([{"sku": "SKU-1", "quantity": 2}]));
    }

    #[tokio::test]
    async fn a_declined_payment_asks_inventory_to_release_the_stock() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;

        assert!(world.deliver(PAYMENT_DECLINED).await.is_empty());

        let order = world.order(SAMPLE_ORDER).await;
        assert_eq!(order.status, OrderStatus::Releasing);
        assert_eq!(order.status.public(), OrderStatus::Reserved, "cancelled once stock is back");
        assert_eq!(world.emitted(), ["PaymentRequested", "InventoryReleaseRequested"]);
        let release = outbox_detail(&world.store, "InventoryReleaseRequested");
        assert_eq!(release["data"]["reason"], "total 25.00 exceeds the customer's limit of 20.00");
    }

    #[tokio::test]
    async fn a_payment_authorized_for_another_amount_cancels_the_order_for_compensation_and_is_dead_lettered_once() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;
        let mut authorized: Value = serde_json::from_str(&SAMPLES.sqs_body(PAYMENT_AUTHORIZED)).unwrap();
        authorized["detail"]["data"]["amount"] = json!("2.50");
        let wrong_amount = authorized.to_string();

        let failed = failed_ids(&world.process(sqs_batch(std::slice::from_ref(&wrong_amount))).await);

        assert!(failed.is_empty(), "refused for good, not retried: {failed:?}");
        let order = world.order(SAMPLE_ORDER).await;
        assert_eq!((order.status, order.deadline_at), (OrderStatus::Cancelled, None));
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderCancelled"], "the compensation goes through the outbox");
        let cancelled = outbox_detail(&world.store, "OrderCancelled");
        assert_eq!(cancelled["data"]["reason"], CANCELLED_FOR_PAYMENT_MISMATCH);
        assert_eq!(cancelled["causation_id"], "1b4f3e2d-5c6b-4a79-9887-766554433212", "caused by the authorization");
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            letters[0].reason,
            format!(
                "refused: payment pay-5d8c2a1e of order {SAMPLE_ORDER} authorized 2.50 USD, not the order's total \
                 25.00 USD: order cancelled"
            )
        );
        assert_eq!(letters[0].body, wrong_amount, "the original body is kept");

        // A redelivery (a duplicate, or a dead-letter send that failed) finds the order cancelled.
        let writes = world.store.writes();
        let failed = failed_ids(&world.process(sqs_batch(&[wrong_amount])).await);

        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(world.store.writes(), writes, "nothing appended twice");
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderCancelled"]);
        assert_eq!(world.sqs.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn a_payment_before_the_reservation_is_retried_later_and_writes_nothing() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        let writes = world.store.writes();

        let failed = world.deliver(PAYMENT_AUTHORIZED).await;

        assert_eq!(failed, ["7a2e2e3d-9a4f-4c8b-8e1f-3b7d6c5f4a32"], "reported for redelivery");
        assert!(world.sqs.dead_letters().is_empty(), "not poison: it only came early");
        assert_eq!(world.store.writes(), writes);
        assert_eq!(world.order(SAMPLE_ORDER).await.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn a_reservation_for_an_order_not_seen_yet_creates_it_from_the_event() {
        let world = World::new();

        assert!(world.deliver(INVENTORY_RESERVED).await.is_empty());

        let order = world.order(SAMPLE_ORDER).await;
        assert_eq!(order.status, OrderStatus::Reserved);
        assert_eq!(order.customer_id, "c-1");
        assert_eq!(order.history[0].event_type, "OrderAdopted", "the stream starts with the adoption");
        assert_eq!(world.emitted(), ["PaymentRequested"]);
    }

    #[tokio::test]
    async fn an_unknown_event_type_goes_to_the_dead_letter_queue_with_its_reason() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;

        let failed = world.deliver(UNKNOWN_TYPE).await;

        assert!(failed.is_empty(), "poison is acknowledged, not retried");
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].message_id, "ad5b5b6a-cd7c-4fbd-9b4c-6eaa9f8c7d65");
        assert_eq!(letters[0].reason, r#"unknown event type "OrderTeleported""#);
        assert!(world.emitted().is_empty());
    }

    #[tokio::test]
    async fn malformed_bodies_and_events_the_saga_does_not_handle_are_dead_lettered() {
        let world = World::new();
        let placed = Envelope::new(
            "o-1",
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: "o-1".into(),
                customer_id: "c".into(),
                lines: vec![],
            },
        );
        let not_ours = bus_body(&placed);
        let mut bad_data: Value = serde_json::from_str(&SAMPLES.sqs_body(INVENTORY_RESERVED)).unwrap();
        bad_data["detail"]["data"]["total"] = json!(25.5);
        let mut no_order: Value = serde_json::from_str(&SAMPLES.sqs_body(SHIPMENT_SCHEDULED)).unwrap();
        no_order["detail"]["data"]["order_id"] = json!("");
        let event = sqs_batch(&["not json".into(), not_ours, bad_data.to_string(), no_order.to_string()]);

        let response = world.process(event).await;

        assert!(response.batch_item_failures.is_empty());
        let mut reasons: Vec<_> = world.sqs.dead_letters().into_iter().map(|l| l.reason).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 4);
        assert_eq!(reasons[0], "ShipmentScheduled has an empty order_id");
        assert!(reasons[1].starts_with("invalid data for InventoryReserved v1"), "{reasons:?}");
        assert!(reasons[2].starts_with("malformed event"), "{reasons:?}");
        assert_eq!(reasons[3], "this consumer does not handle OrderPlaced");
        assert!(world.store.orders().is_empty());
    }

    #[tokio::test]
    async fn each_step_gives_the_order_the_configured_deadline_and_replies_after_a_deadline_cancel_change_nothing() {
        let world = World::with_deadlines(Deadlines::from_seconds(5).unwrap()).with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;
        let reserved = world.order(SAMPLE_ORDER).await;
        assert_eq!(reserved.deadline_at, Some(time::macros::datetime!(2026-11-24 10:00:06 UTC)), "occurred_at + 5 s");

        let check = SagaInput::DeadlinePassed { order_id: SAMPLE_ORDER.into(), now: OffsetDateTime::now_utc() };
        let cancelled = world.saga.apply(&check).await.unwrap();
        assert_eq!(cancelled, Applied::Advanced { status: "CANCELLED", emitted: "OrderCancelled".into() });
        let writes = world.store.writes();

        for late in [PAYMENT_AUTHORIZED, PAYMENT_DECLINED, SHIPMENT_SCHEDULED] {
            assert!(world.deliver(late).await.is_empty(), "a late reply is acknowledged, not retried");
        }

        assert_eq!(world.store.writes(), writes, "and writes nothing");
        assert_eq!(world.order(SAMPLE_ORDER).await.status, OrderStatus::Cancelled);
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderCancelled"]);
        assert_eq!(outbox_detail(&world.store, "OrderCancelled")["data"]["reason"], "deadline");
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_store_outage_is_retried_not_dead_lettered() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.store.fail_next(StoreError::Table(orderflow_aws::StoreError::Transient(
            "ProvisionedThroughputExceededException".into(),
        )));

        let failed = world.deliver(INVENTORY_RESERVED).await;

        assert_eq!(failed, ["6f1d1d2c-8f3e-4b7a-9d0e-2a6c5b4e3f21"]);
        assert!(world.sqs.dead_letters().is_empty());
        assert!(world.deliver(INVENTORY_RESERVED).await.is_empty(), "the redelivery succeeds");
        assert_eq!(world.emitted(), ["PaymentRequested"]);
    }

    /// A store whose order changes between the saga's read and its write, as when another invocation processes
    /// a duplicate of the same event at the same moment.
    struct Racing {
        inner: InMemoryOrders,
        rival: Saga<InMemoryOrders>,
        rival_input: std::sync::Mutex<Option<SagaInput>>,
    }

    impl OrderStore for Racing {
        async fn place(
            &self,
            placed: &Envelope<OrderPlaced>,
            key: Option<&IdempotencyRecord>,
        ) -> Result<Placement, StoreError> {
            self.inner.place(placed, key).await
        }

        async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
            self.inner.get(order_id).await
        }

        async fn append(&self, current: Option<&Order>, events: &[OrderEvent]) -> Result<Order, StoreError> {
            let rival_input = self.rival_input.lock().unwrap().take();
            if let Some(input) = rival_input {
                self.rival.apply(&input).await.expect("the rival applies first");
            }
            self.inner.append(current, events).await
        }

        async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.overdue(now, limit).await
        }
    }

    #[tokio::test]
    async fn a_duplicate_applied_concurrently_loses_the_version_race_and_is_then_ignored() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        let body = SAMPLES.sqs_body(INVENTORY_RESERVED);
        let input = world.saga.decode(&body).unwrap();
        let racing = Racing {
            inner: world.store.clone(),
            rival: Saga::new(world.store.clone()),
            rival_input: std::sync::Mutex::new(Some(input.clone())),
        };

        let outcome = Saga::new(racing).apply(&input).await.unwrap();

        assert!(matches!(outcome, Applied::Ignored { .. }), "{outcome:?}");
        assert_eq!(world.emitted(), ["PaymentRequested"], "emitted once, by the rival");
    }

    #[tokio::test]
    async fn a_conflicting_step_is_decided_again_on_the_order_as_it_now_is() {
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        world.deliver(INVENTORY_RESERVED).await;
        // The saga reads the RESERVED order to apply a decline; before it saves, the payment is authorized.
        let racing = Racing {
            inner: world.store.clone(),
            rival: Saga::new(world.store.clone()),
            rival_input: std::sync::Mutex::new(Some(world.saga.decode(&SAMPLES.sqs_body(PAYMENT_AUTHORIZED)).unwrap())),
        };
        let declined = world.saga.decode(&SAMPLES.sqs_body(PAYMENT_DECLINED)).unwrap();

        let outcome = Saga::new(racing).apply(&declined).await.unwrap();

        assert!(matches!(outcome, Applied::Ignored { .. }), "a decline after the confirmation is stale: {outcome:?}");
        assert_eq!(world.order(SAMPLE_ORDER).await.status, OrderStatus::Confirmed);
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderConfirmed"], "no release for a confirmed order");
    }

    #[tokio::test]
    async fn an_order_that_never_stops_changing_is_retried_later() {
        struct AlwaysConflict(InMemoryOrders);
        impl OrderStore for AlwaysConflict {
            async fn place(
                &self,
                p: &Envelope<OrderPlaced>,
                k: Option<&IdempotencyRecord>,
            ) -> Result<Placement, StoreError> {
                self.0.place(p, k).await
            }
            async fn get(&self, id: &str) -> Result<Option<Order>, StoreError> {
                self.0.get(id).await
            }
            async fn append(&self, _: Option<&Order>, _: &[OrderEvent]) -> Result<Order, StoreError> {
                Err(StoreError::Conflict("TransactionConflict".into()))
            }
            async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
                self.0.overdue(now, limit).await
            }
        }
        let world = World::new().with_placed_order(SAMPLE_ORDER).await;
        let saga = Saga::new(AlwaysConflict(world.store.clone()));
        let input = saga.decode(&SAMPLES.sqs_body(INVENTORY_RESERVED)).unwrap();

        let err = saga.apply(&input).await.unwrap_err();

        assert!(matches!(err, SagaError::Apply(ApplyError::Contended { .. })), "{err}");
        assert_eq!(HandlerError::from(err).class(), "Transient");
    }

    // ------------------------------------------------------------------ whole sagas, shuffled and duplicated

    fn reserved(order_id: &str) -> SagaInput {
        SagaInput::InventoryReserved(Envelope::new(
            order_id,
            InventoryReserved {
                order_id: order_id.into(),
                customer_id: "c-1".into(),
                lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 2, unit_price: "12.50".parse().unwrap() }],
                total: "25.00".parse().unwrap(),
            },
        ))
    }

    fn rejected(order_id: &str) -> SagaInput {
        SagaInput::InventoryRejected(Envelope::new(
            order_id,
            InventoryRejected {
                order_id: order_id.into(),
                customer_id: "c-1".into(),
                lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }],
                unavailable: vec!["SKU-1".into()],
                reason: "out of stock: SKU-1".into(),
            },
        ))
    }

    fn authorized(order_id: &str) -> SagaInput {
        SagaInput::PaymentAuthorized(Envelope::new(
            order_id,
            PaymentAuthorized { order_id: order_id.into(), payment_id: "p-1".into(), amount: "25.00".parse().unwrap() },
        ))
    }

    fn declined(order_id: &str) -> SagaInput {
        SagaInput::PaymentDeclined(Envelope::new(
            order_id,
            PaymentDeclined { order_id: order_id.into(), amount: "25.00".parse().unwrap(), reason: "limit".into() },
        ))
    }

    fn released(order_id: &str) -> SagaInput {
        SagaInput::InventoryReleased(Envelope::new(order_id, InventoryReleased { order_id: order_id.into() }))
    }

    fn scheduled(order_id: &str) -> SagaInput {
        SagaInput::ShipmentScheduled(Envelope::new(
            order_id,
            ShipmentScheduled { order_id: order_id.into(), shipment_id: "s-1".into() },
        ))
    }

    /// The SQS body (EventBridge event) that carries an input, as the relay and the rule deliver it.
    fn input_body(input: &SagaInput) -> String {
        match input {
            SagaInput::InventoryReserved(e) => bus_body(e),
            SagaInput::InventoryRejected(e) => bus_body(e),
            SagaInput::PaymentAuthorized(e) => bus_body(e),
            SagaInput::PaymentDeclined(e) => bus_body(e),
            SagaInput::InventoryReleased(e) => bus_body(e),
            SagaInput::ShipmentScheduled(e) => bus_body(e),
            SagaInput::DeadlinePassed { .. } | SagaInput::CancelRequested { .. } => {
                unreachable!("the sweeper's check and a customer's request never travel on the bus")
            }
        }
    }

    /// Every ordering of `items` (Heap's algorithm).
    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        fn heap<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
            if k <= 1 {
                out.push(items.clone());
                return;
            }
            for i in 0..k - 1 {
                heap(k - 1, items, out);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                items.swap(j, k - 1);
            }
            heap(k - 1, items, out);
        }
        let mut items = items.to_vec();
        let mut out = Vec::new();
        heap(items.len(), &mut items, &mut out);
        out
    }

    /// Delivers `bodies` in the given order through a simulated queue: a record that fails transiently goes back
    /// to the end of the queue (it becomes visible again later), an acknowledged one is gone. Panics on poison.
    async fn run_queue(saga: &Saga<InMemoryOrders>, bodies: Vec<String>) {
        let mut queue: VecDeque<String> = bodies.into();
        let mut deliveries = 0;
        while let Some(body) = queue.pop_front() {
            deliveries += 1;
            assert!(deliveries < 200, "the saga does not converge");
            let record = SqsRecord {
                message_id: format!("m-{deliveries}"),
                body: body.clone(),
                receive_count: 1,
                attributes: BTreeMap::new(),
            };
            match saga.handle_record(record).await {
                Ok(()) => {}
                Err(HandlerError::Transient { .. }) => queue.push_back(body),
                Err(err @ HandlerError::Permanent(_)) => panic!("poison in a valid saga: {err}"),
            }
        }
    }

    /// Runs one saga path with every input delivered twice, in every order, with and without the order placed
    /// first, and checks the final state and that each output was emitted exactly once.
    async fn every_shuffled_and_duplicated_delivery(
        inputs: &[SagaInput],
        final_status: OrderStatus,
        outputs: &[&str],
    ) -> usize {
        let order_id = inputs[0].order_id().to_owned();
        let bodies: Vec<String> = inputs.iter().map(input_body).collect();
        let doubled: Vec<String> = bodies.iter().chain(&bodies).cloned().collect();
        let mut runs = 0;
        for placed_first in [true, false] {
            for delivery in permutations(&doubled) {
                let world = if placed_first { World::new().with_placed_order(&order_id).await } else { World::new() };
                run_queue(&world.saga, delivery.clone()).await;

                let order = world.order(&order_id).await;
                assert_eq!(order.status, final_status, "delivery {delivery:#?}");
                let mut emitted = world.emitted();
                emitted.sort();
                let mut expected: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
                expected.sort();
                assert_eq!(emitted, expected, "each output exactly once; delivery {delivery:#?}");
                assert_eq!(order.history.len(), inputs.len() + 1, "each input applied once");
                runs += 1;
            }
        }
        runs
    }

    #[tokio::test]
    async fn a_shipped_saga_ends_shipped_under_any_order_of_duplicated_deliveries() {
        let id = "o-ship";
        let runs = every_shuffled_and_duplicated_delivery(
            &[reserved(id), authorized(id), scheduled(id)],
            OrderStatus::Shipped,
            &["PaymentRequested", "OrderConfirmed", "OrderShipped"],
        )
        .await;
        assert_eq!(runs, 2 * 720);
    }

    #[tokio::test]
    async fn a_compensated_saga_ends_cancelled_under_any_order_of_duplicated_deliveries() {
        let id = "o-cancel";
        every_shuffled_and_duplicated_delivery(
            &[reserved(id), declined(id), released(id)],
            OrderStatus::Cancelled,
            &["PaymentRequested", "InventoryReleaseRequested", "OrderCancelled"],
        )
        .await;
    }

    #[tokio::test]
    async fn a_rejected_saga_ends_rejected_under_duplicated_deliveries() {
        let id = "o-reject";
        every_shuffled_and_duplicated_delivery(&[rejected(id)], OrderStatus::Rejected, &["OrderRejected"]).await;
    }

    #[tokio::test]
    async fn a_whole_batch_of_duplicates_processed_concurrently_applies_each_event_once() {
        let world = World::new().with_placed_order("o-batch").await;
        world.process(sqs_batch(&[input_body(&reserved("o-batch"))])).await;
        let authorized = input_body(&authorized("o-batch"));
        let event = sqs_batch(&vec![authorized; 10]);

        let response = world.process(event).await;

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(world.order("o-batch").await.status, OrderStatus::Confirmed);
        assert_eq!(world.emitted(), ["PaymentRequested", "OrderConfirmed"]);
    }
}
