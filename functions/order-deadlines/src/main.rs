//! order-deadlines: the deadline sweeper, invoked every minute by an EventBridge schedule; it drives every overdue
//! order to CANCELLED with its compensations. Wiring only; the logic is in [`handler`].
#![forbid(unsafe_code)]
// The invocation's future (Lambda runtime > scheduled runtime > sweep > saga step > DynamoDB SDK) nests deeper than
// the 128 levels the compiler computes a type's layout through by default.
#![recursion_limit = "256"]

mod handler;

use lambda_runtime::Error;
use orderflow_aws::{ConfigError, load_sdk_config, required_env, run_scheduled_function};
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};

use crate::handler::Sweeper;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let env = || Ok::<_, ConfigError>((required_env("ORDERS_TABLE")?, deadlines_from_env()?));
    let (orders_table, deadlines) = env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;

    let config = load_sdk_config().await;
    let store = DynamoOrders::new(aws_sdk_dynamodb::Client::new(&config), orders_table, deadlines);
    let sweeper = Sweeper::new(store);
    let sweeper = &sweeper;
    run_scheduled_function(|tick| sweeper.handle(tick)).await
}
