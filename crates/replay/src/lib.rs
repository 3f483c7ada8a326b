//! Replay from the event store: the events of orders re-published to the bus as the relay first published them
//! (each as it was stored, in its order's version order), so a consumer added after the fact catches up, with no
//! bus archive needed and no limit on how far back. The events are selected by order or by the time they occurred.
//!
//! Every rule of the bus gets them again: the consumers that saw them take them as the duplicates they are (each is
//! idempotent on the envelope's id or the order's state), so a replay changes nothing but what a new consumer
//! builds from them.
#![forbid(unsafe_code)]

use orderflow_orders_store::{EventLog, StoreError, StoredEvent};
use orderflow_toolkit::publish::{BusEntry, EventBus, RetryPolicy, publish_in_order};
use time::OffsetDateTime;

/// Which events to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every event of these orders.
    Orders(Vec<String>),
    /// Every event of every order that occurred in `[from, to)`.
    Between { from: OffsetDateTime, to: OffsetDateTime },
}

/// What a replay published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub orders: usize,
    pub events: usize,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {0} has no events in the event store")]
    UnknownOrder(String),
    #[error("published {published} of {selected} events, then the bus refused event {event_id}: {reason}")]
    Bus { published: usize, selected: usize, event_id: String, reason: String },
}

/// The events `selection` names, order by order, each order's in version order.
pub async fn select<L: EventLog>(log: &L, selection: &Selection) -> Result<Vec<StoredEvent>, ReplayError> {
    match selection {
        Selection::Orders(order_ids) => {
            let mut selected = Vec::new();
            for order_id in order_ids {
                let events = log.stored_events(order_id).await?;
                if events.is_empty() {
                    return Err(ReplayError::UnknownOrder(order_id.clone()));
                }
                selected.extend(events);
            }
            Ok(selected)
        }
        Selection::Between { from, to } => Ok(log.stored_between(*from, *to).await?),
    }
}

