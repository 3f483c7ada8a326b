//! A Lambda function (lambda_runtime) used only by the runner's tests: it does what its payload
//! tells it, so the tests can make a function succeed, fail, hang, crash or fail single records.
//!
//! - Direct invocation: `{"probe": {"action": "echo" | "fail" | "sleep" | "exit" | "panic", ...}}`
//!   (`message` for `fail`, `ms` for `sleep`, `code` for `exit`). `echo` returns the payload, the
//!   process id and the Lambda environment.
//! - SQS event: a record whose JSON body has `"probe": "fail"` is reported as a batch item
//!   failure, `"probe": "fail-once"` only the first time (remembered in `PROBE_STATE_DIR`),
//!   `"probe": "error"` fails the invocation, `"probe": "error-times-N"` fails it the first N
//!   times the record is seen (counted in `PROBE_STATE_DIR`), `"probe": "bad-id"` reports an
//!   identifier that is not in the batch.
//! - DynamoDB stream event: the same with the `probe` string attribute of the new image
//!   (identifiers are sequence numbers).
//! - EventBridge event: `detail.probe == "fail"` fails the invocation.
//! - HTTP API (payload 2.0) event: echoes the route, parameters and body; a path containing
//!   `/fail` fails the invocation; `?status=NNN` sets the status code.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    if let Ok(code) = std::env::var("PROBE_EXIT_AT_INIT") {
        eprintln!("probe: exiting at init as asked");
        std::process::exit(code.parse().unwrap_or(3));
    }
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    println!("probe: request {}", event.context.request_id);
    if let Some(command) = payload.get("probe") {
        return direct(command, &payload).await;
    }
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        return batch(records);
    }
    if payload.get("detail-type").is_some() {
        if payload["detail"]["probe"] == "fail" {
            return Err(format!("probe failure for event {}", payload["id"]).into());
        }
        return Ok(json!({ "handled": payload["id"] }));
    }
    if payload.get("version") == Some(&json!("2.0")) && payload.get("routeKey").is_some() {
        return http(&payload);
    }
    Err("probe: unknown payload".into())
}

async fn direct(command: &Value, payload: &Value) -> Result<Value, Error> {
    match command["action"].as_str().unwrap_or("echo") {
        "fail" => Err(command["message"].as_str().unwrap_or("probe failure").to_owned().into()),
        "sleep" => {
            let ms = command["ms"].as_u64().unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(echo(payload))
        }
        "exit" => {
            eprintln!("probe: exiting as asked");
            std::process::exit(command["code"].as_i64().unwrap_or(1) as i32)
        }
        "panic" => panic!("probe panics as asked"),
        _ => Ok(echo(payload)),
    }
}

fn echo(payload: &Value) -> Value {
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("PROBE_") || k == "TZ" || k == "_HANDLER")
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({ "echo": payload, "pid": std::process::id(), "env": env })
}

fn batch(records: &[Value]) -> Result<Value, Error> {
    let mut failures = Vec::new();
    for record in records {
        let (command, id) = match record["eventSource"].as_str() {
            Some("aws:sqs") => {
                let body: Value =
                    record["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
                (body["probe"].as_str().map(str::to_owned), record["messageId"].clone())
            }
            Some("aws:dynamodb") => (
                record["dynamodb"]["NewImage"]["probe"]["S"].as_str().map(str::to_owned),
                record["dynamodb"]["SequenceNumber"].clone(),
            ),
            other => return Err(format!("probe: unknown event source {other:?}").into()),
        };
        match command.as_deref() {
            Some("fail") => failures.push(json!({ "itemIdentifier": id })),
            Some("fail-once") if first_time(&id) => failures.push(json!({ "itemIdentifier": id })),
            Some("error") => return Err(format!("probe error for record {id}").into()),
            Some(command) if command.starts_with("error-times-") => {
                let times: u32 = command["error-times-".len()..].parse()?;
                let seen = times_seen(&id)?;
                if seen <= times {
                    return Err(format!("probe error {seen} of {times} for record {id}").into());
                }
            }
            Some("bad-id") => failures.push(json!({ "itemIdentifier": "not-in-this-batch" })),
            _ => {}
        }
    }
    Ok(json!({ "batchItemFailures": failures }))
}

/// Whether this is the first time the record is seen, remembered as a file under
/// `PROBE_STATE_DIR` (so it survives instance restarts).
fn first_time(id: &Value) -> bool {
    let Ok(dir) = std::env::var("PROBE_STATE_DIR") else {
        return true;
    };
    let name: String = id.to_string().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let marker = std::path::Path::new(&dir).join(name);
    std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok()
}

/// How many times the record has been seen, this time included, counted in a file under
/// `PROBE_STATE_DIR` (so it survives instance restarts).
fn times_seen(id: &Value) -> Result<u32, Error> {
    let dir = std::env::var("PROBE_STATE_DIR").map_err(|_| "probe: error-times-N needs PROBE_STATE_DIR")?;
    let name: String = id.to_string().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let counter = std::path::Path::new(&dir).join(format!("{name}.count"));
    let seen = std::fs::read_to_string(&counter).ok().and_then(|n| n.trim().parse::<u32>().ok()).unwrap_or(0) + 1;
    std::fs::write(&counter, seen.to_string())?;
    Ok(seen)
}

fn http(request: &Value) -> Result<Value, Error> {
    let path = request["rawPath"].as_str().unwrap_or_default();
    if path.contains("/fail") {
        return Err("probe: HTTP failure as asked".into());
    }
    let status = request["queryStringParameters"]["status"].as_str().and_then(|s| s.parse::<u16>().ok()).unwrap_or(200);
    let body = json!({
        "routeKey": request["routeKey"],
        "method": request["requestContext"]["http"]["method"],
        "pathParameters": request["pathParameters"],
        "queryStringParameters": request["queryStringParameters"],
        "body": request["body"],
    });
    Ok(json!({
        "statusCode": status,
        "headers": { "content-type": "application/json", "x-probe": "1" },
        "body": body.to_string(),
        "isBase64Encoded": false,
    }))
}
