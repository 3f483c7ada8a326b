//! What every end-to-end test needs: a local cloud of its own (a fresh stage in the emulator named by
//! `AWS_ENDPOINT_URL`, or a moto server of its own), the HTTP API, and waiting for the system to settle.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::sources::rule::INTERNAL_PREFIX;
use orderflow_local_cloud::cloud::{CloudOptions, LocalCloud};
use orderflow_local_cloud::issuer::{DEFAULT_VALIDITY, LocalIssuer, Subject};
use serde_json::{Value, json};

pub mod outcome;

/// The consumer queues, by output name prefix.
pub const CONSUMER_QUEUES: [&str; 6] =
    ["Inventory", "Payment", "OrderSaga", "Shipping", "Analytics", "NotificationsRetry"];

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The seed of every random choice of a test (the runner's chaos, the fault rules' draws): `ORDERFLOW_CHAOS_SEED`,
/// else one from the clock. Printed, so a failing run can be repeated.
pub fn chaos_seed() -> u64 {
    let seed = match std::env::var("ORDERFLOW_CHAOS_SEED") {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("ORDERFLOW_CHAOS_SEED={value:?} is not a number")),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64),
    };
    eprintln!("ORDERFLOW_CHAOS_SEED={seed}");
    seed
}

/// A local cloud with a stage of its own.
pub async fn start_cloud() -> LocalCloud {
    LocalCloud::start(CloudOptions::isolated(project_root(), "t")).await.expect("local cloud starts")
}

/// A local cloud with a stage of its own, its options adjusted by `configure` (chaos, function environment...).
pub async fn start_cloud_with(configure: impl FnOnce(&mut CloudOptions)) -> LocalCloud {
    let mut options = CloudOptions::isolated(project_root(), "t");
    configure(&mut options);
    LocalCloud::start(options).await.expect("local cloud starts")
}

/// The HTTP API of a cloud, called with a token of the cloud's issuer: an operator's unless [`Api::as_customer`].
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    issuer: LocalIssuer,
    token: Option<String>,
}

impl Api {
    /// The API as an operator (scope `orderflow/admin`: stock, sales, and every order).
    pub fn new(cloud: &LocalCloud) -> Self {
        let issuer = cloud.issuer().clone();
        let token = issuer.token(&Subject::Operator, DEFAULT_VALIDITY).expect("operator token");
        Self { base: cloud.http_base().expect("HTTP API"), http: reqwest::Client::new(), issuer, token: Some(token) }
    }

    /// The same API as the customer `customer` (their token's subject).
    pub fn as_customer(&self, customer: &str) -> Self {
        let token = self.issuer.token(&Subject::Customer(customer.to_owned()), DEFAULT_VALIDITY).expect("token");
        Self { token: Some(token), ..self.clone() }
    }

