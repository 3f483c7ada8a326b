//! The inventory Lambda (SQS InventoryQueue): reserves, releases and ships stock. See [`handler`].
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod store;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_aws::{SqsDeadLetters, load_sdk_config, required_env};
use orderflow_toolkit::SqsBatchProcessor;

use crate::dynamo::DynamoInventory;
use crate::handler::Inventory;

/// Records of one batch in flight at once (a standard queue keeps no order; reservations of the same SKU that
/// race are decided again on the conditional write).
const CONCURRENCY: usize = 4;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("INVENTORY_TABLE")?;
    let outbox_table = required_env("OUTBOX_TABLE")?;
    let dlq_url = required_env("DLQ_URL")?;

    let config = load_sdk_config().await;
    let inventory = Inventory::new(DynamoInventory::new(aws_sdk_dynamodb::Client::new(&config), table, outbox_table));
    let processor = SqsBatchProcessor::new(SqsDeadLetters::new(aws_sdk_sqs::Client::new(&config), dlq_url))
        .with_concurrency(CONCURRENCY);

    let (inventory, processor) = (&inventory, &processor);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        inventory
            .process(processor, event.payload)
            .await
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}
