//! The in-memory adapter: the conditions and all-or-nothing transactions of the DynamoDB adapter, in a mutex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use orderflow_domain::order::Order;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::idempotency::IdempotencyRecord;
use time::OffsetDateTime;

use crate::{OrderStore, Placement, StoreError, indexed_deadline, replay};

#[derive(Debug, Default)]
struct State {
    orders: BTreeMap<String, Order>,
    /// Idempotency records by key.
    idempotency: BTreeMap<String, IdempotencyRecord>,
    outbox: Vec<OutboxRecord>,
    failures: VecDeque<StoreError>,
    writes: usize,
}

impl State {
    fn injected_failure(&mut self) -> Result<(), StoreError> {
        self.failures.pop_front().map_or(Ok(()), Err)
    }

    /// The outbox put's condition: an event id is written once.
    fn check_outbox(&self, event: &OutboxRecord) -> Result<(), StoreError> {
        if self.outbox.iter().any(|r| r.partition == event.partition && r.event_id == event.event_id) {
            return Err(StoreError::Conflict(format!("outbox already holds event {}", event.event_id)));
        }
        Ok(())
    }
}

/// Orders in memory, for tests. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct InMemoryOrders {
    state: Arc<Mutex<State>>,
}

impl InMemoryOrders {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every outbox record written, in commit order.
    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.state().outbox.clone()
    }

    /// Every stored order.
    pub fn orders(&self) -> Vec<Order> {
        self.state().orders.values().cloned().collect()
    }

    /// How many transactions committed.
    pub fn writes(&self) -> usize {
        self.state().writes
    }

    /// Makes the next operation (of any kind) fail with `error`; queued failures are used in order.
    pub fn fail_next(&self, error: StoreError) {
        self.state().failures.push_back(error);
    }
}

impl OrderStore for InMemoryOrders {
    async fn place(
        &self,
        order: &Order,
        event: &OutboxRecord,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Placement, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        if let Some(record) = idempotency
            && let Some(existing) =
                state.idempotency.get(&record.key).filter(|existing| !existing.is_replaceable_at(SystemTime::now()))
        {
            return Ok(replay(existing.clone(), record)?);
        }
        if state.orders.contains_key(&order.order_id) {
            return Err(StoreError::Conflict(format!("order {} already exists", order.order_id)));
        }
        state.check_outbox(event)?;
        state.orders.insert(order.order_id.clone(), order.clone());
        if let Some(record) = idempotency {
            state.idempotency.insert(record.key.clone(), record.clone());
        }
        state.outbox.push(event.clone());
        state.writes += 1;
        Ok(Placement::Placed)
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        Ok(state.orders.get(order_id).cloned())
    }

    async fn save(&self, order: &Order, expected_version: Option<u64>, event: &OutboxRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        let stored = state.orders.get(&order.order_id).map(|o| o.version);
        if stored != expected_version {
            return Err(StoreError::Conflict(format!(
                "order {} is at version {} (expected {})",
                order.order_id,
                stored.map_or("none".into(), |v| v.to_string()),
                expected_version.map_or("none".into(), |v| v.to_string()),
            )));
        }
        state.check_outbox(event)?;
        state.orders.insert(order.order_id.clone(), order.clone());
        state.outbox.push(event.clone());
        state.writes += 1;
        Ok(())
    }

