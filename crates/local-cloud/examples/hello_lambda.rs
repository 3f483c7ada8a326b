//! A bare lambda_runtime hello world: no logging set up, no configuration read, no client built. The baseline
//! of the init-time bench of `cargo xtask bench` (built like the functions: `cargo build --release -p
//! orderflow-local-cloud --example hello_lambda`), which times process start -> first
//! `GET /2018-06-01/runtime/invocation/next` of a function against this.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(hello)).await
}

async fn hello(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(json!({ "hello": event.payload }))
}
