//! The payment's storage port (the in-memory adapter is in `memory.rs`, the DynamoDB one in `dynamo.rs`).
//!
//! Recording a payment is ONE conditional transaction: the `PAYMENT#<order>` item, written only if none exists
//! (the idempotency: one charge decision per order), and the outbox record of its event.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use orderflow_domain::Decimal;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Authorized,
    Declined,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "AUTHORIZED",
            Self::Declined => "DECLINED",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "AUTHORIZED" => Ok(Self::Authorized),
            "DECLINED" => Ok(Self::Declined),
            other => Err(format!("unknown payment status {other:?}")),
        }
    }
}

/// The outcome of an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Decimal,
    pub payment_id: String,
    pub status: PaymentStatus,
    /// Why it was declined.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a timeout, the service unavailable: retrying may succeed.
    #[error("payments store unavailable: {0}")]
    Unavailable(String),
    /// The request or a stored item is invalid: retrying cannot succeed.
    #[error("payments store rejected the request: {0}")]
    Invalid(String),
}

pub trait PaymentStore: Send + Sync {
    /// A consistent read of the order's payment.
    fn payment(&self, order_id: &str) -> impl Future<Output = Result<Option<PaymentRecord>, StoreError>> + Send;

    /// One transaction: the payment if none exists for its order, and the outbox record. [`Written::Duplicate`]:
    /// the order's payment is already recorded, nothing was written.
    fn record(
        &self,
        payment: &PaymentRecord,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}
