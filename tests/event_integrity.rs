//! Event integrity on the bus: the rules route an event type only from the service that emits it (its `source`
//! `orderflow.<service>`), so an event forged under another source reaches no consumer.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::sources::{Delivery, SourceRef};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

/// An `OrderPlaced` (version 2) envelope of a new order, as the orders API writes it.
fn order_placed(order_id: &str) -> Value {
    let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("RFC 3339 time");
    json!({"id": Uuid::new_v4(), "type": "OrderPlaced", "version": 2, "occurred_at": now, "correlation_id": order_id,
           "causation_id": null,
           "data": {"order_id": order_id, "customer_id": "c-integrity", "lines": [{"sku": "SKU-1", "quantity": 1}],
                    "currency": "USD"}})
}

/// Whether any string attribute of the item names the order.
fn mentions(item: &HashMap<String, AttributeValue>, order_id: &str) -> bool {
    item.values().any(|value| value.as_s().is_ok_and(|s| s.contains(order_id)))
}

/// The tables the consumers of `OrderPlaced` (inventory, analytics) and the saga write to.
const TABLES: [&str; 4] = ["InventoryTableName", "AnalyticsTableName", "OutboxTableName", "OrdersTableName"];

/// Every delivery of the runner, as it happens.
#[derive(Default)]
struct Observed {
    deliveries: Vec<Delivery>,
    /// Deliveries the observer fell too far behind to see.
    lagged: u64,
}

impl Observed {
    /// The functions (sorted, once each) that got a record of the order.
    fn functions_for(&self, order_id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| d.records.iter().any(|r| r.correlation_id.as_deref() == Some(order_id)))
            .map(|d| d.function.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn order_placed_from_a_foreign_source_reaches_no_consumer_while_the_same_event_from_orders_is_routed() {
    let cloud = support::start_cloud().await;
    let observed: Arc<Mutex<Observed>> = Arc::default();
    let mut deliveries = cloud.runner().subscribe();
    let observer = tokio::spawn({
        let observed = observed.clone();
        async move {
            loop {
                let received = deliveries.recv().await;
                let mut seen = observed.lock().unwrap();
                match received {
                    Ok(delivery) => seen.deliveries.push(delivery),
                    Err(RecvError::Lagged(n)) => seen.lagged += n,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });

    // Forged first: an attacker's source, and a real service that does not emit OrderPlaced (the saga).
    let forged: Vec<(&str, String)> = ["evil.attacker", "orderflow.saga"]
        .into_iter()
        .map(|source| (source, format!("forged-{}", Uuid::new_v4())))
        .collect();
    for (source, order_id) in &forged {
        support::put_on_bus(&cloud, source, "OrderPlaced", &order_placed(order_id).to_string())
            .await
            .expect("PutEvents accepts the forged event");
    }
    let genuine = format!("genuine-{}", Uuid::new_v4());
    support::put_on_bus(&cloud, "orderflow.orders", "OrderPlaced", &order_placed(&genuine).to_string())
        .await
        .expect("PutEvents accepts the genuine event");

    // The genuine event reaches inventory through its queue (which decides it: SKU-1 is not in stock, so it is
    // rejected) and analytics, and inventory records its decision.
    let inventory_queue = SourceRef::Queue { arn: cloud.output("InventoryQueueArn").unwrap().to_owned() };
    support::wait_for("inventory to handle the genuine OrderPlaced from its queue", || async {
        let seen = observed.lock().unwrap();
        seen.deliveries
            .iter()
            .any(|d| {
                d.function == "inventory"
                    && d.source == inventory_queue
                    && d.records.iter().any(|r| r.correlation_id.as_deref() == Some(genuine.as_str()))
            })
            .then_some(())
    })
    .await;
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    observer.abort();
    let seen = std::mem::take(&mut *observed.lock().unwrap());
    assert_eq!(seen.lagged, 0, "the observer missed deliveries");
    let reached = seen.functions_for(&genuine);
    assert!(
        ["analytics", "inventory"].iter().all(|f| reached.iter().any(|r| r == f)),
        "the genuine one reached {reached:?}"
    );
    let inventory = support::scan(&cloud, "InventoryTableName").await;
    assert!(inventory.iter().any(|item| mentions(item, &genuine)), "inventory recorded no decision on the genuine one");

    // The forged ones reached no function (the inventory queue got nothing), and no table names their orders.
    for (source, order_id) in &forged {
        let reached = seen.functions_for(order_id);
        assert!(reached.is_empty(), "OrderPlaced from {source} reached {reached:?}");
        for table in TABLES {
            let items = support::scan(&cloud, table).await;
            let found: Vec<_> = items.iter().filter(|item| mentions(item, order_id)).collect();
            assert!(found.is_empty(), "OrderPlaced from {source} left items in {table}: {found:?}");
        }
    }
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let depth = support::queue_depth(&sqs, cloud.output("InventoryQueueUrl").unwrap()).await.unwrap();
    assert_eq!(depth, 0, "the inventory queue holds messages nobody handled");

    cloud.shutdown().await.expect("clean shutdown");
}
