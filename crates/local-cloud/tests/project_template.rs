//! The project's own SAM template (`infra/functions.yaml`) resolves against the exports of
//! `infra/stateful.yaml` deployed to moto: every function, event source and variable the runner
//! needs can be read from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use local_lambda::aws::sdk_config;
use local_lambda::iac::{Resolver, load_functions};
use orderflow_local_cloud::cloud::LOCAL_VISIBILITY_TIMEOUT_SECONDS;
use orderflow_local_cloud::emulator::Emulator;
use orderflow_local_cloud::tools::Tools;

/// The crate directory.
fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_template_resolves_against_the_deployed_stateful_stack() {
    let infra = crate_dir().join("../../infra");
    let tools = Tools::ensure(&crate_dir().join("../..")).expect("project tools (.local/venv)");
    let moto = Emulator::start_moto(&tools, 0).await.expect("moto starts");
    let sdk = sdk_config(moto.endpoint());
    let cloudformation = aws_sdk_cloudformation::Client::new(&sdk);
    local_lambda::deploy::deploy_stack(
        &cloudformation,
        "orderflow-runner-check",
        &infra.join("stateful.yaml"),
        &[("Stage", "dev")],
    )
    .await
    .expect("deploying infra/stateful.yaml");
    let resolver = Resolver::new().with_parameter("Stage", "dev").load_exports(&cloudformation).await.unwrap();

    let functions = load_functions(&infra.join("functions.yaml"), &resolver).expect("infra/functions.yaml resolves");
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    for expected in
        ["orders-api", "outbox-relay", "order-views", "inventory", "payment", "order-saga", "shipping", "notifications"]
    {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // Every function binary is a crate under functions/.
    for name in &names {
        assert!(crate_dir().join("../../functions").join(name).is_dir(), "functions/{name}");
    }
    let exported: Vec<&String> = resolver.exports().values().collect();
    for function in &functions {
        for source in &function.sqs {
            assert!(exported.contains(&&source.queue_arn), "{}: {}", function.name, source.queue_arn);
        }
        // A message must stay invisible while an instance can still be working on it, or it is received again
        // (and its receive count burnt) while in flight.
        let local_visibility = Duration::from_secs(LOCAL_VISIBILITY_TIMEOUT_SECONDS.into());
        assert!(
            function.sqs.is_empty() || function.timeout < local_visibility,
            "{} times out after {:?}, not before the local stages' visibility timeout {local_visibility:?}",
            function.name,
            function.timeout
        );
        for source in &function.streams {
            assert!(exported.contains(&&source.stream_arn), "{}: {}", function.name, source.stream_arn);
        }
    }
    let api = functions.iter().find(|f| f.name == "orders-api").unwrap();
    let routes: Vec<String> = api.http_routes.iter().map(|r| r.route_key()).collect();
    for route in
        ["POST /orders", "GET /orders", "GET /orders/{id}", "GET /orders/{id}/events", "POST /orders/{id}/cancel"]
    {
        assert!(routes.contains(&route.to_owned()), "{route} missing from {routes:?}");
    }
    let relay = functions.iter().find(|f| f.name == "outbox-relay").unwrap();
    assert_eq!(relay.streams.len(), 2, "the Outbox table's stream and the orders event store's");
    for stream in &relay.streams {
        assert_eq!((stream.max_retry_attempts, stream.max_record_age), (None, None), "the relay never gives up");
        assert!(stream.bisect_on_error);
    }
    let views = functions.iter().find(|f| f.name == "order-views").unwrap();
    assert_eq!(views.streams.len(), 1, "the orders event store's stream");
    assert_eq!(views.streams[0].stream_arn, resolver.exports()["orderflow-dev-OrdersTableStreamArn"]);
    assert_eq!((views.streams[0].max_retry_attempts, views.streams[0].max_record_age), (None, None));

    // Notifications: the async invocations' failures go to the retry queue, which the function consumes too.
    let export = |name: &str| resolver.exports()[&format!("orderflow-dev-{name}")].clone();
    let notifications = functions.iter().find(|f| f.name == "notifications").unwrap();
    assert!(!notifications.rules.is_empty());
    let retry_queue = export("NotificationsRetryQueueArn");
    let destination = notifications.async_config.as_ref().and_then(|c| c.on_failure_destination_arn.clone());
    assert_eq!(destination.as_ref(), Some(&retry_queue));
    assert!(
        notifications.sqs.iter().any(|s| s.queue_arn == retry_queue && s.report_batch_item_failures),
        "{:?}",
        notifications.sqs
    );
    assert_eq!(notifications.environment["DLQ_URL"], export("NotificationsDlqUrl"));
}
