//! The notifications function: an EventBridge rule invokes it (asynchronously) with OrderConfirmed, OrderShipped,
//! OrderRejected and OrderCancelled; it records the notification the customer would receive.
//!
//! Lambda owns retries and the on-failure destination of an asynchronous invoke, so every failure is returned as an
//! error (the invocation fails, never a panic): a [`NotificationError::Transient`] one may succeed when Lambda
//! retries, a [`NotificationError::Permanent`] one reaches the NotificationsDlq with its reason after the retries.
//! Redelivery is harmless: the notification is keyed by the event id and written only if it does not exist.

use orderflow_domain::events::{OrderCancelled, OrderConfirmed, OrderRejected, OrderShipped, registry};
use orderflow_toolkit::{EnvelopeError, Event, RawEnvelope, Registry};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{Notification, NotificationStore, Recorded, StoreError};

/// Why an invocation failed. The variant becomes Lambda's `errorType` (`NotificationError::Permanent` or
/// `NotificationError::Transient`), the reason its `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Retrying cannot succeed: malformed event, unknown type or version, invalid data, a type this function does
    /// not handle.
    #[error("{0}")]
    Permanent(String),
    /// The store failed; Lambda's retry may succeed.
    #[error("{0}")]
    Transient(String),
}

impl NotificationError {
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Permanent(_) => "NotificationError::Permanent",
            Self::Transient(_) => "NotificationError::Transient",
        }
    }
}

impl From<EnvelopeError> for NotificationError {
    fn from(error: EnvelopeError) -> Self {
        Self::Permanent(error.to_string())
    }
}

impl From<StoreError> for NotificationError {
    fn from(error: StoreError) -> Self {
        Self::Transient(error.to_string())
    }
}

impl From<NotificationError> for lambda_runtime::Diagnostic {
    fn from(error: NotificationError) -> Self {
        Self { error_type: error.error_type().into(), error_message: error.to_string() }
    }
}

/// Records customer notifications in a [`NotificationStore`].
#[derive(Debug, Clone)]
pub struct Notifier<S> {
    store: S,
    registry: Registry,
}

impl<S: NotificationStore> Notifier<S> {
    pub fn new(store: S) -> Self {
        Self { store, registry: registry() }
    }

    /// Handles one EventBridge event (the JSON Lambda receives from the rule).
    pub async fn handle(&self, event: Value) -> Result<Recorded, NotificationError> {
        let outcome = self.record(&event).await;
        match &outcome {
            Ok(_) => {}
            Err(error @ NotificationError::Permanent(reason)) => tracing::error!(
                error_type = error.error_type(),
                reason,
                bus_event_id = event.get("id").and_then(serde_json::Value::as_str).unwrap_or("-"),
                "event cannot be notified; failing the invocation (it reaches the on-failure destination)"
            ),
            Err(error @ NotificationError::Transient(reason)) => tracing::warn!(
                error_type = error.error_type(),
                reason,
                bus_event_id = event.get("id").and_then(serde_json::Value::as_str).unwrap_or("-"),
                "notification not recorded; failing the invocation so that Lambda retries it"
            ),
        }
        outcome
    }

    async fn record(&self, event: &Value) -> Result<Recorded, NotificationError> {
        let raw = self.registry.read_bus_event(&event.to_string())?;
        let created_at = OffsetDateTime::now_utc().format(&Rfc3339).expect("the current time formats as RFC 3339");
        let notification = notification(&raw, created_at)?;
        let recorded = self.store.record(&notification).await?;
        tracing::info!(
            order_id = notification.order_id,
            event_id = %notification.event_id,
            event_type = notification.event_type,
            new = recorded == Recorded::New,
            "notification recorded"
        );
        Ok(recorded)
    }
}

