//! The inventory function: reserves an order's stock all or none, releases it when the saga compensates a
//! declined payment or the order is cancelled, and moves it to shipped when the order ships.
//!
//! - `OrderPlaced` (v2; v1 and v0, the legacy `OrderCreated`, upcast): decide on a consistent read of the stock,
//!   then ONE transaction: the stock updates (each conditional on `available >= q`), the reservation (conditional
//!   on none existing: the idempotency) and `InventoryReserved`; or the `REJECTED` reservation and
//!   `InventoryRejected`.
//!   A reservation that loses a race for the same units is read and decided again.
//! - `InventoryReleaseRequested`: `RESERVED -> RELEASED`, units back to available, `InventoryReleased`.
//! - `OrderShipped`: `RESERVED -> SHIPPED`, units from reserved to shipped; no event.
//! - `OrderCancelled` (the compensation trigger, e.g. a deadline that passed): a `RESERVED` reservation is released
//!   as for `InventoryReleaseRequested`, emitting `InventoryReleased` (the saga ignores it: the order is final;
//!   it records in the order's events that its stock went back). No reservation yet: a line-less `RELEASED`
//!   tombstone, so an `OrderPlaced` that comes later (a redrive, a slow retry) reserves nothing. Both writes are
//!   conditional on the reservation item, so against a concurrent `OrderPlaced` the loser reads again and acts
//!   on what it finds. Already `REJECTED` or `RELEASED`: nothing is held, nothing to do.
//! - Stock arithmetic that would overflow (an order's units of a SKU, a line's price times its quantity, the
//!   total, a SKU's reserved units) is a permanent failure: the record goes to the DLQ with the reason, nothing
//!   written (the order's deadline then cancels it).
//! - Anything else is a permanent failure: the record goes to the DLQ with the reason.

use orderflow_aws::StoreError;
use orderflow_domain::events::{
    self, InventoryRejected, InventoryReleaseRequested, InventoryReleased, InventoryReserved, OrderCancelled,
    OrderLine, OrderPlaced, OrderShipped,
};
use orderflow_domain::inventory::{self, Reservation as Decision, StockError};
use orderflow_inventory_store::{InventoryStore, Outcome, Reservation, ReservationStatus};
use orderflow_toolkit::batch::log_effect;
use orderflow_toolkit::{Envelope, EnvelopeError, Event, HandlerError, OutboxRecord, Registry, SqsRecord};

/// How many times a reservation is read and decided again when concurrent reservations take its units between
/// the read and the write. Each retry means another order made progress; when they run out the record is retried
/// by the queue.
pub const MAX_DECISION_ATTEMPTS: u32 = 8;

/// One transaction holds at most 100 items: the lines, the reservation and the outbox record.
pub const MAX_LINES: usize = 98;

/// What a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Reserved,
    Rejected,
    Released,
    Shipped,
    /// The order was cancelled before its stock was reserved: its tombstone reservation now stops any reservation.
    Tombstoned,
    /// A redelivery (or a concurrent delivery) of a record whose effect is already there: nothing changed.
    Duplicate,
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Event(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {order_id}: {source}")]
    Overflow { order_id: String, source: StockError },
    #[error("order {order_id}: concurrent writes changed its reservation or stock {attempts} times in a row")]
    Contended { order_id: String, attempts: u32 },
    #[error("order {0} has no reservation")]
    NoReservation(String),
    #[error("order {order_id}: cannot {action} a reservation that is {status}")]
    WrongState { order_id: String, action: &'static str, status: ReservationStatus },
    #[error(
        "order {order_id}: the stock of {skus:?} holds fewer reserved units than the reservation, or a counter would \
         pass u32::MAX"
    )]
    Inconsistent { order_id: String, skus: Vec<String> },
}

impl From<InventoryError> for HandlerError {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::Store(err) => err.into(),
            InventoryError::Contended { .. } => HandlerError::transient(err),
            InventoryError::Event(_)
            | InventoryError::Overflow { .. }
            | InventoryError::NoReservation(_)
            | InventoryError::WrongState { .. }
            | InventoryError::Inconsistent { .. } => HandlerError::permanent(err),
        }
    }
}

/// Orders that cannot be reserved whatever the stock: rejected with the reason, so the saga still ends.
fn invalid_lines(lines: &[OrderLine]) -> Option<Decision> {
    let zero: Vec<String> = lines.iter().filter(|l| l.quantity == 0).map(|l| l.sku.clone()).collect();
    let reason = if lines.is_empty() {
        "invalid order: it has no lines".to_owned()
    } else if !zero.is_empty() {
        format!("invalid order: zero quantity of {}", zero.join(", "))
    } else if lines.len() > MAX_LINES {
        format!("invalid order: {} distinct SKUs, at most {MAX_LINES} per order", lines.len())
    } else {
        return None;
    };
    Some(Decision::Reject { unavailable: zero, reason })
}

