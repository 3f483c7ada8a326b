//! One saga step on the Orders table, shared by the order saga (events from the bus) and the deadline sweeper
//! ([`SagaInput::DeadlinePassed`]): load the order (the fold of its events), ask the state machine ([`decide`]), and
//! append the events it decides after the version it was read at. When another step appended in between (a
//! concurrent duplicate, or a late reply racing the deadline), the append fails on its condition and the input is
//! decided again on the order as it now is: exactly one of two racing steps applies, the other is then ignored.

use orderflow_domain::order::{Decision, OrderStatus, SagaInput, decide};

use crate::{OrderStore, StoreError};

/// How many times one input is decided and appended when the order keeps changing under it.
pub const APPEND_ATTEMPTS: u32 = 5;

/// What applying an input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order moved on to `status` with this event (the last one appended).
    Advanced { status: &'static str, emitted: String },
    /// A duplicate, stale or not (yet) overdue input: nothing written. `status` is the order's as the decision
    /// read it (`None`: the store does not hold the order).
    Ignored { reason: String, status: Option<OrderStatus> },
}

/// Why an input was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The input follows a state the order has not reached yet.
    #[error("not yet applicable: {0}")]
    NotYet(String),
    /// The input contradicts the order (e.g. a payment for another amount than its total): the order's compensation
    /// was appended, and the input is refused for good with this reason.
    #[error("refused: {0}")]
    Refused(String),
    #[error("order {order_id} kept changing during {APPEND_ATTEMPTS} attempts: {last}")]
    Contended { order_id: String, last: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// Whether a later delivery may apply the input: every failure but a permanent one of the table may.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::NotYet(_) | Self::Contended { .. } => true,
            Self::Refused(_) => false,
            Self::Store(err) => err.is_transient(),
        }
    }
}

