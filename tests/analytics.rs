//! Stream analytics through the real system: orders placed through the API are reserved, paid, shipped, rejected
//! or cancelled by the real functions, while the runner duplicates and reorders every SQS delivery. Analytics
//! counts each shipped order's sale once into the window of its `OrderShipped`, sales-windows closes the windows
//! the watermark passes, and `GET /analytics/sales` serves them:
//!
//! 1. On time: every SKU's served windows add up to the units and revenue of its shipped orders, net of the
//!    cancelled and rejected ones (which count nothing), and each SKU window has at most one `SalesWindowClosed`;
//!    whatever was corrected, its closed totals plus its corrections are what is served.
//! 2. Late: analytics' DynamoDB is down (a fault on the wire) while an order ships and its window closes without
//!    it. Once DynamoDB is back, the sale is counted and published as ONE `SalesWindowCorrected` of that window,
//!    never a silent change and never a second close.
//!
//! Short windows for a test: 4 s, 2 s of lateness, the watermark 3 s behind the clock, the closer every second.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use local_lambda::runner::Chaos;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{Api, attr, scan};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const WINDOW_SECONDS: i64 = 4;

/// SKU, stock, price.
const PLENTY_A: (&str, u32, &str) = ("SKU-A", 1000, "12.50");
const PLENTY_B: (&str, u32, &str) = ("SKU-B", 1000, "3.00");
const SCARCE: (&str, u32, &str) = ("SKU-SCARCE", 1, "5.00");
/// Two of it cost more than the payment provider's default limit (10,000.00): declined, CANCELLED.
const DEAR: (&str, u32, &str) = ("SKU-DEAR", 1000, "6000.00");
const LATE: (&str, u32, &str) = ("SKU-LATE", 1000, "4.00");

/// (customer, SKU, quantity) of the on-time orders.
const ORDERS: [(&str, &str, u32); 9] = [
    ("c-1", "SKU-A", 2),
    ("c-2", "SKU-A", 1),
    ("c-3", "SKU-A", 3),
    ("c-4", "SKU-B", 1),
    ("c-5", "SKU-B", 4),
    ("c-6", "SKU-SCARCE", 5),
    ("c-7", "SKU-DEAR", 2),
    ("c-8", "SKU-A", 5),
    ("c-9", "SKU-B", 2),
];
/// The order of these customers is cancelled by them as soon as it is placed (it may still ship first).
const CANCELLING: [&str; 2] = ["c-8", "c-9"];

