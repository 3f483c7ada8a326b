//! The HTTP API gateway (payload format 2.0) in front of the probe function.

mod runner_support;

use std::time::Duration;

use local_lambda::runner::{DeliveryOutcome, SourceRef};
use runner_support::Harness;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gateway_routes_with_path_parameters_and_answers_like_api_gateway() {
    let mut harness = Harness::start(&["probe-http"], |config| {
        config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let base = format!("http://{}", harness.runner.http_addr().expect("an HTTP API"));
    let http = reqwest::Client::new();

    let placed = http.post(format!("{base}/orders")).json(&json!({"customer_id": "c-1"})).send().await.unwrap();
    assert_eq!(placed.status(), 200);
    assert_eq!(placed.headers()["x-probe"], "1");
    let body: Value = placed.json().await.unwrap();
    assert_eq!(body["routeKey"], "POST /orders");
    assert_eq!(body["method"], "POST");
    assert_eq!(serde_json::from_str::<Value>(body["body"].as_str().unwrap()).unwrap(), json!({"customer_id": "c-1"}));

    let got = http.get(format!("{base}/orders/o-17?status=201")).send().await.unwrap();
    assert_eq!(got.status(), 201);
    let body: Value = got.json().await.unwrap();
    assert_eq!(body["routeKey"], "GET /orders/{id}");
    assert_eq!(body["pathParameters"], json!({"id": "o-17"}));
    assert_eq!(body["queryStringParameters"], json!({"status": "201"}));

    for (method, path) in [("GET", "/nowhere"), ("DELETE", "/orders/o-17"), ("GET", "/orders/o-17/extra")] {
        let response = http.request(method.parse().unwrap(), format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Not Found"}));
    }

    // A Host that is no URL's host never reaches a function (API Gateway serves only its own domain).
    let odd_host =
        http.get(format!("{base}/orders/o-17")).header("host", "api.example.3.0.113.7").send().await.unwrap();
    assert_eq!(odd_host.status(), 400);
    assert_eq!(odd_host.json::<Value>().await.unwrap(), json!({"message": "Bad Request"}));

    let failed = http.post(format!("{base}/orders/o-17/fail")).send().await.unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(failed.json::<Value>().await.unwrap(), json!({"message": "Internal Server Error"}));

    let deliveries = harness.collect(Duration::from_secs(5), |seen| seen.len() >= 3).await;
    let routes: Vec<_> = deliveries
        .iter()
        .map(|d| match &d.source {
            SourceRef::Http { route_key } => (route_key.as_str(), d.outcome == DeliveryOutcome::Succeeded),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(routes, [("POST /orders", true), ("GET /orders/{id}", true), ("POST /orders/{id}/fail", false)]);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_function_binary_names_the_path_and_the_build_command() {
    let moto = runner_support::Moto::start().await;
    let sdk = moto.sdk_config();
    let resolver = runner_support::deploy_fixture(&sdk, "test").await;
    let scratch = runner_support::Scratch::new("missing");
    let mut config = local_lambda::runner::RunnerConfig::new(
        runner_support::crate_dir().join("tests/fixtures/runner-functions.yaml"),
        resolver,
        scratch.path.join("bin"),
        sdk,
        moto.endpoint.clone(),
        scratch.path.join("logs"),
    );
    config.functions = Some(vec!["probe-http".into()]);
    let err = match local_lambda::runner::Runner::start(config).await {
        Ok(_) => panic!("the runner started without its binary"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains(&scratch.path.join("bin/probe-http").display().to_string()), "{err}");
    assert!(err.contains("cargo build -p probe-http"), "{err}");
}
