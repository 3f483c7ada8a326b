//! The in-memory adapter: the conditions and all-or-nothing transactions of the DynamoDB adapter, in a mutex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use orderflow_domain::order::Order;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;

use crate::{IDEMPOTENCY_TTL_SECONDS, IdempotencyKey, OrderStore, Placement, StoreError};

#[derive(Debug, Clone)]
struct Claim {
    order_id: String,
    request_hash: String,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct State {
    orders: BTreeMap<String, Order>,
    idempotency: BTreeMap<String, Claim>,
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
        self.state.lock().expect("orders lock")
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
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Placement, StoreError> {
        let mut state = self.state();
        state.injected_failure()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(key) = idempotency
            && let Some(claim) = state.idempotency.get(&key.key).filter(|claim| claim.expires_at >= now)
        {
            return if claim.request_hash == key.request_hash {
                Ok(Placement::Existing { order_id: claim.order_id.clone() })
            } else {
                Err(StoreError::IdempotencyKeyReused { key: key.key.clone() })
            };
        }
        if state.orders.contains_key(&order.order_id) {
            return Err(StoreError::Conflict(format!("order {} already exists", order.order_id)));
        }
        state.check_outbox(event)?;
        state.orders.insert(order.order_id.clone(), order.clone());
        if let Some(key) = idempotency {
            let claim = Claim {
                order_id: order.order_id.clone(),
                request_hash: key.request_hash.clone(),
                expires_at: now + IDEMPOTENCY_TTL_SECONDS,
            };
            state.idempotency.insert(key.key.clone(), claim);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_domain::events::{OrderLine, OrderPlaced};
    use orderflow_toolkit::Envelope;

    fn order(id: &str) -> (Order, OutboxRecord) {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let placed = OrderPlaced { order_id: id.into(), customer_id: "c-1".into(), lines: lines.clone() };
        let event = OutboxRecord::new(&Envelope::new(id, placed));
        (Order::placed(id.into(), "c-1".into(), lines, "2026-11-24T10:00:00Z".into()), event)
    }

    fn key(key: &str, hash: &str) -> IdempotencyKey {
        IdempotencyKey { key: key.into(), request_hash: hash.into() }
    }

    #[tokio::test]
    async fn the_same_key_and_request_return_the_first_order_and_write_nothing() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        assert_eq!(store.place(&first, &event, Some(&key("k", "h"))).await, Ok(Placement::Placed));
        let (second, event) = order("o-2");
        let again = store.place(&second, &event, Some(&key("k", "h"))).await;
        assert_eq!(again, Ok(Placement::Existing { order_id: "o-1".into() }));
        assert_eq!(store.orders().len(), 1);
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn the_same_key_with_another_request_is_refused() {
        let store = InMemoryOrders::default();
        let (first, event) = order("o-1");
        store.place(&first, &event, Some(&key("k", "h"))).await.unwrap();
        let (second, event) = order("o-2");
        let again = store.place(&second, &event, Some(&key("k", "other"))).await;
        assert_eq!(again, Err(StoreError::IdempotencyKeyReused { key: "k".into() }));
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
}
