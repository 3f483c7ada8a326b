//! The in-memory adapter of the payment store, for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_toolkit::OutboxRecord;

use crate::store::{PaymentRecord, PaymentStore, Recorded, StoreError};

#[derive(Debug, Default)]
struct State {
    payments: BTreeMap<String, PaymentRecord>,
    outbox: Vec<OutboxRecord>,
    write_requests: u64,
    failing_writes: u32,
}

/// The in-memory adapter, with DynamoDB's semantics (a conditional, all-or-nothing transaction). Clones share the
/// same state; write requests are counted as DynamoDB bills them.
#[derive(Debug, Clone, Default)]
pub struct MemoryPayments {
    state: Arc<Mutex<State>>,
}

impl MemoryPayments {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stored(&self, order_id: &str) -> Option<PaymentRecord> {
        self.lock().payments.get(order_id).cloned()
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

impl PaymentStore for MemoryPayments {
    async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self.stored(order_id))
    }

    async fn record(&self, payment: &PaymentRecord, outbox: &OutboxRecord) -> Result<Recorded, StoreError> {
        let mut state = self.lock();
        state.write_requests += 1;
        if state.failing_writes > 0 {
            state.failing_writes -= 1;
            return Err(StoreError::Unavailable("ProvisionedThroughputExceededException (injected)".into()));
        }
        let outbox_exists =
            state.outbox.iter().any(|r| r.partition == outbox.partition && r.event_id == outbox.event_id);
        if state.payments.contains_key(&payment.order_id) || outbox_exists {
            return Ok(Recorded::Duplicate);
        }
        state.payments.insert(payment.order_id.clone(), payment.clone());
        state.outbox.push(outbox.clone());
        Ok(Recorded::Committed)
    }
}