/// The inventory handler over its store.
#[derive(Debug, Clone)]
pub struct Inventory<S> {
    store: S,
    registry: Registry,
}

impl<S: InventoryStore> Inventory<S> {
    pub fn new(store: S) -> Self {
        Self { store, registry: events::registry() }
    }

    /// Handles one SQS record.
    pub async fn handle(&self, record: SqsRecord) -> Result<(), HandlerError> {
        log_effect(&record, self.apply(&record.body)).await
    }

    /// Applies one bus event (an SQS body).
    pub async fn apply(&self, body: &str) -> Result<Effect, InventoryError> {
        let raw = self.registry.read_bus_event(body)?;
        match raw.event_type.as_str() {
            OrderPlaced::TYPE => self.place(raw.decode()?).await,
            InventoryReleaseRequested::TYPE => self.release(raw.decode()?).await,
            OrderShipped::TYPE => self.ship(raw.decode()?).await,
            OrderCancelled::TYPE => self.cancel(raw.decode()?).await,
            other => Err(EnvelopeError::NotHandled(other.to_owned()).into()),
        }
    }

    async fn place(&self, placed: Envelope<OrderPlaced>) -> Result<Effect, InventoryError> {
        let order = &placed.data;
        let overflow = |source| InventoryError::Overflow { order_id: order.order_id.clone(), source };
        let lines = inventory::merge_lines(&order.lines).map_err(overflow)?;
        if let Some(decision) = invalid_lines(&lines) {
            return self.decide(&placed, &lines, decision).await.map(|outcome| outcome.unwrap_or(Effect::Duplicate));
        }
        let skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
        for attempt in 1..=MAX_DECISION_ATTEMPTS {
            let snapshot = self.store.snapshot(&order.order_id, &skus).await?;
            if let Some(status) = snapshot.reservation {
                tracing::info!(order_id = order.order_id, %status, "order already decided");
                return Ok(Effect::Duplicate);
            }
            let decision = inventory::reserve(&lines, |sku| snapshot.stock.get(sku)).map_err(overflow)?;
            match self.decide(&placed, &lines, decision).await? {
                Some(effect) => return Ok(effect),
                None => {
                    tracing::info!(order_id = order.order_id, attempt, "stock changed since the read, deciding again")
                }
            }
        }
        Err(InventoryError::Contended { order_id: order.order_id.clone(), attempts: MAX_DECISION_ATTEMPTS })
    }

    /// Writes a decision. `None`: the stock changed since it was read, decide again.
    async fn decide(
        &self,
        placed: &Envelope<OrderPlaced>,
        lines: &[OrderLine],
        decision: Decision,
    ) -> Result<Option<Effect>, InventoryError> {
        let order = &placed.data;
        let (outcome, effect) = match decision {
            Decision::Reserve { lines: priced, total } => {
                let event = InventoryReserved {
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    lines: priced.clone(),
                    total,
                };
                let record = OutboxRecord::caused_by(placed, event);
                (self.store.reserve(&order.order_id, &priced, &record).await?, Effect::Reserved)
            }
            Decision::Reject { unavailable, reason } => {
                tracing::info!(order_id = order.order_id, reason, "rejecting the order");
                let event = InventoryRejected {
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    lines: lines.to_vec(),
                    unavailable,
                    reason: reason.clone(),
                };
                let record = OutboxRecord::caused_by(placed, event);
                (self.store.reject(&order.order_id, lines, &reason, &record).await?, Effect::Rejected)
            }
        };
        Ok(match outcome {
            Outcome::Committed => Some(effect),
            Outcome::ReservationConflict => Some(Effect::Duplicate),
            Outcome::StockConflict(_) => None,
        })
    }

    async fn release(&self, request: Envelope<InventoryReleaseRequested>) -> Result<Effect, InventoryError> {
        let order_id = &request.data.order_id;
        let reservation = self.reserved(order_id, ReservationStatus::Released, "release").await?;
        let Some(reservation) = reservation else { return Ok(Effect::Duplicate) };
        let record = OutboxRecord::caused_by(&request, InventoryReleased { order_id: order_id.clone() });
        let outcome = self.store.release(order_id, &reservation.lines, &record).await?;
        settle(order_id, outcome, Effect::Released)
    }

    async fn ship(&self, shipped: Envelope<OrderShipped>) -> Result<Effect, InventoryError> {
        let order_id = &shipped.data.order_id;
        let reservation = self.reserved(order_id, ReservationStatus::Shipped, "ship").await?;
        let Some(reservation) = reservation else { return Ok(Effect::Duplicate) };
        let outcome = self.store.ship(order_id, &reservation.lines).await?;
        settle(order_id, outcome, Effect::Shipped)
    }

