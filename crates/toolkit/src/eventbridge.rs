//! Functions an EventBridge rule invokes directly (asynchronously): one event per invocation, no batch.
//!
//! Lambda owns the retries and the on-failure destination of an asynchronous invoke, so every failure must fail the
//! invocation with an error (never a panic) whose class says whether a retry can help. A function takes one event
//! type (an [`Envelope<T>`]) or several (an enum of envelopes declared with [`event_set!`](crate::event_set)):
//! either is an [`EventSet`]. [`parse_bus_event`] is the typed parse step (a malformed event, an unknown type or
//! version, or a type the function does not handle is a [`HandlerError::Permanent`]); [`handle_bus_event`] runs a
//! handler on the decoded event and logs a failure with its class and the bus event id; [`ensure_registered`]
//! checks at start-up that the registry reads every type the handler takes. `orderflow_aws::bus_function` turns the
//! result into the Lambda response, with `errorType` `HandlerError::Transient` or `HandlerError::Permanent`.

use std::future::Future;

use serde_json::Value;

use crate::envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
use crate::error::HandlerError;
use crate::registry::Registry;

/// The events a function handles, decoded from an envelope the registry has read (and upcast): one type as its
/// [`Envelope<T>`], or several as an enum with one envelope per variant, declared with
/// [`event_set!`](crate::event_set).
pub trait EventSet: Sized {
    /// The event types (`Event::TYPE`) this set decodes.
    const TYPES: &'static [&'static str];

    /// The event in `raw`, or [`EnvelopeError::NotHandled`] when its type is not one of [`Self::TYPES`].
    fn decode(raw: &RawEnvelope) -> Result<Self, EnvelopeError>;
}

impl<T: Event> EventSet for Envelope<T> {
    const TYPES: &'static [&'static str] = &[T::TYPE];

    fn decode(raw: &RawEnvelope) -> Result<Self, EnvelopeError> {
        raw.decode()
    }
}

