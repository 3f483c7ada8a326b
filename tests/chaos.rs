//! The system's guarantees hold under chaos: orders placed concurrently over the HTTP API while the runner
//! duplicates 20% of the SQS deliveries (true copies sent back to the queue) and shuffles every batch, poison
//! messages (malformed envelopes of consumed types) are put straight on the bus, and the fault proxy on the wire
//! throttles the SQS consumers' DynamoDB calls and kills a consumer right after a write of its succeeded (before it
//! acknowledges its batch), both set through `PUT /_local/faults`. Afterwards: every order is final; per SKU no stock is oversold and stock is
//! conserved; every effect happened once; every poison message is in a DLQ with its reason, and nothing else is.
//!
//! `ORDERFLOW_CHAOS_ORDERS` sets the number of orders (default [`DEFAULT_ORDERS`]); `ORDERFLOW_CHAOS_SEED` the seed
//! of the runner's chaos (printed in the summary).
//!
//! The stage is deployed with `maxReceiveCount` [`CHAOS_MAX_RECEIVE_COUNT`]: with ~7% of deliveries failing on
//! purpose (crashes, throttling), three receives would dead-letter about one healthy message in 3,000 (0.07^3),
//! and a message SQS dead-letters for exhausted retries is an effect lost by configuration, not by a bug. The
//! test still fails if any message other than a poison one reaches a DLQ.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use local_lambda::runner::{Chaos, DeliveryOutcome};
use local_lambda::sources::SourceRef;
use serde_json::{Value, json};
use support::Api;
use support::outcome::{self, final_order, stock_settled};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

const DEFAULT_ORDERS: usize = 500;
const CHAOS_MAX_RECEIVE_COUNT: u32 = 10;
const DUPLICATE_RATE: f64 = 0.2;
const POISON_RATE: f64 = 0.05;
/// Of the consumers' DynamoDB writes (one or two per record: a batch of ten crashes about one time in twenty).
const CRASH_AFTER_WRITE: f64 = 0.005;
const THROTTLE: f64 = 0.05;
/// How the runner reports an instance the fault proxy killed after its write.
const CRASH_EXIT_STATUS: &str = "signal: 9";
/// The functions consuming SQS queues.
const SQS_CONSUMERS: [&str; 5] = ["inventory", "payment", "order-saga", "shipping", "analytics"];

/// (sku, initial stock, price): two scarce SKUs (rejections), a plentiful one, and one so dear that two units
/// pass the customer limit of 10,000.00 (payment declined, order cancelled).
const SKUS: [(&str, u64, &str); 4] = [
    ("SKU-SCARCE-1", 15, "3.00"),
    ("SKU-SCARCE-2", 8, "7.50"),
    ("SKU-PLENTY", 100_000, "12.50"),
    ("SKU-DEAR", 100_000, "6000.00"),
];

/// Poison messages: (detail-type, source, the DLQs of its consumers). Only types consumed from SQS, whose
/// dead letters carry the reason as message attributes.
const POISON_KINDS: [(&str, &str, &[&str]); 5] = [
    ("OrderPlaced", "orderflow.orders", &["InventoryDlqUrl", "AnalyticsDlqUrl"]),
    ("InventoryReserved", "orderflow.inventory", &["OrderSagaDlqUrl", "AnalyticsDlqUrl"]),
    ("PaymentRequested", "orderflow.saga", &["PaymentDlqUrl"]),
    ("InventoryReleaseRequested", "orderflow.saga", &["InventoryDlqUrl"]),
    ("PaymentAuthorized", "orderflow.payment", &["OrderSagaDlqUrl"]),
];

fn order_count() -> usize {
    match std::env::var("ORDERFLOW_CHAOS_ORDERS") {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("ORDERFLOW_CHAOS_ORDERS={value:?} is not a number")),
        Err(_) => DEFAULT_ORDERS,
    }
}

/// The SKU and quantity of the i-th order.
fn order_line(i: usize) -> (&'static str, u64) {
    match i % 10 {
        0 | 1 => ("SKU-SCARCE-1", 1),
        2 => ("SKU-SCARCE-2", 2),
        3 => ("SKU-DEAR", 2),
        n => ("SKU-PLENTY", (n % 3 + 1) as u64),
    }
}

