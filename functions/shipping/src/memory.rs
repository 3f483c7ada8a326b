//! The in-memory adapter of the shipment store, for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;

use orderflow_aws::StoreError;

use crate::store::{Shipment, ShipmentStatus, ShipmentStore};

/// An order's item: its shipment if one was scheduled, and its status.
#[derive(Debug, Clone)]
struct Item {
    shipment: Option<Shipment>,
    status: ShipmentStatus,
}

#[derive(Debug, Default)]
struct State {
    items: BTreeMap<String, Item>,
    outbox: Vec<OutboxRecord>,
    write_requests: u64,
    failing_writes: u32,
}

impl State {
    /// Counts a write request and fails it when a failure was injected.
    fn begin_write(&mut self) -> Result<(), StoreError> {
        self.write_requests += 1;
        if self.failing_writes > 0 {
            self.failing_writes -= 1;
            return Err(StoreError::Transient("ProvisionedThroughputExceededException (injected)".into()));
        }
        Ok(())
    }

    fn outbox_exists(&self, record: &OutboxRecord) -> bool {
        self.outbox.iter().any(|r| r.partition == record.partition && r.event_id == record.event_id)
    }
}

/// Shipments by order, with DynamoDB's semantics (conditional, all-or-nothing writes). Clones share the same
/// state; write requests are counted as DynamoDB bills them (one per write, committed or not).
#[derive(Debug, Clone, Default)]
pub struct MemoryShipments {
    state: Arc<Mutex<State>>,
}

impl MemoryShipments {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shipment scheduled for the order (cancelled since, or not).
    pub fn stored(&self, order_id: &str) -> Option<Shipment> {
        self.lock().items.get(order_id).and_then(|item| item.shipment.clone())
    }

    /// The status of the order's item.
    pub fn status_of(&self, order_id: &str) -> Option<ShipmentStatus> {
        self.lock().items.get(order_id).map(|item| item.status)
    }

    /// How many shipments were scheduled (cancelled since, or not).
    pub fn shipments(&self) -> usize {
        self.lock().items.values().filter(|item| item.shipment.is_some()).count()
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

impl ShipmentStore for MemoryShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        if state.items.contains_key(&shipment.order_id) || state.outbox_exists(outbox) {
            return Ok(Written::Duplicate);
        }
        let item = Item { shipment: Some(shipment.clone()), status: ShipmentStatus::Scheduled };
        state.items.insert(shipment.order_id.clone(), item);
        state.outbox.push(outbox.clone());
        Ok(Written::Committed)
    }

    async fn status(&self, order_id: &str) -> Result<Option<ShipmentStatus>, StoreError> {
        Ok(self.status_of(order_id))
    }

    async fn cancel(&self, order_id: &str, _: OffsetDateTime, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        let scheduled = state.items.get(order_id).is_some_and(|item| item.status == ShipmentStatus::Scheduled);
        if !scheduled || state.outbox_exists(outbox) {
            return Ok(Written::Duplicate);
        }
        if let Some(item) = state.items.get_mut(order_id) {
            item.status = ShipmentStatus::Cancelled;
        }
        state.outbox.push(outbox.clone());
        Ok(Written::Committed)
    }

    async fn tombstone(&self, order_id: &str, _: OffsetDateTime) -> Result<Written, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if state.items.contains_key(order_id) {
            return Ok(Written::Duplicate);
        }
        state.items.insert(order_id.to_owned(), Item { shipment: None, status: ShipmentStatus::Cancelled });
        Ok(Written::Committed)
    }
}
