//! Replay from the event store, with no archive: orders run to their final states, then a new consumer is deployed
//! (tests/fixtures/late-consumer.yaml: an audit queue with a rule for every order event) and has seen nothing.
//! `orderflow-replay orders <id>` brings it that order's events, and `orderflow-replay range --from --to` every
//! event of the range, each exactly as the event store holds it. The consumers that saw the events before take the
//! replay as duplicates: no order, stock or DLQ changes.

mod support;

use std::collections::BTreeSet;

use local_lambda::deploy::{delete_stack, deploy_stack};
use orderflow_local_cloud::cloud::LocalCloud;
use serde_json::Value;
use support::{Api, settle_timeout};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// (id, type, detail) of every event `GET /orders/{id}/events` shows for the orders.
async fn event_store(api: &Api, order_ids: &[&str]) -> BTreeSet<(String, String)> {
    let mut events = BTreeSet::new();
    for order_id in order_ids {
        let (status, body) = api.send("GET", &format!("/orders/{order_id}/events"), None, &[]).await;
        assert_eq!(status, 200, "{body}");
        for event in body["events"].as_array().unwrap() {
            events.insert((event["id"].as_str().unwrap().to_owned(), event["type"].as_str().unwrap().to_owned()));
        }
    }
    events
}

/// Receives from the audit queue until it has `expected` messages and stays empty a moment; (id, type) of each.
async fn audited(cloud: &LocalCloud, url: &str, expected: usize) -> Vec<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(cloud.sdk_config());
    let deadline = tokio::time::Instant::now() + settle_timeout();
    let mut received = Vec::new();
    let mut empty = 0;
    while received.len() < expected || empty < 2 {
        assert!(tokio::time::Instant::now() < deadline, "audited {} of {expected}: {received:?}", received.len());
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = output.messages();
        empty = if messages.is_empty() { empty + 1 } else { 0 };
        for message in messages {
            let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            let detail = &body["detail"];
            received.push((detail["id"].as_str().unwrap().to_owned(), detail["type"].as_str().unwrap().to_owned()));
            let handle = message.receipt_handle().unwrap();
            sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("delete");
        }
    }
    received
}

fn replay(cloud: &LocalCloud, args: &[&str]) -> String {
    let output = cloud
        .operator_command("orderflow-replay")
        .args(args)
        .args(["--orders-table", cloud.output("OrdersTableName").unwrap()])
        .args(["--bus", cloud.output("EventBusName").unwrap()])
        .output()
        .expect("orderflow-replay runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_added_after_the_fact_catches_up_from_the_event_store_and_the_others_change_nothing() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock("SKU-REPLAY", 10, "2.50").await;
    let started = OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let shipped = api.place("c-1", "SKU-REPLAY", 2).await;
    let rejected = api.place("c-2", "SKU-MISSING", 1).await;
    let cancelled = api.place("c-3", "SKU-REPLAY", 1).await;
    let (status, body) = api.send("POST", &format!("/orders/{cancelled}/cancel"), None, &[]).await;
    assert!([202, 409].contains(&status), "{status} {body}");
    let mut finals = Vec::new();
    for order_id in [&shipped, &rejected, &cancelled] {
        finals.push(api.final_order(order_id).await);
    }
    assert_eq!((finals[0]["status"].as_str(), finals[1]["status"].as_str()), (Some("SHIPPED"), Some("REJECTED")));
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    let stock = api.stock("SKU-REPLAY").await;

    // A new consumer joins: it has seen nothing.
    let cloudformation = aws_sdk_cloudformation::Client::new(cloud.sdk_config());
    let stack = format!("orderflow-{}-late-consumer", cloud.stage());
    let template = support::project_root().join("tests/fixtures/late-consumer.yaml");
    let bus = cloud.output("EventBusName").unwrap().to_owned();
    let outputs = deploy_stack(&cloudformation, &stack, &template, &[("Stage", cloud.stage()), ("BusName", &bus)])
        .await
        .expect("the late consumer deploys");
    let queue = outputs.get("AuditQueueUrl").unwrap().to_owned();
    assert!(audited(&cloud, &queue, 0).await.is_empty(), "nothing reaches a new consumer by itself");

    // One order's history.
    let stdout = replay(&cloud, &["orders", &shipped]);
    let expected = event_store(&api, &[&shipped]).await;
    assert!(stdout.starts_with(&format!("replayed {} events of 1 orders", expected.len())), "{stdout}");
    let received = audited(&cloud, &queue, expected.len()).await;
    assert_eq!(received.len(), expected.len(), "each event once: {received:?}");
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), expected);

    // Every event of a time range.
    let to = OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let range = ["range", "--from", &started.format(&Rfc3339).unwrap(), "--to", &to.format(&Rfc3339).unwrap()];
    let stdout = replay(&cloud, &range);
    let expected = event_store(&api, &[&shipped, &rejected, &cancelled]).await;
    assert!(stdout.starts_with(&format!("replayed {} events of 3 orders", expected.len())), "{stdout}");
    let received = audited(&cloud, &queue, expected.len()).await;
    assert_eq!(received.len(), expected.len(), "each event once: {received:?}");
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), expected);

    // The consumers that had them take the replay as duplicates (the bus delivered to their queues as it did to the
    // audit queue).
    support::wait_until_quiet(&cloud, support::settle_deadline()).await;
    for (order_id, before) in [&shipped, &rejected, &cancelled].into_iter().zip(&finals) {
        let after = api.order(order_id).await.unwrap();
        assert_eq!((&after["status"], &after["version"]), (&before["status"], &before["version"]), "{order_id}");
    }
    assert_eq!(api.stock("SKU-REPLAY").await, stock, "stock unchanged");
    let (dead, _) = support::outcome::drain_dead_letters(&cloud).await;
    assert!(dead.values().all(|count| *count == 0), "no dead letters: {dead:?}");

    delete_stack(&cloudformation, &stack).await.expect("the late consumer is removed");
    cloud.shutdown().await.unwrap();
}
