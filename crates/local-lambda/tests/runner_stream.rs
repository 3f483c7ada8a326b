//! The DynamoDB stream event source mapping against moto: in-order delivery, filtering, retries
//! from the lowest failed record, bisection, and the failure record in the on-failure
//! destination.

mod runner_support;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::runner::{Delivery, DeliveryOutcome, SourceRef};
use runner_support::{Scratch, Stage};
use serde_json::{Value, json};

/// Writes one outbox record. The tests write theirs before the runner starts: the source reads from the trim
/// horizon, so its first `GetRecords` sees them all and the batches do not depend on timing.
async fn put(stage: &Stage, sk: &str, probe: &str) {
    let detail = json!({"type": "OrderPlaced", "correlation_id": "o-1", "id": sk}).to_string();
    aws_sdk_dynamodb::Client::new(&stage.sdk)
        .put_item()
        .table_name(stage.export("OutboxTableName"))
        .item("pk", AttributeValue::S("o-1".into()))
        .item("sk", AttributeValue::S(sk.into()))
        .item("probe", AttributeValue::S(probe.into()))
        .item("detail_type", AttributeValue::S("OrderPlaced".into()))
        .item("detail", AttributeValue::S(detail))
        .send()
        .await
        .unwrap();
}

fn ids(delivery: &Delivery) -> Vec<String> {
    delivery.records.iter().map(|r| r.id.clone()).collect()
}

