//! The shipping Lambda (SQS ShippingQueue): schedules a shipment for a confirmed order. See [`handler`].
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod store;

use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};

use crate::dynamo::DynamoShipments;
use crate::handler::Shipping;

/// Records of one batch in flight at once.
const CONCURRENCY: usize = 4;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("SHIPMENTS_TABLE")?;
    let outbox_table = required_env("OUTBOX_TABLE")?;

    let config = load_sdk_config().await;
    let shipping = Shipping::new(DynamoShipments::new(aws_sdk_dynamodb::Client::new(&config), table, outbox_table));
    run_sqs_consumer(&config, CONCURRENCY, |record| shipping.handle(record)).await
}
