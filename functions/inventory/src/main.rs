//! The inventory Lambda (SQS InventoryQueue): reserves, releases and ships stock. See [`handler`].
#![forbid(unsafe_code)]

mod handler;

use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};
use orderflow_inventory_store::DynamoInventory;

use crate::handler::Inventory;

/// Records of one batch in flight at once (a standard queue keeps no order; reservations of the same SKU that
/// race are decided again on the conditional write).
const CONCURRENCY: usize = 4;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("INVENTORY_TABLE")?;
    let outbox_table = required_env("OUTBOX_TABLE")?;

    let config = load_sdk_config().await;
    let inventory = Inventory::new(DynamoInventory::new(aws_sdk_dynamodb::Client::new(&config), table, outbox_table));
    run_sqs_consumer(&config, CONCURRENCY, |record| inventory.handle(record)).await
}