/// Re-publishes the selected events to `bus` (batches of at most 10, failed entries retried, an order's events in
/// order; a batch never holds two of one order). Stops at the first event the bus keeps refusing, naming it.
pub async fn replay<L: EventLog, B: EventBus>(
    log: &L,
    bus: &B,
    selection: &Selection,
) -> Result<Replayed, ReplayError> {
    let events = select(log, selection).await?;
    let entries: Vec<BusEntry> = events.iter().map(|event| BusEntry::from(&event.record)).collect();
    let report = publish_in_order(bus, &entries, RetryPolicy::default()).await;
    if let Some((index, reason)) = report.failed {
        return Err(ReplayError::Bus {
            published: report.published,
            selected: entries.len(),
            event_id: events[index].record.event_id.to_string(),
            reason,
        });
    }
    let mut orders: Vec<&str> = events.iter().map(|event| event.order_id.as_str()).collect();
    orders.dedup();
    Ok(Replayed { orders: orders.len(), events: entries.len() })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use orderflow_domain::events::{OrderLine, OrderPlaced, PaymentRequested};
    use orderflow_domain::order::{Deadlines, OrderEvent};
    use orderflow_orders_store::{InMemoryOrders, OrderStore};
    use orderflow_toolkit::{Envelope, Event};
    use time::macros::datetime;

    use super::*;

    /// A bus that keeps what it is given, and can refuse every entry of one detail type.
    #[derive(Default)]
    struct Bus {
        published: Mutex<Vec<BusEntry>>,
        refuse: Option<&'static str>,
    }

    impl EventBus for Bus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            let mut published = self.published.lock().unwrap();
            Ok(entries
                .iter()
                .map(|entry| {
                    if self.refuse == Some(entry.detail_type.as_str()) {
                        return Some("InternalFailure: refused".to_owned());
                    }
                    published.push(entry.clone());
                    None
                })
                .collect())
        }
    }

    /// An order placed at `at` and paid for a minute later.
    async fn order(store: &InMemoryOrders, order_id: &str, at: OffsetDateTime) {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let placed =
            OrderPlaced { currency: "USD".into(), order_id: order_id.into(), customer_id: "c-1".into(), lines };
        let mut placed = Envelope::new(order_id, placed);
        placed.occurred_at = at;
        store.place(&placed, None).await.unwrap();
        let requested =
            PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount: "1.00".parse().unwrap() };
        let mut requested = Envelope::caused_by(&placed, requested);
        requested.occurred_at = at + time::Duration::minutes(1);
        let order = store.get(order_id).await.unwrap();
        store.append(order.as_ref(), &[OrderEvent::PaymentRequested(requested)]).await.unwrap();
    }

    fn types(bus: &Bus) -> Vec<(String, String)> {
        bus.published.lock().unwrap().iter().map(|entry| (entry.partition.clone(), entry.detail_type.clone())).collect()
    }

    #[tokio::test]
    async fn one_orders_events_are_published_again_in_version_order_as_stored() {
        let store = InMemoryOrders::new(Deadlines::default());
        order(&store, "o-1", datetime!(2026-12-01 10:00 UTC)).await;
        order(&store, "o-2", datetime!(2026-12-01 10:00 UTC)).await;
        let bus = Bus::default();

        let replayed = replay(&store, &bus, &Selection::Orders(vec!["o-1".into()])).await.unwrap();

        assert_eq!(replayed, Replayed { orders: 1, events: 2 });
        assert_eq!(types(&bus), [("o-1".into(), "OrderPlaced".into()), ("o-1".into(), "PaymentRequested".into())]);
        let stored = store.stored_events("o-1").await.unwrap();
        assert_eq!(bus.published.lock().unwrap()[0].detail, stored[0].record.detail);
    }

    #[tokio::test]
    async fn a_time_range_selects_the_events_that_occurred_in_it_from_every_order() {
        let store = InMemoryOrders::new(Deadlines::default());
        order(&store, "o-1", datetime!(2026-12-01 10:00 UTC)).await;
        order(&store, "o-2", datetime!(2026-12-01 10:30 UTC)).await;
        let bus = Bus::default();
        let range = Selection::Between { from: datetime!(2026-12-01 10:01 UTC), to: datetime!(2026-12-01 10:31 UTC) };

        let replayed = replay(&store, &bus, &range).await.unwrap();

        assert_eq!(replayed, Replayed { orders: 2, events: 2 });
        assert_eq!(types(&bus), [("o-1".into(), "PaymentRequested".into()), ("o-2".into(), "OrderPlaced".into())]);
    }

    #[tokio::test]
    async fn an_unknown_order_is_refused_before_anything_is_published() {
        let store = InMemoryOrders::new(Deadlines::default());
        order(&store, "o-1", datetime!(2026-12-01 10:00 UTC)).await;
        let bus = Bus::default();

        let error = replay(&store, &bus, &Selection::Orders(vec!["o-1".into(), "o-404".into()])).await.unwrap_err();

        assert_eq!(error.to_string(), "order o-404 has no events in the event store");
        assert!(types(&bus).is_empty());
    }

    #[tokio::test]
    async fn an_event_the_bus_keeps_refusing_stops_the_replay_naming_it_and_nothing_after_it_is_published() {
        let store = InMemoryOrders::new(Deadlines::default());
        order(&store, "o-1", datetime!(2026-12-01 10:00 UTC)).await;
        let bus = Bus { refuse: Some(PaymentRequested::TYPE), ..Bus::default() };

        let error = replay(&store, &bus, &Selection::Orders(vec!["o-1".into()])).await.unwrap_err();

        let stored = store.stored_events("o-1").await.unwrap();
        assert!(
            error.to_string().starts_with(&format!(
                "published 1 of 2 events, then the bus refused event {}",
                stored[1].record.event_id
            )),
            "{error}"
        );
        assert_eq!(types(&bus), [("o-1".into(), "OrderPlaced".into())]);
    }
}
