//! Bounded input past the API: data that slipped around its bounds (an item written straight into a table, an
//! event put straight on the bus) is refused by the consumer with its reason, never a panic, and what it would
//! have caused is compensated. Seeded through DynamoDB and the bus only, not through the HTTP API.

mod support;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::faults::FaultRules;
use orderflow_local_cloud::cloud::LocalCloud;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

type Item = HashMap<String, AttributeValue>;

/// The attribute on a dead letter that carries why it failed.
const REASON: &str = "orderflow-error-reason";

fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).expect("RFC 3339 time")
}

/// An envelope of `event_type` (version `version`) for `order_id`.
fn envelope(event_type: &str, version: u32, order_id: &str, data: Value) -> String {
    json!({"id": Uuid::new_v4(), "type": event_type, "version": version, "occurred_at": now(),
           "correlation_id": order_id, "causation_id": null, "data": data})
    .to_string()
}

/// An `OrderPlaced` (version 2) as the orders API publishes it, for `quantity` units of `sku`.
fn order_placed(order_id: &str, sku: &str, quantity: u32) -> String {
    let data = json!({"order_id": order_id, "customer_id": "c-bounds", "currency": "USD",
                      "lines": [{"sku": sku, "quantity": quantity}]});
    envelope("OrderPlaced", 2, order_id, data)
}

/// Writes a stock item straight into the Inventory table, past the API's bounds on price and units.
async fn put_stock(cloud: &LocalCloud, sku: &str, available: u32, price: &str) {
    let dynamodb = aws_sdk_dynamodb::Client::new(cloud.sdk_config());
    let n = |value: u32| AttributeValue::N(value.to_string());
    dynamodb
        .put_item()
        .table_name(cloud.output("InventoryTableName").unwrap())
        .item("pk", AttributeValue::S(format!("SKU#{sku}")))
        .item("sk", AttributeValue::S("STOCK".into()))
        .item("sku", AttributeValue::S(sku.into()))
        .item("available", n(available))
        .item("reserved", n(0))
        .item("shipped", n(0))
        .item("price", AttributeValue::S(price.into()))
        .send()
        .await
        .expect("stock item written");
}

async fn get_item(cloud: &LocalCloud, table_output: &str, pk: &str, sk: &str) -> Option<Item> {
    let dynamodb = aws_sdk_dynamodb::Client::new(cloud.sdk_config());
    let output = dynamodb
        .get_item()
        .table_name(cloud.output(table_output).unwrap())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    output.item
}

fn number(item: &Item, name: &str) -> u64 {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or_default()
}

/// (available, reserved) of a SKU as the table holds it.
async fn stock(cloud: &LocalCloud, sku: &str) -> (u64, u64) {
    let item = get_item(cloud, "InventoryTableName", &format!("SKU#{sku}"), "STOCK").await.expect("stock item");
    (number(&item, "available"), number(&item, "reserved"))
}

/// The status of an order as its event store's head records it.
async fn order_status(cloud: &LocalCloud, order_id: &str) -> Option<String> {
    let head = get_item(cloud, "OrdersTableName", &format!("ORDER#{order_id}"), "HEAD").await?;
    Some(support::attr(&head, "status").to_owned())
}

/// Waits for the dead letter in `dlq_output` whose body names the order; returns its reason.
async fn dead_letter_reason(cloud: &LocalCloud, dlq_output: &str, order_id: &str) -> String {
    let what = format!("the record of {order_id} in {dlq_output}");
    let letter = support::wait_for(&what, || async {
        let messages = support::peek(cloud, dlq_output).await;
        messages.into_iter().find(|m| m.body().is_some_and(|body| body.contains(order_id)))
    })
    .await;
    let attributes = letter.message_attributes().expect("dead letter attributes");
    attributes[REASON].string_value().expect("a reason").to_owned()
}

