//! The shipping function: schedules one shipment per confirmed order.
//!
//! - `OrderConfirmed`: ONE transaction: `SHIPMENT#<order>` (conditional on none existing: the idempotency) and
//!   `ShipmentScheduled`. A redelivery finds the shipment and changes nothing, emits nothing.
//! - Anything else is a permanent failure: the record goes to the DLQ with the reason.

use orderflow_domain::events::{self, OrderConfirmed, ShipmentScheduled};
use orderflow_toolkit::batch::log_effect;
use orderflow_toolkit::outbox::Written;
use orderflow_toolkit::{Envelope, EnvelopeError, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{Shipment, ShipmentStore, StoreError};

/// What a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Scheduled,
    /// The order's shipment was already scheduled: nothing changed.
    Duplicate,
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error(transparent)]
    Event(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ShippingError> for HandlerError {
    fn from(err: ShippingError) -> Self {
        match err {
            ShippingError::Store(StoreError::Unavailable(_)) => HandlerError::transient(err),
            ShippingError::Event(_) | ShippingError::Store(StoreError::Invalid(_)) => HandlerError::permanent(err),
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
        if raw.event_type != OrderConfirmed::TYPE {
            return Err(EnvelopeError::NotHandled(raw.event_type).into());
        }
        let confirmed: Envelope<OrderConfirmed> = raw.decode()?;
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
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_toolkit::{MemoryDeadLetters, RawEnvelope, SqsBatchProcessor};

    use super::*;
    use crate::memory::MemoryShipments;

    const ORDER_CONFIRMED: &str = include_str!("../../../events/shipping/order-confirmed.json");
    const DUPLICATE_BATCH: &str = include_str!("../../../events/shipping/duplicate-batch.json");
    const MALFORMED: &str = include_str!("../../../events/shipping/malformed.json");

    const ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";

    fn sqs_event(sample: &str) -> SqsEvent {
        serde_json::from_str(sample).expect("sample is an SQS event")
    }

    struct World {
        store: MemoryShipments,
        dead_letters: MemoryDeadLetters,
        shipping: Shipping<MemoryShipments>,
        processor: SqsBatchProcessor<MemoryDeadLetters>,
    }

    impl World {
        fn new() -> Self {
            let store = MemoryShipments::default();
            let dead_letters = MemoryDeadLetters::default();
            Self {
                shipping: Shipping::new(store.clone()),
                processor: SqsBatchProcessor::new(dead_letters.clone()).with_concurrency(4),
                store,
                dead_letters,
            }
        }

        async fn process(&self, event: SqsEvent) -> Vec<String> {
            let response = self.processor.process(event, |record| self.shipping.handle(record)).await.unwrap();
            response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
        }

        fn outbox(&self) -> Vec<RawEnvelope> {
            self.store.outbox().iter().map(|r| serde_json::from_str(&r.detail).unwrap()).collect()
        }
    }

    #[tokio::test]
    async fn order_confirmed_schedules_a_shipment_and_emits_shipment_scheduled_in_one_write() {
        let world = World::new();

        let failed = world.process(sqs_event(ORDER_CONFIRMED)).await;

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

        let failed = world.process(sqs_event(DUPLICATE_BATCH)).await;

        assert!(failed.is_empty(), "both records are acknowledged");
        assert_eq!(world.store.shipments(), 1);
        assert_eq!(world.store.outbox().len(), 1);
        assert!(world.dead_letters.letters().is_empty());
    }

    #[tokio::test]
    async fn a_redelivered_confirmation_changes_nothing_and_emits_nothing() {
        let world = World::new();
        world.process(sqs_event(ORDER_CONFIRMED)).await;
        let first = world.store.stored(ORDER).unwrap();

        let failed = world.process(sqs_event(ORDER_CONFIRMED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored(ORDER).unwrap(), first, "the shipment keeps its first schedule");
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn a_malformed_record_goes_to_the_dlq_with_the_reason_and_writes_nothing() {
        let world = World::new();

        let failed = world.process(sqs_event(MALFORMED)).await;

        assert!(failed.is_empty());
        let letters = world.dead_letters.letters();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].reason.starts_with("invalid data for OrderConfirmed v1:"), "{}", letters[0].reason);
        assert!(letters[0].reason.contains("total"), "names the field: {}", letters[0].reason);
        assert_eq!(world.store.write_requests(), 0);
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_and_the_retry_schedules_once() {
        let world = World::new();
        world.store.fail_next_writes(1);

        assert_eq!(world.process(sqs_event(ORDER_CONFIRMED)).await.len(), 1);
        assert!(world.process(sqs_event(ORDER_CONFIRMED)).await.is_empty());

        assert_eq!(world.store.shipments(), 1);
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_event_type_shipping_does_not_handle_goes_to_the_dlq_naming_it() {
        let world = World::new();
        let body = serde_json::json!({"id": Uuid::new_v4(), "detail-type": "OrderShipped", "source": "orderflow.saga",
            "time": "2026-11-24T10:00:00Z", "detail": Envelope::new(ORDER, events::OrderShipped {
                order_id: ORDER.into(), customer_id: "c-1".into(), shipment_id: "s".into(), lines: vec![] })});
        let event =
            serde_json::from_value(serde_json::json!({"Records": [{"messageId": "m", "body": body.to_string()}]}));

        world.process(event.unwrap()).await;

        assert_eq!(world.dead_letters.letters()[0].reason, "this consumer does not handle OrderShipped");
    }
}
