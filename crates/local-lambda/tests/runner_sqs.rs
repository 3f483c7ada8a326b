//! The SQS event source mapping against moto: partial batch failures, redelivery after the
//! visibility timeout, and the queue's redrive policy moving poison records to the DLQ.

mod runner_support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use local_lambda::runner::{Delivery, DeliveryOutcome};
use runner_support::Harness;
use serde_json::{Value, json};

async fn send(harness: &Harness, bodies: &[Value]) -> Vec<String> {
    let entries = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body.to_string()).build().unwrap()
        })
        .collect();
    let out = harness
        .sqs()
        .send_message_batch()
        .queue_url(harness.export("ProbeQueueUrl"))
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert!(out.failed().is_empty());
    let mut ids: Vec<(usize, String)> =
        out.successful().iter().map(|s| (s.id().parse().unwrap(), s.message_id().to_owned())).collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Deliveries per message id: the attempts (ApproximateReceiveCount) it was delivered with.
fn attempts_by_message(deliveries: &[Delivery]) -> BTreeMap<String, Vec<u32>> {
    let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for delivery in deliveries {
        for record in &delivery.records {
            by_id.entry(record.id.clone()).or_default().push(delivery.attempt);
        }
    }
    by_id
}

async fn queue_depth(harness: &Harness) -> (u64, u64) {
    let attrs = harness
        .sqs()
        .get_queue_attributes()
        .queue_url(harness.export("ProbeQueueUrl"))
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let n = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    (n(QueueAttributeName::ApproximateNumberOfMessages), n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_partial_batch_failure_deletes_only_successes_and_the_failed_record_ends_in_the_dlq() {
    let mut harness = Harness::start(&["probe-sqs"], |_| {}).await;
    let bodies = [
        json!({"probe": "ok", "n": 1}),
        json!({"probe": "fail", "n": 2}),
        json!({"probe": "ok", "n": 3}),
        json!({"detail-type": "OrderPlaced", "detail": {"correlation_id": "o-42"}, "probe": "ok"}),
    ];
    let ids = send(&harness, &bodies).await;
    let poison = ids[1].clone();

    // Two receives of the poison record (maxReceiveCount 2), each reported as a batch item failure.
    let deliveries = harness
        .collect(Duration::from_secs(20), |seen| {
            attempts_by_message(seen).get(&poison).is_some_and(|attempts| attempts.len() == 2)
        })
        .await;
    let first = &deliveries[0];
    assert_eq!(first.function, "probe-sqs");
    assert_eq!(first.records.len(), 4, "the batching window gathers the whole batch: {first:#?}");
    assert_eq!(first.outcome, DeliveryOutcome::PartiallyFailed { failed_ids: vec![poison.clone()] });
    let correlated = first.records.iter().find(|r| r.id == ids[3]).unwrap();
    assert_eq!(correlated.detail_type.as_deref(), Some("OrderPlaced"));
    assert_eq!(correlated.correlation_id.as_deref(), Some("o-42"));

    // SQS moves the poison record to the DLQ on its next receive; the successes were deleted.
    let dlq = harness.drain_queue(&harness.export("ProbeDlqUrl"), 1, Duration::from_secs(10)).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(serde_json::from_str::<Value>(&dlq[0]).unwrap(), bodies[1]);
    assert_eq!(queue_depth(&harness).await, (0, 0));

    // Nothing was delivered again: each success once, the poison record twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut all = deliveries;
    while let Ok(late) = harness.deliveries.try_recv() {
        all.push(late);
    }
    let attempts = attempts_by_message(&all);
    assert_eq!(attempts[&poison], vec![1, 2]);
    for ok in [&ids[0], &ids[2], &ids[3]] {
        assert_eq!(attempts[ok], vec![1], "{ok} was processed once");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identifier_not_in_the_batch_fails_the_whole_batch() {
    let mut harness = Harness::start(&["probe-sqs"], |_| {}).await;
    let ids = send(&harness, &[json!({"probe": "ok"}), json!({"probe": "bad-id"})]).await;

    let deliveries = harness
        .collect(Duration::from_secs(20), |seen| {
            let attempts = attempts_by_message(seen);
            ids.iter().all(|id| attempts.get(id).is_some_and(|a| a.len() == 2))
        })
        .await;
    for delivery in &deliveries {
        assert!(
            matches!(&delivery.outcome, DeliveryOutcome::Failed { error_type, .. } if error_type == "Runner.InvalidBatchResponse"),
            "{delivery:#?}"
        );
    }
    // Nothing was deleted: both records end in the DLQ.
    let dlq = harness.drain_queue(&harness.export("ProbeDlqUrl"), 2, Duration::from_secs(10)).await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    harness.stop().await;
}
