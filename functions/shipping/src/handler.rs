//! The shipping function: schedules one shipment per confirmed order, and calls it off when the order is
//! cancelled.
//!
//! - `OrderConfirmed`: ONE transaction: `SHIPMENT#<order>` (conditional on none existing: the idempotency) and
//!   `ShipmentScheduled`. A redelivery finds the shipment and changes nothing, emits nothing; so does an order
//!   cancelled before it was confirmed (its item is a tombstone).
//! - `OrderCancelled` (the compensation trigger, e.g. a deadline that passed): a `SCHEDULED` shipment becomes
//!   `CANCELLED` with `ShipmentCancelled`, in one transaction; no shipment yet: a `CANCELLED` tombstone, so a late
//!   `OrderConfirmed` schedules nothing. Both writes are conditional on the item, so against a concurrent
//!   `OrderConfirmed` the loser reads again and acts on what it finds.
//! - Anything else is a permanent failure: the record goes to the DLQ with the reason.

use orderflow_aws::StoreError;
use orderflow_domain::events::{self, OrderCancelled, OrderConfirmed, ShipmentCancelled, ShipmentScheduled};
use orderflow_toolkit::batch::log_effect;
use orderflow_toolkit::outbox::Written;
use orderflow_toolkit::{Envelope, EnvelopeError, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{Shipment, ShipmentStatus, ShipmentStore};

/// How many times a cancellation reads the order's item again after a concurrent write changed it. Each change is
/// a step towards a final state (none -> scheduled -> cancelled), so few are ever needed.
pub const CANCEL_ATTEMPTS: u32 = 4;

/// What a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Scheduled,
    /// The scheduled shipment was called off.
    Cancelled,
    /// The order was cancelled before a shipment was scheduled: its tombstone now stops any shipment.
    Tombstoned,
    /// The order's shipment was already scheduled (or cancelled): nothing changed.
    Duplicate,
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error(transparent)]
    Event(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {order_id}: concurrent writes changed its shipment {attempts} times in a row")]
    Contended { order_id: String, attempts: u32 },
}

impl From<ShippingError> for HandlerError {
    fn from(err: ShippingError) -> Self {
        match err {
            ShippingError::Store(err) => err.into(),
            ShippingError::Contended { .. } => HandlerError::transient(err),
            ShippingError::Event(_) => HandlerError::permanent(err),
        }
    }
}

