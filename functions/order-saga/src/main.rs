//! order-saga: the choreographed order saga, an SQS consumer (OrderSagaQueue) that advances the order state
//! machine and issues compensations. Wiring only; the logic is in [`handler`].
#![forbid(unsafe_code)]

mod handler;

use lambda_runtime::Error;
use orderflow_aws::{ConfigError, required_env, run_sqs_consumer};
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};

use crate::handler::{CONCURRENCY, Saga};

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let env = || Ok::<_, ConfigError>((required_env("ORDERS_TABLE")?, deadlines_from_env()?));
    let (orders_table, deadlines) = env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;

    let config = orderflow_aws::load_sdk_config().await;
    let store = DynamoOrders::new(aws_sdk_dynamodb::Client::new(&config), orders_table, deadlines);
    let saga = Saga::new(store);
    run_sqs_consumer(&config, CONCURRENCY, |record| saga.handle_record(record)).await
}
