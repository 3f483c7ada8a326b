//! Every order survives an outage of one dependency: faults are injected on the wire by the local cloud's fault
//! proxy (`PUT /_local/faults`), between the real function binaries and the emulator or the payment provider, while
//! orders flow. After recovery each test asserts: every order final with the outcome it has without the fault, no
//! message in any DLQ, stock conserved, every effect exactly once, and that the injected fault fired.
//!
//! Outage lengths: `ORDERFLOW_OUTAGE_SECONDS` sets them (default: the provider 60 s, DynamoDB and EventBridge
//! 30 s); `ORDERFLOW_CHAOS_SEED` seeds the fault draws (printed at the start). The local stacks retry faster than
//! AWS (see [`configure`]) unless `ORDERFLOW_OUTAGE_AWS_DEFAULTS=1`, which keeps the functions' default backoff
//! (2 s doubling to 5 min) and the template's `MaxReceiveCount`: the by-hand 15-minute run in README.
//! docs/retry-budget.md has the arithmetic of the AWS defaults.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use orderflow_local_cloud::cloud::CloudOptions;
use serde_json::{Value, json};
use support::Api;
use support::outcome::{self, final_order, stock_settled};

/// Orders per test: a third each shipped, rejected (a SKU not in the catalogue) and cancelled (over the limit).
const ORDERS: usize = 24;
const PLENTY: (&str, u32, &str) = ("SKU-PLENTY", 10_000, "12.50");
/// Two units pass the provider's customer limit of 10,000.00: declined, stock released, cancelled.
const DEAR: (&str, u32, &str) = ("SKU-DEAR", 10_000, "6000.00");
const MISSING_SKU: &str = "SKU-NOT-IN-CATALOGUE";
/// Receives before a DLQ in these stages: with the backoff below, a message keeps retrying for well over the
/// longest outage here (the local stack's visibility timeout is 12 s; RETRY_BACKOFF_* set the rest).
const MAX_RECEIVE_COUNT: u32 = 30;