/// What the runner's deliveries showed.
#[derive(Debug, Default)]
struct Observed {
    sqs_deliveries: u64,
    records: u64,
    crashes: u64,
    other_failed_invocations: u64,
    failed_records: u64,
    lagged: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn under_duplicates_reordering_poison_crashes_and_throttling_every_order_ends_final_with_no_oversold_stock_and_every_effect_once()
 {
    let orders_wanted = order_count();
    let poison_count = ((orders_wanted as f64 * POISON_RATE).round() as usize).max(1);
    let seed = support::chaos_seed();
    let cloud = support::start_cloud_with(|options| {
        options.chaos = Some(Chaos { duplicate_rate: DUPLICATE_RATE, shuffle: true, seed });
        options.max_receive_count = CHAOS_MAX_RECEIVE_COUNT;
        options.fault_seed = seed;
    })
    .await;
    let started = Instant::now();
    let api = Api::new(&cloud);
    let faults = json!({"rules": [
        {"target": "dynamodb", "functions": SQS_CONSUMERS, "fault": "throttle", "rate": THROTTLE},
        {"target": "dynamodb", "functions": SQS_CONSUMERS, "fault": "crash_after_write", "rate": CRASH_AFTER_WRITE},
    ]});
    assert_eq!(api.send("PUT", "/_local/faults", Some(faults), &[]).await.0, 204);

    // Every delivery of the runner, counted as it happens.
    let mut deliveries = cloud.runner().subscribe();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let observer = tokio::spawn({
        let observed = observed.clone();
        async move {
            loop {
                let received = deliveries.recv().await;
                let mut seen = observed.lock().unwrap();
                match received {
                    Ok(delivery) => {
                        if !matches!(delivery.source, SourceRef::Queue { .. }) {
                            continue;
                        }
                        seen.sqs_deliveries += 1;
                        seen.records += delivery.records.len() as u64;
                        match &delivery.outcome {
                            DeliveryOutcome::Failed { error_message, .. }
                                if error_message.contains(CRASH_EXIT_STATUS) =>
                            {
                                seen.crashes += 1
                            }
                            DeliveryOutcome::Failed { .. } => seen.other_failed_invocations += 1,
                            DeliveryOutcome::PartiallyFailed { failed_ids } => {
                                seen.failed_records += failed_ids.len() as u64
                            }
                            _ => {}
                        }
                    }
                    Err(RecvError::Lagged(n)) => seen.lagged += n,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });

    for (sku, available, price) in SKUS {
        api.restock(sku, available as u32, price).await;
    }

    // Orders over the HTTP API and poison on the bus, all at once.
    let placing = stream::iter(0..orders_wanted)
        .map(|i| {
            let api = &api;
            async move {
                let (sku, quantity) = order_line(i);
                let key = format!("chaos-{seed}-{i}");
                (api.place_with_retries(&key, &format!("chaos-c-{i}"), sku, quantity as u32).await, sku, quantity)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let poisoning = stream::iter(0..poison_count)
        .map(|i| {
            let cloud = &cloud;
            async move {
                let (detail_type, source, dlqs) = POISON_KINDS[i % POISON_KINDS.len()];
                let marker = format!("poison-{i}-{}", Uuid::new_v4());
                // A malformed envelope: no occurred_at, no data.
                let detail = json!({"id": Uuid::new_v4(), "type": detail_type, "version": 1, "correlation_id": marker});
                support::put_on_bus(cloud, source, detail_type, &detail.to_string()).await.expect("poison on the bus");
                (marker, dlqs)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>();
    let (placed, poisons) = tokio::join!(placing, poisoning);
    let placed_in = started.elapsed();

    // 1. Every order reaches a final state. First wait until the system is quiet (queue attributes, an outbox
    // count), then read every order; an overloaded emulator may time the API out (5xx), which only means "ask again".
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_secs(2) * orders_wanted as u32;
    support::wait_until_quiet(&cloud, deadline).await;
    let finals: Vec<Value> =
        stream::iter(&placed).map(|(id, _, _)| final_order(&api, id, deadline)).buffered(4).collect::<Vec<_>>().await;
    let final_in = started.elapsed();
    support::wait_until_quiet(&cloud, deadline).await;
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let status_of: HashMap<String, String> = placed
        .iter()
        .zip(&finals)
        .map(|((id, _, _), order)| {
            let status = order["status"].as_str().expect("status").to_owned();
            *by_state.entry(status.clone()).or_default() += 1;
            (id.clone(), status)
        })
        .collect();
    for state in ["SHIPPED", "REJECTED", "CANCELLED"] {
        assert!(by_state.get(state).copied().unwrap_or(0) > 0, "no order ended {state}: {by_state:?}");
    }

    // 2. Per SKU: never oversold, conserved, nothing left reserved, shipped = what the shipped orders hold.
    let mut stock_lines = Vec::new();
    for (sku, initial, _) in SKUS {
        let shipped_units: u64 = placed
            .iter()
            .filter(|(id, line_sku, _)| *line_sku == sku && status_of[id] == "SHIPPED")
            .map(|(_, _, quantity)| quantity)
            .sum();
        let (available, reserved, shipped) = stock_settled(&api, sku, deadline).await;
        assert_eq!(reserved, 0, "{sku}: units still reserved");
        assert!(shipped <= initial, "{sku}: oversold, {shipped} shipped of {initial}");
        assert_eq!(available + reserved + shipped, initial, "{sku}: stock not conserved");
        assert_eq!(shipped, shipped_units, "{sku}: shipped units differ from the shipped orders' quantities");
        stock_lines.push(format!("{sku}: available {available}, reserved {reserved}, shipped {shipped} of {initial}"));
    }

    // 3. Every effect once.
    let problems = outcome::effect_problems(&cloud, &status_of).await;
    assert!(
        problems.is_empty(),
        "{} orders have missing or doubled effects, e.g. {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    // 4. Every poison message is in the DLQ of each of its consumers, with its reason; nothing else is in a DLQ.
    let mut dlq_counts = BTreeMap::new();
    let mut dead_markers: HashMap<&str, Vec<String>> = HashMap::new();
    let dlqs = cloud.dead_letter_queues();
    for (dlq, _) in &dlqs {
        let messages = support::receive_all(&cloud, dlq).await;
        dlq_counts.insert(dlq.clone(), messages.len());
        for message in &messages {
            let body: Value = serde_json::from_str(message.body().unwrap_or_default()).unwrap_or(Value::Null);
            let marker = body["detail"]["correlation_id"].as_str().unwrap_or_default();
            assert!(
                marker.starts_with("poison-"),
                "{dlq} holds a message that is not poison: {body}\n  attributes: {:?}\n  system attributes: {:?}",
                message.message_attributes(),
                message.attributes()
            );
            let attributes = message.message_attributes().unwrap_or_else(|| panic!("{dlq}: no attributes: {body}"));
            let reason = attributes.get("orderflow-error-reason").and_then(|a| a.string_value()).unwrap_or_default();
            assert!(!reason.is_empty(), "{dlq}: no reason for {marker}");
            assert_eq!(attributes.get("orderflow-error-class").and_then(|a| a.string_value()), Some("Permanent"));
            dead_markers.entry(dlq.as_str()).or_default().push(marker.to_owned());
        }
    }
    for (marker, expected_dlqs) in &poisons {
        for dlq in *expected_dlqs {
            let found = dead_markers.get(dlq).is_some_and(|markers| markers.contains(marker));
            assert!(found, "poison {marker} is not in {dlq}");
        }
    }

    let duration = started.elapsed();
    let fired = cloud.runner().faults().fired();
    let chaos = cloud.runner().chaos_stats().expect("chaos is on");
    observer.abort();
    cloud.shutdown().await.unwrap();
    let seen = std::mem::take(&mut *observed.lock().unwrap());
    eprintln!(
        "chaos summary: {} orders (seed {seed}) in {:.1} s (placed in {:.1} s, all final after {:.1} s)\n  \
         final states: {by_state:?}\n  stock: {}\n  \
         SQS deliveries {} ({} records), duplicates sent {} / delivered {}, batches shuffled {}, duplicate sends failed {}\n  \
         injected crashes seen {}, other failed invocations {}, records failed and retried {}, lagged {}\n  \
         poison messages {}, DLQ messages {dlq_counts:?}\n  faults fired {fired:?}",
        placed.len(),
        duration.as_secs_f64(),
        placed_in.as_secs_f64(),
        final_in.as_secs_f64(),
        stock_lines.join("; "),
        seen.sqs_deliveries,
        seen.records,
        chaos.duplicates_sent,
        chaos.duplicates_delivered,
        chaos.batches_shuffled,
        chaos.send_failures,
        seen.crashes,
        seen.other_failed_invocations,
        seen.failed_records,
        seen.lagged,
        poisons.len(),
    );
    assert!(chaos.duplicates_delivered > 0, "the chaos delivered no duplicate");
    for fault in ["dynamodb/throttle", "dynamodb/crash_after_write"] {
        assert!(fired.get(fault).copied().unwrap_or(0) > 0, "{fault} never fired: {fired:?}");
    }
}