/// Applies one input to its order: load, decide, append conditionally; on a version conflict, load and decide again.
pub async fn apply<S: OrderStore>(store: &S, input: &SagaInput) -> Result<Applied, ApplyError> {
    let order_id = input.order_id();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = store.get(order_id).await?;
        let (events, refusal) = match decide(current.as_ref(), input) {
            Decision::Append(events) => (events, None),
            Decision::Compensate { events, reason } => (events, Some(reason)),
            Decision::Ignore(reason) => {
                return Ok(Applied::Ignored { reason, status: current.map(|order| order.status) });
            }
            Decision::NotYet(reason) => return Err(ApplyError::NotYet(reason)),
        };
        match store.append(current.as_ref(), &events).await {
            Ok(_) if let Some(reason) = refusal => return Err(ApplyError::Refused(reason)),
            Ok(order) => {
                let emitted = events.last().map(|event| event.event_type().to_owned()).unwrap_or_default();
                return Ok(Applied::Advanced { status: order.status.as_str(), emitted });
            }
            Err(StoreError::Conflict(reason)) if attempt < APPEND_ATTEMPTS => {
                tracing::info!(order_id, attempt, reason, "order changed while deciding, deciding again");
            }
            Err(StoreError::Conflict(reason)) => {
                return Err(ApplyError::Contended {
                    order_id: order_id.to_owned(),
                    last: StoreError::Conflict(reason),
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use orderflow_domain::events::{
        CANCELLED_BY_DEADLINE, InventoryReserved, OrderLine, OrderPlaced, PaymentAuthorized, PricedLine,
        ShipmentScheduled,
    };
    use orderflow_domain::order::{Deadlines, Order, OrderEvent, OrderStatus};
    use orderflow_toolkit::Envelope;
    use orderflow_toolkit::idempotency::IdempotencyRecord;
    use time::macros::datetime;
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::{InMemoryOrders, Placement};

    const PLACED_AT: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    fn deadlines() -> Deadlines {
        Deadlines::from_seconds(60).unwrap()
    }

    /// A store where `rival` is applied between the step's read and its write, as when another invocation
    /// applies it at the same moment.
    struct Racing {
        inner: InMemoryOrders,
        rival: Mutex<Option<SagaInput>>,
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
            let rival = self.rival.lock().unwrap().take();
            if let Some(rival) = rival {
                let applied = apply(&self.inner, &rival).await.unwrap();
                assert!(matches!(applied, Applied::Advanced { .. }), "the rival applies first: {applied:?}");
            }
            self.inner.append(current, events).await
        }

        async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.overdue(now, limit).await
        }
    }

    /// A CONFIRMED order whose deadline (a minute after the confirmation at `PLACED_AT`) has passed.
    async fn overdue_confirmed_order() -> InMemoryOrders {
        let store = InMemoryOrders::new(deadlines());
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
        let placed = OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines,
        };
        store.place(&occurred_at_placement(Envelope::new("o-1", placed)), None).await.unwrap();
        let reserved = InventoryReserved {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 2, unit_price: "12.50".parse().unwrap() }],
            total: "25.00".parse().unwrap(),
        };
        let authorized =
            PaymentAuthorized { order_id: "o-1".into(), payment_id: "p-1".into(), amount: "25.00".parse().unwrap() };
        for input in [
            SagaInput::InventoryReserved(occurred_at_placement(Envelope::new("o-1", reserved))),
            SagaInput::PaymentAuthorized(occurred_at_placement(Envelope::new("o-1", authorized))),
        ] {
            apply(&store, &input).await.unwrap();
        }
        store
    }

    fn occurred_at_placement<T>(mut envelope: Envelope<T>) -> Envelope<T> {
        envelope.occurred_at = PLACED_AT;
        envelope
    }

    fn deadline_check() -> SagaInput {
        SagaInput::DeadlinePassed { order_id: "o-1".into(), now: PLACED_AT + Duration::minutes(5) }
    }

    fn late_shipment() -> SagaInput {
        let scheduled = ShipmentScheduled { order_id: "o-1".into(), shipment_id: "s-1".into() };
        SagaInput::ShipmentScheduled(Envelope::new("o-1", scheduled))
    }

    fn emitted(store: &InMemoryOrders) -> Vec<String> {
        store.outbox().into_iter().skip(1).map(|record| record.detail_type).collect()
    }

    #[tokio::test]
    async fn an_overdue_order_is_cancelled_with_the_reason_deadline_and_a_second_check_changes_nothing() {
        let store = overdue_confirmed_order().await;

        let applied = apply(&store, &deadline_check()).await.unwrap();

        assert_eq!(applied, Applied::Advanced { status: "CANCELLED", emitted: "OrderCancelled".into() });
        let cancelled = store.outbox().pop().unwrap();
        let detail: serde_json::Value = serde_json::from_str(&cancelled.detail).unwrap();
        assert_eq!(detail["data"]["reason"], CANCELLED_BY_DEADLINE);
        assert_eq!(cancelled.partition, "o-1");
        assert!(matches!(apply(&store, &deadline_check()).await.unwrap(), Applied::Ignored { .. }));
        assert_eq!(emitted(&store), ["PaymentRequested", "OrderConfirmed", "OrderCancelled"]);
    }

    #[tokio::test]
    async fn a_shipment_that_wins_the_race_with_the_deadline_ships_the_order_and_the_deadline_is_ignored() {
        let store = overdue_confirmed_order().await;
        let racing = Racing { inner: store.clone(), rival: Mutex::new(Some(late_shipment())) };

        let applied = apply(&racing, &deadline_check()).await.unwrap();

        assert!(matches!(applied, Applied::Ignored { .. }), "{applied:?}");
        assert_eq!(store.get("o-1").await.unwrap().unwrap().status, OrderStatus::Shipped);
        assert_eq!(emitted(&store), ["PaymentRequested", "OrderConfirmed", "OrderShipped"]);
    }

    #[tokio::test]
    async fn a_deadline_that_wins_the_race_with_the_shipment_cancels_the_order_and_the_shipment_is_ignored() {
        let store = overdue_confirmed_order().await;
        let racing = Racing { inner: store.clone(), rival: Mutex::new(Some(deadline_check())) };

        let applied = apply(&racing, &late_shipment()).await.unwrap();

        assert!(matches!(applied, Applied::Ignored { .. }), "{applied:?}");
        let order = store.get("o-1").await.unwrap().unwrap();
        assert_eq!((order.status, order.deadline_at), (OrderStatus::Cancelled, None));
        // Shipping cancels the shipment it scheduled when OrderCancelled reaches it: the loser is compensated.
        assert_eq!(emitted(&store), ["PaymentRequested", "OrderConfirmed", "OrderCancelled"]);
    }

    #[tokio::test]
    async fn an_order_that_never_stops_changing_fails_as_contended_after_every_attempt() {
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
        let store = overdue_confirmed_order().await;

        let err = apply(&AlwaysConflict(store), &deadline_check()).await.unwrap_err();

        assert!(matches!(err, ApplyError::Contended { .. }), "{err}");
    }
}