fn price(sku: &str) -> Decimal {
    let (_, _, price) = [PLENTY_A, PLENTY_B, SCARCE, DEAR, LATE].into_iter().find(|(s, _, _)| *s == sku).unwrap();
    price.parse().unwrap()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// The windows `GET /analytics/sales` serves for `sku` around now.
async fn served(api: &Api, sku: &str, from: OffsetDateTime) -> Vec<Value> {
    let to = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let path = format!("/analytics/sales?sku={sku}&from={}&to={}", rfc3339(from), rfc3339(to));
    let (status, body) = api.send("GET", &path, None, &[]).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body["windows"].as_array().expect("windows").clone()
}

fn units_and_revenue(windows: &[Value]) -> (i64, Decimal) {
    windows.iter().fold((0, Decimal::ZERO), |(units, revenue), window| {
        let window_revenue: Decimal = window["revenue"].as_str().expect("revenue").parse().unwrap();
        (units + window["units"].as_i64().expect("units"), revenue + window_revenue)
    })
}

/// The sales-window events of the outbox: per (SKU, window start), each event's type and data.
async fn window_events(
    cloud: &orderflow_local_cloud::cloud::LocalCloud,
) -> BTreeMap<(String, String), Vec<(String, Value)>> {
    let mut events: BTreeMap<(String, String), Vec<(String, Value)>> = BTreeMap::new();
    for item in scan(cloud, "OutboxTableName").await {
        let detail_type = attr(&item, "detail_type");
        if detail_type.starts_with("SalesWindow") {
            let detail: Value = serde_json::from_str(attr(&item, "detail")).unwrap();
            let data = detail["data"].clone();
            let key = (data["sku"].as_str().unwrap().to_owned(), data["window_start"].as_str().unwrap().to_owned());
            events.entry(key).or_default().push((detail_type.to_owned(), data));
        }
    }
    events
}

/// Problems with one SKU window's events: more than one close, or a close plus the corrections' changes that are
/// not what is served.
fn event_problems(key: &(String, String), events: &[(String, Value)], served: (i64, Decimal)) -> Vec<String> {
    let amount = |data: &Value, name: &str| -> Decimal { data[name].as_str().unwrap().parse().unwrap() };
    let closes = events.iter().filter(|(detail_type, _)| detail_type == "SalesWindowClosed").count();
    let mut problems = Vec::new();
    if closes > 1 {
        problems.push(format!("{key:?} closed {closes} times: {events:?}"));
    }
    let published = events.iter().fold((0i64, Decimal::ZERO), |(units, revenue), (detail_type, data)| {
        if detail_type == "SalesWindowClosed" {
            (units + data["units"].as_i64().unwrap(), revenue + amount(data, "revenue"))
        } else {
            (units + data["delta_units"].as_i64().unwrap(), revenue + amount(data, "delta_revenue"))
        }
    });
    if published != served {
        problems.push(format!("{key:?}: its events add up to {published:?}, {served:?} is served: {events:?}"));
    }
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_sales_close_once_per_sku_window_and_a_sale_later_than_the_lateness_is_published_as_a_correction() {
    let seed = support::chaos_seed();
    let cloud = support::start_cloud_with(|options| {
        for (name, value) in [
            ("ANALYTICS_WINDOW_SECONDS", WINDOW_SECONDS.to_string()),
            ("SALES_ALLOWED_LATENESS_SECONDS", "2".to_owned()),
            ("SALES_WATERMARK_DELAY_SECONDS", "3".to_owned()),
            ("RETRY_BACKOFF_BASE_SECONDS", "1".to_owned()),
            ("RETRY_BACKOFF_MAX_SECONDS", "2".to_owned()),
        ] {
            options.function_env.insert(name.into(), value);
        }
        options.schedule_interval = Some(Duration::from_secs(1));
        options.chaos = Some(Chaos { duplicate_rate: 0.3, shuffle: true, seed });
        // The late phase's outage lasts a few windows; retries every 1-2 s must not run out in it.
        options.max_receive_count = 60;
    })
    .await;
    let api = Api::new(&cloud);
    for (sku, stock, price) in [PLENTY_A, PLENTY_B, SCARCE, DEAR, LATE] {
        api.restock(sku, stock, price).await;
    }
    let started = OffsetDateTime::now_utc() - time::Duration::minutes(1);

    // 1. On time, under duplicated and shuffled deliveries.
    let mut placed = Vec::new();
    for (customer, sku, quantity) in ORDERS {
        let order_id = api.place(customer, sku, quantity).await;
        if CANCELLING.contains(&customer) {
            let (status, body) = api.send("POST", &format!("/orders/{order_id}/cancel"), None, &[]).await;
            assert!([202, 409].contains(&status), "cancel of {order_id}: {status} {body}");
        }
        placed.push((order_id, sku, quantity));
    }
    let mut sold: HashMap<&str, (i64, Decimal)> = HashMap::new();
    let mut statuses = Vec::new();
    for (order_id, sku, quantity) in &placed {
        let order = api.final_order(order_id).await;
        let status = order["status"].as_str().unwrap().to_owned();
        if status == "SHIPPED" {
            let sale = sold.entry(sku).or_default();
            sale.0 += i64::from(*quantity);
            sale.1 += price(sku) * Decimal::from(*quantity);
        }
        statuses.push((*sku, status));
    }
    assert!(sold.contains_key("SKU-A") && sold.contains_key("SKU-B"), "orders shipped: {statuses:?}");
    assert!(statuses.contains(&("SKU-SCARCE", "REJECTED".to_owned())), "{statuses:?}");
    assert!(statuses.contains(&("SKU-DEAR", "CANCELLED".to_owned())), "{statuses:?}");

    for sku in ["SKU-A", "SKU-B"] {
        let expected = sold[sku];
        let windows = support::wait_for(&format!("the closed windows of {sku} to add up to {expected:?}"), || async {
            let windows = served(&api, sku, started).await;
            (units_and_revenue(&windows) == expected).then_some(windows)
        })
        .await;
        assert!(windows.iter().all(|window| window["sku"] == sku), "{windows:?}");
    }
    for sku in ["SKU-SCARCE", "SKU-DEAR"] {
        assert_eq!(served(&api, sku, started).await, Vec::<Value>::new(), "{sku} sold nothing");
    }

    // 2. Late: analytics cannot reach DynamoDB while an order ships and its window closes.
    let outage = json!({"rules": [{
        "target": "dynamodb", "functions": ["analytics"], "fault": "unavailable", "rate": 1.0, "for_seconds": 600
    }]});
    let (status, body) = api.send("PUT", "/_local/faults", Some(outage), &[]).await;
    assert_eq!(status, 204, "PUT /_local/faults: {body}");
    let late_order = api.place("c-late", LATE.0, 3).await;
    assert_eq!(api.final_order(&late_order).await["status"], "SHIPPED");
    let (status, events) = api.send("GET", &format!("/orders/{late_order}/events"), None, &[]).await;
    assert_eq!(status, 200, "{events}");
    let shipped_at = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "OrderShipped")
        .map(|event| OffsetDateTime::parse(event["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap())
        .expect("an OrderShipped");
    let seconds = shipped_at.unix_timestamp();
    let window = OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(WINDOW_SECONDS)).unwrap();
    support::wait_for("the closer to settle the late order's window without it", || async {
        let items = scan(&cloud, "AnalyticsTableName").await;
        let watermark = items.iter().find(|item| attr(item, "pk") == "WATERMARK")?;
        let through: i64 = watermark.get("settled_through")?.as_n().ok()?.parse().ok()?;
        (through >= window.unix_timestamp()).then_some(())
    })
    .await;
    assert_eq!(served(&api, LATE.0, started).await, Vec::<Value>::new(), "nothing of the late sale is served yet");
    assert_eq!(api.send("DELETE", "/_local/faults", None, &[]).await.0, 204);

    let late_windows = support::wait_for("the late sale to be served", || async {
        let windows = served(&api, LATE.0, started).await;
        (!windows.is_empty()).then_some(windows)
    })
    .await;
    let start = rfc3339(window);
    assert_eq!(late_windows.len(), 1, "{late_windows:?}");
    assert_eq!(late_windows[0]["start"], start.as_str());
    assert_eq!(units_and_revenue(&late_windows), (3, "12.00".parse().unwrap()));

    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let events = window_events(&cloud).await;
    let late = &events[&(LATE.0.to_owned(), start.clone())];
    assert_eq!(late.len(), 1, "one event for the late sale: {late:?}");
    assert_eq!(late[0].0, "SalesWindowCorrected");
    assert_eq!((&late[0].1["delta_units"], &late[0].1["units"]), (&json!(3), &json!(3)));
    let mut served_windows = HashMap::new();
    for sku in ["SKU-A", "SKU-B", LATE.0] {
        for window in served(&api, sku, started).await {
            let key = (sku.to_owned(), window["start"].as_str().unwrap().to_owned());
            served_windows.insert(key, units_and_revenue(&[window]));
        }
    }
    assert_eq!(served_windows.len(), events.len(), "every window with events is served: {events:?}");
    let problems: Vec<String> =
        events.iter().flat_map(|(key, events)| event_problems(key, events, served_windows[key])).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    cloud.shutdown().await.unwrap();
}