    /// The same API with this `Authorization` token (a forged or expired one), or none.
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self { token, ..self.clone() }
    }

    pub fn issuer(&self) -> &LocalIssuer {
        &self.issuer
    }

    /// Sends a request and returns the status and the JSON body (a string value when the body is not JSON).
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body.to_string()).header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("HTTP API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn restock(&self, sku: &str, available: u32, price: &str) {
        let (status, body) = self
            .send("PUT", &format!("/inventory/{sku}"), Some(json!({"available": available, "price": price})), &[])
            .await;
        assert_eq!(status, 200, "PUT /inventory/{sku}: {body}");
    }

    /// Places an order of `customer` for `quantity` of one SKU and returns its id.
    pub async fn place(&self, customer: &str, sku: &str, quantity: u32) -> String {
        let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
        let (status, answer) = self.as_customer(customer).send("POST", "/orders", Some(body), &[]).await;
        assert_eq!(status, 202, "POST /orders: {answer}");
        answer["order_id"].as_str().expect("order_id").to_owned()
    }

    /// Places an order as a careful client does: with an Idempotency-Key, retrying the same request with capped
    /// backoff for up to two minutes while the API answers 5xx (a throttled, timed-out or crashed invocation may or
    /// may not have placed it). Returns the order id.
    pub async fn place_with_retries(&self, key: &str, customer: &str, sku: &str, quantity: u32) -> String {
        let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
        let customer = self.as_customer(customer);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (status, answer) =
                customer.send("POST", "/orders", Some(body.clone()), &[("Idempotency-Key", key)]).await;
            if status >= 500 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8)))).await;
                continue;
            }
            assert_eq!(status, 202, "POST /orders (attempt {attempt}): {answer}");
            return answer["order_id"].as_str().expect("order_id").to_owned();
        }
    }

    /// The order as `GET /orders/{id}` shows it, `None` while it is unknown.
    pub async fn order(&self, order_id: &str) -> Option<Value> {
        let (status, body) = self.send("GET", &format!("/orders/{order_id}"), None, &[]).await;
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("GET /orders/{order_id} answered {other}: {body}"),
        }
    }

    /// (available, reserved, shipped) of a SKU.
    pub async fn stock(&self, sku: &str) -> (u64, u64, u64) {
        let (status, body) = self.send("GET", &format!("/inventory/{sku}"), None, &[]).await;
        assert_eq!(status, 200, "GET /inventory/{sku}: {body}");
        let field = |name: &str| body[name].as_u64().unwrap_or_else(|| panic!("no {name} in {body}"));
        (field("available"), field("reserved"), field("shipped"))
    }

    /// Waits until the order is in a final state and returns it.
    pub async fn final_order(&self, order_id: &str) -> Value {
        wait_for(&format!("order {order_id} to be final"), || async {
            let order = self.order(order_id).await?;
            let status = order["status"].as_str()?;
            ["SHIPPED", "REJECTED", "CANCELLED"].contains(&status).then_some(order)
        })
        .await
    }
}

