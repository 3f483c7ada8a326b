//! The transactional outbox: an event is written as a record in the same transaction as the change that causes
//! it; the outbox relay publishes it from the table's stream. Never a write followed by a separate publish.
//!
//! When the write is also conditional on the item not existing, it is the consumer's idempotency too: a redelivery
//! decides again, builds the same record ([`OutboxRecord::caused_by`]) and the write refuses it, at one write
//! request per message. [`MemoryOutboxStore`] behaves as the DynamoDB write of `orderflow-aws` does.
//!
//! ```
//! use orderflow_toolkit::outbox::{MemoryOutboxStore, Written};
//! use orderflow_toolkit::{Envelope, Event, OutboxRecord};
//! # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct OrderConfirmed { order_id: String }
//! impl Event for OrderConfirmed {
//!     const TYPE: &'static str = "OrderConfirmed";
//!     const VERSION: u32 = 1;
//!     const SOURCE: &'static str = "orderflow.orders";
//! }
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct ShipmentScheduled { order_id: String }
//! impl Event for ShipmentScheduled {
//!     const TYPE: &'static str = "ShipmentScheduled";
//!     const VERSION: u32 = 1;
//!     const SOURCE: &'static str = "orderflow.shipping";
//! }
//!
//! let confirmed = Envelope::new("o-1", OrderConfirmed { order_id: "o-1".into() });
//! let schedule = || OutboxRecord::caused_by(&confirmed, ShipmentScheduled { order_id: "o-1".into() });
//! let record = schedule();
//! assert_eq!((record.partition.as_str(), record.source.as_str()), ("o-1", "orderflow.shipping"));
//! let detail: serde_json::Value = serde_json::from_str(&record.detail).unwrap();
//! assert_eq!(detail["causation_id"], confirmed.id.to_string());
//!
//! let shipments = MemoryOutboxStore::default();
//! assert_eq!(shipments.put_new_with_event("SHIPMENT#o-1", &"scheduled", &record), Ok(Written::Committed));
//! // A redelivery of OrderConfirmed: the same decision, the same event id, and nothing written twice.
//! let again = schedule();
//! assert_eq!(again.event_id, record.event_id);
//! assert_eq!(shipments.put_new_with_event("SHIPMENT#o-1", &"scheduled", &again), Ok(Written::Duplicate));
//! assert_eq!((shipments.count(), shipments.outbox().len(), shipments.write_requests()), (1, 1, 2));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use crate::envelope::{Envelope, Event};
use crate::publish::{MAX_ENTRY_BYTES, entry_size};

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The correlation id: all events of one order share a partition, so the stream keeps their order.
    pub partition: String,
    pub event_id: Uuid,
    /// The bus `source`, `orderflow.<service>`.
    pub source: String,
    /// The bus `detail-type`, the event type.
    pub detail_type: String,
    /// The envelope as JSON: the bus `detail`.
    pub detail: String,
}

impl OutboxRecord {
    pub fn new<T: Event>(envelope: &Envelope<T>) -> Self {
        Self {
            partition: envelope.correlation_id.clone(),
            event_id: envelope.id,
            source: T::SOURCE.to_owned(),
            detail_type: T::TYPE.to_owned(),
            detail: serde_json::to_string(envelope).expect("envelope serialises to JSON"),
        }
    }

    /// The record of an event caused by `cause`. Its id is derived from the cause's id and the event type, so a
    /// decision taken again on the same cause yields the same record (and the outbox condition refuses it).
    pub fn caused_by<C, T: Event>(cause: &Envelope<C>, data: T) -> Self {
        let mut envelope = Envelope::caused_by(cause, data);
        envelope.id = Uuid::new_v5(&cause.id, T::TYPE.as_bytes());
        Self::new(&envelope)
    }

    /// Checks that the bus can carry the record's event. `PutEvents` refuses an entry of more than
    /// [`MAX_ENTRY_BYTES`] every time, so a store refuses to write one (a permanent failure, with this reason)
    /// instead of leaving the relay to retry it forever.
    pub fn ensure_publishable(&self) -> Result<(), EventTooLarge> {
        let size = entry_size(&self.source, &self.detail_type, &self.detail);
        if size > MAX_ENTRY_BYTES {
            return Err(EventTooLarge { event_id: self.event_id, detail_type: self.detail_type.clone(), size });
        }
        Ok(())
    }
}

/// An event the bus cannot carry: its entry is larger than one `PutEvents` entry may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event {event_id} ({detail_type}) is {size} bytes as a bus entry, more than the {MAX_ENTRY_BYTES} a PutEvents \
     entry takes"
)]
pub struct EventTooLarge {
    pub event_id: Uuid,
    pub detail_type: String,
    pub size: usize,
}

