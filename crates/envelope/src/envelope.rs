//! The event envelope of the public contract:
//! `{ id, type, version, occurred_at, correlation_id, causation_id, data }`.
//!
//! A request starts a chain of events with [`Envelope::new`]; every event a consumer emits in reaction is built with
//! [`Envelope::caused_by`], so the whole saga shares one correlation id and each event names the one that caused it.
//!
//! ```
//! use orderflow_envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
//! # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
//! #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
//! struct OrderPlaced { order_id: String }
//! impl Event for OrderPlaced {
//!     const TYPE: &'static str = "OrderPlaced";
//!     const VERSION: u32 = 1;
//!     const SOURCE: &'static str = "orderflow.orders";
//! }
//! #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
//! struct InventoryReserved { order_id: String }
//! impl Event for InventoryReserved {
//!     const TYPE: &'static str = "InventoryReserved";
//!     const VERSION: u32 = 1;
//!     const SOURCE: &'static str = "orderflow.inventory";
//! }
//!
//! let placed = Envelope::new("o-1", OrderPlaced { order_id: "o-1".into() });
//! assert_eq!(placed.causation_id, None);
//! let reserved = Envelope::caused_by(&placed, InventoryReserved { order_id: "o-1".into() });
//! assert_eq!((reserved.correlation_id.as_str(), reserved.causation_id), ("o-1", Some(placed.id)));
//!
//! // Serialized, it is the bus `detail` of the public contract.
//! let json = serde_json::to_value(&reserved).unwrap();
//! assert_eq!((json["type"].as_str(), json["version"].as_u64()), (Some("InventoryReserved"), Some(1)));
//! assert_eq!(json["causation_id"], placed.id.to_string());
//!
//! // A consumer reads it before it knows the type, then decodes the `data` of the type it handles. (Bus events
//! // are read with the `Registry`, which also upcasts older versions.)
//! let raw: RawEnvelope = serde_json::from_value(json).unwrap();
//! assert_eq!(raw.decode::<InventoryReserved>().unwrap(), reserved);
//! assert!(matches!(raw.decode::<OrderPlaced>(), Err(EnvelopeError::NotHandled(t)) if t == "InventoryReserved"));
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// A typed event: the `data` of one version of one event type.
///
/// `TYPE` is both the envelope's `type` and the bus `detail-type`; `SOURCE` is the bus `source` of the
/// service that emits it (`orderflow.<service>`).
pub trait Event: Serialize + DeserializeOwned + JsonSchema {
    const TYPE: &'static str;
    const VERSION: u32;
    const SOURCE: &'static str;
}

/// An event with its metadata, as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// Unique per event; consumers use it to recognise redeliveries.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub occurred_at: OffsetDateTime,
    /// The order id (or request id) that ties a whole saga together.
    pub correlation_id: String,
    /// The id of the event that caused this one; `None` for events caused by a request.
    pub causation_id: Option<Uuid>,
    pub data: T,
}

impl<T: Event> Envelope<T> {
    /// A new event caused by a request (no causing event).
    pub fn new(correlation_id: impl Into<String>, data: T) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type: T::TYPE.to_owned(),
            version: T::VERSION,
            occurred_at: OffsetDateTime::now_utc(),
            correlation_id: correlation_id.into(),
            causation_id: None,
            data,
        }
    }

    /// A new event caused by `cause`: it carries the cause's correlation id and names it as causation.
    pub fn caused_by<C>(cause: &Envelope<C>, data: T) -> Self {
        Self { causation_id: Some(cause.id), ..Self::new(cause.correlation_id.clone(), data) }
    }
}

