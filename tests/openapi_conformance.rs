//! The HTTP API against its OpenAPI document, through the real local gateway and function binaries: schemathesis
//! (pinned, in its own venv: `Tools::ensure_schemathesis`) reads the document the gateway serves at
//! `/_local/openapi.json` and sends generated requests, valid and invalid, with an operator's token. It passes when
//! no response is a 5xx and every response's status, content type and body are what the document says.
//!
//! Bounded and derandomized: `--generation-deterministic` (a fixed seed for every operation, no example database;
//! schemathesis 4.32.5 then ignores `--seed`), one worker and at most [`MAX_EXAMPLES`] cases per operation and
//! phase. The examples, coverage and fuzzing phases send the same requests on every run; the stateful phase follows
//! the document's links from placed orders, so its sequences depend on where the saga is when it reads an order
//! (how many it runs varies), while every answer it can get is documented. About 45 s here.

mod support;

use std::process::Command;
use std::time::Instant;

use orderflow_local_cloud::issuer::{DEFAULT_VALIDITY, Subject};
use orderflow_local_cloud::tools::Tools;
use serde_json::json;

/// Test cases per operation and phase (examples, coverage, fuzzing, stateful).
const MAX_EXAMPLES: &str = "100";
/// What each response is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[tokio::test(flavor = "multi_thread")]
async fn the_api_conforms_to_its_openapi_document() {
    let root = support::project_root();
    let schemathesis = tokio::task::spawn_blocking({
        let root = root.clone();
        move || Tools::ensure_schemathesis(&root)
    })
    .await
    .unwrap()
    .expect("schemathesis installs");
    let cloud = support::start_cloud().await;
    let api = support::Api::new(&cloud);
    let base = cloud.http_base().unwrap();

    // Something to find: a SKU in stock and an order of the operator's own (so GET /orders lists it), and a
    // customer's one (so the operator reads another's order).
    api.restock("SKU-1", 1000, "12.50").await;
    let (status, placed) =
        api.send("POST", "/orders", Some(json!({"lines": [{"sku": "SKU-1", "quantity": 2}]})), &[]).await;
    assert_eq!(status, 202, "POST /orders: {placed}");
    api.place("c-openapi", "SKU-1", 1).await;
    let (status, document) = api.send("GET", "/_local/openapi.json", None, &[]).await;
    let file = std::fs::read_to_string(root.join("functions/orders-api/openapi.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!((status, &document), (200, &file), "the gateway serves functions/orders-api/openapi.json");

    let token = api.issuer().token(&Subject::Operator, DEFAULT_VALIDITY).unwrap();
    let work_dir = root.join(".local/schemathesis");
    std::fs::create_dir_all(&work_dir).unwrap();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(&work_dir)
        .arg("run")
        .arg(format!("{base}/_local/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .arg("--generation-deterministic")
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--output-sanitize", "true"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .env("PYTHONUNBUFFERED", "1");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("schemathesis runs");
    let elapsed = started.elapsed();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("schemathesis took {elapsed:.1?}");
    cloud.shutdown().await.unwrap();
    assert!(output.status.success(), "schemathesis found responses the document does not allow ({})", output.status);
}
