//! Every consumer is idempotent: delivering every event of finished orders a second time changes nothing.

mod support;

use std::collections::BTreeMap;

use support::{Api, attr, scan};

/// What the system's state looks like, table by table, keyed so it can be compared.
async fn snapshot(cloud: &orderflow_local_cloud::cloud::LocalCloud) -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in ["Orders", "Inventory", "Outbox", "Payments", "Shipments", "Notifications", "Analytics"] {
        let mut items: Vec<String> = scan(cloud, &format!("{table}TableName"))
            .await
            .iter()
            .map(|item| {
                // Everything but timestamps of when an item was written.
                let mut fields: Vec<String> = item
                    .iter()
                    .filter(|(name, _)| !["created_at", "expires_at", "scheduled_at"].contains(&name.as_str()))
                    .map(|(name, value)| format!("{name}={value:?}"))
                    .collect();
                fields.sort();
                fields.join(" ")
            })
            .collect();
        items.sort();
        tables.insert(table.to_owned(), items);
    }
    tables
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivering_every_event_of_a_shipped_and_a_cancelled_order_changes_nothing() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock("SKU-BOOK", 10, "12.50").await;
    api.restock("SKU-TV", 5, "6000.00").await;
    let shipped = api.place("c-1", "SKU-BOOK", 2).await;
    let cancelled = api.place("c-2", "SKU-TV", 2).await;
    assert_eq!(api.final_order(&shipped).await["status"], "SHIPPED");
    assert_eq!(api.final_order(&cancelled).await["status"], "CANCELLED");
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let before = snapshot(&cloud).await;

    // Every event that flowed is in the outbox or the event store: put each on the bus again, so every consumer (inventory, payment,
    // saga, shipping, analytics, notifications) gets its whole input a second time.
    let outbox = support::published_events(&cloud).await;
    assert!(outbox.len() >= 12, "expected the events of two sagas in the outbox, found {}", outbox.len());
    for item in &outbox {
        support::put_on_bus(&cloud, attr(item, "source"), attr(item, "detail_type"), attr(item, "detail"))
            .await
            .unwrap();
    }
    // Let the redeliveries reach the consumers, then wait for them to drain.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let after = snapshot(&cloud).await;

    for (table, items) in &before {
        assert_eq!(items, &after[table], "table {table} changed after the redelivery");
    }
    for dlq in cloud.dead_letter_queues() {
        assert!(support::peek(&cloud, &dlq.0).await.is_empty(), "{} is not empty", dlq.0);
    }
    cloud.shutdown().await.unwrap();
}
