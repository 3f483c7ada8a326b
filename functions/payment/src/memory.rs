//! The in-memory adapter of the payment store, for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;

use orderflow_aws::StoreError;

use crate::store::{PaymentRecord, PaymentStatus, PaymentStore};

#[derive(Debug, Default)]
struct State {
    payments: BTreeMap<String, PaymentRecord>,
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

/// Payments by order, with DynamoDB's semantics (conditional, all-or-nothing writes). Clones share the same
/// state; write requests are counted as DynamoDB bills them (one per request, committed or not).
#[derive(Debug, Clone, Default)]
pub struct MemoryPayments {
    state: Arc<Mutex<State>>,
}

impl MemoryPayments {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The payment recorded for the order.
    pub fn stored(&self, order_id: &str) -> Option<PaymentRecord> {
        self.lock().payments.get(order_id).cloned()
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

impl PaymentStore for MemoryPayments {
    async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self.stored(order_id))
    }

    async fn record(&self, payment: &PaymentRecord, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        if state.payments.contains_key(&payment.order_id) || state.outbox_exists(outbox) {
            return Ok(Written::Duplicate);
        }
        state.payments.insert(payment.order_id.clone(), payment.clone());
        state.outbox.push(outbox.clone());
        Ok(Written::Committed)
    }

    async fn record_tombstone(&self, tombstone: &PaymentRecord) -> Result<Written, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if state.payments.contains_key(&tombstone.order_id) {
            return Ok(Written::Duplicate);
        }
        state.payments.insert(tombstone.order_id.clone(), tombstone.clone());
        Ok(Written::Committed)
    }

    async fn record_void(&self, order_id: &str, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        let authorized = state.payments.get(order_id).is_some_and(|p| p.status == PaymentStatus::Authorized);
        if !authorized || state.outbox_exists(outbox) {
            return Ok(Written::Duplicate);
        }
        if let Some(payment) = state.payments.get_mut(order_id) {
            payment.status = PaymentStatus::Voided;
        }
        state.outbox.push(outbox.clone());
        Ok(Written::Committed)
    }
}
