//! The in-memory adapter of the payment store, for the handler's tests.

use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::{MemoryOutboxStore, Written};

use crate::store::{PaymentRecord, PaymentStore, StoreError};

/// Payments by order, with DynamoDB's semantics (a conditional, all-or-nothing transaction).
pub type MemoryPayments = MemoryOutboxStore<PaymentRecord>;

impl PaymentStore for MemoryPayments {
    async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self.stored(order_id))
    }

    async fn record(&self, payment: &PaymentRecord, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        self.put_new_with_event(&payment.order_id, payment, outbox).map_err(StoreError::Unavailable)
    }
}
