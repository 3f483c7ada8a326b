//! The simulated payment provider as a process: started by the local cloud's starter on a free port, called over
//! HTTP, and gone once stopped or dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use orderflow_local_cloud::provider::PaymentProvider;
use serde_json::{Value, json};

/// `target/debug/payment-provider`, built first when it is missing.
fn provider_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("debug/payment-provider");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--package", "payment-provider"])
            .current_dir(&root)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build -p payment-provider failed");
    }
    binary
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let response = http.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_provider_authorizes_declines_voids_counts_each_effect_and_is_gone_once_dropped() {
    let provider = PaymentProvider::start(&provider_binary(), Some("100.00")).await.unwrap();
    let http = reqwest::Client::new();
    let authorizations = format!("{}/v1/authorizations", provider.url());
    let charge = |payment_id: &str, amount: &str| json!({"payment_id": payment_id, "order_id": format!("o-{payment_id}"), "customer_id": "c-1", "amount": amount});

    let authorized = post(&http, authorizations.clone(), charge("p-1", "50.00")).await;
    let declined = post(&http, authorizations.clone(), charge("p-2", "100.01")).await;
    let voided = post(&http, format!("{authorizations}/p-1/void"), json!({})).await;
    let stats = provider.stats().await.unwrap();

    assert_eq!(authorized["status"], "authorized");
    assert_eq!(declined["reason"], "amount 100.01 exceeds the customer's limit 100.00");
    assert_eq!(voided, json!({"payment_id": "p-1", "status": "voided", "voided_authorization": true}));
    assert_eq!(
        stats,
        json!({"authorize_calls": 2, "authorizations": 1, "declines": 1, "voids": 1, "void_calls": 1,
               "duplicate_calls": 0})
    );

    let pid = provider.pid().expect("running");
    let stats_url = format!("{}/v1/stats", provider.url());
    drop(provider);

    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the process {pid} is gone (reaped) after the drop");
    assert!(http.get(stats_url).send().await.is_err(), "nothing listens on its port any more");
}

#[tokio::test]
async fn stop_ends_the_provider_with_sigterm_and_a_clean_exit() {
    let provider = PaymentProvider::start(&provider_binary(), None).await.unwrap();
    let pid = provider.pid().expect("running");

    provider.stop().await.unwrap();

    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn a_binary_that_exits_before_it_listens_is_reported() {
    let err = PaymentProvider::start(&provider_binary(), Some("not-a-number")).await.unwrap_err();

    assert!(err.to_string().contains("exited before it listened (exit status: 2)"), "{err:#}");
}
