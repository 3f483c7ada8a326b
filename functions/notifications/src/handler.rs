//! The notifications function: an EventBridge rule invokes it (asynchronously) with OrderConfirmed, OrderShipped,
//! OrderRejected and OrderCancelled; it records the notification the customer would receive.
//!
//! The toolkit's runtime (`orderflow_aws::retry_queue`) reads each event into a [`NotifiedEvent`] and logs and
//! classes every failure as a [`HandlerError`] (never a panic). On the asynchronous invocation a failure fails the
//! invocation: Lambda retries it twice, then sends its destination record to NotificationsRetryQueue, which this
//! function also consumes: the same event is handled again from there, a transient failure backing off by
//! visibility until the queue's maxReceiveCount, so an outage of the store longer than Lambda's few minutes of
//! retries loses nothing; a permanent one goes to NotificationsDlq with its reason. Redelivery is harmless: the
//! notification is keyed by the event id and written only if it does not exist.

use orderflow_domain::events::{OrderCancelled, OrderConfirmed, OrderRejected, OrderShipped};
use orderflow_toolkit::{Envelope, HandlerError, event_set};
use time::OffsetDateTime;

use crate::store::{Notification, NotificationStore, Recorded};

event_set! {
    /// An event the customer is notified of.
    #[derive(Debug, Clone, PartialEq)]
    pub enum NotifiedEvent {
        Confirmed(Envelope<OrderConfirmed>),
        Shipped(Envelope<OrderShipped>),
        Rejected(Envelope<OrderRejected>),
        Cancelled(Envelope<OrderCancelled>),
    }
}

/// Records customer notifications in a [`NotificationStore`].
#[derive(Debug, Clone)]
pub struct Notifier<S> {
    store: S,
}