/// Why an incoming event cannot be used. Every variant is permanent: retrying cannot fix it.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unsupported version {version} of {event_type} (this consumer reads versions {supported})")]
    UnsupportedVersion { event_type: String, version: u32, supported: String },
    #[error("detail-type {detail_type:?} does not match envelope type {envelope_type:?}")]
    TypeMismatch { detail_type: String, envelope_type: String },
    #[error("cannot upcast {event_type} v{from}: {reason}")]
    Upcast { event_type: String, from: u32, reason: String },
    #[error("invalid data for {event_type} v{version}: {reason}")]
    InvalidData { event_type: String, version: u32, reason: String },
    #[error("this consumer does not handle {0}")]
    NotHandled(String),
}

/// An envelope whose `data` is not decoded yet: what a consumer reads before it knows the type.
///
/// A tolerant reader: fields it does not know (a newer producer's `traceparent`) are ignored, not refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawEnvelope {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub correlation_id: String,
    pub causation_id: Option<Uuid>,
    pub data: Value,
}

impl RawEnvelope {
    /// Decodes `data` as `T`. The envelope must already be at `T::VERSION` (see [`crate::Registry::upcast`]).
    pub fn decode<T: Event>(&self) -> Result<Envelope<T>, EnvelopeError> {
        if self.event_type != T::TYPE {
            return Err(EnvelopeError::NotHandled(self.event_type.clone()));
        }
        if self.version != T::VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                event_type: self.event_type.clone(),
                version: self.version,
                supported: T::VERSION.to_string(),
            });
        }
        let data = T::deserialize(&self.data).map_err(|e| EnvelopeError::InvalidData {
            event_type: self.event_type.clone(),
            version: self.version,
            reason: e.to_string(),
        })?;
        Ok(Envelope {
            id: self.id,
            event_type: self.event_type.clone(),
            version: self.version,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id,
            data,
        })
    }
}

impl<T: Event> From<&Envelope<T>> for RawEnvelope {
    fn from(envelope: &Envelope<T>) -> Self {
        Self {
            id: envelope.id,
            event_type: envelope.event_type.clone(),
            version: envelope.version,
            occurred_at: envelope.occurred_at,
            correlation_id: envelope.correlation_id.clone(),
            causation_id: envelope.causation_id,
            data: serde_json::to_value(&envelope.data).expect("event data serialises to JSON"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    struct Pinged {
        n: u32,
    }
    impl Event for Pinged {
        const TYPE: &'static str = "Pinged";
        const VERSION: u32 = 2;
        const SOURCE: &'static str = "test.pinger";
    }

    #[test]
    fn caused_event_carries_correlation_and_names_its_cause() {
        let cause = Envelope::new("order-1", Pinged { n: 1 });
        let effect = Envelope::caused_by(&cause, Pinged { n: 2 });
        assert_eq!(effect.correlation_id, "order-1");
        assert_eq!(effect.causation_id, Some(cause.id));
        assert_ne!(effect.id, cause.id);
    }

    #[test]
    fn envelope_serialises_to_the_public_contract() {
        let envelope = Envelope::new("order-1", Pinged { n: 7 });
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["type"], "Pinged");
        assert_eq!(json["version"], 2);
        assert_eq!(json["correlation_id"], "order-1");
        assert_eq!(json["causation_id"], Value::Null);
        assert_eq!(json["data"]["n"], 7);
        let occurred_at = json["occurred_at"].as_str().unwrap();
        OffsetDateTime::parse(occurred_at, &time::format_description::well_known::Rfc3339).unwrap();
    }

    #[test]
    fn raw_envelope_decodes_into_the_typed_event() {
        let envelope = Envelope::new("order-1", Pinged { n: 3 });
        let raw = RawEnvelope::from(&envelope);
        assert_eq!(raw.decode::<Pinged>().unwrap(), envelope);
    }

    #[test]
    fn decoding_invalid_data_names_the_type_and_the_problem() {
        let mut raw = RawEnvelope::from(&Envelope::new("order-1", Pinged { n: 3 }));
        raw.data = serde_json::json!({"n": "three"});
        let err = raw.decode::<Pinged>().unwrap_err().to_string();
        assert!(err.contains("Pinged v2"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
    }
}
