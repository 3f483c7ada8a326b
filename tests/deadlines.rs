//! Deadlines as the last resort: an order whose `OrderPlaced` was dead-lettered still ends final, cancelled by the
//! order-deadlines sweeper (its schedule read from infra/functions.yaml and fired by the runner), with no stock
//! held, and a redrive of the dead letter afterwards reserves nothing.
//!
//! How the message is dead-lettered: the honest way, through the real queue. The fault proxy fails inventory's
//! `BatchGetItem` (the stock read of a reservation, and nothing else it does), so every delivery of the order's
//! `OrderPlaced` fails transiently until SQS moves it to InventoryDlq after maxReceiveCount. The compensation of
//! `OrderCancelled` reads with `GetItem` and writes with `PutItem`/`TransactWriteItems`, so it runs meanwhile.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Api, attr, scan};

const SKU: &str = "SKU-DEADLINE";

#[tokio::test(flavor = "multi_thread")]
async fn an_order_whose_order_placed_was_dead_lettered_is_cancelled_by_its_deadline_holding_no_stock() {
    let cloud = support::start_cloud_with(|options| {
        options.function_env.insert("ORDER_DEADLINE_SECONDS".into(), "5".into());
        options.function_env.insert("RETRY_BACKOFF_BASE_SECONDS".into(), "1".into());
        options.schedule_interval = Some(Duration::from_secs(1));
    })
    .await;
    let api = Api::new(&cloud);
    api.restock(SKU, 10, "12.50").await;
    let outage = json!({"rules": [{"target": "dynamodb", "operation": "BatchGetItem", "functions": ["inventory"],
                                   "fault": "unavailable", "rate": 1.0, "for_seconds": 600}]});
    let (status, body) = api.send("PUT", "/_local/faults", Some(outage), &[]).await;
    assert_eq!(status, 204, "PUT /_local/faults: {body}");

    let order_id = api.place("c-deadline", SKU, 2).await;

    let order = api.final_order(&order_id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    let history: Vec<&str> = order["history"].as_array().unwrap().iter().filter_map(|h| h["type"].as_str()).collect();
    assert_eq!(history, ["OrderPlaced", "OrderCancelled"], "cancelled by its deadline, never reserved");
    let reasons: Vec<Value> = support::published_events(&cloud)
        .await
        .iter()
        .filter(|item| attr(item, "pk") == order_id && attr(item, "detail_type") == "OrderCancelled")
        .map(|item| serde_json::from_str::<Value>(attr(item, "detail")).unwrap()["data"]["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("deadline")], "one OrderCancelled, with the reason deadline");

    let dead = support::wait_for("the order's OrderPlaced in InventoryDlq", || async {
        let messages = support::peek(&cloud, "InventoryDlqUrl").await;
        messages.into_iter().find(|m| m.body().is_some_and(|b| b.contains(&order_id) && b.contains("OrderPlaced")))
    })
    .await;
    // Inventory compensated the cancellation although it never reserved: a tombstone, and the stock untouched.
    let reservation = wait_for_item(&cloud, "InventoryTableName", &format!("RESERVATION#{order_id}")).await;
    assert_eq!((attr(&reservation, "status"), attr(&reservation, "lines")), ("RELEASED", "[]"));
    assert_eq!(api.stock(SKU).await, (10, 0, 0));
    let shipment = wait_for_item(&cloud, "ShipmentsTableName", &format!("SHIPMENT#{order_id}")).await;
    assert_eq!(attr(&shipment, "status"), "CANCELLED", "shipping's tombstone: a late confirmation ships nothing");

    // The outage ends and an operator redrives the dead letter: the order stays cancelled and reserves nothing.
    let (status, _) = api.send("DELETE", "/_local/faults", None, &[]).await;
    assert_eq!(status, 204);
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let queue = cloud.output("InventoryQueueUrl").unwrap();
    sqs.send_message().queue_url(queue).message_body(dead.body().unwrap()).send().await.unwrap();
    let dlq = cloud.output("InventoryDlqUrl").unwrap();
    sqs.delete_message().queue_url(dlq).receipt_handle(dead.receipt_handle().unwrap()).send().await.unwrap();
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;

    assert_eq!(api.stock(SKU).await, (10, 0, 0), "the redriven OrderPlaced reserved nothing");
    assert_eq!(api.order(&order_id).await.unwrap()["status"], "CANCELLED");
    let reservation = wait_for_item(&cloud, "InventoryTableName", &format!("RESERVATION#{order_id}")).await;
    assert_eq!(attr(&reservation, "status"), "RELEASED");
    assert!(support::peek(&cloud, "InventoryDlqUrl").await.is_empty(), "and did not fail again");
    cloud.shutdown().await.expect("clean shutdown");
}

/// The item of `table_output` whose `pk` is `pk`, once it exists.
async fn wait_for_item(
    cloud: &orderflow_local_cloud::cloud::LocalCloud,
    table_output: &str,
    pk: &str,
) -> support::outcome::Item {
    support::wait_for(&format!("{pk} in {table_output}"), || async {
        scan(cloud, table_output).await.into_iter().find(|item| attr(item, "pk") == pk)
    })
    .await
}