/// The shipment id of an order: stable, so every delivery of the confirmation names the same shipment.
pub fn shipment_id(order_id: &str) -> String {
    format!("shp-{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("orderflow.shipping/{order_id}").as_bytes()))
}

/// The shipping handler over its store.
#[derive(Debug, Clone)]
pub struct Shipping<S> {
    store: S,
    registry: Registry,
}

impl<S: ShipmentStore> Shipping<S> {
    pub fn new(store: S) -> Self {
        Self { store, registry: events::registry() }
    }

    /// Handles one SQS record.
    pub async fn handle(&self, record: SqsRecord) -> Result<(), HandlerError> {
        log_effect(&record, self.apply(&record.body)).await
    }

    /// Applies one bus event (an SQS body).
    pub async fn apply(&self, body: &str) -> Result<Effect, ShippingError> {
        let raw = self.registry.read_bus_event(body)?;
        match raw.event_type.as_str() {
            OrderConfirmed::TYPE => self.schedule(raw.decode()?).await,
            OrderCancelled::TYPE => self.cancel(raw.decode()?).await,
            _ => Err(EnvelopeError::NotHandled(raw.event_type).into()),
        }
    }

    async fn schedule(&self, confirmed: Envelope<OrderConfirmed>) -> Result<Effect, ShippingError> {
        let order_id = &confirmed.data.order_id;
        let shipment = Shipment {
            order_id: order_id.clone(),
            shipment_id: shipment_id(order_id),
            scheduled_at: OffsetDateTime::now_utc(),
        };
        let event = ShipmentScheduled { order_id: order_id.clone(), shipment_id: shipment.shipment_id.clone() };
        match self.store.schedule(&shipment, &OutboxRecord::caused_by(&confirmed, event)).await? {
            Written::Committed => Ok(Effect::Scheduled),
            Written::Duplicate => Ok(Effect::Duplicate),
        }
    }

    /// Calls off the order's shipment, or makes sure it never gets one (see the module docs).
    async fn cancel(&self, cancelled: Envelope<OrderCancelled>) -> Result<Effect, ShippingError> {
        let order_id = &cancelled.data.order_id;
        for attempt in 1..=CANCEL_ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let (written, effect) = match self.store.status(order_id).await? {
                Some(ShipmentStatus::Cancelled) => return Ok(Effect::Duplicate),
                Some(ShipmentStatus::Scheduled) => {
                    let event = ShipmentCancelled { order_id: order_id.clone(), shipment_id: shipment_id(order_id) };
                    let record = OutboxRecord::caused_by(&cancelled, event);
                    (self.store.cancel(order_id, now, &record).await?, Effect::Cancelled)
                }
                None => (self.store.tombstone(order_id, now).await?, Effect::Tombstoned),
            };
            if written == Written::Committed {
                return Ok(effect);
            }
            tracing::info!(order_id, attempt, "the shipment changed since the read, reading again");
        }
        Err(ShippingError::Contended { order_id: order_id.clone(), attempts: CANCEL_ATTEMPTS })
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_test_support::{Samples, SqsHarness, bus_body, envelopes, failed_ids, sqs_batch};
    use orderflow_toolkit::RawEnvelope;

    use super::*;
    use crate::memory::MemoryShipments;
    use crate::store::ShipmentStatus;

    const SAMPLES: Samples = Samples::of("shipping");
    const ORDER_CONFIRMED: &str = "order-confirmed.json";
    const DUPLICATE_BATCH: &str = "duplicate-batch.json";
    const MALFORMED: &str = "malformed.json";
    const ORDER_CANCELLED: &str = "order-cancelled.json";

    const ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";

    struct World {
        store: MemoryShipments,
        shipping: Shipping<MemoryShipments>,
        sqs: SqsHarness,
    }

    impl World {
        fn new() -> Self {
            let store = MemoryShipments::default();
            Self { shipping: Shipping::new(store.clone()), store, sqs: SqsHarness::with_concurrency(4) }
        }

        async fn process(&self, event: SqsEvent) -> Vec<String> {
            failed_ids(&self.sqs.process(event, |record| self.shipping.handle(record)).await)
        }

        fn outbox(&self) -> Vec<RawEnvelope> {
            envelopes(&self.store.outbox())
        }
    }

    #[tokio::test]
    async fn order_confirmed_schedules_a_shipment_and_emits_shipment_scheduled_in_one_write() {
        let world = World::new();

        let failed = world.process(SAMPLES.event(ORDER_CONFIRMED)).await;

        assert!(failed.is_empty());
        let shipment = world.store.stored(ORDER).unwrap();
        assert_eq!(shipment.shipment_id, shipment_id(ORDER));
        let scheduled = world.outbox()[0].decode::<ShipmentScheduled>().unwrap();
        assert_eq!(scheduled.data.shipment_id, shipment.shipment_id);
        assert_eq!(scheduled.correlation_id, ORDER);
        assert_eq!(scheduled.causation_id.unwrap().to_string(), "0b7f9c4e-7d4a-4f7e-9a3c-2d1e5f6a7b21");
        assert_eq!(world.store.outbox()[0].source, "orderflow.shipping");
        assert_eq!(world.store.write_requests(), 1);
    }

    #[tokio::test]
    async fn the_same_confirmation_twice_in_one_batch_schedules_one_shipment_and_one_event() {
        let world = World::new();

        let failed = world.process(SAMPLES.event(DUPLICATE_BATCH)).await;

        assert!(failed.is_empty(), "both records are acknowledged");
        assert_eq!(world.store.shipments(), 1);
        assert_eq!(world.store.outbox().len(), 1);
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_redelivered_confirmation_changes_nothing_and_emits_nothing() {
        let world = World::new();
        world.process(SAMPLES.event(ORDER_CONFIRMED)).await;
        let first = world.store.stored(ORDER).unwrap();

        let failed = world.process(SAMPLES.event(ORDER_CONFIRMED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored(ORDER).unwrap(), first, "the shipment keeps its first schedule");
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn a_malformed_record_goes_to_the_dlq_with_the_reason_and_writes_nothing() {
        let world = World::new();

        let failed = world.process(SAMPLES.event(MALFORMED)).await;

        assert!(failed.is_empty());
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].reason.starts_with("invalid data for OrderConfirmed v1:"), "{}", letters[0].reason);
        assert!(letters[0].reason.contains("total"), "names the field: {}", letters[0].reason);
        assert_eq!(world.store.write_requests(), 0);
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_and_the_retry_schedules_once() {
        let world = World::new();
        world.store.fail_next_writes(1);

        assert_eq!(world.process(SAMPLES.event(ORDER_CONFIRMED)).await.len(), 1);
        assert!(world.process(SAMPLES.event(ORDER_CONFIRMED)).await.is_empty());

        assert_eq!(world.store.shipments(), 1);
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_event_type_shipping_does_not_handle_goes_to_the_dlq_naming_it() {
        let world = World::new();
        let shipped = events::OrderShipped {
            order_id: ORDER.into(),
            customer_id: "c-1".into(),
            shipment_id: "s".into(),
            lines: vec![],
        };

        world.process(sqs_batch(&[bus_body(&Envelope::new(ORDER, shipped))])).await;

        assert_eq!(world.sqs.dead_letters()[0].reason, "this consumer does not handle OrderShipped");
    }

    // ------------------------------------------------------------------ OrderCancelled: the compensation

    #[tokio::test]
    async fn order_cancelled_calls_off_the_scheduled_shipment_with_shipment_cancelled_in_one_write_once() {
        let world = World::new();
        world.process(SAMPLES.event(ORDER_CONFIRMED)).await;
        let writes = world.store.write_requests();

        assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty());

        assert_eq!(world.store.status_of(ORDER), Some(ShipmentStatus::Cancelled));
        assert_eq!(world.store.write_requests() - writes, 1);
        let cancelled = world.outbox()[1].decode::<ShipmentCancelled>().unwrap();
        assert_eq!(cancelled.data.shipment_id, shipment_id(ORDER));
        assert_eq!(cancelled.causation_id.unwrap().to_string(), "1c8a0d5f-8e5b-4a8f-8b4d-3e2f6a7b8c06");
        assert_eq!(world.store.outbox()[1].source, "orderflow.shipping");

        assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty(), "a redelivery is acknowledged");
        assert_eq!(world.store.outbox().len(), 2, "and emits nothing");
    }

    #[tokio::test]
    async fn order_cancelled_before_the_confirmation_leaves_a_tombstone_so_a_late_confirmation_schedules_nothing() {
        let world = World::new();

        assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty());
        assert_eq!(world.store.status_of(ORDER), Some(ShipmentStatus::Cancelled));
        assert!(world.store.outbox().is_empty());

        assert!(
            world.process(SAMPLES.event(ORDER_CONFIRMED)).await.is_empty(),
            "the late confirmation is acknowledged"
        );
        assert_eq!(world.store.shipments(), 0, "and schedules nothing");
        assert!(world.store.outbox().is_empty());
        assert!(world.sqs.dead_letters().is_empty());
    }

    /// A store where `rival` (an SQS body) is applied by another delivery right before the first write of `kind`.
    struct RivalBefore {
        inner: MemoryShipments,
        kind: &'static str,
        rival: tokio::sync::Mutex<Option<String>>,
    }

    impl RivalBefore {
        async fn rival_goes_first(&self, kind: &str) {
            if kind != self.kind {
                return;
            }
            if let Some(body) = self.rival.lock().await.take() {
                Shipping::new(self.inner.clone()).apply(&body).await.expect("the rival applies");
            }
        }
    }

    impl ShipmentStore for RivalBefore {
        async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Written, StoreError> {
            self.rival_goes_first("schedule").await;
            self.inner.schedule(shipment, outbox).await
        }
        async fn status(&self, order_id: &str) -> Result<Option<ShipmentStatus>, StoreError> {
            self.inner.status(order_id).await
        }
        async fn cancel(&self, o: &str, at: OffsetDateTime, outbox: &OutboxRecord) -> Result<Written, StoreError> {
            self.inner.cancel(o, at, outbox).await
        }
        async fn tombstone(&self, order_id: &str, at: OffsetDateTime) -> Result<Written, StoreError> {
            self.rival_goes_first("tombstone").await;
            self.inner.tombstone(order_id, at).await
        }
    }

    #[tokio::test]
    async fn a_cancellation_that_loses_the_race_to_the_schedule_reads_again_and_calls_the_shipment_off() {
        let store = MemoryShipments::default();
        let rival = tokio::sync::Mutex::new(Some(SAMPLES.sqs_body(ORDER_CONFIRMED)));
        let racing = RivalBefore { inner: store.clone(), kind: "tombstone", rival };

        let effect = Shipping::new(racing).apply(&SAMPLES.sqs_body(ORDER_CANCELLED)).await.unwrap();

        assert_eq!(effect, Effect::Cancelled);
        assert_eq!(store.status_of(ORDER), Some(ShipmentStatus::Cancelled));
        let types: Vec<String> = store.outbox().into_iter().map(|r| r.detail_type).collect();
        assert_eq!(types, ["ShipmentScheduled", "ShipmentCancelled"]);
    }

    #[tokio::test]
    async fn a_schedule_that_loses_the_race_to_the_cancellation_schedules_nothing() {
        let store = MemoryShipments::default();
        let rival = tokio::sync::Mutex::new(Some(SAMPLES.sqs_body(ORDER_CANCELLED)));
        let racing = RivalBefore { inner: store.clone(), kind: "schedule", rival };

        let effect = Shipping::new(racing).apply(&SAMPLES.sqs_body(ORDER_CONFIRMED)).await.unwrap();

        assert_eq!(effect, Effect::Duplicate);
        assert_eq!(store.status_of(ORDER), Some(ShipmentStatus::Cancelled));
        assert_eq!(store.shipments(), 0);
        assert!(store.outbox().is_empty());
    }
}