/// How long the system may take to settle in a test; LocalStack is slower than moto.
pub fn settle_timeout() -> Duration {
    match std::env::var("ORDERFLOW_EMULATOR").as_deref() {
        Ok("localstack") => Duration::from_secs(240),
        _ => Duration::from_secs(120),
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`settle_timeout`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + settle_timeout();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Messages in a queue: visible, in flight or delayed.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName::{
        ApproximateNumberOfMessages, ApproximateNumberOfMessagesDelayed, ApproximateNumberOfMessagesNotVisible,
    };
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(ApproximateNumberOfMessages)
        .attribute_names(ApproximateNumberOfMessagesNotVisible)
        .attribute_names(ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .with_context(|| format!("attributes of {url}"))?;
    let count =
        |name| attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(count(ApproximateNumberOfMessages)
        + count(ApproximateNumberOfMessagesNotVisible)
        + count(ApproximateNumberOfMessagesDelayed))
}

/// The deadline for [`wait_until_quiet`] in a test of a few orders.
pub fn settle_deadline() -> Instant {
    Instant::now() + settle_timeout()
}

/// Waits until the system has nothing left to do, failing the test at `deadline`. Quiet is a condition, not a
/// pause: every consumer, retry and async-invoke queue is empty (nothing visible, in flight or delayed), the
/// runner is done with as many outbox stream records as the outbox holds (so every event is on the bus and in
/// its queues), and a second look finds the queues empty and the outbox unchanged. A handler deletes its
/// message only after its writes, so an empty queue means its outbox records are counted by the scan after it.
/// Scheduled invocations are not queued: a test of deadlines waits for what it expects.
pub async fn wait_until_quiet(cloud: &LocalCloud, deadline: Instant) {
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let mut urls: Vec<String> =
        CONSUMER_QUEUES.iter().map(|q| cloud.output(&format!("{q}QueueUrl")).expect("queue url").to_owned()).collect();
    let async_invokes = sqs.list_queues().queue_name_prefix(INTERNAL_PREFIX).send().await.expect("list queues");
    urls.extend(async_invokes.queue_urls().iter().filter(|url| url.contains(cloud.stage())).cloned());
    let mut outbox_seen = None;
    loop {
        // The first queue with messages settles it: each GetQueueAttributes costs an emulator about as much as a
        // write, and asking every queue while the system is busy would slow it down.
        let mut queued = 0;
        for url in &urls {
            queued += queue_depth(&sqs, url).await.unwrap_or(1);
            if queued > 0 {
                break;
            }
        }
        let (outbox, relayed) = if queued == 0 {
            // Every item of both tables was one INSERT on their streams (events, and the orders' heads and
            // idempotency records the consumers skip); the heads' later MODIFYs are filtered out before them. The
            // Orders stream has two consumers, the relay and the order-views projection, each done with each INSERT.
            let inserted =
                count_items(cloud, "OutboxTableName").await + 2 * count_items(cloud, "OrdersTableName").await;
            (inserted, cloud.runner().stream_records_finished())
        } else {
            (0, 0)
        };
        if queued == 0 && relayed >= outbox {
            if outbox_seen == Some(outbox) {
                return;
            }
            outbox_seen = Some(outbox);
            continue;
        }
        outbox_seen = None;
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the system to be quiet: {queued} or more messages queued, {relayed} of {outbox} outbox \
             records relayed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The number of items of a table (a consistent count, all pages).
pub async fn count_items(cloud: &LocalCloud, table_output: &str) -> u64 {
    let dynamodb = aws_sdk_dynamodb::Client::new(cloud.sdk_config());
    let table = cloud.output(table_output).expect("table output");
    let mut count = 0;
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        count += page.count() as u64;
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return count;
        }
    }
}

/// Every item of a table (scan, all pages).
/// Every event written for the bus: the Outbox table's records and the events of the orders event store, each
/// with `pk` its order id (as the Outbox keys them), `source`, `detail_type` and `detail`.
pub async fn published_events(cloud: &LocalCloud) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let mut events = scan(cloud, "OutboxTableName").await;
    for mut item in scan(cloud, "OrdersTableName").await {
        if item.contains_key("detail_type") {
            let order_id = item.get("order_id").cloned().expect("an event of the event store names its order");
            item.insert("pk".into(), order_id);
            events.push(item);
        }
    }
    events
}

pub async fn scan(cloud: &LocalCloud, table_output: &str) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let dynamodb = aws_sdk_dynamodb::Client::new(cloud.sdk_config());
    let table = cloud.output(table_output).expect("table output");
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// Receives every message of a queue (they stay in it: visibility 0) with all attributes.
pub async fn peek(cloud: &LocalCloud, queue_output: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let url = cloud.output(queue_output).expect("queue output");
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .visibility_timeout(0)
        .send()
        .await
        .expect("receive");
    received.messages().to_vec()
}

/// Puts one event on the stage's bus.
pub async fn put_on_bus(cloud: &LocalCloud, source: &str, detail_type: &str, detail: &str) -> Result<()> {
    let events = aws_sdk_eventbridge::Client::new(cloud.sdk_config());
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(cloud.output("EventBusName")?)
        .source(source)
        .detail_type(detail_type)
        .detail(detail)
        .build();
    let output = events.put_events().entries(entry).send().await?;
    if output.failed_entry_count() > 0 {
        bail!("PutEvents rejected {detail_type}: {:?}", output.entries());
    }
    Ok(())
}

/// A string attribute of an item.
pub fn attr<'a>(item: &'a std::collections::HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or_default()
}

/// Every message of a queue, each once: receives until the queue has nothing visible left. The messages stay in
/// the queue but are invisible for a minute.
pub async fn receive_all(cloud: &LocalCloud, queue_output: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let url = cloud.output(queue_output).expect("queue output");
    let mut messages: Vec<aws_sdk_sqs::types::Message> = Vec::new();
    let mut empty_receives = 0;
    while empty_receives < 2 {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        let batch = received.messages();
        empty_receives = if batch.is_empty() { empty_receives + 1 } else { 0 };
        for message in batch {
            if !messages.iter().any(|known| known.message_id() == message.message_id()) {
                messages.push(message.clone());
            }
        }
    }
    messages
}