impl<S: NotificationStore> Notifier<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Records the notification of one event (from the rule's invocation, or a record of the retry queue).
    pub async fn handle(&self, event: NotifiedEvent) -> Result<Recorded, HandlerError> {
        let notification = notification(event, OffsetDateTime::now_utc());
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
pub fn notification(event: NotifiedEvent, created_at: OffsetDateTime) -> Notification {
    let (event_id, event_type, order_id, customer_id, message) = match event {
        NotifiedEvent::Confirmed(Envelope { id, event_type, data, .. }) => {
            let message = format!("Your order {} is confirmed and paid ({}).", data.order_id, data.total);
            (id, event_type, data.order_id, data.customer_id, message)
        }
        NotifiedEvent::Shipped(Envelope { id, event_type, data, .. }) => {
            let message = format!("Your order {} has shipped (shipment {}).", data.order_id, data.shipment_id);
            (id, event_type, data.order_id, data.customer_id, message)
        }
        NotifiedEvent::Rejected(Envelope { id, event_type, data, .. }) => {
            let message = format!("Sorry, we could not accept your order {}: {}.", data.order_id, data.reason);
            (id, event_type, data.order_id, data.customer_id, message)
        }
        NotifiedEvent::Cancelled(Envelope { id, event_type, data, .. }) => {
            let message = format!("Your order {} was cancelled: {}.", data.order_id, data.reason);
            (id, event_type, data.order_id, data.customer_id, message)
        }
    };
    Notification { order_id, event_id, customer_id, event_type, message, created_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryNotifications;
    use aws_sdk_sqs::config::{BehaviorVersion, Region};
    use orderflow_aws::SqsRetryBackoff;
    use orderflow_aws::retry_queue::{Response, handle_invocation};
    use orderflow_domain::events::registry;
    use orderflow_test_support::{Samples, SqsHarness};
    use orderflow_toolkit::EventSet;
    use orderflow_toolkit::eventbridge::{ensure_registered, handle_bus_event};
    use serde_json::{Value, json};

    const SAMPLES: Samples = Samples::of("notifications");
    const ORDER_SHIPPED: &str = "order-shipped.json";
    const ORDER_CANCELLED: &str = "order-cancelled.json";
    const UNKNOWN_TYPE: &str = "unknown-type.json";
    const RETRY_RECORD: &str = "retry-record.json";

    /// `event` as the rule's invocation delivers it: read by the toolkit, then handled by `notifier`.
    async fn notify<S: NotificationStore>(notifier: &Notifier<S>, event: Value) -> Result<Recorded, HandlerError> {
        handle_bus_event(&registry(), event, |event| notifier.handle(event)).await
    }

    /// A sample with its detail-type and envelope type changed to `event_type` and its data replaced.
    fn retyped(sample: &str, event_type: &str, data: Value) -> Value {
        let mut event: Value = SAMPLES.event(sample);
        event["detail-type"] = json!(event_type);
        event["detail"]["type"] = json!(event_type);
        event["detail"]["data"] = data;
        event
    }

    #[test]
    fn the_registry_reads_every_notified_type_so_the_function_starts() {
        assert_eq!(NotifiedEvent::TYPES, ["OrderConfirmed", "OrderShipped", "OrderRejected", "OrderCancelled"]);
        assert_eq!(ensure_registered::<NotifiedEvent>(&registry()), Ok(()));
    }

    #[tokio::test]
    async fn order_shipped_records_the_shipping_notification() {
        let store = MemoryNotifications::default();
        let before = OffsetDateTime::now_utc();

        let recorded = notify(&Notifier::new(store.clone()), SAMPLES.event(ORDER_SHIPPED)).await.unwrap();

        assert_eq!(recorded, Recorded::New);
        let notifications = store.notifications();
        assert_eq!(notifications.len(), 1);
        let notification = &notifications[0];
        assert_eq!(notification.pk(), "ORDER#o-1");
        assert_eq!(notification.sk(), "3c2d1e0f-9a8b-4c7d-8e6f-5a4b3c2d1e0f");
        assert_eq!(notification.customer_id, "c-1");
        assert_eq!(notification.event_type, "OrderShipped");
        assert_eq!(notification.message, "Your order o-1 has shipped (shipment s-9).");
        assert!((before..=OffsetDateTime::now_utc()).contains(&notification.created_at), "{notification:?}");
    }

    #[tokio::test]
    async fn order_cancelled_tells_the_customer_why() {
        let store = MemoryNotifications::default();

        notify(&Notifier::new(store.clone()), SAMPLES.event(ORDER_CANCELLED)).await.unwrap();

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

        notify(&notifier, confirmed).await.unwrap();
        notify(&notifier, rejected).await.unwrap();

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
        notify(&notifier, SAMPLES.event(ORDER_SHIPPED)).await.unwrap();
        let first = store.notifications();

        let again = notify(&notifier, SAMPLES.event(ORDER_SHIPPED)).await;

        assert_eq!(again, Ok(Recorded::AlreadyRecorded));
        assert_eq!(store.notifications(), first, "the first notification is kept unchanged");
    }

    #[tokio::test]
    async fn an_unknown_event_type_fails_the_invocation_permanently_naming_the_type() {
        let store = MemoryNotifications::default();

        let error = notify(&Notifier::new(store.clone()), SAMPLES.event(UNKNOWN_TYPE)).await.unwrap_err();

        assert_eq!(error, HandlerError::permanent("unknown event type \"OrderTeleported\""));
        let diagnostic = orderflow_aws::bus_function::diagnostic(&error);
        assert_eq!(diagnostic.error_type, "HandlerError::Permanent");
        assert!(store.notifications().is_empty());
    }

    #[tokio::test]
    async fn an_event_this_function_does_not_notify_is_permanent() {
        let placed = retyped(
            ORDER_SHIPPED,
            "OrderPlaced",
            json!({"order_id": "o-1", "customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 1}]}),
        );

        let error = notify(&Notifier::new(MemoryNotifications::default()), placed).await.unwrap_err();

        assert_eq!(error, HandlerError::permanent("this consumer does not handle OrderPlaced"));
    }

    #[tokio::test]
    async fn malformed_events_fail_permanently_and_never_panic() {
        let notifier = Notifier::new(MemoryNotifications::default());
        let mut missing_field: Value = SAMPLES.event(ORDER_SHIPPED);
        missing_field["detail"]["data"].as_object_mut().unwrap().remove("shipment_id");
        let mut no_envelope: Value = SAMPLES.event(ORDER_SHIPPED);
        no_envelope["detail"] = json!({"order_id": "o-1"});

        for event in [missing_field, no_envelope, json!("not an event"), json!({})] {
            let error = notify(&notifier, event.clone()).await.unwrap_err();
            assert!(matches!(error, HandlerError::Permanent(_)), "{event}: {error:?}");
        }
    }

    #[tokio::test]
    async fn a_store_failure_is_transient_and_the_retry_records_it() {
        let store = MemoryNotifications::default();
        store.fail_next(1);
        let notifier = Notifier::new(store.clone());

        let error = notify(&notifier, SAMPLES.event(ORDER_SHIPPED)).await.unwrap_err();
        assert_eq!(error.error_type(), "HandlerError::Transient");
        assert!(store.notifications().is_empty());

        assert_eq!(notify(&notifier, SAMPLES.event(ORDER_SHIPPED)).await, Ok(Recorded::New));
    }

    /// The retry queue's runtime with in-memory dead letters. Its SQS client is never called: the tests' records
    /// have no receipt handle, so there is no visibility to change.
    fn retry_runtime() -> (SqsHarness, SqsRetryBackoff) {
        let config = aws_sdk_sqs::Config::builder().behavior_version(BehaviorVersion::latest());
        let sqs = aws_sdk_sqs::Client::from_conf(config.region(Region::new("us-east-1")).build());
        (SqsHarness::default(), SqsRetryBackoff::new(sqs))
    }

    /// The sample batch of the retry queue, its destination record's `requestPayload` replaced when given.
    fn retry_batch(request_payload: Option<Value>) -> Value {
        let mut batch: Value = SAMPLES.event(RETRY_RECORD);
        let record = &mut batch["Records"][0];
        record.as_object_mut().unwrap().remove("receiptHandle");
        if let Some(event) = request_payload {
            let mut destination: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
            destination["requestPayload"] = event;
            record["body"] = json!(destination.to_string());
        }
        batch
    }

    fn failed_ids(response: &Response<Recorded>) -> Vec<String> {
        let Response::RetryBatch(batch) = response else { panic!("a batch gets a batch response: {response:?}") };
        orderflow_test_support::failed_ids(batch)
    }

    #[tokio::test]
    async fn the_event_and_its_retry_record_are_both_handled_and_notify_once() {
        let store = MemoryNotifications::default();
        let notifier = Notifier::new(store.clone());
        let (sqs, backoff) = retry_runtime();
        let handle = |event| notifier.handle(event);

        let direct = handle_invocation(&registry(), sqs.processor(), &backoff, SAMPLES.event(ORDER_SHIPPED), handle)
            .await
            .unwrap();
        let retried =
            handle_invocation(&registry(), sqs.processor(), &backoff, retry_batch(None), handle).await.unwrap();

        assert_eq!(direct, Response::Event(Recorded::New));
        assert!(failed_ids(&retried).is_empty());
        assert_eq!(store.notifications().len(), 1, "the retry record carries the same event: no second notification");
        assert!(sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_retry_record_is_what_a_long_store_outage_leaves_and_it_records_the_notification() {
        let store = MemoryNotifications::default();
        let notifier = Notifier::new(store.clone());
        let (sqs, backoff) = retry_runtime();
        // Lambda's three attempts failed while the store was down; the event waited in the retry queue.
        store.fail_next(3);
        for _ in 0..3 {
            assert!(notify(&notifier, SAMPLES.event(ORDER_SHIPPED)).await.is_err());
        }

        let response =
            handle_invocation(&registry(), sqs.processor(), &backoff, retry_batch(None), |e| notifier.handle(e))
                .await
                .unwrap();

        assert!(failed_ids(&response).is_empty());
        let notification = &store.notifications()[0];
        assert_eq!(notification.message, "Your order o-1 has shipped (shipment s-9).");
        assert!(sqs.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_retry_that_fails_again_is_reported_so_the_queue_delivers_it_later() {
        let store = MemoryNotifications::default();
        store.fail_next(1);
        let notifier = Notifier::new(store.clone());
        let (sqs, backoff) = retry_runtime();

        let response =
            handle_invocation(&registry(), sqs.processor(), &backoff, retry_batch(None), |e| notifier.handle(e))
                .await
                .unwrap();

        assert_eq!(failed_ids(&response), ["7d3c2b1a-0001-4e5f-8a9b-0c1d2e3f4a01"]);
        assert!(store.notifications().is_empty());
        assert!(sqs.dead_letters().is_empty(), "a transient failure is not dead-lettered");
    }

    #[tokio::test]
    async fn a_retry_record_that_can_never_succeed_goes_to_the_dead_letter_queue_with_its_reason() {
        let store = MemoryNotifications::default();
        let notifier = Notifier::new(store.clone());
        let (sqs, backoff) = retry_runtime();
        let batch = retry_batch(Some(SAMPLES.event(UNKNOWN_TYPE)));
        let body = batch["Records"][0]["body"].as_str().unwrap().to_owned();

        let response =
            handle_invocation(&registry(), sqs.processor(), &backoff, batch, |e| notifier.handle(e)).await.unwrap();

        assert!(failed_ids(&response).is_empty(), "acknowledged: it is in the DLQ");
        let letter = &sqs.dead_letters()[0];
        assert_eq!(letter.reason, "unknown event type \"OrderTeleported\"");
        assert_eq!(letter.error_class, "Permanent");
        assert_eq!(letter.body, body, "the destination record as it came, for redrive");
        assert!(store.notifications().is_empty());
    }
}
