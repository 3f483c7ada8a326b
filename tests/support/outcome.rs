//! What the end-to-end tests under chaos and outages check once the system has settled: every order final, stock
//! conserved, every effect once, and nothing but poison in the dead-letter queues.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use orderflow_local_cloud::cloud::LocalCloud;
use serde_json::Value;

use super::{Api, attr, scan};

/// The events of an order's outbox partition, by final state.
pub fn expected_events(status: &str) -> &'static [&'static str] {
    match status {
        "SHIPPED" => &[
            "OrderPlaced",
            "InventoryReserved",
            "PaymentRequested",
            "PaymentAuthorized",
            "OrderConfirmed",
            "ShipmentScheduled",
            "OrderShipped",
        ],
        "REJECTED" => &["OrderPlaced", "InventoryRejected", "OrderRejected"],
        "CANCELLED" => &[
            "OrderPlaced",
            "InventoryReserved",
            "PaymentRequested",
            "PaymentDeclined",
            "InventoryReleaseRequested",
            "InventoryReleased",
            "OrderCancelled",
        ],
        other => panic!("not a final state: {other}"),
    }
}

/// The notifications (by event type) an order in a final state must have had.
pub fn expected_notifications(status: &str) -> &'static [&'static str] {
    match status {
        "SHIPPED" => &["OrderConfirmed", "OrderShipped"],
        "REJECTED" => &["OrderRejected"],
        "CANCELLED" => &["OrderCancelled"],
        other => panic!("not a final state: {other}"),
    }
}

pub type Item = HashMap<String, AttributeValue>;

/// Counts items per order id (the `ORDER#`/`PAYMENT#`/`SHIPMENT#` prefix of `pk` removed) and per `field`.
pub fn per_order(items: &[Item], prefix: &str, field: &str) -> HashMap<String, BTreeMap<String, usize>> {
    let mut counts: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for item in items {
        if let Some(order_id) = attr(item, "pk").strip_prefix(prefix) {
            *counts.entry(order_id.to_owned()).or_default().entry(attr(item, field).to_owned()).or_default() += 1;
        }
    }
    counts
}

/// The order once it is final; a 5xx from an overloaded API is asked again.
pub async fn final_order(api: &Api, order_id: &str, deadline: Instant) -> Value {
    loop {
        let (status, order) = api.send("GET", &format!("/orders/{order_id}"), None, &[]).await;
        if status == 200 && ["SHIPPED", "REJECTED", "CANCELLED"].contains(&order["status"].as_str().unwrap_or_default())
        {
            return order;
        }
        assert!(status == 200 || status == 404 || status >= 500, "GET /orders/{order_id} answered {status}: {order}");
        assert!(Instant::now() < deadline, "order {order_id} is not final: {status} {order}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (available, reserved, shipped) of a SKU once nothing is reserved; a 5xx is asked again.
pub async fn stock_settled(api: &Api, sku: &str, deadline: Instant) -> (u64, u64, u64) {
    loop {
        let (status, body) = api.send("GET", &format!("/inventory/{sku}"), None, &[]).await;
        if status == 200 {
            let field = |name: &str| body[name].as_u64().unwrap_or_else(|| panic!("no {name} in {body}"));
            let stock = (field("available"), field("reserved"), field("shipped"));
            if stock.1 == 0 {
                return stock;
            }
        }
        assert!(status == 200 || status >= 500, "GET /inventory/{sku} answered {status}: {body}");
        assert!(Instant::now() < deadline, "{sku}: units still reserved ({status} {body})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Problems with the effects of orders in their final states (`status_of`: order id -> final status): every
/// expected outbox event, payment, shipment and notification exactly once, nothing else.
pub async fn effect_problems(cloud: &LocalCloud, status_of: &HashMap<String, String>) -> Vec<String> {
    let outbox = per_order(&super::published_events(cloud).await, "", "detail_type");
    let payments = per_order(&scan(cloud, "PaymentsTableName").await, "PAYMENT#", "status");
    let shipments = per_order(&scan(cloud, "ShipmentsTableName").await, "SHIPMENT#", "status");
    let notifications = per_order(&scan(cloud, "NotificationsTableName").await, "ORDER#", "event_type");
    let none = BTreeMap::new();
    let mut problems = Vec::new();
    for (order_id, status) in status_of {
        let once = |types: &[&str]| types.iter().map(|t| ((*t).to_owned(), 1)).collect::<BTreeMap<_, _>>();
        let events = outbox.get(order_id).unwrap_or(&none);
        if events != &once(expected_events(status)) {
            problems.push(format!("{order_id} ({status}) outbox events {events:?}"));
        }
        let payment = payments.get(order_id).unwrap_or(&none);
        let expected_payment = match status.as_str() {
            "SHIPPED" => once(&["AUTHORIZED"]),
            "CANCELLED" => once(&["DECLINED"]),
            _ => BTreeMap::new(),
        };
        if payment != &expected_payment {
            problems.push(format!("{order_id} ({status}) payments {payment:?}"));
        }
        // Shipping keeps a CANCELLED tombstone for every cancelled order, so a late OrderConfirmed ships nothing.
        let shipment = shipments.get(order_id).unwrap_or(&none);
        let expected_shipment = match status.as_str() {
            "SHIPPED" => once(&["SCHEDULED"]),
            "CANCELLED" => once(&["CANCELLED"]),
            _ => BTreeMap::new(),
        };
        if shipment != &expected_shipment {
            problems.push(format!("{order_id} ({status}) shipments {shipment:?}"));
        }
        let notified = notifications.get(order_id).unwrap_or(&none);
        if notified != &once(expected_notifications(status)) {
            problems.push(format!("{order_id} ({status}) notifications {notified:?}"));
        }
    }
    problems
}

/// Every message of every DLQ, drained: the number per DLQ, and the correlation ids of the bus events each holds.
/// Fails when a message has no reason attributes or is not one of ours.
pub async fn drain_dead_letters(cloud: &LocalCloud) -> (BTreeMap<String, usize>, HashMap<String, Vec<String>>) {
    let mut counts = BTreeMap::new();
    let mut correlation_ids: HashMap<String, Vec<String>> = HashMap::new();
    for (dlq, _) in cloud.dead_letter_queues() {
        let messages = super::receive_all(cloud, &dlq).await;
        counts.insert(dlq.clone(), messages.len());
        for message in &messages {
            let body: Value = serde_json::from_str(message.body().unwrap_or_default()).unwrap_or(Value::Null);
            let correlation_id = body["detail"]["correlation_id"].as_str().unwrap_or_default().to_owned();
            correlation_ids.entry(dlq.clone()).or_default().push(correlation_id);
        }
    }
    (counts, correlation_ids)
}
