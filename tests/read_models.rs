//! The read models (CQRS) through the real system: orders placed over HTTP reach the OrderViews table through the
//! orders event store's stream and the order-views function; `GET /orders` lists a customer's orders newest first,
//! page by page and by status; `GET /orders/{id}/events` is the order's stream. After the scenario, the views are
//! deleted and `orderflow-views rebuild` (the operator command, run as a process) re-derives identical ones from
//! the event store. It also prints the projection's lag as a client sees it (202 of `POST /orders` to 200 of
//! `GET /orders/{id}`), the figure README quotes; no assertion is made on time.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use support::{Api, scan};

const SKU: &str = "SKU-VIEWS";
const LAG_SKU: &str = "SKU-VIEWS-LAG";

#[tokio::test(flavor = "multi_thread")]
async fn views_list_page_and_filter_each_customers_orders_and_a_rebuild_from_the_event_store_gives_identical_views() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock(SKU, 6, "10.00").await;
    api.restock(LAG_SKU, 1000, "1.00").await;

    // Newest first is the order of placement, reversed: each POST is answered before the next is sent.
    let mut placed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (customer, quantity) in
        [("c-views-a", 1), ("c-views-b", 2), ("c-views-a", 1), ("c-views-b", 2)].into_iter().cycle().take(8)
    {
        placed.entry(customer).or_default().push(api.place(customer, SKU, quantity).await);
    }
    let mut lags = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let order_id = api.place("c-views-lag", LAG_SKU, 1).await;
        support::wait_for(&format!("the view of {order_id}"), || api.order(&order_id)).await;
        lags.push(started.elapsed());
        placed.entry("c-views-lag").or_default().push(order_id);
    }
    for order_id in placed.values().flatten() {
        api.final_order(order_id).await;
    }
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;

    for (customer, order_ids) in &placed {
        let newest_first: Vec<String> = order_ids.iter().rev().cloned().collect();
        assert_eq!(list_all(&api, customer, None).await, newest_first, "{customer}, two by two");
        for status in ["SHIPPED", "REJECTED", "PENDING"] {
            let mut expected = Vec::new();
            for order_id in &newest_first {
                if api.order(order_id).await.expect("projected")["status"] == status {
                    expected.push(order_id.clone());
                }
            }
            assert_eq!(list_all(&api, customer, Some(status)).await, expected, "{customer} {status}");
        }
    }
    let rejected_or_shipped = placed["c-views-b"].iter().chain(&placed["c-views-a"]);
    for order_id in rejected_or_shipped {
        let view = api.order(order_id).await.expect("projected");
        let (status, events) = api.send("GET", &format!("/orders/{order_id}/events"), None, &[]).await;
        assert_eq!(status, 200, "{events}");
        let types: Vec<&Value> = events["events"].as_array().unwrap().iter().map(|e| &e["type"]).collect();
        let history: Vec<&Value> = view["history"].as_array().unwrap().iter().map(|h| &h["type"]).collect();
        assert_eq!(types, history, "the view's history is its events, in order");
        assert_eq!(events["events"].as_array().unwrap().len() as u64, view["version"].as_u64().unwrap());
    }

    let before = views(&cloud).await;
    assert_eq!(before.len(), placed.values().flatten().count());
    let views_table = cloud.output("OrderViewsTableName").unwrap().to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(cloud.sdk_config());
    for order_id in before.keys() {
        let key = AttributeValue::S(order_id.clone());
        dynamodb.delete_item().table_name(&views_table).key("order_id", key).send().await.expect("delete view");
    }
    assert!(views(&cloud).await.is_empty());

    let output = cloud
        .operator_command("orderflow-views")
        .args(["rebuild", "--orders-table", cloud.output("OrdersTableName").unwrap(), "--views-table", &views_table])
        .output()
        .expect("orderflow-views runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("{} orders projected, 0 stray views deleted", before.len())), "{stdout}");

    assert_eq!(views(&cloud).await, before, "the rebuilt views are the ones the stream kept");

    lags.sort();
    println!(
        "projection lag (202 of POST /orders to 200 of GET /orders/{{id}}) over {} orders: median {} ms, max {} ms",
        lags.len(),
        lags[lags.len() / 2].as_millis(),
        lags.last().copied().unwrap_or(Duration::ZERO).as_millis()
    );
}

/// Every order of `customer` (in `status`), following `next_cursor` two at a time.
async fn list_all(api: &Api, customer: &str, status: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/orders?limit=2".to_owned();
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (code, page) = api.as_customer(customer).send("GET", &path, None, &[]).await;
        assert_eq!(code, 200, "GET {path}: {page}");
        let orders = page["orders"].as_array().unwrap();
        assert!(orders.len() <= 2, "{page}");
        ids.extend(orders.iter().map(|order| order["order_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// Every item of the OrderViews table by order id.
async fn views(
    cloud: &orderflow_local_cloud::cloud::LocalCloud,
) -> BTreeMap<String, std::collections::HashMap<String, AttributeValue>> {
    scan(cloud, "OrderViewsTableName")
        .await
        .into_iter()
        .map(|item| (support::attr(&item, "order_id").to_owned(), item))
        .collect()
}
