//! The order-views Lambda: DynamoDB stream of the orders event store -> the read models in the OrderViews table.
#![forbid(unsafe_code)]
// The invocation's future (Lambda runtime > stream processor > projection > DynamoDB SDK) nests deeper than the 128
// levels the compiler computes a type's layout through by default.
#![recursion_limit = "256"]

mod handler;

use lambda_runtime::Error;
use orderflow_aws::{SqsDeadLetters, load_sdk_config, required_env, run_stream_consumer};
use orderflow_order_views::DynamoViews;
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};

use crate::handler::Projection;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let (orders_table, views_table, dlq_url, deadlines) = (
        required_env("ORDERS_TABLE")?,
        required_env("ORDER_VIEWS_TABLE")?,
        required_env("DLQ_URL")?,
        deadlines_from_env()?,
    );
    let config = load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let projection = Projection::new(
        DynamoOrders::new(dynamodb.clone(), orders_table, deadlines),
        DynamoViews::new(dynamodb, views_table),
        SqsDeadLetters::new(aws_sdk_sqs::Client::new(&config), dlq_url),
    );
    run_stream_consumer(|event| projection.handle(event)).await
}