/// The lines the function logged that tell of a panic.
fn panics_logged(cloud: &LocalCloud, function: &str) -> Vec<String> {
    let path = support::project_root().join(".local/logs").join(cloud.stage()).join(format!("{function}.log"));
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    log.lines().filter(|line| line.contains("panicked")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_price_times_quantity_that_overflows_decimal_is_dead_lettered_naming_the_overflow_and_writes_nothing() {
    let cloud = support::start_cloud().await;
    // The largest Decimal as the price: two units overflow the line total.
    let (sku, available, price) = ("SKU-HUGE", u32::MAX, "79228162514264337593543950335");
    put_stock(&cloud, sku, available, price).await;
    let order_id = format!("overflow-{}", Uuid::new_v4());

    support::put_on_bus(&cloud, "orderflow.orders", "OrderPlaced", &order_placed(&order_id, sku, 2))
        .await
        .expect("PutEvents accepts the order");

    let reason = dead_letter_reason(&cloud, "InventoryDlqUrl", &order_id).await;
    assert_eq!(reason, format!("order {order_id}: the line total of SKU {sku} overflows"));
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let reservation = get_item(&cloud, "InventoryTableName", &format!("RESERVATION#{order_id}"), "RESERVATION").await;
    assert_eq!(reservation, None, "no reservation written");
    assert_eq!(stock(&cloud, sku).await, (u64::from(available), 0), "stock unchanged");
    let published = support::published_events(&cloud).await;
    assert!(
        !published.iter().any(|event| support::attr(event, "detail").contains(&order_id)),
        "inventory emitted an event for the order"
    );
    assert_eq!(panics_logged(&cloud, "inventory"), Vec::<String>::new(), "inventory panicked");

    cloud.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_authorized_for_another_amount_cancels_the_order_releases_its_stock_and_is_dead_lettered() {
    let cloud = support::start_cloud().await;
    let sku = "SKU-MISMATCH";
    put_stock(&cloud, sku, 10, "12.50").await;
    // The provider is down while the forged authorization arrives, so the genuine charge cannot come first.
    let outage: FaultRules = serde_json::from_value(json!({"rules": [
        {"target": "payment-provider", "fault": "unavailable", "rate": 1.0, "for_seconds": 300}]}))
    .expect("fault rules");
    cloud.runner().faults().set(outage);
    let order_id = format!("mismatch-{}", Uuid::new_v4());

    // Placed on the bus: inventory reserves 2 units (25.00), the saga adopts the order and requests its payment.
    support::put_on_bus(&cloud, "orderflow.orders", "OrderPlaced", &order_placed(&order_id, sku, 2))
        .await
        .expect("PutEvents accepts the order");
    support::wait_for("the order RESERVED", || async {
        (order_status(&cloud, &order_id).await.as_deref() == Some("RESERVED")).then_some(())
    })
    .await;
    assert_eq!(stock(&cloud, sku).await, (8, 2));

    let authorized = json!({"order_id": order_id, "payment_id": "pay-forged", "amount": "1.00"});
    let authorized = envelope("PaymentAuthorized", 1, &order_id, authorized);
    support::put_on_bus(&cloud, "orderflow.payment", "PaymentAuthorized", &authorized)
        .await
        .expect("PutEvents accepts the authorization");

    let reason = dead_letter_reason(&cloud, "OrderSagaDlqUrl", &order_id).await;
    assert_eq!(
        reason,
        format!(
            "refused: payment pay-forged of order {order_id} authorized 1.00 USD, not the order's total 25.00 USD: \
             order cancelled"
        )
    );
    assert_eq!(order_status(&cloud, &order_id).await.as_deref(), Some("CANCELLED"));
    let orders = support::scan(&cloud, "OrdersTableName").await;
    let cancelled: Vec<Value> = orders
        .iter()
        .filter(|item| support::attr(item, "pk") == format!("ORDER#{order_id}"))
        .filter(|item| support::attr(item, "detail_type") == "OrderCancelled")
        .map(|item| serde_json::from_str(support::attr(item, "detail")).expect("an envelope"))
        .collect();
    assert_eq!(cancelled.len(), 1, "one OrderCancelled");
    assert_eq!(cancelled[0]["data"]["reason"], "payment_amount_mismatch");

    // The provider back: the compensations run (stock released, the payment voided before any charge).
    cloud.runner().faults().clear();
    support::wait_for("the stock released", || async { (stock(&cloud, sku).await == (10, 0)).then_some(()) }).await;
    let reservation = get_item(&cloud, "InventoryTableName", &format!("RESERVATION#{order_id}"), "RESERVATION")
        .await
        .expect("the reservation");
    assert_eq!(support::attr(&reservation, "status"), "RELEASED");
    support::wait_for("the payment voided", || async {
        let payment = get_item(&cloud, "PaymentsTableName", &format!("PAYMENT#{order_id}"), "PAYMENT").await?;
        (support::attr(&payment, "status") == "VOIDED").then_some(())
    })
    .await;
    assert_eq!(order_status(&cloud, &order_id).await.as_deref(), Some("CANCELLED"), "a late charge changes nothing");
    assert_eq!(panics_logged(&cloud, "order-saga"), Vec::<String>::new(), "the saga panicked");

    cloud.shutdown().await.expect("clean shutdown");
}
