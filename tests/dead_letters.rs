//! Failures lose nothing: a record that keeps failing reaches its DLQ after maxReceiveCount while the rest of its
//! batch succeeds, and a failing asynchronous invocation lands in its on-failure destination.

mod support;

use orderflow_local_cloud::cloud::MAX_RECEIVE_COUNT;
use serde_json::json;
use support::Api;
use uuid::Uuid;

/// An EventBridge event as a rule delivers it to an SQS queue.
fn bus_event(detail_type: &str, source: &str, detail: serde_json::Value) -> String {
    json!({"version": "0", "id": Uuid::new_v4(), "detail-type": detail_type, "source": source,
           "account": "123456789012", "time": "2026-11-24T10:00:00Z", "region": "us-east-1", "resources": [],
           "detail": detail})
    .to_string()
}

fn envelope(event_type: &str, order_id: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"id": Uuid::new_v4(), "type": event_type, "version": 1, "occurred_at": "2026-11-24T10:00:00Z",
           "correlation_id": order_id, "causation_id": null, "data": data})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_keeps_failing_reaches_the_dlq_after_max_receive_count_and_its_batch_mates_succeed() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let queue = cloud.output("OrderSagaQueueUrl").unwrap();

    // A payment for an order the saga never saw fails transiently (it may be early) on every delivery.
    let ghost = format!("ghost-{}", Uuid::new_v4());
    let poison = bus_event(
        "PaymentAuthorized",
        "orderflow.payment",
        envelope("PaymentAuthorized", &ghost, json!({"order_id": ghost, "payment_id": "p-1", "amount": "1.00"})),
    );
    let mates: Vec<String> = (0..2).map(|i| format!("mate-{i}-{}", Uuid::new_v4())).collect();
    let mut batch = sqs.send_message_batch().queue_url(queue);
    for (i, order_id) in mates.iter().enumerate() {
        let rejected = envelope(
            "InventoryRejected",
            order_id,
            json!({"order_id": order_id, "customer_id": "c-9", "lines": [{"sku": "SKU-X", "quantity": 1}],
                   "unavailable": ["SKU-X"], "reason": "not in the catalogue: SKU-X"}),
        );
        batch = batch.entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("mate{i}"))
                .message_body(bus_event("InventoryRejected", "orderflow.inventory", rejected))
                .build()
                .unwrap(),
        );
    }
    batch = batch.entries(
        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder().id("poison").message_body(&poison).build().unwrap(),
    );
    batch.send().await.unwrap();

    for order_id in &mates {
        assert_eq!(api.final_order(order_id).await["status"], "REJECTED");
    }
    let dead = support::wait_for("the poison message in OrderSagaDlq", || async {
        let messages = support::peek(&cloud, "OrderSagaDlqUrl").await;
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(poison.as_str()));
    let receives: u32 = dead[0]
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .unwrap_or_default();
    assert!(receives >= MAX_RECEIVE_COUNT, "moved to the DLQ after {receives} receives");
    assert!(api.order(&ghost).await.is_none(), "the ghost order must not appear");
    cloud.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_goes_to_each_consumers_dlq_at_once_with_the_reason() {
    let cloud = support::start_cloud().await;
    support::put_on_bus(&cloud, "orderflow.orders", "OrderPlaced", r#"{"type": "OrderPlaced", "version": 1}"#)
        .await
        .unwrap();
    for dlq in ["InventoryDlqUrl", "AnalyticsDlqUrl"] {
        let dead = support::wait_for(&format!("the malformed event in {dlq}"), || async {
            let messages = support::peek(&cloud, dlq).await;
            (!messages.is_empty()).then_some(messages)
        })
        .await;
        let attributes = dead[0].message_attributes().expect("dead letter attributes");
        let reason = attributes["orderflow-error-reason"].string_value().unwrap();
        assert!(reason.starts_with("malformed event"), "{dlq}: {reason}");
        assert_eq!(attributes["orderflow-error-class"].string_value(), Some("Permanent"));
        let receives: u32 = dead[0]
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|count| count.parse().ok())
            .unwrap_or_default();
        assert!(receives <= 1, "{dlq}: a poison message must not burn retries ({receives} receives)");
    }
    cloud.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_notification_lands_in_the_on_failure_destination_after_its_retries() {
    let cloud = support::start_cloud().await;
    let detail = envelope("OrderShipped", "o-404", json!({"order_id": "o-404", "unexpected": true}));
    support::put_on_bus(&cloud, "orderflow.saga", "OrderShipped", &detail.to_string()).await.unwrap();
    let dead = support::wait_for("the failure record in NotificationsDlq", || async {
        let messages = support::peek(&cloud, "NotificationsDlqUrl").await;
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    let record: serde_json::Value = serde_json::from_str(dead[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3, "1 attempt + MaximumRetryAttempts 2");
    assert_eq!(record["requestPayload"]["detail"], detail);
    assert!(record["responsePayload"]["errorMessage"].as_str().unwrap().contains("OrderShipped"), "{record}");
    cloud.shutdown().await.unwrap();
}
