//! The in-memory adapter of the shipment store, for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_toolkit::OutboxRecord;

use crate::store::{Scheduled, Shipment, ShipmentStore, StoreError};

#[derive(Debug, Default)]
struct State {
    shipments: BTreeMap<String, Shipment>,
    outbox: Vec<OutboxRecord>,
    write_requests: u64,
    failing_writes: u32,
}

/// The in-memory adapter, with DynamoDB's semantics (a conditional, all-or-nothing transaction). Clones share the
/// same state; write requests are counted as DynamoDB bills them.
#[derive(Debug, Clone, Default)]
pub struct MemoryShipments {
    state: Arc<Mutex<State>>,
}

impl MemoryShipments {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stored(&self, order_id: &str) -> Option<Shipment> {
        self.lock().shipments.get(order_id).cloned()
    }

    pub fn shipments(&self) -> usize {
        self.lock().shipments.len()
    }

    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.lock().outbox.clone()
    }

    pub fn write_requests(&self) -> u64 {
        self.lock().write_requests
    }

    /// Makes the next `n` write requests fail as throttled.
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing_writes = n;
    }
}

impl ShipmentStore for MemoryShipments {
    async fn schedule(&self, shipment: &Shipment, outbox: &OutboxRecord) -> Result<Scheduled, StoreError> {
        let mut state = self.lock();
        state.write_requests += 1;
        if state.failing_writes > 0 {
            state.failing_writes -= 1;
            return Err(StoreError::Unavailable("ProvisionedThroughputExceededException (injected)".into()));
        }
        let outbox_exists =
            state.outbox.iter().any(|r| r.partition == outbox.partition && r.event_id == outbox.event_id);
        if state.shipments.contains_key(&shipment.order_id) || outbox_exists {
            return Ok(Scheduled::Duplicate);
        }
        state.shipments.insert(shipment.order_id.clone(), shipment.clone());
        state.outbox.push(outbox.clone());
        Ok(Scheduled::Committed)
    }
}
