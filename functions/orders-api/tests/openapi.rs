//! The OpenAPI document (`functions/orders-api/openapi.json`) against the code, so the two cannot drift:
//!
//! - its operations are exactly the `HttpApi` routes of `OrdersApiFunction` in `infra/functions.yaml`;
//! - its error codes are exactly [`ApiError`]'s, and each code is documented under its own status;
//! - every sample request of `events/orders-api/` (and each of them by a customer, by an operator and with no
//!   verified token), answered by the real [`Api::handle`] over the memory stores, empty and seeded, has a status
//!   the operation documents and a body its schema accepts;
//! - the sample bodies and queries are what the document's request schemas accept (and the invalid sample is not).
//!
//! The schemas are validated by the `jsonschema` crate with the document's `components` bundled in, so every
//! `$ref` resolves locally.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::http::{Method, StatusCode};
use orderflow_analytics_store::{MemoryAnalytics, PublishedWindow, WindowStore};
use orderflow_domain::analytics::SalesTotals;
use orderflow_domain::events::{DEFAULT_CURRENCY, OrderLine, OrderPlaced, SalesWindowClosed};
use orderflow_domain::order::{Deadlines, ValidationError};
use orderflow_inventory_store::MemoryInventory;
use orderflow_order_views::InMemoryViews;
use orderflow_orders_store::{InMemoryOrders, OrderStore};
use orderflow_test_support::Samples;
use orderflow_toolkit::{Envelope, OutboxRecord};
use orders_api::handler::{ADMIN_SCOPE, Api, ApiError};
use serde_json::{Map, Value, json};
use time::macros::datetime;

const SAMPLES: Samples = Samples::of("orders-api");
/// The order the samples name.
const SAMPLE_ORDER: &str = "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c13";
/// The function whose HttpApi events are the API's routes.
const FUNCTION: &str = "OrdersApiFunction";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The document's operations as `METHOD /path` route keys.
fn documented_routes(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

/// The route keys of the function's `HttpApi` events in the IaC.
fn iac_routes() -> BTreeSet<String> {
    let path = root().join("infra/functions.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("infra/functions.yaml is YAML");
    let events = template["Resources"][FUNCTION]["Properties"]["Events"].as_mapping().expect("the function's Events");
    let mut routes = BTreeSet::new();
    for (_, event) in events {
        if event["Type"].as_str() != Some("HttpApi") {
            continue;
        }
        let properties = &event["Properties"];
        let method = properties["Method"].as_str().expect("an HttpApi event's Method").to_uppercase();
        let path = properties["Path"].as_str().expect("an HttpApi event's Path");
        routes.insert(format!("{method} {path}"));
    }
    routes
}

/// Follows a `$ref` to `#/components/...` (one level is all the document uses).
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => {
            let pointer = pointer.strip_prefix('#').expect("local $refs only");
            doc.pointer(pointer).unwrap_or_else(|| panic!("$ref {pointer} does not resolve"))
        }
        None => value,
    }
}

/// A validator of `schema`, with the document's components beside it so that its `$ref`s resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut bundled = match schema {
        Value::Object(map) => map.clone(),
        other => panic!("a schema that is not an object: {other}"),
    };
    bundled.insert("components".into(), doc["components"].clone());
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(bundled))
        .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}"))
}

/// The `application/json` schema of a response (or a `$ref` to one).
fn response_schema<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    let response = deref(doc, response);
    response["content"]["application/json"]["schema"]
        .as_object()
        .map(|_| &response["content"]["application/json"]["schema"])
        .unwrap_or_else(|| panic!("a response without an application/json schema: {response}"))
}

/// The operation of a route key, e.g. `GET /orders/{id}`.
fn operation<'a>(doc: &'a Value, route_key: &str) -> Option<&'a Value> {
    let (method, path) = route_key.split_once(' ')?;
    doc["paths"].get(path)?.get(method.to_lowercase())
}

