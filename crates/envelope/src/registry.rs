//! The event registry: which types and versions a consumer reads, and how older versions are upcast.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::envelope::{EnvelopeError, Event, RawEnvelope};

/// Turns the `data` of version `n` into the `data` of version `n + 1`.
pub type Upcaster = fn(Value) -> Result<Value, String>;

#[derive(Debug, Clone)]
struct TypeEntry {
    current: u32,
    oldest: u32,
    upcasters: BTreeMap<u32, Upcaster>,
}

/// An envelope-less shape that a legacy producer puts on the bus, read as an old version of a current type.
#[derive(Debug, Clone)]
struct LegacyShape {
    event_type: &'static str,
    version: u32,
    correlation_field: &'static str,
}

/// Every event type a consumer reads, with its current version and the upcasters from older ones.
///
/// ```
/// use orderflow_envelope::{Event, Registry};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct Pinged { count: u32 }
/// impl Event for Pinged { const TYPE: &'static str = "Pinged"; const VERSION: u32 = 2; const SOURCE: &'static str = "demo"; }
///
/// // v1 called the field `n`.
/// let registry = Registry::new()
///     .register::<Pinged>()
///     .upcaster("Pinged", 1, |mut data| {
///         let n = data.get("n").cloned().ok_or("missing n")?;
///         data["count"] = n;
///         Ok(data)
///     });
/// let body = r#"{"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "detail-type": "Pinged", "source": "demo",
///   "time": "2026-01-01T00:00:00Z", "detail": {"id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": "Pinged",
///   "version": 1, "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "c-1", "causation_id": null,
///   "data": {"n": 3}}}"#;
/// let event = registry.read_bus_event(body).unwrap().decode::<Pinged>().unwrap();
/// assert_eq!(event.data.count, 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<&'static str, TypeEntry>,
    legacy: BTreeMap<&'static str, LegacyShape>,
}

/// The parts of an EventBridge event that matter to a consumer.
#[derive(Deserialize)]
struct BusEvent {
    id: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: Option<String>,
    detail: Value,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` as the current version of its type.
    pub fn register<T: Event>(mut self) -> Self {
        self.types.insert(T::TYPE, TypeEntry { current: T::VERSION, oldest: T::VERSION, upcasters: BTreeMap::new() });
        self
    }

    /// Registers the upcaster from `from_version` to `from_version + 1` of a registered type.
    ///
    /// # Panics
    /// When the type is not registered or `from_version` is not below its current version: both are
    /// programming errors in the registry's construction.
    pub fn upcaster(mut self, event_type: &str, from_version: u32, upcast: Upcaster) -> Self {
        let entry =
            self.types.get_mut(event_type).unwrap_or_else(|| panic!("register {event_type} before its upcasters"));
        assert!(
            from_version < entry.current,
            "upcaster from v{from_version} of {event_type} must be below its current version"
        );
        entry.upcasters.insert(from_version, upcast);
        entry.oldest = entry.oldest.min(from_version);
        self
    }

    /// Accepts an envelope-less legacy body `{"type": detail_type, "data": {...}}` put on the bus with
    /// `detail-type` = `detail_type` as `version` of `event_type`; its correlation id is `data[correlation_field]`.
    ///
    /// ```
    /// use orderflow_envelope::{EnvelopeError, Event, Registry};
    /// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, JsonSchema)]
    /// struct OrderPlaced { order_id: String, quantity: u32 }
    /// impl Event for OrderPlaced {
    ///     const TYPE: &'static str = "OrderPlaced";
    ///     const VERSION: u32 = 1;
    ///     const SOURCE: &'static str = "orderflow.orders";
    /// }
    ///
    /// // A legacy producer's `OrderCreated` is version 0 of `OrderPlaced`; the upcaster keeps the fields v1 reads.
    /// let registry = Registry::new()
    ///     .register::<OrderPlaced>()
    ///     .upcaster("OrderPlaced", 0, |v0| {
    ///         Ok(serde_json::json!({"order_id": v0["order_id"], "quantity": v0["quantity"]}))
    ///     })
    ///     .legacy("OrderCreated", "OrderPlaced", 0, "order_id");
    /// let legacy = r#"{"id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "OrderCreated",
    ///   "time": "2026-01-01T00:00:00Z", "detail": {"type": "OrderCreated",
    ///   "data": {"order_id": "o-7", "user_id": "u-1", "quantity": 2, "status": "new"}}}"#;
    /// let placed = registry.read_bus_event(legacy).unwrap().decode::<OrderPlaced>().unwrap();
    /// assert_eq!((placed.correlation_id.as_str(), placed.data.quantity), ("o-7", 2));
    ///
    /// // Unknown types are refused with a reason, which the dead letter carries.
    /// let unknown = r#"{"detail-type": "Teleported", "detail": {"id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1",
    ///   "type": "Teleported", "version": 1, "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-7",
    ///   "causation_id": null, "data": {}}}"#;
    /// let err = registry.read_bus_event(unknown).unwrap_err();
    /// assert!(matches!(&err, EnvelopeError::UnknownType(t) if t == "Teleported"), "{err}");
    /// ```
    pub fn legacy(
        mut self,
        detail_type: &'static str,
        event_type: &'static str,
        version: u32,
        correlation_field: &'static str,
    ) -> Self {
        self.legacy.insert(detail_type, LegacyShape { event_type, version, correlation_field });
        self
    }