    /// Releases what a cancelled order holds, or makes sure it never holds anything (see the module docs).
    async fn cancel(&self, cancelled: Envelope<OrderCancelled>) -> Result<Effect, InventoryError> {
        let order_id = &cancelled.data.order_id;
        for attempt in 1..=MAX_DECISION_ATTEMPTS {
            let outcome = match self.store.reservation(order_id).await? {
                None => match self.store.tombstone(order_id).await? {
                    Outcome::Committed => return Ok(Effect::Tombstoned),
                    other => other,
                },
                Some(reservation) if reservation.status == ReservationStatus::Reserved => {
                    let record = OutboxRecord::caused_by(&cancelled, InventoryReleased { order_id: order_id.clone() });
                    match self.store.release(order_id, &reservation.lines, &record).await? {
                        Outcome::Committed => return Ok(Effect::Released),
                        Outcome::StockConflict(skus) => {
                            return Err(InventoryError::Inconsistent { order_id: order_id.clone(), skus });
                        }
                        conflict @ Outcome::ReservationConflict => conflict,
                    }
                }
                Some(reservation) => {
                    if reservation.status == ReservationStatus::Shipped {
                        // The saga never cancels a shipped order: keep the shipment, say so.
                        tracing::error!(order_id, "OrderCancelled for an order whose stock has shipped: nothing done");
                    }
                    return Ok(Effect::Duplicate);
                }
            };
            tracing::info!(order_id, attempt, ?outcome, "the reservation changed since the read, reading again");
        }
        Err(InventoryError::Contended { order_id: order_id.clone(), attempts: MAX_DECISION_ATTEMPTS })
    }

    /// The order's reservation if it is `RESERVED`; `None` if it is already `done` (a duplicate).
    async fn reserved(
        &self,
        order_id: &str,
        done: ReservationStatus,
        action: &'static str,
    ) -> Result<Option<Reservation>, InventoryError> {
        let reservation =
            self.store.reservation(order_id).await?.ok_or_else(|| InventoryError::NoReservation(order_id.into()))?;
        match reservation.status {
            ReservationStatus::Reserved => Ok(Some(reservation)),
            status if status == done => Ok(None),
            status => Err(InventoryError::WrongState { order_id: order_id.into(), action, status }),
        }
    }
}

