//! The demo scenario: one order per outcome of the saga, driven through the HTTP API and the bus, checked
//! against the expected final states, stock and dead-letter queues. `cargo xtask demo` prints it; an
//! end-to-end test asserts it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::issuer::{DEFAULT_VALIDITY, LocalIssuer, Subject};

/// How the scenario reaches the system.
pub struct ScenarioTarget {
    /// The HTTP API, e.g. `http://127.0.0.1:9000`.
    pub http_base: String,
    /// Signs the tokens of the scenario's customers and of the operator who stocks the catalogue.
    pub issuer: LocalIssuer,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub bus_name: String,
    pub sqs: aws_sdk_sqs::Client,
    /// Every dead-letter queue by output name (`InventoryDlqUrl` -> url).
    pub dead_letter_queues: Vec<(String, String)>,
    /// How long to wait for every order to become final.
    pub timeout: Duration,
}

/// One order of the scenario and how it ended.
#[derive(Debug, Clone)]
pub struct OrderOutcome {
    pub case: &'static str,
    pub order_id: String,
    pub lines: String,
    pub expected: &'static str,
    pub actual: String,
}

/// Stock of one SKU: (available, reserved, shipped).
pub type StockLevels = (u64, u64, u64);

#[derive(Debug, Clone)]
pub struct StockOutcome {
    pub sku: &'static str,
    pub before: StockLevels,
    pub expected_after: StockLevels,
    pub after: StockLevels,
}

/// What the scenario saw.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    pub orders: Vec<OrderOutcome>,
    pub stock: Vec<StockOutcome>,
    /// Messages found in each dead-letter queue: (queue output name, reason attribute).
    pub dead_letters: Vec<(String, String)>,
    /// The dead-letter queues the malformed event must reach.
    pub expected_dead_letter_queues: Vec<String>,
    /// Order ids returned by the two requests with the same Idempotency-Key.
    pub idempotent_order_ids: (String, String),
}

impl ScenarioReport {
    /// Everything as expected: final states, stock, one order for a repeated key, the malformed event in exactly
    /// the DLQs of its consumers with a reason, nothing else in any DLQ.
    pub fn passed(&self) -> bool {
        let mut queues: Vec<&str> = self.dead_letters.iter().map(|(queue, _)| queue.as_str()).collect();
        queues.sort_unstable();
        self.orders.iter().all(|o| o.expected == o.actual)
            && self.stock.iter().all(|s| s.expected_after == s.after)
            && self.idempotent_order_ids.0 == self.idempotent_order_ids.1
            && queues == self.expected_dead_letter_queues
            && self.dead_letters.iter().all(|(_, reason)| !reason.is_empty())
    }

    /// The report as text tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mark = |ok: bool| if ok { "ok" } else { "MISMATCH" };
        let _ = writeln!(out, "{:<22} {:<38} {:<16} {:<10} {:<10}", "case", "order", "lines", "expected", "actual");
        for o in &self.orders {
            let _ = writeln!(
                out,
                "{:<22} {:<38} {:<16} {:<10} {:<10} {}",
                o.case,
                o.order_id,
                o.lines,
                o.expected,
                o.actual,
                mark(o.expected == o.actual)
            );
        }
        let _ =
            writeln!(out, "\n{:<10} {:>24} {:>24} {:>24}", "sku", "before (avail/res/ship)", "expected after", "after");
        let levels = |(a, r, s): StockLevels| format!("{a}/{r}/{s}");
        for s in &self.stock {
            let _ = writeln!(
                out,
                "{:<10} {:>24} {:>24} {:>24} {}",
                s.sku,
                levels(s.before),
                levels(s.expected_after),
                levels(s.after),
                mark(s.expected_after == s.after)
            );
        }
        let (first, second) = &self.idempotent_order_ids;
        let _ = writeln!(out, "\nsame Idempotency-Key twice: {first} / {second} {}", mark(first == second));
        for (queue, reason) in &self.dead_letters {
            let _ = writeln!(out, "dead letter in {queue}: {reason}");
        }
        let _ = writeln!(out, "expected dead letters in: {}", self.expected_dead_letter_queues.join(", "));
        out
    }
}