fn sequence(id: &str) -> u128 {
    id.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_records_are_delivered_in_order_and_retried_from_the_failed_item() {
    let state = Scratch::new("probe-state");
    let state_dir = state.path.display().to_string();
    let stage = Stage::deploy().await;
    for (sk, probe) in [("e1", "ok"), ("e2", "ok"), ("e3", "fail-once"), ("e4", "ok"), ("e5", "ok"), ("e6", "ok")] {
        put(&stage, sk, probe).await;
    }
    // A MODIFY, which the template's filter ({"eventName": ["INSERT"]}) drops.
    put(&stage, "e1", "ok").await;
    let mut harness = stage
        .run(&["probe-stream"], |config| {
            config.extra_env.insert("PROBE_STATE_DIR".into(), state_dir);
        })
        .await;

    let deliveries = harness
        .collect(Duration::from_secs(20), |seen| {
            seen.iter().filter(|d| d.outcome == DeliveryOutcome::Succeeded).count() >= 1
        })
        .await;
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    let (first, retry) = (&deliveries[0], &deliveries[1]);
    assert!(matches!(&first.source, SourceRef::Stream { shard_id, .. } if !shard_id.is_empty()));
    let first_ids = ids(first);
    assert_eq!(first_ids.len(), 4, "BatchSize 4: {first:#?}");
    assert_eq!(first.outcome, DeliveryOutcome::PartiallyFailed { failed_ids: vec![first_ids[2].clone()] });
    assert_eq!(first.records[0].detail_type.as_deref(), Some("OrderPlaced"));
    assert_eq!(first.records[0].correlation_id.as_deref(), Some("o-1"));

    // The retry starts at the failed record (e3) and carries on in order: e3, e4, e5, e6.
    let retry_ids = ids(retry);
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry_ids.len(), 4, "{retry:#?}");
    assert_eq!(retry_ids[..2], first_ids[2..]);
    let all: Vec<u128> = first_ids[..2].iter().chain(&retry_ids).map(|id| sequence(id)).collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order: {all:?}");

    // The MODIFY was filtered out: nothing else is delivered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(harness.deliveries.try_recv().is_err(), "no further deliveries");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_bisected_out_retried_and_sent_to_the_on_failure_destination() {
    let stage = Stage::deploy().await;
    for (sk, probe) in [("e1", "ok"), ("e2", "error"), ("e3", "ok"), ("e4", "ok")] {
        put(&stage, sk, probe).await;
    }
    let mut harness = stage.run(&["probe-stream"], |_| {}).await;
    let deliveries = harness
        .collect(Duration::from_secs(30), |seen| {
            let dead = seen.iter().any(|d| matches!(d.outcome, DeliveryOutcome::DeadLettered { .. }));
            let after = seen.iter().filter(|d| d.outcome == DeliveryOutcome::Succeeded).count();
            dead && after >= 2
        })
        .await;
    let shape: Vec<(usize, &str)> = deliveries
        .iter()
        .map(|d| {
            let kind = match &d.outcome {
                DeliveryOutcome::Succeeded => "ok",
                DeliveryOutcome::Failed { .. } => "failed",
                DeliveryOutcome::DeadLettered { .. } => "dead",
                DeliveryOutcome::PartiallyFailed { .. } => "partial",
            };
            (d.records.len(), kind)
        })
        .collect();
    // 4 fail -> split to 2, fail -> split to 1 (e1) ok; [e2 e3 e4] fail -> [e2 e3] fail ->
    // [e2] fails 3 times (MaximumRetryAttempts 2) -> dead-lettered; [e3 e4] ok.
    assert_eq!(
        shape,
        [
            (4, "failed"),
            (2, "failed"),
            (1, "ok"),
            (3, "failed"),
            (2, "failed"),
            (1, "failed"),
            (1, "failed"),
            (1, "failed"),
            (1, "dead"),
            (2, "ok"),
        ],
        "{deliveries:#?}"
    );
    let poison = deliveries[8].records[0].id.clone();
    assert_eq!(ids(&deliveries[0])[1], poison);
    assert_eq!(
        deliveries[8].outcome,
        DeliveryOutcome::DeadLettered { destination_arn: Some(harness.export("RelayDlqArn")) }
    );

    let records = harness.drain_queue(&harness.export("RelayDlqUrl"), 1, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestContext"]["functionArn"], "arn:aws:lambda:us-east-1:123456789012:function:probe-stream");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    let info = &record["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], poison);
    assert_eq!(info["endSequenceNumber"], poison);
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["streamArn"], harness.export("OutboxStreamArn"));
    assert!(info["shardId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(record["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unlimited_retries_a_record_failing_more_than_any_old_limit_still_succeeds_in_order() {
    let state = Scratch::new("probe-state");
    let state_dir = state.path.display().to_string();
    let stage = Stage::deploy().await;
    // 15 failed invocations: more than the relay's old MaximumRetryAttempts of 10.
    for (sk, probe) in [("e1", "error-times-15"), ("e2", "ok")] {
        put(&stage, sk, probe).await;
    }
    let mut harness = stage
        .run(&["probe-stream-forever"], |config| {
            config.extra_env.insert("PROBE_STATE_DIR".into(), state_dir);
            config.timing.retry_backoff = Duration::from_millis(10);
            config.timing.max_retry_backoff = Duration::from_millis(50);
        })
        .await;
    let deliveries = harness
        .collect(Duration::from_secs(60), |seen| seen.iter().any(|d| d.outcome == DeliveryOutcome::Succeeded))
        .await;
    let failed = deliveries.iter().filter(|d| matches!(d.outcome, DeliveryOutcome::Failed { .. })).count();
    // Bisection splits [e1 e2] once (not a retry), then e1 alone fails the rest of its 15 times.
    assert_eq!(failed, 15, "{deliveries:#?}");
    assert!(deliveries.iter().all(|d| !matches!(d.outcome, DeliveryOutcome::DeadLettered { .. })));
    let success = deliveries.last().unwrap();
    assert_eq!(success.outcome, DeliveryOutcome::Succeeded);
    let poison = deliveries[0].records[0].id.clone();
    assert_eq!(success.records[0].id, poison, "the shard waited for e1: {success:#?}");
    assert_eq!(success.attempt, 15, "the 15th retry succeeded");

    // e2 follows e1, never before it, and nothing went to the on-failure destination.
    let rest = harness.collect(Duration::from_secs(20), |seen| !seen.is_empty()).await;
    let delivered: Vec<String> =
        success.records.iter().chain(rest.iter().flat_map(|d| &d.records)).map(|r| r.id.clone()).collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(sequence(&delivered[0]) < sequence(&delivered[1]));
    let dead = harness.drain_queue(&harness.export("RelayDlqUrl"), 1, Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "{dead:?}");
    harness.stop().await;
}
