//! The HTTP API contract: JSON in and out, 4xx with a JSON error naming the field, and who may call what: every
//! route needs a token of the issuer (401), operator routes its admin scope (403), and an order is its owner's
//! (others get 404). All through the local API Gateway's JWT authorizer and the real orders-api binary.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use local_lambda::sources::SourceRef;
use orderflow_local_cloud::issuer::{CUSTOMER_CLIENT, ISSUER, LocalIssuer, Subject};
use serde_json::{Value, json};
use support::Api;

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_4xx_with_a_json_error_naming_the_field() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    let customer = api.as_customer("c-1");

    let (status, body) = customer.send("POST", "/orders", Some(json!({"lines": []})), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "validation_failed");
    assert!(body["message"].as_str().unwrap().contains("lines"), "{body}");

    let line = json!({"sku": "SKU-1", "quantity": 1});
    let long_sku = "S".repeat(129);
    for (order, field) in [
        (json!({"lines": [{"sku": "SKU-1", "quantity": 0}]}), "lines[0].quantity"),
        (json!({"lines": [{"sku": "SKU-1", "quantity": 10_001}]}), "lines[0].quantity"),
        (json!({"lines": vec![line.clone(); 51]}), "lines"),
        (json!({"lines": [{"sku": long_sku, "quantity": 1}]}), "lines[0].sku"),
        (json!({"lines": [{"sku": "SKU 1", "quantity": 1}]}), "lines[0].sku"),
        (json!({"customer_id": "c-2", "lines": [line]}), "customer_id"),
    ] {
        let (status, body) = customer.send("POST", "/orders", Some(order.clone()), &[]).await;
        assert_eq!(status, 400, "{order}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(field), "{field}: {body}");
    }
    let (status, body) = customer.send("POST", "/orders", Some(json!("not an object")), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");

    let padded = json!({"lines": [{"sku": "SKU-1", "quantity": 1}], "pad": "x".repeat(32 * 1024)});
    let (status, body) = customer.send("POST", "/orders", Some(padded), &[]).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("body"), "{body}");
    let key = "k".repeat(256);
    let (status, body) =
        customer.send("POST", "/orders", Some(json!({"lines": [line]})), &[("Idempotency-Key", &key)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("Idempotency-Key"), "{body}");

    for price in ["-1", "0.00", "1000000.01", "1.005"] {
        let (status, body) =
            api.send("PUT", "/inventory/SKU-1", Some(json!({"available": 1, "price": price})), &[]).await;
        assert_eq!(status, 400, "{price}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with("price"), "{price}: {body}");
    }
    let long_sku_path = format!("/inventory/{}", "S".repeat(129));
    for (path, field) in [(long_sku_path.as_str(), "sku"), ("/inventory/SKU%201", "sku"), ("/inventory/%FF%FE", "path")]
    {
        let (status, body) = api.send("GET", path, None, &[]).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(field), "{path}: {body}");
    }

    let (status, body) = api.send("GET", "/orders/no%20such%20order", None, &[]).await;
    assert_eq!(status, 404, "a malformed order id names no order: {body}");
    assert!(body["error"].is_string(), "{body}");

    let (status, _) = api.send("GET", "/no/such/route", None, &[]).await;
    assert_eq!(status, 404);

    api.restock("SKU-1", 3, "2.50").await;
    let (status, body) = api.send("GET", "/inventory/SKU-1", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["sku"], "SKU-1");
    assert_eq!(body["available"], 3);
    assert_eq!(body["price"], "2.50");
    cloud.shutdown().await.unwrap();
}

/// A customer token's claims, for tokens made wrong on purpose.
fn customer_claims(sub: &str, expires_in: i64) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    json!({"sub": sub, "iss": ISSUER, "client_id": CUSTOMER_CLIENT, "token_use": "access",
           "scope": "aws.cognito.signin.user.admin", "iat": now, "exp": now + expires_in})
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_a_forged_signature_an_expired_token_and_a_wrong_audience_are_401_and_invoke_nothing() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    let issuer = api.issuer().clone();
    let valid = issuer.token(&Subject::Customer("c-1".into()), std::time::Duration::from_secs(600)).unwrap();

    // The same claims signed by another key (the kid of ours), and ours with another subject swapped in.
    let stranger_root = std::env::temp_dir().join(format!("stranger-{}", uuid::Uuid::new_v4().simple()));
    let stranger = LocalIssuer::load_or_create(&stranger_root).unwrap();
    let theirs = stranger.sign(&customer_claims("c-1", 600)).unwrap();
    let (our_header, their_rest) = (valid.split('.').next().unwrap(), theirs.split_once('.').unwrap().1);
    let forged = format!("{our_header}.{their_rest}");
    let mut wrong_audience = customer_claims("c-1", 600);
    wrong_audience["client_id"] = json!("some-other-app");

    let cases = [
        ("no token", None),
        ("a forged signature", Some(forged)),
        ("an expired token", Some(issuer.sign(&customer_claims("c-1", -1)).unwrap())),
        ("a wrong audience", Some(issuer.sign(&wrong_audience).unwrap())),
        ("not a JWT", Some("not-a-token".to_owned())),
    ];
    let mut deliveries = cloud.runner().subscribe();
    for (case, token) in cases {
        let caller = api.with_token(token);
        for (method, path) in [("POST", "/orders"), ("GET", "/orders"), ("GET", "/inventory/SKU-1")] {
            let body = (method == "POST").then(|| json!({"lines": [{"sku": "SKU-1", "quantity": 1}]}));
            let (status, answer) = caller.send(method, path, body, &[]).await;
            assert_eq!((status, answer), (401, json!({"message": "Unauthorized"})), "{case}: {method} {path}");
        }
    }
    while let Ok(delivery) = deliveries.try_recv() {
        let http = matches!(delivery.source, SourceRef::Http { .. });
        assert!(!http, "the authorizer refuses before any invocation: {} was invoked", delivery.function);
    }

    let (status, _) = api.as_customer("c-1").send("GET", "/orders", None, &[]).await;
    assert_eq!(status, 200, "a valid token passes");
    std::fs::remove_dir_all(stranger_root).unwrap();
    cloud.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_is_forbidden_operator_routes_and_sees_only_their_own_orders() {
    let cloud = support::start_cloud().await;
    let operator = Api::new(&cloud);
    operator.restock("SKU-1", 10, "1.00").await;
    let (owner, other) = (operator.as_customer("c-1"), operator.as_customer("c-2"));

    let restock = json!({"available": 1000, "price": "0.01"});
    let (status, body) = owner.send("PUT", "/inventory/SKU-1", Some(restock), &[]).await;
    assert_eq!((status, body), (403, json!({"message": "Forbidden"})), "a customer cannot price a SKU");
    assert_eq!(operator.stock("SKU-1").await.0, 10, "nothing written");
    let (status, _) = owner.send("GET", "/analytics/sales?sku=SKU-1", None, &[]).await;
    assert_eq!(status, 403, "a customer cannot read the sales");

    let order_id = operator.place("c-1", "SKU-1", 1).await;
    let order = operator.final_order(&order_id).await;
    assert_eq!(order["customer_id"], "c-1", "the customer is the token's subject");
    for (method, path) in [
        ("GET", format!("/orders/{order_id}")),
        ("GET", format!("/orders/{order_id}/events")),
        ("POST", format!("/orders/{order_id}/cancel")),
    ] {
        let (status, body) = other.send(method, &path, None, &[]).await;
        assert_eq!(status, 404, "another customer's {method} {path}: {body}");
        let (status, body) = owner.send(method, &path, None, &[]).await;
        let expected = if method == "POST" { 409 } else { 200 };
        assert_eq!(status, expected, "the owner's {method} {path}: {body}");
    }
    let (_, listed) = other.send("GET", "/orders", None, &[]).await;
    assert_eq!(listed["orders"], json!([]), "another customer lists none of c-1's orders");
    cloud.shutdown().await.unwrap();
}