/// Checks a response against the operation `route_key` documents (an unknown route: the shared 404).
fn check_response(doc: &Value, route_key: &str, status: StatusCode, body: &Value, what: &str) -> Result<(), String> {
    let response = match operation(doc, route_key) {
        Some(op) => op["responses"]
            .get(status.as_str())
            .ok_or_else(|| format!("{what}: {route_key} answered {status}, which the document does not list"))?,
        // A request for no route: refused before routing (401) or not found (404), as every operation documents.
        None if status == StatusCode::UNAUTHORIZED => &doc["components"]["responses"]["Unauthorized"],
        None if status == StatusCode::NOT_FOUND => &doc["components"]["responses"]["NotFound"],
        None => return Err(format!("{what}: the undocumented route {route_key} answered {status}, not 401 or 404")),
    };
    let schema = response_schema(doc, response);
    let errors: Vec<String> =
        validator(doc, schema).iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {route_key} {status} body {body} does not match its schema: {}", errors.join("; ")))
    }
}

/// Every [`ApiError`] variant, once. The match has no wildcard: a new variant does not compile until it is here.
fn every_api_error() -> Vec<ApiError> {
    let invalid = ValidationError::new("field", "is wrong");
    let all = vec![
        ApiError::InvalidJson("x".into()),
        ApiError::Validation(invalid),
        ApiError::Unauthorized("x".into()),
        ApiError::Forbidden("x".into()),
        ApiError::NotFound("x".into()),
        ApiError::MethodNotAllowed { method: Method::DELETE, path: "/orders".into(), allowed: "GET, POST" },
        ApiError::NotCancellable { order_id: SAMPLE_ORDER.into(), status: "SHIPPED" },
        ApiError::IdempotencyKeyReused { key: "k".into() },
        ApiError::PayloadTooLarge { bytes: 1 << 20 },
        ApiError::InvalidRequest("x".into()),
        ApiError::Unavailable("x".into()),
        ApiError::Internal("x".into()),
    ];
    for err in &all {
        match err {
            ApiError::InvalidJson(_)
            | ApiError::Validation(_)
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden(_)
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::NotCancellable { .. }
            | ApiError::IdempotencyKeyReused { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::InvalidRequest(_)
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => {}
        }
    }
    all
}

/// The `error` codes a response's schema allows (its API-error branch), if it has one.
fn error_codes(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = deref(doc, schema);
    let mut codes = BTreeSet::new();
    if let Some(values) = schema["properties"]["error"]["enum"].as_array() {
        codes.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    for branch in ["oneOf", "anyOf", "allOf"] {
        for sub in schema[branch].as_array().into_iter().flatten() {
            codes.extend(error_codes(doc, sub));
        }
    }
    codes
}

#[test]
fn the_document_is_openapi_3_1_with_a_global_bearer_jwt_scheme_and_admin_scopes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "OpenAPI 3.1");
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]), "every route needs a token");
    for route in ["PUT /inventory/{sku}", "GET /analytics/sales"] {
        let op = operation(&doc, route).unwrap();
        assert_eq!(op["security"], json!([{"bearerAuth": [ADMIN_SCOPE]}]), "{route} needs {ADMIN_SCOPE}");
    }
}

#[test]
fn the_documented_operations_are_the_routes_of_the_iac() {
    let (documented, iac) = (documented_routes(&document()), iac_routes());
    assert!(!iac.is_empty(), "no HttpApi events of {FUNCTION} found");
    assert_eq!(documented, iac, "openapi.json's paths and methods vs infra/functions.yaml's {FUNCTION} HttpApi events");
}

#[test]
fn every_api_error_code_is_in_the_document_and_under_its_own_status() {
    let doc = document();
    let errors = every_api_error();
    let enum_codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .expect("components.schemas.Error.properties.error.enum")
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    let code_codes: BTreeSet<String> = errors.iter().map(|err| err.code().to_owned()).collect();
    assert_eq!(enum_codes, code_codes, "the document's error codes vs ApiError::code");

    let status_of: BTreeMap<String, StatusCode> = errors.iter().map(|e| (e.code().to_owned(), e.status())).collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            for (status, response) in op["responses"].as_object().unwrap() {
                for code in error_codes(&doc, response_schema(&doc, response)) {
                    let expected =
                        status_of.get(&code).unwrap_or_else(|| panic!("{method} {path}: unknown code {code}"));
                    assert_eq!(status, expected.as_str(), "{method} {path}: {code} is documented under {status}");
                    documented.insert(code);
                }
            }
        }
    }
    // 405 never reaches the API through API Gateway (a method a path lacks is the gateway's 404), so no
    // operation lists it; every other code is some operation's response.
    let undocumented: Vec<_> = code_codes.difference(&documented).collect();
    assert_eq!(undocumented, vec!["method_not_allowed"], "codes no operation documents");
}

