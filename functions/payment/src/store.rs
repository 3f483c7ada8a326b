//! The payment's storage port (the in-memory adapter is in `memory.rs`, the DynamoDB one in `dynamo.rs`).
//!
//! One `PAYMENT#<order>` item per order, written only if none exists (the idempotency: one charge decision per
//! order): recording a decision is ONE conditional transaction with the outbox record of its event. Afterwards
//! only `AUTHORIZED -> VOIDED` changes it, conditional on `AUTHORIZED`, again with its event. An order cancelled
//! before it was charged gets a `VOIDED` tombstone instead (no amount, no event), so no later charge is recorded.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use orderflow_aws::StoreError;
use orderflow_domain::Decimal;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Authorized,
    Declined,
    /// The authorization was voided, or the order was cancelled before it was charged (a tombstone).
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "AUTHORIZED",
            Self::Declined => "DECLINED",
            Self::Voided => "VOIDED",
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
            "VOIDED" => Ok(Self::Voided),
            other => Err(format!("unknown payment status {other:?}")),
        }
    }
}

/// The outcome of an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub order_id: String,
    pub customer_id: String,
    /// `None` on a tombstone: the order was cancelled before it was charged.
    pub amount: Option<Decimal>,
    pub payment_id: String,
    pub status: PaymentStatus,
    /// Why it was declined.
    pub reason: Option<String>,
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

    /// The tombstone (status `VOIDED`, no amount) if no payment exists for its order; no event.
    /// [`Written::Duplicate`]: the order's payment is recorded, nothing was written.
    fn record_tombstone(&self, tombstone: &PaymentRecord) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// One transaction: the order's payment `AUTHORIZED -> VOIDED` (conditional on `AUTHORIZED`), and the outbox
    /// record. [`Written::Duplicate`]: it is not `AUTHORIZED` any more (or the event exists), nothing was written.
    fn record_void(
        &self,
        order_id: &str,
        outbox: &OutboxRecord,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}
