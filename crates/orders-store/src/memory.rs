//! The in-memory adapter: the conditions and all-or-nothing transactions of the DynamoDB adapter, in a mutex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use orderflow_domain::events::OrderPlaced;
use orderflow_domain::order::{Deadlines, Order, OrderEvent};
use orderflow_toolkit::idempotency::IdempotencyRecord;
use orderflow_toolkit::{Envelope, OutboxRecord};
use time::OffsetDateTime;

use crate::{EventLog, OrderStore, Placement, StoreError, StoredEvent, appended, bus_record, indexed_deadline, replay};

#[derive(Debug, Default)]
struct State {
    /// Every order's events, in version order.
    streams: BTreeMap<String, Vec<OrderEvent>>,
    /// Idempotency records by key.
    idempotency: BTreeMap<String, IdempotencyRecord>,
    /// Every event appended, in commit order, as the table's stream hands them to the relay.
    published: Vec<OutboxRecord>,
    failures: VecDeque<StoreError>,
    writes: usize,
}

impl State {
    fn injected_failure(&mut self) -> Result<(), StoreError> {
        self.failures.pop_front().map_or(Ok(()), Err)
    }

    fn fold(&self, order_id: &str, deadlines: &Deadlines) -> Result<Option<Order>, StoreError> {
        let Some(events) = self.streams.get(order_id) else { return Ok(None) };
        Order::from_events(events, deadlines)
            .map_err(|err| StoreError::Table(orderflow_aws::StoreError::Corrupt(format!("order {order_id}: {err}"))))
    }

    fn version(&self, order_id: &str) -> Option<u64> {
        self.streams.get(order_id).map(|events| events.len() as u64)
    }

    /// Appends `events` after `current` if the stream is still at its version: the condition of every event put.
    fn append(
        &mut self,
        current: Option<&Order>,
        events: &[OrderEvent],
        deadlines: &Deadlines,
    ) -> Result<Order, StoreError> {
        let order = appended(current, events, deadlines)?;
        for event in events {
            orderflow_aws::outbox::ensure_publishable(&bus_record(event))?;
        }
        let stored = self.version(&order.order_id);
        let expected = current.map(|order| order.version);
        if stored != expected {
            return Err(StoreError::Conflict(format!(
                "order {} is at version {} (expected {})",
                order.order_id,
                stored.map_or("none".into(), |v| v.to_string()),
                expected.map_or("none".into(), |v| v.to_string()),
            )));
        }
        self.streams.entry(order.order_id.clone()).or_default().extend(events.iter().cloned());
        self.published.extend(events.iter().map(bus_record));
        self.writes += 1;
        Ok(order)
    }
}

/// Orders in memory, for tests. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct InMemoryOrders {
    state: Arc<Mutex<State>>,
    deadlines: Deadlines,
}

impl InMemoryOrders {
    /// An empty store whose orders are due `deadlines` after they enter a state.
    pub fn new(deadlines: Deadlines) -> Self {
        Self { state: Arc::default(), deadlines }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event appended, in commit order, as the relay publishes it (the event store is the orders' outbox).
    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.state().published.clone()
    }

    /// Every order, as its events make it.
    pub fn orders(&self) -> Vec<Order> {
        let state = self.state();
        state.streams.keys().filter_map(|id| state.fold(id, &self.deadlines).ok().flatten()).collect()
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
        placed: &Envelope<OrderPlaced>,
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
        state.append(None, &[OrderEvent::Placed(placed.clone())], &self.deadlines)?;
        if let Some(record) = idempotency {
            state.idempotency.insert(record.key.clone(), record.clone());
        }
        Ok(Placement::Placed)
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        state.fold(order_id, &self.deadlines)
    }

    async fn append(&self, current: Option<&Order>, events: &[OrderEvent]) -> Result<Order, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        state.append(current, events, &self.deadlines)
    }