type MemoryApi = Api<InMemoryOrders, InMemoryViews, MemoryInventory, MemoryAnalytics>;

/// The API over memory stores; `seeded` holds what the samples name (SKU-1, c-1's order, a closed window).
async fn api(seeded: bool) -> MemoryApi {
    let orders = InMemoryOrders::new(Deadlines::from_seconds(60).unwrap());
    let (views, stock, sales) = (InMemoryViews::default(), MemoryInventory::default(), MemoryAnalytics::default());
    if seeded {
        stock.put_stock("SKU-1", 10, "12.50");
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
        let data = OrderPlaced {
            order_id: SAMPLE_ORDER.into(),
            customer_id: "c-1".into(),
            lines,
            currency: DEFAULT_CURRENCY.into(),
        };
        let mut placed = Envelope::new(SAMPLE_ORDER, data);
        placed.occurred_at = datetime!(2026-11-24 10:00 UTC);
        orders.place(&placed, None).await.unwrap();
        orderflow_order_views::project(&orders, &views, SAMPLE_ORDER).await.unwrap();
        let start = datetime!(2026-11-24 10:00 UTC);
        let window = PublishedWindow {
            sku: "SKU-1".into(),
            window_start: start,
            window_end: start + time::Duration::minutes(1),
            totals: SalesTotals { units: 2, revenue: "25.00".parse().unwrap() },
            revision: 0,
        };
        let closed = SalesWindowClosed {
            sku: "SKU-1".into(),
            window_start: start,
            window_end: window.window_end,
            units: 2,
            revenue: window.totals.revenue,
        };
        let record = OutboxRecord::new(&Envelope::new("test", closed));
        assert!(sales.publish(&window, None, &record).await.unwrap());
    }
    Api::new(orders, views, stock, sales, DEFAULT_CURRENCY)
}

fn sample_files() -> Vec<String> {
    let dir = root().join("events/orders-api");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the samples of events/orders-api: {files:?}");
    files
}

/// The sample as another caller: a customer, an operator, or nobody (no verified token reached the function).
fn acting_as(mut event: Value, caller: &str) -> Value {
    let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
    match caller {
        "customer" => {
            claims["sub"] = json!("c-2");
            claims["scope"] = json!("aws.cognito.signin.user.admin");
        }
        "operator" => {
            claims["sub"] = json!("6q9r2s3t4u5v6w7x8y9z0a1b2c");
            claims["scope"] = json!(ADMIN_SCOPE);
        }
        "nobody" => {
            event["requestContext"].as_object_mut().unwrap().remove("authorizer");
        }
        _ => {}
    }
    event
}

#[tokio::test]
async fn every_sample_request_is_answered_as_the_document_says() {
    let doc = document();
    let mut failures = Vec::new();
    let mut seen = BTreeMap::<String, BTreeSet<u16>>::new();
    for file in sample_files() {
        for seeded in [false, true] {
            for caller in ["sample", "customer", "operator", "nobody"] {
                let api = api(seeded).await;
                let event = acting_as(SAMPLES.event(&file), caller);
                let route_key = event["routeKey"].as_str().expect("a routeKey").to_owned();
                let request = lambda_http::request::from_str(&event.to_string()).expect("an HTTP API v2 event");
                let response = api.handle(request).await;
                let what = format!("{file} as {caller}{}", if seeded { ", seeded" } else { "" });
                let status = response.status();
                seen.entry(route_key.clone()).or_default().insert(status.as_u16());
                if response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
                    failures.push(format!("{what}: not application/json: {:?}", response.headers()));
                    continue;
                }
                let body: Value = match serde_json::from_slice(response.body()) {
                    Ok(body) => body,
                    Err(e) => {
                        failures.push(format!("{what}: the body is not JSON: {e}"));
                        continue;
                    }
                };
                if let Err(failure) = check_response(&doc, &route_key, status, &body, &what) {
                    failures.push(failure);
                }
            }
        }
    }
    assert!(failures.is_empty(), "responses the document does not describe:\n{}", failures.join("\n"));
    // The samples reach the success answers, not only errors: the check above saw real bodies.
    for (route, ok) in [
        ("POST /orders", 202),
        ("GET /orders", 200),
        ("GET /orders/{id}", 200),
        ("GET /orders/{id}/events", 200),
        ("POST /orders/{id}/cancel", 202),
        ("PUT /inventory/{sku}", 200),
        ("GET /inventory/{sku}", 200),
        ("GET /analytics/sales", 200),
    ] {
        assert!(seen[route].contains(&ok), "{route} never answered {ok}: {:?}", seen[route]);
    }
    println!("statuses seen per route: {seen:?}");
}