    /// The detail-types this registry reads: current type names and legacy names.
    pub fn detail_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().chain(self.legacy.keys()).copied()
    }

    /// Brings an envelope to the current version of its type, or says why it cannot be read.
    pub fn upcast(&self, mut raw: RawEnvelope) -> Result<RawEnvelope, EnvelopeError> {
        let entry = self
            .types
            .get(raw.event_type.as_str())
            .ok_or_else(|| EnvelopeError::UnknownType(raw.event_type.clone()))?;
        if raw.version > entry.current || raw.version < entry.oldest {
            return Err(EnvelopeError::UnsupportedVersion {
                event_type: raw.event_type,
                version: raw.version,
                supported: format!("{}..={}", entry.oldest, entry.current),
            });
        }
        while raw.version < entry.current {
            let upcast = entry.upcasters.get(&raw.version).ok_or_else(|| EnvelopeError::Upcast {
                event_type: raw.event_type.clone(),
                from: raw.version,
                reason: "no upcaster registered".into(),
            })?;
            raw.data = upcast(raw.data).map_err(|reason| EnvelopeError::Upcast {
                event_type: raw.event_type.clone(),
                from: raw.version,
                reason,
            })?;
            raw.version += 1;
        }
        Ok(raw)
    }

    /// Reads an EventBridge event (the JSON Lambda receives from a rule, or an SQS body fed by a rule) into an
    /// envelope at the current version of its type.
    pub fn read_bus_event(&self, json: &str) -> Result<RawEnvelope, EnvelopeError> {
        let event: BusEvent = serde_json::from_str(json).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        self.read_parsed_bus_event(event)
    }

    /// [`Self::read_bus_event`] of an event already parsed as JSON (what a directly-invoked function receives).
    pub fn read_bus_value(&self, event: Value) -> Result<RawEnvelope, EnvelopeError> {
        let event: BusEvent = serde_json::from_value(event).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        self.read_parsed_bus_event(event)
    }

    fn read_parsed_bus_event(&self, event: BusEvent) -> Result<RawEnvelope, EnvelopeError> {
        let raw = match self.legacy.get(event.detail_type.as_str()) {
            Some(shape) => self.read_legacy(shape, &event)?,
            None => {
                let raw: RawEnvelope = serde_json::from_value(event.detail)
                    .map_err(|e| EnvelopeError::Malformed(format!("detail is not an envelope: {e}")))?;
                if raw.event_type != event.detail_type {
                    return Err(EnvelopeError::TypeMismatch {
                        detail_type: event.detail_type,
                        envelope_type: raw.event_type,
                    });
                }
                raw
            }
        };
        self.upcast(raw)
    }

    fn read_legacy(&self, shape: &LegacyShape, event: &BusEvent) -> Result<RawEnvelope, EnvelopeError> {
        let malformed = |what: &str| EnvelopeError::Malformed(format!("legacy {}: {what}", event.detail_type));
        if event.detail.get("type").and_then(Value::as_str) != Some(event.detail_type.as_str()) {
            return Err(malformed("detail.type does not match detail-type"));
        }
        let data = event.detail.get("data").cloned().ok_or_else(|| malformed("missing data"))?;
        let correlation_id = match data.get(shape.correlation_field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(malformed(&format!("missing data.{}", shape.correlation_field))),
        };
        // A legacy body has no event id: the bus event id is stable across redeliveries, so it stands in.
        let bus_id = event.id.as_deref().ok_or_else(|| malformed("missing event id"))?;
        let id = Uuid::parse_str(bus_id).unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_OID, bus_id.as_bytes()));
        let occurred_at = match &event.time {
            Some(time) => OffsetDateTime::parse(time, &Rfc3339).map_err(|e| malformed(&format!("time: {e}")))?,
            None => return Err(malformed("missing time")),
        };
        Ok(RawEnvelope {
            id,
            event_type: shape.event_type.to_owned(),
            version: shape.version,
            occurred_at,
            correlation_id,
            causation_id: None,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;
    use schemars::JsonSchema;
    use serde::Serialize;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Placed {
        order: String,
        qty: u32,
    }
    impl Event for Placed {
        const TYPE: &'static str = "Placed";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "test.orders";
    }

    fn registry() -> Registry {
        Registry::new()
            .register::<Placed>()
            .upcaster("Placed", 0, |data| Ok(json!({"order": data["order_id"], "qty": data["quantity"]})))
            .legacy("Created", "Placed", 0, "order_id")
    }

    fn bus_event(detail_type: &str, detail: Value) -> String {
        json!({"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": detail_type,
               "source": "test", "time": "2026-11-24T10:00:00Z", "detail": detail})
        .to_string()
    }

    #[test]
    fn current_version_reads_unchanged() {
        let envelope = Envelope::new("o-1", Placed { order: "o-1".into(), qty: 2 });
        let body = bus_event("Placed", serde_json::to_value(&envelope).unwrap());
        let read = registry().read_bus_event(&body).unwrap().decode::<Placed>().unwrap();
        assert_eq!(read, envelope);
    }

    #[test]
    fn legacy_shape_is_upcast_to_the_current_version() {
        let body = bus_event(
            "Created",
            json!({"type": "Created", "data": {"order_id": "o-9", "quantity": 4, "status": "new"}}),
        );
        let read = registry().read_bus_event(&body).unwrap();
        assert_eq!(read.version, 1);
        assert_eq!(read.correlation_id, "o-9");
        assert_eq!(read.id.to_string(), "7bf73129-1428-4cd3-a780-95db273d1602");
        assert_eq!(read.decode::<Placed>().unwrap().data, Placed { order: "o-9".into(), qty: 4 });
    }

    #[test]
    fn fields_this_reader_does_not_know_are_ignored() {
        let envelope = Envelope::new("o-1", Placed { order: "o-1".into(), qty: 2 });
        let mut detail = serde_json::to_value(&envelope).unwrap();
        detail["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let read = registry().read_bus_event(&bus_event("Placed", detail)).unwrap().decode::<Placed>().unwrap();
        assert_eq!(read, envelope);
    }

    #[test]
    fn unknown_type_is_rejected_with_its_name() {
        let mut detail = serde_json::to_value(Envelope::new("o-1", Placed { order: "o".into(), qty: 1 })).unwrap();
        detail["type"] = json!("Teleported");
        let err = registry().read_bus_event(&bus_event("Teleported", detail)).unwrap_err();
        assert_eq!(err.to_string(), "unknown event type \"Teleported\"");
    }

    #[test]
    fn future_version_is_rejected_naming_the_supported_range() {
        let mut detail = serde_json::to_value(Envelope::new("o-1", Placed { order: "o".into(), qty: 1 })).unwrap();
        detail["version"] = json!(7);
        let err = registry().read_bus_event(&bus_event("Placed", detail)).unwrap_err();
        assert_eq!(err.to_string(), "unsupported version 7 of Placed (this consumer reads versions 0..=1)");
    }

    #[test]
    fn detail_type_must_match_the_envelope_type() {
        let detail = serde_json::to_value(Envelope::new("o-1", Placed { order: "o".into(), qty: 1 })).unwrap();
        let err = registry().read_bus_event(&bus_event("Other", detail)).unwrap_err();
        assert!(matches!(err, EnvelopeError::TypeMismatch { .. }), "{err}");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for body in ["", "{", "[]", r#"{"detail-type": "Placed", "detail": 5}"#] {
            assert!(matches!(registry().read_bus_event(body), Err(EnvelopeError::Malformed(_))), "{body}");
        }
    }
}