/// Declares an enum with one [`Envelope`] per variant, each written `Variant(Envelope<EventType>)`, and its
/// [`EventSet`] impl: a function that handles several event types takes the enum and matches on it.
///
/// ```
/// use orderflow_toolkit::eventbridge::{EventSet, handle_bus_event};
/// use orderflow_toolkit::{Envelope, Event, HandlerError, Registry, event_set};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)]
/// # struct Shipped { order_id: String }
/// # impl Event for Shipped {
/// #     const TYPE: &'static str = "Shipped";
/// #     const VERSION: u32 = 1;
/// #     const SOURCE: &'static str = "demo";
/// # }
/// # #[derive(Serialize, Deserialize, JsonSchema)]
/// # struct Cancelled { order_id: String, reason: String }
/// # impl Event for Cancelled {
/// #     const TYPE: &'static str = "Cancelled";
/// #     const VERSION: u32 = 1;
/// #     const SOURCE: &'static str = "demo";
/// # }
/// event_set! {
///     /// What the customer hears about.
///     pub enum OrderNews {
///         Shipped(Envelope<Shipped>),
///         Cancelled(Envelope<Cancelled>),
///     }
/// }
/// assert_eq!(OrderNews::TYPES, ["Shipped", "Cancelled"]);
///
/// let tell = |news: OrderNews| async move {
///     Ok::<_, HandlerError>(match news {
///         OrderNews::Shipped(shipped) => format!("order {} shipped", shipped.data.order_id),
///         OrderNews::Cancelled(cancelled) => {
///             format!("order {} cancelled: {}", cancelled.data.order_id, cancelled.data.reason)
///         }
///     })
/// };
/// let event = |detail_type: &str, data: serde_json::Value| serde_json::json!({"id": "b1", "source": "demo",
///     "detail-type": detail_type, "detail": {"id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": detail_type,
///     "version": 1, "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-1", "causation_id": null,
///     "data": data}});
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = Registry::new().register::<Shipped>().register::<Cancelled>();
/// let cancelled = event("Cancelled", serde_json::json!({"order_id": "o-1", "reason": "out of stock"}));
/// assert_eq!(handle_bus_event(&registry, cancelled, tell).await.unwrap(), "order o-1 cancelled: out of stock");
/// # })
/// ```
#[macro_export]
macro_rules! event_set {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident { $($(#[$variant_attr:meta])* $variant:ident(Envelope<$event:ty>)),+ $(,)? }
    ) => {
        $(#[$attr])*
        $vis enum $name {
            $($(#[$variant_attr])* $variant($crate::Envelope<$event>)),+
        }

        impl $crate::eventbridge::EventSet for $name {
            const TYPES: &'static [&'static str] = &[$(<$event as $crate::Event>::TYPE),+];

            fn decode(raw: &$crate::RawEnvelope) -> ::std::result::Result<Self, $crate::EnvelopeError> {
                $(
                    if raw.event_type == <$event as $crate::Event>::TYPE {
                        return raw.decode::<$event>().map(Self::$variant);
                    }
                )+
                Err($crate::EnvelopeError::NotHandled(raw.event_type.clone()))
            }
        }
    };
}

/// A type the handler takes that the registry does not read: every event of it would be refused as unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler takes {0} events, which the registry does not read: register the type")]
pub struct UnregisteredType(pub &'static str);

/// Checks that `registry` reads every type of `E`; a function whose registry does not should not start.
pub fn ensure_registered<E: EventSet>(registry: &Registry) -> Result<(), UnregisteredType> {
    match E::TYPES.iter().copied().find(|event_type| registry.detail_types().all(|read| read != *event_type)) {
        Some(unread) => Err(UnregisteredType(unread)),
        None => Ok(()),
    }
}

/// The typed parse step of an EventBridge event: the event of `E` at its current version (older versions are
/// upcast by the registry), or a [`HandlerError::Permanent`] saying why it cannot be read.
pub fn parse_bus_event<E: EventSet>(registry: &Registry, event: Value) -> Result<E, HandlerError> {
    Ok(E::decode(&registry.read_bus_value(event)?)?)
}

/// Parses `event` as an `E` and runs `handler` on it; a failure of either is logged with its class and the bus event
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
pub async fn handle_bus_event<E, R, F, Fut>(registry: &Registry, event: Value, handler: F) -> Result<R, HandlerError>
where
    E: EventSet,
    F: FnOnce(E) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let bus_event_id = event.get("id").and_then(Value::as_str).unwrap_or("-").to_owned();
    let outcome = match parse_bus_event(registry, event) {
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

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    struct Returned {
        order_id: String,
    }
    impl Event for Returned {
        const TYPE: &'static str = "Returned";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "test";
    }

    event_set! {
        #[derive(Debug)]
        enum OrderNews {
            Shipped(Envelope<Shipped>),
            Cancelled(Envelope<Cancelled>),
        }
    }

    fn registry() -> Registry {
        Registry::new().register::<Shipped>().register::<Cancelled>().register::<Returned>()
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
        let envelope =
            parse_bus_event::<Envelope<Shipped>>(&registry(), bus_event("Shipped", json!({"order_id": "o-7"})));
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
            let err = parse_bus_event::<Envelope<Shipped>>(&registry, event.clone()).unwrap_err();
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

    #[test]
    fn an_event_set_decodes_each_of_its_types_into_its_variant() {
        assert_eq!(OrderNews::TYPES, ["Shipped", "Cancelled"]);
        let registry = registry();
        let shipped = parse_bus_event(&registry, bus_event("Shipped", json!({"order_id": "o-1"})));
        assert!(matches!(shipped, Ok(OrderNews::Shipped(e)) if e.data.order_id == "o-1"));
        let cancelled = parse_bus_event(&registry, bus_event("Cancelled", json!({"order_id": "o-2"})));
        assert!(matches!(cancelled, Ok(OrderNews::Cancelled(e)) if e.data.order_id == "o-2"));
    }

    #[test]
    fn an_event_set_refuses_other_types_and_invalid_data_permanently() {
        let registry = registry();
        let returned = parse_bus_event::<OrderNews>(&registry, bus_event("Returned", json!({"order_id": "o-1"})));
        assert_eq!(returned.unwrap_err(), HandlerError::permanent("this consumer does not handle Returned"));
        let invalid = parse_bus_event::<OrderNews>(&registry, bus_event("Cancelled", json!({"order": 1})));
        let reason = invalid.unwrap_err();
        assert!(
            matches!(&reason, HandlerError::Permanent(r) if r.contains("invalid data for Cancelled v1")),
            "{reason}"
        );
    }

    #[test]
    fn a_registry_must_read_every_type_the_handler_takes() {
        assert_eq!(ensure_registered::<OrderNews>(&registry()), Ok(()));
        assert_eq!(ensure_registered::<Envelope<Returned>>(&registry()), Ok(()));
        let shipped_only = Registry::new().register::<Shipped>();
        let missing = ensure_registered::<OrderNews>(&shipped_only).unwrap_err();
        assert_eq!(missing, UnregisteredType("Cancelled"));
        assert_eq!(
            missing.to_string(),
            "the handler takes Cancelled events, which the registry does not read: register the type"
        );
        assert_eq!(ensure_registered::<Envelope<Shipped>>(&Registry::new()), Err(UnregisteredType("Shipped")));
    }
}
