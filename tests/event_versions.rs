//! Event versioning end to end: `OrderPlaced` version 2 (with the order's currency) and version 1 (without) are
//! both read by every consumer of this release. The orders API writes version 2; an order written by the previous
//! release's orders API (its version 1 `OrderPlaced` put into the event store as that release did) is published
//! as it was written, reserved by inventory, driven to SHIPPED by the saga (which upcasts it when it folds the
//! order), and shown in the order's currency by default. No message of either goes to a DLQ.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use support::{Api, attr};

const SKU: &str = "SKU-VERSIONS";

#[tokio::test(flavor = "multi_thread")]
async fn an_order_placed_as_version_1_by_the_previous_release_and_one_placed_as_version_2_both_ship() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock(SKU, 10, "2.00").await;

    let v2_order = api.place("c-versions", SKU, 1).await;
    let v1_order = uuid::Uuid::new_v4().to_string();
    put_order_placed_v1(&cloud, &v1_order, "c-versions").await;

    for order_id in [&v2_order, &v1_order] {
        let order = api.final_order(order_id).await;
        assert_eq!(order["status"], "SHIPPED", "{order}");
        assert_eq!(order["currency"], "USD", "the store's currency, and the default of version 1: {order}");
        assert_eq!(order["total"], "2.00", "{order}");
    }
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;

    let published: Vec<(String, Value)> = support::published_events(&cloud)
        .await
        .iter()
        .filter(|item| attr(item, "detail_type") == "OrderPlaced")
        .map(|item| (attr(item, "pk").to_owned(), serde_json::from_str(attr(item, "detail")).unwrap()))
        .collect();
    let version_on_the_bus = |order_id: &str| {
        let (_, detail) = published.iter().find(|(pk, _)| pk == order_id).expect("published");
        (detail["version"].clone(), detail["data"].get("currency").cloned())
    };
    assert_eq!(version_on_the_bus(&v2_order), (json!(2), Some(json!("USD"))));
    assert_eq!(version_on_the_bus(&v1_order), (json!(1), None), "published as it was written");

    let (status, events) = api.send("GET", &format!("/orders/{v1_order}/events"), None, &[]).await;
    assert_eq!(status, 200, "{events}");
    let placed = &events["events"][0];
    assert_eq!(
        (&placed["type"], &placed["version"]),
        (&json!("OrderPlaced"), &json!(2)),
        "read at its current version"
    );
    assert_eq!(placed["data"]["currency"], "USD");

    let (dead_letters, _) = support::outcome::drain_dead_letters(&cloud).await;
    assert!(dead_letters.values().all(|count| *count == 0), "no version went to a DLQ: {dead_letters:?}");
}

/// Writes the first event of order `order_id` as the orders API of the release before `OrderPlaced` version 2
/// did: an `OrderPlaced` version 1 envelope as the event item `ORDER#<id>` / `EVENT#0000000001`.
async fn put_order_placed_v1(cloud: &orderflow_local_cloud::cloud::LocalCloud, order_id: &str, customer_id: &str) {
    let event_id = uuid::Uuid::new_v4().to_string();
    let detail = json!({
        "id": event_id, "type": "OrderPlaced", "version": 1,
        "occurred_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "correlation_id": order_id, "causation_id": null,
        "data": {"order_id": order_id, "customer_id": customer_id, "lines": [{"sku": SKU, "quantity": 1}]},
    });
    let s = |value: &str| AttributeValue::S(value.to_owned());
    aws_sdk_dynamodb::Client::new(cloud.sdk_config())
        .put_item()
        .table_name(cloud.output("OrdersTableName").unwrap())
        .item("pk", s(&format!("ORDER#{order_id}")))
        .item("sk", s("EVENT#0000000001"))
        .item("order_id", s(order_id))
        .item("version", AttributeValue::N("1".into()))
        .item("event_id", s(&event_id))
        .item("source", s("orderflow.orders"))
        .item("detail_type", s("OrderPlaced"))
        .item("detail", s(&detail.to_string()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .expect("the previous release's OrderPlaced is written");
}
