//! EventBridge rule -> function (asynchronous invocation) against moto: the runner's internal
//! queue and rule, retries with the same request id, and Lambda's failure record in the
//! on-failure destination.

mod runner_support;

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use local_lambda::runner::{DeliveryOutcome, SourceRef};
use runner_support::Harness;
use serde_json::{Value, json};

async fn put_event(harness: &Harness, detail_type: &str, detail: Value) -> String {
    let out = aws_sdk_eventbridge::Client::new(&harness.sdk)
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .event_bus_name(harness.export("BusName"))
                .source("runner.test")
                .detail_type(detail_type)
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    out.entries()[0].event_id().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_rule_invocation_retries_then_lands_the_failure_record_in_the_destination() {
    let mut harness = Harness::start(&["probe-rule"], |config| {
        config.timing.async_retry_delay = Duration::from_millis(200);
    })
    .await;
    let ok_id = put_event(&harness, "ProbeOk", json!({"correlation_id": "o-7"})).await;
    let failing_id = put_event(&harness, "ProbeFail", json!({"correlation_id": "o-8", "probe": "fail"})).await;
    // Not matched by the rule's pattern: never delivered.
    put_event(&harness, "SomethingElse", json!({"probe": "fail"})).await;

    let deliveries = harness
        .collect(Duration::from_secs(20), |seen| {
            seen.iter().any(|d| matches!(d.outcome, DeliveryOutcome::DeadLettered { .. }))
                && seen.iter().any(|d| d.records[0].id == ok_id)
        })
        .await;
    let ok: Vec<_> = deliveries.iter().filter(|d| d.records[0].id == ok_id).collect();
    assert_eq!(ok.len(), 1, "{ok:#?}");
    assert_eq!(ok[0].outcome, DeliveryOutcome::Succeeded);
    assert_eq!(ok[0].records[0].detail_type.as_deref(), Some("ProbeOk"));
    assert_eq!(ok[0].records[0].correlation_id.as_deref(), Some("o-7"));
    assert!(matches!(&ok[0].source, SourceRef::Rule { event_ids, .. } if event_ids == &["Probed"]));

    let failing: Vec<_> = deliveries.iter().filter(|d| d.records[0].id == failing_id).collect();
    let attempts: Vec<(u32, bool)> =
        failing.iter().map(|d| (d.attempt, matches!(d.outcome, DeliveryOutcome::Failed { .. }))).collect();
    // MaximumRetryAttempts 2: three invocations, then the failure record.
    assert_eq!(attempts, [(1, true), (2, true), (3, true), (3, false)], "{failing:#?}");
    assert!(failing.iter().all(|d| d.request_id == failing[0].request_id), "retries keep the request id");
    assert_eq!(
        failing[3].outcome,
        DeliveryOutcome::DeadLettered { destination_arn: Some(harness.export("AsyncDlqArn")) }
    );

    let records = harness.drain_queue(&harness.export("AsyncDlqUrl"), 1, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["requestId"], failing[0].request_id.as_str());
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:probe-rule:$LATEST"
    );
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"]["id"], failing_id.as_str());
    assert_eq!(record["requestPayload"]["detail-type"], "ProbeFail");
    assert_eq!(record["requestPayload"]["detail"]["correlation_id"], "o-8");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responseContext"]["executedVersion"], "$LATEST");
    assert!(record["responsePayload"]["errorMessage"].as_str().unwrap().contains(&failing_id));
    assert!(record["responsePayload"]["errorType"].as_str().is_some());

    // The event no rule matches never reached the function.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(harness.deliveries.try_recv().is_err());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_rule_copies_the_pattern_and_setup_is_idempotent_and_removes_stale_rules() {
    let harness = Harness::start(&["probe-rule"], |_| {}).await;
    let events = aws_sdk_eventbridge::Client::new(&harness.sdk);
    let bus = harness.export("BusName");
    let describe = || async {
        events.describe_rule().name("local-async-probe-rule.Probed").event_bus_name(&bus).send().await.unwrap()
    };
    let rule = describe().await;
    let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
    assert_eq!(pattern, json!({"source": ["runner.test"], "detail-type": ["ProbeOk", "ProbeFail"]}));

    // A second runner on the same emulator reuses the queue and rule.
    let Harness { moto, scratch, runner, sdk, resolver, .. } = harness;
    runner.shutdown().await.unwrap();
    let binaries = scratch.path.join("bin");
    let mut config = local_lambda::runner::RunnerConfig::new(
        runner_support::crate_dir().join("tests/fixtures/runner-functions.yaml"),
        resolver,
        binaries,
        sdk.clone(),
        moto.endpoint.clone(),
        scratch.path.join("logs"),
    );
    config.functions = Some(vec!["probe-rule".into()]);
    // A rule of this function the template no longer has, and one of another function whose
    // name starts the same way.
    for stale in ["local-async-probe-rule.Removed", "local-async-probe-rule-2.Kept"] {
        events.put_rule().name(stale).event_bus_name(&bus).event_pattern(r#"{"source": ["x"]}"#).send().await.unwrap();
    }
    let again = local_lambda::runner::Runner::start(config).await.unwrap();
    let rules = events.list_rules().event_bus_name(&bus).send().await.unwrap();
    let mut ours: Vec<_> =
        rules.rules().iter().filter_map(|r| r.name()).filter(|n| n.starts_with("local-async-")).collect();
    ours.sort();
    assert_eq!(ours, ["local-async-probe-rule-2.Kept", "local-async-probe-rule.Probed"]);
    let queues = aws_sdk_sqs::Client::new(&sdk).list_queues().queue_name_prefix("local-async-").send().await.unwrap();
    assert_eq!(queues.queue_urls().len(), 1, "{:?}", queues.queue_urls());
    again.shutdown().await.unwrap();
}