    async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        let now = now.unix_timestamp();
        let mut due: Vec<(i64, &String)> = state
            .orders
            .values()
            .filter_map(|order| indexed_deadline(order).filter(|&at| at <= now).map(|at| (at, &order.order_id)))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, order_id)| order_id.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::placement_record;
    use orderflow_domain::events::{OrderLine, OrderPlaced};
    use orderflow_domain::order::{Deadlines, OrderStatus};
    use orderflow_toolkit::Envelope;
    use time::Duration;
    use time::macros::datetime;

    const DAY: StdDuration = StdDuration::from_secs(24 * 3600);

    /// When [`order`] places its orders; their deadline is a minute later.
    const PLACED_AT: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    fn order(id: &str) -> (Order, OutboxRecord) {
        order_placed_at(id, PLACED_AT)
    }

    fn order_placed_at(id: &str, at: OffsetDateTime) -> (Order, OutboxRecord) {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let placed = OrderPlaced { order_id: id.into(), customer_id: "c-1".into(), lines: lines.clone() };
        let event = OutboxRecord::new(&Envelope::new(id, placed));
        (Order::placed(id.into(), "c-1".into(), lines, at, &Deadlines::from_seconds(60).unwrap()), event)
    }

    /// The record of `key` for `request`, placing `order`, live for a day from `at`.
    fn record_at(key: &str, request: &str, order: &Order, at: SystemTime) -> IdempotencyRecord {
        placement_record(key, request, &order.order_id, at, DAY).unwrap()
    }

    fn record(key: &str, request: &str, order: &Order) -> IdempotencyRecord {
        record_at(key, request, order, SystemTime::now())
    }

    #[tokio::test]
    async fn the_same_key_and_request_return_the_first_order_and_write_nothing() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        assert_eq!(store.place(&first, &event, Some(&record("k", "h", &first))).await, Ok(Placement::Placed));
        let (second, event) = order("o-2");
        let again = store.place(&second, &event, Some(&record("k", "h", &second))).await;
        assert_eq!(again, Ok(Placement::Existing { order_id: "o-1".into() }));
        assert_eq!(store.orders().len(), 1);
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn the_same_key_with_another_request_is_refused() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        store.place(&first, &event, Some(&record("k", "h", &first))).await.unwrap();
        let (second, event) = order("o-2");
        let again = store.place(&second, &event, Some(&record("k", "other", &second))).await;
        assert_eq!(again, Ok(Placement::KeyReused { key: "k".into() }));
    }

    #[tokio::test]
    async fn an_expired_record_no_longer_holds_its_key() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        let two_days_ago = SystemTime::now() - 2 * DAY;
        store.place(&first, &event, Some(&record_at("k", "h", &first, two_days_ago))).await.unwrap();
        let (second, event) = order("o-2");
        let again = store.place(&second, &event, Some(&record("k", "other", &second))).await;
        assert_eq!(again, Ok(Placement::Placed));
        let (third, event) = order("o-3");
        let repeat = store.place(&third, &event, Some(&record("k", "other", &third))).await;
        assert_eq!(repeat, Ok(Placement::Existing { order_id: "o-2".into() }), "the new record holds it");
    }

    #[tokio::test]
    async fn a_record_that_is_not_a_placement_is_a_permanent_error_and_writes_nothing() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        let not_a_placement = IdempotencyRecord::completed("k", "h", "o-1", SystemTime::now(), DAY).unwrap();
        store.place(&first, &event, Some(&not_a_placement)).await.unwrap();
        let (second, event) = order("o-2");
        let err = store.place(&second, &event, Some(&record("k", "h", &second))).await.unwrap_err();
        assert!(!err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("the stored result does not deserialize"), "{err}");
        assert_eq!(store.orders().len(), 1);
    }

    #[tokio::test]
    async fn save_applies_only_at_the_expected_version() {
        let store = InMemoryOrders::default();
        let (mut order, event) = order("o-1");
        store.place(&order, &event, None).await.unwrap();
        order.version = 2;
        let (_, next_event) = self::order("o-1");
        assert!(matches!(store.save(&order, Some(7), &next_event).await, Err(StoreError::Conflict(_))));
        assert!(matches!(store.save(&order, None, &next_event).await, Err(StoreError::Conflict(_))));
        store.save(&order, Some(1), &next_event).await.unwrap();
        assert_eq!(store.get("o-1").await.unwrap().unwrap().version, 2);
        assert_eq!(store.outbox().len(), 2);
    }

    #[tokio::test]
    async fn overdue_lists_the_open_orders_past_their_deadline_oldest_first_up_to_the_limit() {
        let store = InMemoryOrders::default();
        for (id, placed_seconds_later) in [("o-late", 30), ("o-early", 0), ("o-not-yet", 120)] {
            let (order, event) = order_placed_at(id, PLACED_AT + Duration::seconds(placed_seconds_later));
            store.place(&order, &event, None).await.unwrap();
        }
        let (mut final_order, event) = order_placed_at("o-final", PLACED_AT);
        final_order.status = OrderStatus::Rejected;
        store.place(&final_order, &event, None).await.unwrap();
        let now = PLACED_AT + Duration::seconds(90);

        assert_eq!(store.overdue(now, 10).await.unwrap(), ["o-early", "o-late"]);
        assert_eq!(store.overdue(now, 1).await.unwrap(), ["o-early"]);
        assert_eq!(store.overdue(PLACED_AT + Duration::seconds(60), 10).await.unwrap(), ["o-early"], "due at 60 s");
    }
}
