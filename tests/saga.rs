//! The full saga, for every outcome, through the HTTP API, the bus and the real function binaries.

mod support;

use std::time::Duration;

use orderflow_local_cloud::scenario::{self, ScenarioTarget};

#[tokio::test(flavor = "multi_thread")]
async fn every_order_reaches_its_expected_final_state_ships_rejected_cancelled_idempotent_legacy_and_malformed() {
    let cloud = support::start_cloud().await;
    let target = ScenarioTarget {
        http_base: cloud.http_base().unwrap(),
        issuer: cloud.issuer().clone(),
        eventbridge: aws_sdk_eventbridge::Client::new(cloud.sdk_config()),
        bus_name: cloud.output("EventBusName").unwrap().to_owned(),
        sqs: aws_sdk_sqs::Client::new(cloud.sdk_config()),
        dead_letter_queues: cloud.dead_letter_queues(),
        timeout: support::settle_timeout() - Duration::from_secs(10),
    };
    let report = scenario::run(&target, |step| eprintln!("== {step}")).await.expect("scenario runs");
    cloud.shutdown().await.expect("clean shutdown");
    println!("{}", report.render());
    assert!(report.passed(), "outcomes differ from the expected ones:\n{}", report.render());
}