/// What writing a new item together with the outbox record of its event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The item and the outbox record were written, all or nothing.
    Committed,
    /// The item or the outbox record exists already (an earlier delivery wrote them): nothing was written.
    Duplicate,
}

#[derive(Debug)]
struct MemoryState<T> {
    items: BTreeMap<String, T>,
    outbox: Vec<OutboxRecord>,
    write_requests: u64,
    failing_writes: u32,
}

/// Items written at most once per key, each together with the outbox record of its event, kept in memory: the
/// in-memory counterpart of the DynamoDB `put_new_with_event` of `orderflow-aws`, for handler tests. Clones share
/// the same state; write requests are counted as DynamoDB bills them (one per write, committed or not). orderflow's
/// own stores also change items after the first write (voids, cancellations), so they keep adapters of their own.
#[derive(Debug)]
pub struct MemoryOutboxStore<T> {
    state: Arc<Mutex<MemoryState<T>>>,
}

impl<T> Default for MemoryOutboxStore<T> {
    fn default() -> Self {
        let state = MemoryState { items: BTreeMap::new(), outbox: Vec::new(), write_requests: 0, failing_writes: 0 };
        Self { state: Arc::new(Mutex::new(state)) }
    }
}

impl<T> Clone for MemoryOutboxStore<T> {
    fn clone(&self) -> Self {
        Self { state: Arc::clone(&self.state) }
    }
}

impl<T: Clone> MemoryOutboxStore<T> {
    fn lock(&self) -> MutexGuard<'_, MemoryState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `item` under `key` and `record` to the outbox, unless either exists already. `Err`: the write
    /// failed, with the reason: throttled (see [`Self::fail_next_writes`]), or an event the bus cannot carry
    /// ([`OutboxRecord::ensure_publishable`]).
    pub fn put_new_with_event(&self, key: &str, item: &T, record: &OutboxRecord) -> Result<Written, String> {
        record.ensure_publishable().map_err(|err| err.to_string())?;
        let mut state = self.lock();
        state.write_requests += 1;
        if state.failing_writes > 0 {
            state.failing_writes -= 1;
            return Err("ProvisionedThroughputExceededException (injected)".into());
        }
        let outbox_exists =
            state.outbox.iter().any(|r| r.partition == record.partition && r.event_id == record.event_id);
        if state.items.contains_key(key) || outbox_exists {
            return Ok(Written::Duplicate);
        }
        state.items.insert(key.to_owned(), item.clone());
        state.outbox.push(record.clone());
        Ok(Written::Committed)
    }

    /// The item stored under `key`.
    pub fn stored(&self, key: &str) -> Option<T> {
        self.lock().items.get(key).cloned()
    }

    /// How many items are stored.
    pub fn count(&self) -> usize {
        self.lock().items.len()
    }

    /// The outbox records, in commit order.
    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.lock().outbox.clone()
    }

    /// Write requests so far, committed or not.
    pub fn write_requests(&self) -> u64 {
        self.lock().write_requests
    }

    /// Makes the next `n` write requests fail as throttled.
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing_writes = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose bus entry is `size` bytes.
    fn record_of(size: usize) -> OutboxRecord {
        let (source, detail_type) = ("orderflow.orders", "OrderPlaced");
        let detail = "x".repeat(size - source.len() - detail_type.len());
        let (source, detail_type) = (source.to_owned(), detail_type.to_owned());
        OutboxRecord { partition: "o-1".into(), event_id: Uuid::from_u128(7), source, detail_type, detail }
    }

    #[test]
    fn an_event_the_bus_cannot_carry_is_refused_with_its_size_and_nothing_is_written() {
        assert_eq!(record_of(MAX_ENTRY_BYTES).ensure_publishable(), Ok(()));
        let oversized = record_of(MAX_ENTRY_BYTES + 1);
        let err = oversized.ensure_publishable().unwrap_err();
        assert_eq!(
            err.to_string(),
            "event 00000000-0000-0000-0000-000000000007 (OrderPlaced) is 262145 bytes as a bus entry, more than the \
             262144 a PutEvents entry takes"
        );

        let store = MemoryOutboxStore::default();
        assert_eq!(store.put_new_with_event("ORDER#o-1", &"placed", &oversized), Err(err.to_string()));
        assert_eq!((store.count(), store.outbox().len(), store.write_requests()), (0, 0, 0));
    }
}