struct Catalogue {
    sku: &'static str,
    available: u64,
    price: &'static str,
    expected_after: StockLevels,
}

const CATALOGUE: [Catalogue; 3] = [
    // 2 (ships) + 1 (idempotent, once) + 1 (legacy) shipped.
    Catalogue { sku: "SKU-BOOK", available: 10, price: "12.50", expected_after: (6, 0, 4) },
    // Only one lamp: the order for three is rejected and nothing is reserved.
    Catalogue { sku: "SKU-LAMP", available: 1, price: "40.00", expected_after: (1, 0, 0) },
    // Two TVs cost 12000.00, over the 10000.00 limit: payment declined, stock released.
    Catalogue { sku: "SKU-TV", available: 5, price: "6000.00", expected_after: (5, 0, 0) },
];

/// Runs the scenario; `on_progress` gets a line per step.
pub async fn run(target: &ScenarioTarget, mut on_progress: impl FnMut(&str)) -> Result<ScenarioReport> {
    let http = reqwest::Client::new();
    let mut report = ScenarioReport::default();
    let operator = target.issuer.token(&Subject::Operator, DEFAULT_VALIDITY)?;

    on_progress("seeding the catalogue");
    let mut before = Vec::new();
    for item in &CATALOGUE {
        let body = json!({"available": item.available, "price": item.price});
        let (status, stock) = send(
            &http,
            reqwest::Method::PUT,
            &format!("{}/inventory/{}", target.http_base, item.sku),
            Some(&body),
            None,
            &operator,
        )
        .await?;
        if status != 200 {
            bail!("PUT /inventory/{} answered {status}: {stock}", item.sku);
        }
        before.push(stock_levels(
            &get(&http, &format!("{}/inventory/{}", target.http_base, item.sku), &operator).await?,
        )?);
    }

    on_progress("placing orders over the HTTP API");
    let mut pending = Vec::new();
    let base = target.http_base.as_str();
    for (case, customer, sku, quantity, expected) in [
        ("ships", "c-1", "SKU-BOOK", 2, "SHIPPED"),
        ("out of stock", "c-2", "SKU-LAMP", 3, "REJECTED"),
        ("payment declined", "c-3", "SKU-TV", 2, "CANCELLED"),
    ] {
        let order_id = place_order(&http, base, &target.issuer, customer, sku, quantity, None).await?;
        pending.push(OrderOutcome {
            case,
            order_id,
            lines: format!("{quantity} x {sku}"),
            expected,
            actual: String::new(),
        });
    }
    let key = format!("demo-{}", Uuid::new_v4());
    let first = place_order(&http, base, &target.issuer, "c-4", "SKU-BOOK", 1, Some(&key)).await?;
    let second = place_order(&http, base, &target.issuer, "c-4", "SKU-BOOK", 1, Some(&key)).await?;
    pending.push(OrderOutcome {
        case: "same key twice",
        order_id: first.clone(),
        lines: "1 x SKU-BOOK".into(),
        expected: "SHIPPED",
        actual: String::new(),
    });
    report.idempotent_order_ids = (first, second);

    on_progress("a legacy producer puts OrderCreated on the bus");
    let legacy_id = format!("legacy-{}", Uuid::new_v4());
    let legacy = json!({"type": "OrderCreated", "data": {"order_id": legacy_id, "user_id": "c-5",
        "product_id": "SKU-BOOK", "quantity": 1, "status": "CREATED"}});
    put_on_bus(target, "legacy.orders", "OrderCreated", &legacy).await?;
    pending.push(OrderOutcome {
        case: "legacy OrderCreated",
        order_id: legacy_id,
        lines: "1 x SKU-BOOK".into(),
        expected: "SHIPPED",
        actual: String::new(),
    });

    on_progress("a malformed OrderPlaced is put on the bus");
    put_on_bus(
        target,
        "orderflow.orders",
        "OrderPlaced",
        &json!({"type": "OrderPlaced", "version": 1, "data": "not an order"}),
    )
    .await?;
    report.expected_dead_letter_queues = vec!["AnalyticsDlqUrl".into(), "InventoryDlqUrl".into()];

    on_progress("waiting for every order to be final");
    let deadline = Instant::now() + target.timeout;
    loop {
        for order in &mut pending {
            order.actual = order_status(&http, &target.http_base, &order.order_id, &operator).await?;
        }
        let stock: Vec<StockLevels> =
            futures::future::try_join_all(CATALOGUE.iter().map(|item| {
                let http = &http;
                let operator = &operator;
                async move {
                    stock_levels(&get(http, &format!("{}/inventory/{}", target.http_base, item.sku), operator).await?)
                }
            }))
            .await?;
        let settled = pending.iter().all(|o| o.actual == o.expected)
            && stock.iter().zip(&CATALOGUE).all(|(after, item)| *after == item.expected_after);
        if settled || Instant::now() > deadline {
            report.stock = CATALOGUE
                .iter()
                .zip(before.iter().zip(stock))
                .map(|(item, (before, after))| StockOutcome {
                    sku: item.sku,
                    before: *before,
                    expected_after: item.expected_after,
                    after,
                })
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report.orders = pending;

    on_progress("reading the dead-letter queues");
    // The malformed event's consumers send it to their DLQs at once; wait for both before looking at the rest.
    let dlq_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        report.dead_letters = dead_letters(target).await?;
        if report.dead_letters.len() >= report.expected_dead_letter_queues.len() || Instant::now() > dlq_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(report)
}

/// Places an order as `customer` (the subject of their token).
async fn place_order(
    http: &reqwest::Client,
    base: &str,
    issuer: &LocalIssuer,
    customer: &str,
    sku: &str,
    quantity: u32,
    idempotency_key: Option<&str>,
) -> Result<String> {
    let token = issuer.token(&Subject::Customer(customer.to_owned()), DEFAULT_VALIDITY)?;
    let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
    let (status, answer) =
        send(http, reqwest::Method::POST, &format!("{base}/orders"), Some(&body), idempotency_key, &token).await?;
    if status != 202 {
        bail!("POST /orders for {customer} answered {status}: {answer}");
    }
    Ok(answer["order_id"].as_str().context("POST /orders answered no order_id")?.to_owned())
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
    token: &str,
) -> Result<(u16, Value)> {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.with_context(|| format!("calling {url}"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    let (status, body) = send(http, reqwest::Method::GET, url, None, None, token).await?;
    if status != 200 {
        bail!("GET {url} answered {status}: {body}");
    }
    Ok(body)
}

/// The order's status, or `NOT FOUND` while the order is not visible yet (a legacy order appears with its
/// first saga step).
async fn order_status(http: &reqwest::Client, base: &str, order_id: &str, token: &str) -> Result<String> {
    let url = format!("{base}/orders/{order_id}");
    let (status, body) = send(http, reqwest::Method::GET, &url, None, None, token).await?;
    Ok(match status {
        200 => body["status"].as_str().unwrap_or("?").to_owned(),
        404 => "NOT FOUND".to_owned(),
        other => bail!("GET /orders/{order_id} answered {other}: {body}"),
    })
}

fn stock_levels(stock: &Value) -> Result<StockLevels> {
    let field = |name: &str| stock[name].as_u64().with_context(|| format!("stock has no {name}: {stock}"));
    Ok((field("available")?, field("reserved")?, field("shipped")?))
}

async fn put_on_bus(target: &ScenarioTarget, source: &str, detail_type: &str, detail: &Value) -> Result<()> {
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&target.bus_name)
        .source(source)
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build();
    let output = target.eventbridge.put_events().entries(entry).send().await.context("PutEvents")?;
    if output.failed_entry_count() > 0 {
        bail!("PutEvents rejected the {detail_type} event: {:?}", output.entries());
    }
    Ok(())
}

/// Every message in every DLQ (left in place: made visible again right away).
async fn dead_letters(target: &ScenarioTarget) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for (name, url) in &target.dead_letter_queues {
        let received = target
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(0)
            .send()
            .await
            .with_context(|| format!("reading {name}"))?;
        for message in received.messages() {
            let reason = message
                .message_attributes()
                .and_then(|attributes| attributes.get("orderflow-error-reason"))
                .and_then(|value| value.string_value())
                .unwrap_or_default();
            found.push((name.clone(), reason.to_owned()));
        }
    }
    found.sort();
    Ok(found)
}