    async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        let now = now.unix_timestamp();
        let mut due = Vec::new();
        for order_id in state.streams.keys() {
            if let Some(order) = state.fold(order_id, &self.deadlines)?
                && let Some(at) = indexed_deadline(&order).filter(|&at| at <= now)
            {
                due.push((at, order.order_id));
            }
        }
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, order_id)| order_id).collect())
    }
}

impl EventLog for InMemoryOrders {
    async fn events(&self, order_id: &str) -> Result<Vec<OrderEvent>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        Ok(state.streams.get(order_id).cloned().unwrap_or_default())
    }

    async fn streams(&self) -> Result<Vec<Vec<OrderEvent>>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        Ok(state.streams.values().cloned().collect())
    }

    async fn stored_events(&self, order_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(stored(order_id, &self.events(order_id).await?))
    }

    async fn stored_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<StoredEvent>, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        let every = state.streams.iter().flat_map(|(order_id, events)| stored(order_id, events));
        Ok(every.filter(|event| (from..to).contains(&event.occurred_at)).collect())
    }
}

/// An order's events as the event store writes them (in memory they are kept decoded, at the current version).
fn stored(order_id: &str, events: &[OrderEvent]) -> Vec<StoredEvent> {
    (1..)
        .zip(events)
        .map(|(version, event)| StoredEvent {
            order_id: order_id.to_owned(),
            version,
            occurred_at: event.occurred_at(),
            record: OutboxRecord { partition: order_id.to_owned(), ..bus_record(event) },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::placement_record;
    use orderflow_domain::events::{CANCELLED_BY_DEADLINE, OrderCancelled, OrderLine, OrderRejected};
    use orderflow_domain::order::OrderStatus;
    use time::Duration;
    use time::macros::datetime;

    const DAY: StdDuration = StdDuration::from_secs(24 * 3600);

    /// When [`placed`] places its orders; their deadline is a minute later.
    const PLACED_AT: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    fn store() -> InMemoryOrders {
        InMemoryOrders::new(Deadlines::from_seconds(60).unwrap())
    }

    fn placed(id: &str) -> Envelope<OrderPlaced> {
        placed_at(id, PLACED_AT)
    }

    fn placed_at(id: &str, at: OffsetDateTime) -> Envelope<OrderPlaced> {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let mut placed = Envelope::new(
            id,
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: id.into(),
                customer_id: "c-1".into(),
                lines,
            },
        );
        placed.occurred_at = at;
        placed
    }

    fn cancelled(id: &str) -> OrderEvent {
        let data =
            OrderCancelled { order_id: id.into(), customer_id: "c-1".into(), reason: CANCELLED_BY_DEADLINE.into() };
        OrderEvent::Cancelled(Envelope::new(id, data))
    }

    /// The record of `key` for `request`, placing `order_id`, live for a day from `at`.
    fn record_at(key: &str, request: &str, order_id: &str, at: SystemTime) -> IdempotencyRecord {
        placement_record("c-1", key, request, order_id, at, DAY).unwrap()
    }

    fn record(key: &str, request: &str, order_id: &str) -> IdempotencyRecord {
        record_at(key, request, order_id, SystemTime::now())
    }

    #[tokio::test]
    async fn the_same_key_and_request_return_the_first_order_and_write_nothing() {
        let store = store();
        assert_eq!(store.place(&placed("o-1"), Some(&record("k", "h", "o-1"))).await, Ok(Placement::Placed));
        let again = store.place(&placed("o-2"), Some(&record("k", "h", "o-2"))).await;
        assert_eq!(again, Ok(Placement::Existing { order_id: "o-1".into() }));
        assert_eq!(store.orders().len(), 1);
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn the_same_key_with_another_request_is_refused() {
        let store = store();
        store.place(&placed("o-1"), Some(&record("k", "h", "o-1"))).await.unwrap();
        let again = store.place(&placed("o-2"), Some(&record("k", "other", "o-2"))).await;
        assert_eq!(again, Ok(Placement::KeyReused { key: "3:c-1:k".into() }));
    }

    #[tokio::test]
    async fn an_expired_record_no_longer_holds_its_key() {
        let store = store();
        let two_days_ago = SystemTime::now() - 2 * DAY;
        store.place(&placed("o-1"), Some(&record_at("k", "h", "o-1", two_days_ago))).await.unwrap();
        let again = store.place(&placed("o-2"), Some(&record("k", "other", "o-2"))).await;
        assert_eq!(again, Ok(Placement::Placed));
        let repeat = store.place(&placed("o-3"), Some(&record("k", "other", "o-3"))).await;
        assert_eq!(repeat, Ok(Placement::Existing { order_id: "o-2".into() }), "the new record holds it");
    }

    #[tokio::test]
    async fn a_record_that_is_not_a_placement_is_a_permanent_error_and_writes_nothing() {
        let store = store();
        let not_a_placement = IdempotencyRecord::completed("3:c-1:k", "h", "o-1", SystemTime::now(), DAY).unwrap();
        store.place(&placed("o-1"), Some(&not_a_placement)).await.unwrap();
        let err = store.place(&placed("o-2"), Some(&record("k", "h", "o-2"))).await.unwrap_err();
        assert!(!err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("the stored result does not deserialize"), "{err}");
        assert_eq!(store.orders().len(), 1);
    }

    #[tokio::test]
    async fn an_order_is_placed_once() {
        let store = store();
        store.place(&placed("o-1"), None).await.unwrap();
        assert!(matches!(store.place(&placed("o-1"), None).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_append_applies_only_after_the_version_it_was_decided_on() {
        let store = store();
        store.place(&placed("o-1"), None).await.unwrap();
        let read = store.get("o-1").await.unwrap().unwrap();

        let order = store.append(Some(&read), &[cancelled("o-1")]).await.unwrap();

        assert_eq!((order.status, order.version), (OrderStatus::Cancelled, 2));
        assert_eq!(store.get("o-1").await.unwrap(), Some(order));
        let stale = store.append(Some(&read), &[cancelled("o-1")]).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        let placed_again = store.append(None, &[OrderEvent::Placed(placed("o-1"))]).await;
        assert!(matches!(placed_again, Err(StoreError::Conflict(_))), "{placed_again:?}");
        assert_eq!(store.outbox().len(), 2);
    }

    #[tokio::test]
    async fn an_append_that_cannot_follow_the_order_is_permanent_and_writes_nothing() {
        let store = store();
        store.place(&placed("o-1"), None).await.unwrap();
        let read = store.get("o-1").await.unwrap().unwrap();
        let cancelled_order = store.append(Some(&read), &[cancelled("o-1")]).await.unwrap();
        let rejected = OrderRejected { order_id: "o-1".into(), customer_id: "c-1".into(), reason: "late".into() };

        let err = store.append(Some(&cancelled_order), &[OrderEvent::Rejected(Envelope::new("o-1", rejected))]).await;

        assert!(matches!(&err, Err(e) if !e.is_transient()), "{err:?}");
        assert_eq!(store.get("o-1").await.unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn overdue_lists_the_open_orders_past_their_deadline_oldest_first_up_to_the_limit() {
        let store = store();
        for (id, placed_seconds_later) in [("o-late", 30), ("o-early", 0), ("o-not-yet", 120), ("o-final", 0)] {
            store.place(&placed_at(id, PLACED_AT + Duration::seconds(placed_seconds_later)), None).await.unwrap();
        }
        let open = store.get("o-final").await.unwrap().unwrap();
        store.append(Some(&open), &[cancelled("o-final")]).await.unwrap();
        let now = PLACED_AT + Duration::seconds(90);

        assert_eq!(store.overdue(now, 10).await.unwrap(), ["o-early", "o-late"]);
        assert_eq!(store.overdue(now, 1).await.unwrap(), ["o-early"]);
        assert_eq!(store.overdue(PLACED_AT + Duration::seconds(60), 10).await.unwrap(), ["o-early"], "due at 60 s");
    }
}