/// The notification an event causes, with its message.
pub fn notification(raw: &RawEnvelope, created_at: String) -> Result<Notification, EnvelopeError> {
    let (order_id, customer_id, message) = match raw.event_type.as_str() {
        OrderConfirmed::TYPE => {
            let data = raw.decode::<OrderConfirmed>()?.data;
            let message = format!("Your order {} is confirmed and paid ({}).", data.order_id, data.total);
            (data.order_id, data.customer_id, message)
        }
        OrderShipped::TYPE => {
            let data = raw.decode::<OrderShipped>()?.data;
            let message = format!("Your order {} has shipped (shipment {}).", data.order_id, data.shipment_id);
            (data.order_id, data.customer_id, message)
        }
        OrderRejected::TYPE => {
            let data = raw.decode::<OrderRejected>()?.data;
            let message = format!("Sorry, we could not accept your order {}: {}.", data.order_id, data.reason);
            (data.order_id, data.customer_id, message)
        }
        OrderCancelled::TYPE => {
            let data = raw.decode::<OrderCancelled>()?.data;
            let message = format!("Your order {} was cancelled: {}.", data.order_id, data.reason);
            (data.order_id, data.customer_id, message)
        }
        other => return Err(EnvelopeError::NotHandled(other.to_owned())),
    };
    Ok(Notification {
        order_id,
        event_id: raw.id,
        customer_id,
        event_type: raw.event_type.clone(),
        message,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryNotifications;
    use serde_json::json;

    const ORDER_SHIPPED: &str = include_str!("../../../events/notifications/order-shipped.json");
    const ORDER_CANCELLED: &str = include_str!("../../../events/notifications/order-cancelled.json");
    const UNKNOWN_TYPE: &str = include_str!("../../../events/notifications/unknown-type.json");

    fn sample(json: &str) -> Value {
        serde_json::from_str(json).expect("sample event is JSON")
    }

    /// A sample with its detail-type and envelope type changed to `event_type` and its data replaced.
    fn retyped(json: &str, event_type: &str, data: Value) -> Value {
        let mut event = sample(json);
        event["detail-type"] = json!(event_type);
        event["detail"]["type"] = json!(event_type);
        event["detail"]["data"] = data;
        event
    }

    #[tokio::test]
    async fn order_shipped_records_the_shipping_notification() {
        let store = MemoryNotifications::default();

        let recorded = Notifier::new(store.clone()).handle(sample(ORDER_SHIPPED)).await.unwrap();

        assert_eq!(recorded, Recorded::New);
        let notifications = store.notifications();
        assert_eq!(notifications.len(), 1);
        let notification = &notifications[0];
        assert_eq!(notification.pk(), "ORDER#o-1");
        assert_eq!(notification.sk(), "3c2d1e0f-9a8b-4c7d-8e6f-5a4b3c2d1e0f");
        assert_eq!(notification.customer_id, "c-1");
        assert_eq!(notification.event_type, "OrderShipped");
        assert_eq!(notification.message, "Your order o-1 has shipped (shipment s-9).");
        OffsetDateTime::parse(&notification.created_at, &Rfc3339).unwrap();
    }

    #[tokio::test]
    async fn order_cancelled_tells_the_customer_why() {
        let store = MemoryNotifications::default();

        Notifier::new(store.clone()).handle(sample(ORDER_CANCELLED)).await.unwrap();

        let notification = &store.notifications()[0];
        assert_eq!(notification.pk(), "ORDER#o-3");
        assert_eq!(notification.customer_id, "c-3");
        assert_eq!(
            notification.message,
            "Your order o-3 was cancelled: payment declined: total 12000.00 exceeds the customer's limit 10000.00."
        );
    }

    #[tokio::test]
    async fn confirmed_and_rejected_orders_are_notified_too() {
        let store = MemoryNotifications::default();
        let notifier = Notifier::new(store.clone());
        let confirmed = retyped(
            ORDER_SHIPPED,
            "OrderConfirmed",
            json!({"order_id": "o-1", "customer_id": "c-1", "total": "25.00"}),
        );
        let mut rejected = retyped(
            ORDER_CANCELLED,
            "OrderRejected",
            json!({"order_id": "o-3", "customer_id": "c-3", "reason": "SKU-2 is out of stock"}),
        );
        rejected["detail"]["id"] = json!("11111111-2222-4333-8444-555555555555");

        notifier.handle(confirmed).await.unwrap();
        notifier.handle(rejected).await.unwrap();

        let messages: Vec<String> = store.notifications().into_iter().map(|n| n.message).collect();
        assert!(messages.contains(&"Your order o-1 is confirmed and paid (25.00).".to_owned()), "{messages:?}");
        assert!(
            messages.contains(&"Sorry, we could not accept your order o-3: SKU-2 is out of stock.".to_owned()),
            "{messages:?}"
        );
    }

    #[tokio::test]
    async fn a_redelivered_event_records_nothing_twice_and_succeeds() {
        let store = MemoryNotifications::default();
        let notifier = Notifier::new(store.clone());
        notifier.handle(sample(ORDER_SHIPPED)).await.unwrap();
        let first = store.notifications();

        let again = notifier.handle(sample(ORDER_SHIPPED)).await;

        assert_eq!(again, Ok(Recorded::AlreadyRecorded));
        assert_eq!(store.notifications(), first, "the first notification is kept unchanged");
    }

    #[tokio::test]
    async fn an_unknown_event_type_fails_the_invocation_permanently_naming_the_type() {
        let store = MemoryNotifications::default();

        let error = Notifier::new(store.clone()).handle(sample(UNKNOWN_TYPE)).await.unwrap_err();

        assert_eq!(error, NotificationError::Permanent("unknown event type \"OrderTeleported\"".into()));
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(diagnostic.error_type, "NotificationError::Permanent");
        assert!(store.notifications().is_empty());
    }

    #[tokio::test]
    async fn an_event_this_function_does_not_notify_is_permanent() {
        let placed = retyped(
            ORDER_SHIPPED,
            "OrderPlaced",
            json!({"order_id": "o-1", "customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 1}]}),
        );

        let error = Notifier::new(MemoryNotifications::default()).handle(placed).await.unwrap_err();

        assert_eq!(error, NotificationError::Permanent("this consumer does not handle OrderPlaced".into()));
    }

    #[tokio::test]
    async fn malformed_events_fail_permanently_and_never_panic() {
        let notifier = Notifier::new(MemoryNotifications::default());
        let mut missing_field = sample(ORDER_SHIPPED);
        missing_field["detail"]["data"].as_object_mut().unwrap().remove("shipment_id");
        let mut no_envelope = sample(ORDER_SHIPPED);
        no_envelope["detail"] = json!({"order_id": "o-1"});

        for event in [missing_field, no_envelope, json!("not an event"), json!({})] {
            let error = notifier.handle(event.clone()).await.unwrap_err();
            assert!(matches!(error, NotificationError::Permanent(_)), "{event}: {error:?}");
        }
    }

    #[tokio::test]
    async fn a_store_failure_is_transient_and_the_retry_records_it() {
        let store = MemoryNotifications::default();
        store.fail_next(1);
        let notifier = Notifier::new(store.clone());

        let error = notifier.handle(sample(ORDER_SHIPPED)).await.unwrap_err();
        assert_eq!(error.error_type(), "NotificationError::Transient");
        assert!(store.notifications().is_empty());

        assert_eq!(notifier.handle(sample(ORDER_SHIPPED)).await, Ok(Recorded::New));
    }
}