#[test]
fn the_sample_bodies_and_queries_are_what_the_document_accepts() {
    let doc = document();
    for file in sample_files() {
        let event: Value = SAMPLES.event(&file);
        let route_key = event["routeKey"].as_str().unwrap();
        let Some(op) = operation(&doc, route_key) else {
            assert_eq!(route_key, "$default", "{file}: an undocumented route");
            continue;
        };
        if let Some(body) = event["body"].as_str() {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{file}: {route_key} has a body but no documented request body");
            let body: Value = serde_json::from_str(body).unwrap();
            let valid = validator(&doc, schema).is_valid(&body);
            // The invalid sample breaks a rule the document states (quantity 1..=10000).
            assert_eq!(valid, !file.contains("invalid"), "{file}: {body} against {route_key}'s request schema");
        }
        let path_item = &doc["paths"][route_key.split_once(' ').unwrap().1];
        let parameters: Vec<&Value> = path_item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .map(|p| deref(&doc, p))
            .collect();
        let query = event["queryStringParameters"].as_object().cloned().unwrap_or_default();
        let path_params = event["pathParameters"].as_object().cloned().unwrap_or_default();
        let headers = event["headers"].as_object().cloned().unwrap_or_default();
        for name in query.keys() {
            assert!(
                parameters.iter().any(|p| p["in"] == "query" && p["name"] == name.as_str()),
                "{file}: the query parameter {name} is not documented"
            );
        }
        for parameter in parameters {
            let name = parameter["name"].as_str().unwrap();
            let source: &Map<String, Value> = match parameter["in"].as_str().unwrap() {
                "query" => &query,
                "path" => &path_params,
                "header" => &headers,
                other => panic!("{file}: a parameter in {other}"),
            };
            let value = source.get(name).or_else(|| source.get(&name.to_lowercase()));
            match value {
                None => assert_ne!(parameter["required"], true, "{file}: the required {name} is missing"),
                Some(Value::String(text)) => {
                    let schema = &parameter["schema"];
                    let typed =
                        if schema["type"] == "integer" { json!(text.parse::<i64>().unwrap()) } else { json!(text) };
                    assert!(validator(&doc, schema).is_valid(&typed), "{file}: {name}={text} against {schema}");
                }
                Some(other) => panic!("{file}: {name} is {other}"),
            }
        }
    }
}

/// The checks above are not vacuous: a body the API could send by mistake fails them.
#[test]
fn a_wrong_response_fails_the_check() {
    let doc = document();
    let ok = |status: u16, body: Value| {
        check_response(&doc, "GET /orders/{id}", StatusCode::from_u16(status).unwrap(), &body, "self-test")
    };
    assert!(ok(404, json!({"error": "not_found", "message": "order not found"})).is_ok());
    assert!(ok(404, json!({"message": "Not Found"})).is_ok(), "API Gateway's own 404");
    assert!(ok(404, json!({"error": "forbidden", "message": "x"})).is_err(), "a code under another status");
    assert!(ok(404, json!({"error": "not_found"})).is_err(), "no message");
    assert!(ok(409, json!({"error": "not_cancellable", "message": "x"})).is_err(), "an undocumented status");
    assert!(ok(200, json!({"order_id": SAMPLE_ORDER})).is_err(), "a view without its fields");
    let list = |body: Value| check_response(&doc, "GET /orders", StatusCode::OK, &body, "self-test");
    assert!(list(json!({"orders": [], "next_cursor": null})).is_ok());
    assert!(list(json!({"orders": [], "next_cursor": null, "extra": 1})).is_err(), "an undocumented field");
}