/// The effect of a release or shipment transaction.
fn settle(order_id: &str, outcome: Outcome, effect: Effect) -> Result<Effect, InventoryError> {
    match outcome {
        Outcome::Committed => Ok(effect),
        // Moved by a concurrent delivery of the same record between our read and our write.
        Outcome::ReservationConflict => Ok(Effect::Duplicate),
        Outcome::StockConflict(skus) => Err(InventoryError::Inconsistent { order_id: order_id.into(), skus }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_domain::Decimal;
    use orderflow_domain::events::PricedLine;
    use orderflow_domain::inventory::Stock;
    use orderflow_test_support::{Samples, SqsHarness, bus_body, envelopes, failed_ids, sqs_batch};
    use orderflow_toolkit::RawEnvelope;
    use orderflow_toolkit::publish::MAX_ENTRY_BYTES;

    use super::*;
    use orderflow_inventory_store::{MemoryInventory, Snapshot};

    const SAMPLES: Samples = Samples::of("inventory");
    const ORDER_PLACED: &str = "order-placed.json";
    /// The same order as a version 2 producer writes it: with its currency.
    const ORDER_PLACED_V2: &str = "order-placed-v2.json";
    const LEGACY_ORDER_CREATED: &str = "legacy-order-created.json";
    const RELEASE_REQUESTED: &str = "release-requested.json";
    const ORDER_SHIPPED: &str = "order-shipped.json";
    const MALFORMED: &str = "malformed.json";
    const ORDER_CANCELLED: &str = "order-cancelled.json";

    /// The order of the order-placed, release-requested and order-shipped samples.
    const ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";

    /// An OrderPlaced bus event (an SQS body) for `order_id`.
    fn order_placed(order_id: &str, lines: &[(&str, u32)]) -> String {
        let lines = lines.iter().map(|(sku, quantity)| OrderLine { sku: (*sku).into(), quantity: *quantity }).collect();
        let placed = OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            lines,
        };
        bus_body(&Envelope::new(order_id, placed))
    }

    struct World {
        store: MemoryInventory,
        inventory: Inventory<MemoryInventory>,
        sqs: SqsHarness,
    }

    impl World {
        /// SKU-1 (10 at 12.50) and SKU-2 (3 at 0.99): the stock the samples order from.
        fn stocked() -> Self {
            let store = MemoryInventory::default();
            store.put_stock("SKU-1", 10, "12.50");
            store.put_stock("SKU-2", 3, "0.99");
            Self { inventory: Inventory::new(store.clone()), store, sqs: SqsHarness::with_concurrency(4) }
        }

        /// Processes the batch and returns the ids of the records reported as failed.
        async fn process(&self, event: SqsEvent) -> Vec<String> {
            failed_ids(&self.sqs.process(event, |record| self.inventory.handle(record)).await)
        }

        fn available(&self, sku: &str) -> (u32, u32, u32) {
            let stock = self.store.stock(sku).unwrap();
            (stock.available, stock.reserved, stock.shipped)
        }

        fn outbox(&self) -> Vec<RawEnvelope> {
            envelopes(&self.store.outbox())
        }
    }

    #[tokio::test]
    async fn order_placed_reserves_every_line_prices_it_and_emits_inventory_reserved_in_one_write() {
        let world = World::stocked();

        let failed = world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (7, 3, 0), "SKU-1 is ordered twice in the sample: 2 + 1");
        assert_eq!(world.available("SKU-2"), (2, 1, 0));
        let reservation = world.store.stored_reservation(ORDER).unwrap();
        assert_eq!(reservation.status, ReservationStatus::Reserved);
        let outbox = world.store.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!((outbox[0].partition.as_str(), outbox[0].source.as_str()), (ORDER, "orderflow.inventory"));
        let reserved = world.outbox()[0].decode::<InventoryReserved>().unwrap();
        assert_eq!(reserved.causation_id.unwrap().to_string(), "0b7f9c4e-7d4a-4f7e-9a3c-2d1e5f6a7b01");
        assert_eq!(
            reserved.data.lines,
            vec![
                PricedLine { sku: "SKU-1".into(), quantity: 3, unit_price: "12.50".parse().unwrap() },
                PricedLine { sku: "SKU-2".into(), quantity: 1, unit_price: "0.99".parse().unwrap() },
            ]
        );
        assert_eq!(reserved.data.total, "38.49".parse::<Decimal>().unwrap());
        assert_eq!(world.store.write_requests(), 1, "one write request per reservation");
        assert_eq!(world.store.read_requests(), 1, "one consistent read of the stock and the reservation");
    }

    #[tokio::test]
    async fn order_placed_v1_and_v2_reserve_the_same_stock() {
        let (v1, v2) = (World::stocked(), World::stocked());

        assert!(v1.process(SAMPLES.event(ORDER_PLACED)).await.is_empty());
        assert!(v2.process(SAMPLES.event(ORDER_PLACED_V2)).await.is_empty());

        for sku in ["SKU-1", "SKU-2"] {
            assert_eq!(v1.available(sku), v2.available(sku), "{sku}");
        }
        let total = |world: &World| world.outbox()[0].decode::<InventoryReserved>().unwrap().data.total;
        assert_eq!(total(&v1), total(&v2));
    }

    #[tokio::test]
    async fn a_redelivered_order_placed_changes_nothing_emits_nothing_and_writes_nothing() {
        let world = World::stocked();
        world.process(SAMPLES.event(ORDER_PLACED)).await;

        let failed = world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (7, 3, 0));
        assert_eq!(world.store.outbox().len(), 1);
        assert_eq!(world.store.write_requests(), 1, "the duplicate is recognised on the read");
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn the_same_order_placed_twice_in_one_batch_reserves_once() {
        let world = World::stocked();
        let body = SAMPLES.sqs_body(ORDER_PLACED);

        let failed = world.process(sqs_batch(&[body.clone(), body])).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (7, 3, 0));
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn a_legacy_order_created_is_upcast_and_reserved() {
        let world = World::stocked();

        let failed = world.process(SAMPLES.event(LEGACY_ORDER_CREATED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (8, 2, 0));
        let reserved = world.outbox()[0].decode::<InventoryReserved>().unwrap();
        assert_eq!(reserved.correlation_id, "legacy-1001");
        assert_eq!(reserved.data.customer_id, "u-42", "the legacy user_id is the customer");
        assert_eq!(reserved.data.total, "25.00".parse::<Decimal>().unwrap());
    }

    #[tokio::test]
    async fn one_short_line_rejects_the_whole_order_reserving_nothing_in_one_write() {
        let world = World::stocked();
        world.store.put_stock("SKU-2", 0, "0.99");

        let failed = world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (10, 0, 0), "nothing reserved");
        assert_eq!(world.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Rejected);
        let rejected = world.outbox()[0].decode::<InventoryRejected>().unwrap();
        assert_eq!(rejected.data.unavailable, ["SKU-2"]);
        assert_eq!(rejected.data.reason, "out of stock: SKU-2");
        assert_eq!(world.store.write_requests(), 1);
    }

    #[tokio::test]
    async fn a_redelivered_rejection_is_not_decided_again_after_a_restock() {
        let world = World::stocked();
        world.store.put_stock("SKU-2", 0, "0.99");
        world.process(SAMPLES.event(ORDER_PLACED)).await;
        world.store.put_stock("SKU-2", 50, "0.99");

        world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert_eq!(world.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Rejected);
        assert_eq!(world.available("SKU-2"), (50, 0, 0));
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_order_for_a_sku_not_in_the_catalogue_is_rejected_naming_it() {
        let world = World::stocked();

        world.process(sqs_batch(&[order_placed("o-x", &[("SKU-1", 1), ("NOPE", 1)])])).await;

        let rejected = world.outbox()[0].decode::<InventoryRejected>().unwrap();
        assert_eq!(rejected.data.unavailable, ["NOPE"]);
        assert_eq!(rejected.data.reason, "not in the catalogue: NOPE");
        assert_eq!(world.available("SKU-1"), (10, 0, 0));
    }

    #[tokio::test]
    async fn an_order_without_lines_or_with_zero_quantities_is_rejected_so_the_saga_ends() {
        let world = World::stocked();

        world.process(sqs_batch(&[order_placed("o-empty", &[]), order_placed("o-zero", &[("SKU-1", 0)])])).await;

        let mut reasons: Vec<String> =
            world.outbox().iter().map(|e| e.decode::<InventoryRejected>().unwrap().data.reason).collect();
        reasons.sort();
        assert_eq!(reasons, ["invalid order: it has no lines", "invalid order: zero quantity of SKU-1"]);
    }

    #[tokio::test]
    async fn an_order_whose_stock_arithmetic_overflows_goes_to_the_dlq_naming_it_and_writes_nothing() {
        let world = World::stocked();
        let price = Decimal::MAX;
        world.store.insert_stock(Stock { sku: "SKU-BIG".into(), available: 10, reserved: 0, shipped: 0, price });
        let line_total = order_placed("o-price", &[("SKU-1", 1), ("SKU-BIG", 2)]);
        let units = order_placed("o-units", &[("SKU-1", u32::MAX), ("SKU-1", 1)]);

        let failed = world.process(sqs_batch(&[line_total, units])).await;

        assert!(failed.is_empty(), "acknowledged: retrying cannot fix it");
        let mut reasons: Vec<String> = world.sqs.dead_letters().into_iter().map(|l| l.reason).collect();
        reasons.sort();
        assert_eq!(
            reasons,
            [
                "order o-price: the line total of SKU SKU-BIG overflows",
                "order o-units: the ordered units of SKU SKU-1 overflows"
            ]
        );
        assert_eq!((world.available("SKU-1"), world.available("SKU-BIG")), ((10, 0, 0), (10, 0, 0)));
        assert_eq!(
            (world.store.stored_reservation("o-price"), world.store.stored_reservation("o-units")),
            (None, None)
        );
        assert!(world.store.outbox().is_empty());
        assert_eq!(world.store.write_requests(), 0, "nothing written");
    }

    #[tokio::test]
    async fn a_reservation_whose_event_the_bus_cannot_carry_goes_to_the_dlq_with_its_size_and_reserves_nothing() {
        let world = World::stocked();
        let placed = OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: "o-big".into(),
            customer_id: "c".repeat(MAX_ENTRY_BYTES),
            lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }],
        };

        let failed = world.process(sqs_batch(&[bus_body(&Envelope::new("o-big", placed))])).await;

        assert!(failed.is_empty(), "acknowledged: retrying cannot fix it");
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        let reason = &letters[0].reason;
        assert!(reason.contains("(InventoryReserved) is "), "{reason}");
        assert!(reason.ends_with(&format!("more than the {MAX_ENTRY_BYTES} a PutEvents entry takes")), "{reason}");
        assert_eq!(world.available("SKU-1"), (10, 0, 0));
        assert_eq!(world.store.stored_reservation("o-big"), None);
        assert!(world.store.outbox().is_empty());
    }

    #[tokio::test]
    async fn release_requested_gives_the_units_back_and_emits_inventory_released_once() {
        let world = World::stocked();
        world.process(SAMPLES.event(ORDER_PLACED)).await;
        let writes_before = world.store.write_requests();

        let failed = world.process(SAMPLES.event(RELEASE_REQUESTED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.write_requests() - writes_before, 1, "one write request per release");
        assert_eq!(world.available("SKU-1"), (10, 0, 0));
        assert_eq!(world.available("SKU-2"), (3, 0, 0));
        assert_eq!(world.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Released);
        let released = world.outbox()[1].decode::<InventoryReleased>().unwrap();
        assert_eq!(released.data.order_id, ORDER);

        let failed = world.process(SAMPLES.event(RELEASE_REQUESTED)).await;

        assert!(failed.is_empty(), "the duplicate release is acknowledged");
        assert_eq!(world.available("SKU-1"), (10, 0, 0), "and changes nothing");
        assert_eq!(world.store.outbox().len(), 2, "and emits nothing");
    }

    #[tokio::test]
    async fn order_shipped_moves_the_units_from_reserved_to_shipped_without_an_event_once() {
        let world = World::stocked();
        world.process(SAMPLES.event(ORDER_PLACED)).await;
        let writes_before = world.store.write_requests();

        let failed = world.process(SAMPLES.event(ORDER_SHIPPED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.write_requests() - writes_before, 1, "one write request per shipment");
        assert_eq!(world.available("SKU-1"), (7, 0, 3));
        assert_eq!(world.available("SKU-2"), (2, 0, 1));
        assert_eq!(world.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Shipped);
        assert_eq!(world.store.outbox().len(), 1, "only InventoryReserved");

        world.process(SAMPLES.event(ORDER_SHIPPED)).await;

        assert_eq!(world.available("SKU-1"), (7, 0, 3), "a duplicate shipment changes nothing");
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn releasing_a_shipped_order_or_an_unknown_one_goes_to_the_dlq_with_the_reason() {
        let world = World::stocked();
        world.process(SAMPLES.event(ORDER_PLACED)).await;
        world.process(SAMPLES.event(ORDER_SHIPPED)).await;

        world.process(SAMPLES.event(RELEASE_REQUESTED)).await;
        let release = InventoryReleaseRequested { order_id: "o-unknown".into(), reason: "declined".into() };
        world.process(sqs_batch(&[bus_body(&Envelope::new("o-unknown", release))])).await;

        let reasons: Vec<String> = world.sqs.dead_letters().into_iter().map(|l| l.reason).collect();
        assert_eq!(
            reasons,
            [
                format!("order {ORDER}: cannot release a reservation that is SHIPPED"),
                "order o-unknown has no reservation".to_owned(),
            ]
        );
        assert_eq!(world.available("SKU-1"), (7, 0, 3));
    }

    #[tokio::test]
    async fn a_malformed_record_goes_to_the_dlq_with_the_reason_and_writes_nothing() {
        let world = World::stocked();

        let failed = world.process(SAMPLES.event(MALFORMED)).await;

        assert!(failed.is_empty(), "acknowledged: retrying cannot fix it");
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].reason.starts_with("malformed event:"), "{}", letters[0].reason);
        assert_eq!(letters[0].body, SAMPLES.sqs_body(MALFORMED), "the original body is kept for redrive");
        assert_eq!(world.store.write_requests(), 0);
    }

    #[tokio::test]
    async fn an_event_type_inventory_does_not_handle_goes_to_the_dlq_naming_it() {
        let world = World::stocked();
        let released = InventoryReleased { order_id: ORDER.into() };

        world.process(sqs_batch(&[bus_body(&Envelope::new(ORDER, released))])).await;

        assert_eq!(world.sqs.dead_letters()[0].reason, "this consumer does not handle InventoryReleased");
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_by_the_queue_and_then_applied_once() {
        let world = World::stocked();
        world.store.fail_next_writes(1);

        let failed = world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert_eq!(failed.len(), 1, "reported as a batch item failure");
        assert_eq!(world.available("SKU-1"), (10, 0, 0));
        assert!(world.sqs.dead_letters().is_empty());

        let failed = world.process(SAMPLES.event(ORDER_PLACED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.available("SKU-1"), (7, 3, 0));
        assert_eq!(world.store.outbox().len(), 1);
    }

    /// A store where another order takes `SKU-1`'s units between the first read and the first write.
    struct Racing {
        inner: MemoryInventory,
        rival: tokio::sync::Mutex<Option<Inventory<MemoryInventory>>>,
    }

    impl InventoryStore for Racing {
        async fn snapshot(&self, order_id: &str, skus: &[String]) -> Result<Snapshot, StoreError> {
            let snapshot = self.inner.snapshot(order_id, skus).await;
            if let Some(rival) = self.rival.lock().await.take() {
                let effect = rival.apply(&order_placed("o-rival", &[("SKU-1", 9)])).await.unwrap();
                assert_eq!(effect, Effect::Reserved);
            }
            snapshot
        }
        async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
            self.inner.reservation(order_id).await
        }
        async fn reserve(&self, o: &str, l: &[PricedLine], r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.inner.reserve(o, l, r).await
        }
        async fn reject(&self, o: &str, l: &[OrderLine], why: &str, r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.inner.reject(o, l, why, r).await
        }
        async fn release(&self, o: &str, l: &[OrderLine], r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.inner.release(o, l, r).await
        }
        async fn tombstone(&self, o: &str) -> Result<Outcome, StoreError> {
            self.inner.tombstone(o).await
        }
        async fn ship(&self, o: &str, l: &[OrderLine]) -> Result<Outcome, StoreError> {
            self.inner.ship(o, l).await
        }
    }

    #[tokio::test]
    async fn a_reservation_that_loses_the_race_for_the_last_units_reads_again_and_is_rejected() {
        let store = MemoryInventory::default();
        store.put_stock("SKU-1", 10, "1.00");
        let racing =
            Racing { inner: store.clone(), rival: tokio::sync::Mutex::new(Some(Inventory::new(store.clone()))) };

        let effect = Inventory::new(racing).apply(&order_placed("o-late", &[("SKU-1", 2)])).await.unwrap();

        assert_eq!(effect, Effect::Rejected);
        let stock = store.stock("SKU-1").unwrap();
        assert_eq!((stock.available, stock.reserved), (1, 9));
        assert_eq!(store.stored_reservation("o-late").unwrap().status, ReservationStatus::Rejected);
        assert_eq!(store.write_requests(), 3, "rival's reservation, the cancelled attempt, the rejection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixty_concurrent_orders_for_ten_units_reserve_exactly_ten_and_never_oversell() {
        let store = MemoryInventory::default();
        store.put_stock("SKU-LAST", 10, "5.00");
        let inventory = Arc::new(Inventory::new(store.clone()));
        let bodies: Vec<String> = (0..60).map(|i| order_placed(&format!("o-{i}"), &[("SKU-LAST", 1)])).collect();

        let mut pending = bodies;
        while !pending.is_empty() {
            let tasks: Vec<_> = pending
                .into_iter()
                .map(|body| {
                    let inventory = inventory.clone();
                    tokio::spawn(async move { (inventory.apply(&body).await, body) })
                })
                .collect();
            pending = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    (Ok(_), _) => {}
                    // What the queue would deliver again.
                    (Err(InventoryError::Contended { .. }), body) => pending.push(body),
                    (Err(other), _) => panic!("{other}"),
                }
            }
        }

        let stock = store.stock("SKU-LAST").unwrap();
        assert_eq!((stock.available, stock.reserved), (0, 10));
        let reserved = (0..60)
            .filter(|i| store.stored_reservation(&format!("o-{i}")).unwrap().status == ReservationStatus::Reserved)
            .count();
        assert_eq!(reserved, 10);
        let types: Vec<String> = store.outbox().into_iter().map(|r| r.detail_type).collect();
        assert_eq!(types.iter().filter(|t| *t == "InventoryReserved").count(), 10);
        assert_eq!(types.iter().filter(|t| *t == "InventoryRejected").count(), 50);
    }

    // ------------------------------------------------------------------ OrderCancelled: the compensation

    #[tokio::test]
    async fn order_cancelled_releases_the_reservation_and_emits_inventory_released_once() {
        let world = World::stocked();
        world.process(SAMPLES.event(ORDER_PLACED)).await;

        let failed = world.process(SAMPLES.event(ORDER_CANCELLED)).await;

        assert!(failed.is_empty());
        assert_eq!((world.available("SKU-1"), world.available("SKU-2")), ((10, 0, 0), (3, 0, 0)));
        assert_eq!(world.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Released);
        let released = world.outbox()[1].decode::<InventoryReleased>().unwrap();
        assert_eq!(released.data.order_id, ORDER);
        assert_eq!(released.causation_id.unwrap().to_string(), "0b7f9c4e-7d4a-4f7e-9a3c-2d1e5f6a7b05");

        assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty(), "a redelivery is acknowledged");
        assert_eq!(world.available("SKU-1"), (10, 0, 0), "and changes nothing");
        assert_eq!(world.store.outbox().len(), 2, "and emits nothing");
    }

    #[tokio::test]
    async fn order_cancelled_before_any_reservation_leaves_a_tombstone_so_a_later_order_placed_reserves_nothing() {
        let world = World::stocked();

        assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty());
        let tombstone = world.store.stored_reservation(ORDER).unwrap();
        assert_eq!((tombstone.status, tombstone.lines.len()), (ReservationStatus::Released, 0));
        assert!(world.store.outbox().is_empty(), "nothing was released: no event");

        assert!(world.process(SAMPLES.event(ORDER_PLACED)).await.is_empty(), "a late OrderPlaced is acknowledged");
        assert_eq!((world.available("SKU-1"), world.available("SKU-2")), ((10, 0, 0), (3, 0, 0)));
        assert!(world.store.outbox().is_empty(), "and neither reserves nor rejects");
        assert!(world.sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn order_cancelled_after_a_release_a_rejection_or_a_shipment_changes_nothing() {
        let released = World::stocked();
        released.process(SAMPLES.event(ORDER_PLACED)).await;
        released.process(SAMPLES.event(RELEASE_REQUESTED)).await;
        let rejected = World::stocked();
        rejected.store.put_stock("SKU-2", 0, "0.99");
        rejected.process(SAMPLES.event(ORDER_PLACED)).await;
        let shipped = World::stocked();
        shipped.process(SAMPLES.event(ORDER_PLACED)).await;
        shipped.process(SAMPLES.event(ORDER_SHIPPED)).await;

        for world in [&released, &rejected, &shipped] {
            let (stock, events) = (world.available("SKU-1"), world.store.outbox().len());
            assert!(world.process(SAMPLES.event(ORDER_CANCELLED)).await.is_empty());
            assert_eq!((world.available("SKU-1"), world.store.outbox().len()), (stock, events));
            assert!(world.sqs.dead_letters().is_empty());
        }
        assert_eq!(shipped.store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Shipped);
    }

    /// A store where `rival` (an SQS body) is applied by another delivery right before the first write of `kind`.
    struct RivalBefore {
        inner: MemoryInventory,
        kind: &'static str,
        rival: tokio::sync::Mutex<Option<String>>,
    }

    impl RivalBefore {
        async fn rival_goes_first(&self, kind: &str) {
            if kind != self.kind {
                return;
            }
            if let Some(body) = self.rival.lock().await.take() {
                Inventory::new(self.inner.clone()).apply(&body).await.expect("the rival applies");
            }
        }
    }

    impl InventoryStore for RivalBefore {
        async fn snapshot(&self, order_id: &str, skus: &[String]) -> Result<Snapshot, StoreError> {
            self.inner.snapshot(order_id, skus).await
        }
        async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
            self.inner.reservation(order_id).await
        }
        async fn reserve(&self, o: &str, l: &[PricedLine], r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.rival_goes_first("reserve").await;
            self.inner.reserve(o, l, r).await
        }
        async fn reject(&self, o: &str, l: &[OrderLine], why: &str, r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.inner.reject(o, l, why, r).await
        }
        async fn release(&self, o: &str, l: &[OrderLine], r: &OutboxRecord) -> Result<Outcome, StoreError> {
            self.inner.release(o, l, r).await
        }
        async fn tombstone(&self, o: &str) -> Result<Outcome, StoreError> {
            self.rival_goes_first("tombstone").await;
            self.inner.tombstone(o).await
        }
        async fn ship(&self, o: &str, l: &[OrderLine]) -> Result<Outcome, StoreError> {
            self.inner.ship(o, l).await
        }
    }

    fn stocked_store() -> MemoryInventory {
        let store = MemoryInventory::default();
        store.put_stock("SKU-1", 10, "12.50");
        store.put_stock("SKU-2", 3, "0.99");
        store
    }

    #[tokio::test]
    async fn a_cancellation_that_loses_the_race_to_the_reservation_reads_again_and_releases_it() {
        let store = stocked_store();
        let racing = RivalBefore {
            inner: store.clone(),
            kind: "tombstone",
            rival: tokio::sync::Mutex::new(Some(SAMPLES.sqs_body(ORDER_PLACED))),
        };

        let effect = Inventory::new(racing).apply(&SAMPLES.sqs_body(ORDER_CANCELLED)).await.unwrap();

        assert_eq!(effect, Effect::Released);
        assert_eq!(store.stored_reservation(ORDER).unwrap().status, ReservationStatus::Released);
        let stock = store.stock("SKU-1").unwrap();
        assert_eq!((stock.available, stock.reserved), (10, 0));
        let types: Vec<String> = store.outbox().into_iter().map(|r| r.detail_type).collect();
        assert_eq!(types, ["InventoryReserved", "InventoryReleased"]);
    }

    #[tokio::test]
    async fn a_reservation_that_loses_the_race_to_the_cancellation_reserves_nothing() {
        let store = stocked_store();
        let racing = RivalBefore {
            inner: store.clone(),
            kind: "reserve",
            rival: tokio::sync::Mutex::new(Some(SAMPLES.sqs_body(ORDER_CANCELLED))),
        };

        let effect = Inventory::new(racing).apply(&SAMPLES.sqs_body(ORDER_PLACED)).await.unwrap();

        assert_eq!(effect, Effect::Duplicate);
        assert_eq!(store.stored_reservation(ORDER).unwrap().lines, Vec::<OrderLine>::new(), "the tombstone stays");
        let stock = store.stock("SKU-1").unwrap();
        assert_eq!((stock.available, stock.reserved), (10, 0));
        assert!(store.outbox().is_empty());
    }
}
