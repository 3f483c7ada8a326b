//! The transactional outbox: an event is written as a record in the same transaction as the change that causes
//! it; the outbox relay publishes it from the table's stream. Never a write followed by a separate publish.

use uuid::Uuid;

use crate::envelope::{Envelope, Event};

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
}
