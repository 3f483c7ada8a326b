//! Where notifications are recorded: the port. Adapters: [`crate::dynamo`], and `crate::memory` for tests.

use std::future::Future;

use orderflow_aws::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

/// The notification a customer would receive (no real e-mail is sent): item `ORDER#<order>` / `<event id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub order_id: String,
    /// The id of the event that caused it: one notification per event, however often it is delivered.
    pub event_id: Uuid,
    pub customer_id: String,
    pub event_type: String,
    /// A human sentence, e.g. "Your order o-1 has shipped (shipment s-9)."
    pub message: String,
    /// When it was recorded (RFC 3339 in the table).
    pub created_at: OffsetDateTime,
}

impl Notification {
    pub fn pk(&self) -> String {
        format!("ORDER#{}", self.order_id)
    }

    pub fn sk(&self) -> String {
        self.event_id.to_string()
    }
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The event was delivered before: the notification exists and nothing was written.
    AlreadyRecorded,
}

/// Records notifications, each at most once (a conditional put on its key).
pub trait NotificationStore: Send + Sync {
    fn record(&self, notification: &Notification) -> impl Future<Output = Result<Recorded, StoreError>> + Send;
}