fn outage(default_seconds: u64) -> u64 {
    std::env::var("ORDERFLOW_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seconds)
}

/// `MaxReceiveCount`'s default in infra/stateful.yaml (a test in crates/aws/src/backoff.rs checks its budget).
const IAC_MAX_RECEIVE_COUNT: u32 = 13;

/// The functions' retry settings for these tests: 1 s doubling up to 8 s (on AWS: 2 s up to 5 min), or the AWS
/// defaults when `ORDERFLOW_OUTAGE_AWS_DEFAULTS=1`.
fn configure(options: &mut CloudOptions, seed: u64) {
    options.fault_seed = seed;
    if std::env::var("ORDERFLOW_OUTAGE_AWS_DEFAULTS").as_deref() == Ok("1") {
        options.max_receive_count = IAC_MAX_RECEIVE_COUNT;
        return;
    }
    options.max_receive_count = MAX_RECEIVE_COUNT;
    options.function_env.insert("RETRY_BACKOFF_BASE_SECONDS".into(), "1".into());
    options.function_env.insert("RETRY_BACKOFF_MAX_SECONDS".into(), "8".into());
}

/// The i-th order: its SKU, quantity and the final state it has without any fault.
fn planned(i: usize) -> (&'static str, u32, &'static str) {
    match i % 3 {
        0 => (PLENTY.0, 1 + (i % 2) as u32, "SHIPPED"),
        1 => (MISSING_SKU, 1, "REJECTED"),
        _ => (DEAR.0, 2, "CANCELLED"),
    }
}

/// Starts a cloud, sets `rules`, places the orders while they are in force, waits for recovery and checks every
/// guarantee; every fault in `must_fire` (`<target>/<fault>`) must have fired.
async fn orders_survive(name: &str, rules: Value, must_fire: &[&str], settle: Duration) {
    let seed = support::chaos_seed();
    let cloud = support::start_cloud_with(|options| configure(options, seed)).await;
    let api = Api::new(&cloud);
    for (sku, available, price) in [PLENTY, DEAR] {
        api.restock(sku, available, price).await;
    }
    let started = Instant::now();
    let (status, body) = api.send("PUT", "/_local/faults", Some(rules), &[]).await;
    assert_eq!(status, 204, "PUT /_local/faults: {body}");

    let placed: Vec<(String, &str, u32, &str)> = stream::iter(0..ORDERS)
        .map(|i| {
            let api = &api;
            async move {
                let (sku, quantity, expected) = planned(i);
                let id = api.place_with_retries(&format!("{name}-{seed}-{i}"), &format!("c-{i}"), sku, quantity).await;
                (id, sku, quantity, expected)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;

    let deadline = Instant::now() + settle;
    let mut status_of = HashMap::new();
    for (id, _, _, expected) in &placed {
        let order = final_order(&api, id, deadline).await;
        let status = order["status"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            &status, expected,
            "{name}: order {id} ended {status}, without the fault it ends {expected}: {order}"
        );
        status_of.insert(id.clone(), status);
    }
    support::wait_until_quiet(&cloud, deadline).await;
    let recovered_in = started.elapsed();

    let shipped_units: u64 = placed.iter().filter(|p| p.3 == "SHIPPED").map(|p| u64::from(p.2)).sum();
    for (sku, initial, _) in [PLENTY, DEAR] {
        let (available, reserved, shipped) = stock_settled(&api, sku, deadline).await;
        assert_eq!(available + reserved + shipped, u64::from(initial), "{name}: {sku} stock not conserved");
        let expected_shipped = if sku == PLENTY.0 { shipped_units } else { 0 };
        assert_eq!(shipped, expected_shipped, "{name}: {sku} shipped units");
    }
    let problems = outcome::effect_problems(&cloud, &status_of).await;
    assert!(problems.is_empty(), "{name}: missing or doubled effects: {problems:#?}");
    // At the provider too: one authorization per shipped order, one decline per cancelled one, nothing voided.
    let stats = cloud.payment_provider_stats().await.expect("provider stats");
    let count = |status: &str| placed.iter().filter(|p| p.3 == status).count() as u64;
    assert_eq!(stats["authorizations"], count("SHIPPED"), "{name}: provider {stats}");
    assert_eq!(stats["declines"], count("CANCELLED"), "{name}: provider {stats}");
    assert_eq!(stats["voids"], 0, "{name}: provider {stats}");
    let (dead, correlation_ids) = outcome::drain_dead_letters(&cloud).await;
    assert!(dead.values().all(|&n| n == 0), "{name}: healthy messages in DLQs: {dead:?} {correlation_ids:?}");

    let (_, report) = api.send("GET", "/_local/faults", None, &[]).await;
    let fired = &report["fired"];
    for fault in must_fire {
        assert!(fired[*fault].as_u64().unwrap_or(0) > 0, "{name}: {fault} never fired: {report}");
    }
    eprintln!(
        "{name}: {ORDERS} orders final and checked {:.1} s after the fault began; fired {fired}",
        recovered_in.as_secs_f64()
    );
    cloud.shutdown().await.expect("cloud stops");
}

fn settle_after(outage_seconds: u64) -> Duration {
    support::settle_timeout() + Duration::from_secs(2 * outage_seconds)
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_the_payment_provider_down_for_a_minute() {
    let seconds = outage(60);
    let rules = json!({"rules": [
        {"target": "payment-provider", "fault": "unavailable", "rate": 1.0, "for_seconds": seconds}]});
    orders_survive("provider-down", rules, &["payment-provider/unavailable"], settle_after(seconds)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_dynamodb_throttling_every_write_for_thirty_seconds() {
    let seconds = outage(30);
    let rules: Vec<Value> = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"]
        .iter()
        .map(|operation| {
            json!({"target": "dynamodb", "operation": operation, "fault": "throttle", "rate": 1.0, "for_seconds": seconds})
        })
        .collect();
    orders_survive("dynamodb-throttled", json!({"rules": rules}), &["dynamodb/throttle"], settle_after(seconds)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_eventbridge_put_events_unavailable_for_thirty_seconds() {
    let seconds = outage(30);
    let rules = json!({"rules": [
        {"target": "events", "operation": "PutEvents", "fault": "unavailable", "rate": 1.0, "for_seconds": seconds}]});
    orders_survive("events-unavailable", rules, &["events/unavailable"], settle_after(seconds)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_connection_resets_on_five_percent_of_every_call() {
    let rules: Vec<Value> = ["dynamodb", "sqs", "events", "payment-provider"]
        .iter()
        .map(|target| json!({"target": target, "fault": "reset", "rate": 0.05}))
        .collect();
    let must_fire = ["dynamodb/reset", "events/reset"];
    orders_survive("resets", json!({"rules": rules}), &must_fire, settle_after(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_functions_killed_right_after_their_writes() {
    let rules = json!({"rules": [
        {"target": "dynamodb", "fault": "crash_after_write", "rate": 0.1},
        {"target": "events", "fault": "crash_after_write", "rate": 0.1}]});
    orders_survive(
        "crash-after-write",
        rules,
        &["dynamodb/crash_after_write", "events/crash_after_write"],
        settle_after(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_fault_rule_is_refused_naming_the_field_and_changes_nothing() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    let good = json!({"rules": [{"target": "sqs", "fault": "throttle", "rate": 0.5, "for_seconds": 60}]});
    assert_eq!(api.send("PUT", "/_local/faults", Some(good), &[]).await.0, 204);
    for (rule, field) in [
        (json!({"target": "s3", "fault": "throttle", "rate": 1}), "rules[0].target"),
        (json!({"target": "sqs", "fault": "throttle", "rate": 2}), "rules[0].rate"),
        (json!({"target": "sqs", "fault": "latency", "rate": 1}), "rules[0].latency_ms"),
    ] {
        let (status, body) = api.send("PUT", "/_local/faults", Some(json!({"rules": [rule]})), &[]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], field, "{body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(field), "{body}");
    }
    let (status, report) = api.send("GET", "/_local/faults", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(report["rules"].as_array().map(Vec::len), Some(1), "the good rule stays: {report}");
    assert_eq!(report["rules"][0]["target"], "sqs");
    assert_eq!(api.send("DELETE", "/_local/faults", None, &[]).await.0, 204);
    let (_, report) = api.send("GET", "/_local/faults", None, &[]).await;
    assert_eq!(report["rules"], json!([]));
    cloud.shutdown().await.expect("cloud stops");
}
