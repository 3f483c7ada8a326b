//! The transactional outbox: an order write and its event commit together or not at all.

mod support;

use serde_json::json;
use support::{Api, attr, scan};

#[tokio::test(flavor = "multi_thread")]
async fn an_order_whose_transaction_fails_publishes_nothing() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock("SKU-1", 10, "1.00").await;
    let key = [("Idempotency-Key", "key-1")];
    let customer = api.as_customer("c-1");
    let first = json!({"lines": [{"sku": "SKU-1", "quantity": 1}]});
    let (status, placed) = customer.send("POST", "/orders", Some(first), &key).await;
    assert_eq!(status, 202, "{placed}");

    // The same key with another body: the transaction's idempotency condition fails, so neither the order nor its
    // OrderPlaced is written.
    let second = json!({"lines": [{"sku": "SKU-1", "quantity": 5}]});
    let (status, error) = customer.send("POST", "/orders", Some(second), &key).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"], "idempotency_key_reused");

    let order_id = placed["order_id"].as_str().unwrap();
    assert_eq!(api.final_order(order_id).await["status"], "SHIPPED");
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let placed_events: Vec<_> = support::published_events(&cloud)
        .await
        .into_iter()
        .filter(|item| attr(item, "detail_type") == "OrderPlaced")
        .collect();
    assert_eq!(placed_events.len(), 1, "only the committed order has an OrderPlaced");
    assert_eq!(attr(&placed_events[0], "pk"), order_id);
    assert_eq!(api.stock("SKU-1").await, (9, 0, 1), "only the committed order took stock");
    let orders = scan(&cloud, "OrdersTableName").await;
    assert_eq!(orders.iter().filter(|item| attr(item, "sk") == "HEAD").count(), 1, "one order, one head");
    cloud.shutdown().await.unwrap();
}
