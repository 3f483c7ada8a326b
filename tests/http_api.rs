//! The HTTP API contract: JSON in and out, 4xx with a JSON error naming the field, through the real orders-api
//! binary behind the local API Gateway.

mod support;

use serde_json::json;
use support::Api;

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_4xx_with_a_json_error_naming_the_field() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);

    let (status, body) = api.send("POST", "/orders", Some(json!({"customer_id": "c-1", "lines": []})), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "validation_failed");
    assert!(body["message"].as_str().unwrap().contains("lines"), "{body}");

    let zero = json!({"customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 0}]});
    let (status, body) = api.send("POST", "/orders", Some(zero), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("lines[0].quantity"), "{body}");

    let (status, body) = api.send("POST", "/orders", Some(json!("not an object")), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");

    let (status, body) = api.send("PUT", "/inventory/SKU-1", Some(json!({"available": 1, "price": "-1"})), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("price"), "{body}");

    let (status, body) = api.send("GET", "/orders/no-such-order", None, &[]).await;
    assert_eq!(status, 404, "{body}");
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
