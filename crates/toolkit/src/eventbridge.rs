//! Functions an EventBridge rule invokes directly (asynchronously): one event per invocation, no batch.
//!
//! Lambda owns the retries and the on-failure destination of an asynchronous invoke, so every failure must fail the
//! invocation with an error (never a panic) whose class says whether a retry can help. [`parse_bus_event`] is the
//! typed parse step (a malformed event, an unknown type or version, or a type the function does not handle is a
//! [`HandlerError::Permanent`]); [`handle_bus_event`] runs a handler on the decoded envelope and logs the outcome
//! with the bus event id. `orderflow_aws::bus_function` turns the result into the Lambda response, with `errorType`
//! `HandlerError::Transient` or `HandlerError::Permanent`.

use std::future::Future;

use serde_json::Value;

use crate::envelope::{Envelope, Event};
use crate::error::HandlerError;
use crate::registry::Registry;

/// The typed parse step of an EventBridge event: the envelope of `T` at its current version (older versions are
/// upcast by the registry), or a [`HandlerError::Permanent`] saying why it cannot be read.
pub fn parse_bus_event<T: Event>(registry: &Registry, event: Value) -> Result<Envelope<T>, HandlerError> {
    Ok(registry.read_bus_value(event)?.decode::<T>()?)
}

/// Parses `event` as a `T` and runs `handler` on it; a failure of either is logged with its class and the bus event
/// id, and returned.
///
/// ```
/// use orderflow_toolkit::eventbridge::handle_bus_event;
/// use orderflow_toolkit::{Envelope, Event, HandlerError, Registry};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct Shipped { order_id: String }
/// impl Event for Shipped {
///     const TYPE: &'static str = "Shipped";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "demo";
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = Registry::new().register::<Shipped>();
/// let event = serde_json::json!({"id": "b1", "detail-type": "Shipped", "source": "demo", "detail": {
///     "id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": "Shipped", "version": 1,
///     "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-1", "causation_id": null,
///     "data": {"order_id": "o-1"}}});
/// let notified = handle_bus_event(&registry, event, |shipped: Envelope<Shipped>| async move {
///     Ok::<_, HandlerError>(format!("order {} shipped", shipped.data.order_id))
/// }).await;
/// assert_eq!(notified.unwrap(), "order o-1 shipped");
///
/// // Garbage is a permanent failure, not a panic: retrying cannot help.
/// let unused = |_: Envelope<Shipped>| async { Ok::<_, HandlerError>(String::new()) };
/// let err = handle_bus_event(&registry, serde_json::json!({"nope": 1}), unused).await.unwrap_err();
/// assert_eq!(err.class(), "Permanent");
/// # })
/// ```
pub async fn handle_bus_event<T, R, F, Fut>(registry: &Registry, event: Value, handler: F) -> Result<R, HandlerError>
where
    T: Event,
    F: FnOnce(Envelope<T>) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let bus_event_id = event.get("id").and_then(Value::as_str).unwrap_or("-").to_owned();
    let outcome = match parse_bus_event::<T>(registry, event) {
        Ok(envelope) => handler(envelope).await,
        Err(error) => Err(error),
    };
    match &outcome {
        Ok(_) => {}
        Err(error @ HandlerError::Permanent(reason)) => tracing::error!(
            error_type = error.error_type(),
            reason,
            bus_event_id,
            "event cannot be handled; failing the invocation (it reaches the on-failure destination)"
        ),
        Err(error @ HandlerError::Transient { reason, .. }) => tracing::warn!(
            error_type = error.error_type(),
            reason,
            bus_event_id,
            "event not handled; failing the invocation so that Lambda retries it"
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Shipped {
        order_id: String,
    }
    impl Event for Shipped {
        const TYPE: &'static str = "Shipped";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "test";
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    struct Cancelled {
        order_id: String,
    }
    impl Event for Cancelled {
        const TYPE: &'static str = "Cancelled";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "test";
    }

    fn registry() -> Registry {
        Registry::new().register::<Shipped>().register::<Cancelled>()
    }

    fn bus_event(detail_type: &str, data: Value) -> Value {
        let envelope = Envelope::new("o-1", Shipped { order_id: "o-1".into() });
        let mut detail = serde_json::to_value(envelope).unwrap();
        detail["type"] = json!(detail_type);
        detail["data"] = data;
        json!({"id": "bus-1", "detail-type": detail_type, "source": "test", "time": "2026-11-24T10:00:00Z",
               "detail": detail})
    }

    #[test]
    fn parses_the_typed_envelope() {
        let envelope = parse_bus_event::<Shipped>(&registry(), bus_event("Shipped", json!({"order_id": "o-7"})));
        assert_eq!(envelope.unwrap().data, Shipped { order_id: "o-7".into() });
    }

    #[test]
    fn invalid_events_are_permanent_failures() {
        let registry = registry();
        for event in [
            json!("not an event"),
            bus_event("Shipped", json!({"order": 1})),
            bus_event("Teleported", json!({})),
            bus_event("Cancelled", json!({"order_id": "o-1"})),
        ] {
            let err = parse_bus_event::<Shipped>(&registry, event.clone()).unwrap_err();
            assert!(matches!(err, HandlerError::Permanent(_)), "{event}: {err}");
        }
    }

    #[tokio::test]
    async fn the_handler_error_class_is_kept() {
        let event = bus_event("Shipped", json!({"order_id": "o-1"}));
        let err = handle_bus_event(&registry(), event, |_: Envelope<Shipped>| async {
            Err::<(), _>(HandlerError::transient("store down"))
        })
        .await
        .unwrap_err();
        assert_eq!(err, HandlerError::transient("store down"));
        assert_eq!(err.error_type(), "HandlerError::Transient");
    }
}
