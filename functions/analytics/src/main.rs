//! The analytics Lambda: SQS AnalyticsQueue (OrderPlaced, legacy OrderCreated, InventoryReserved, OrderShipped,
//! OrderCancelled) -> the fraud counters, each order's sale and the sales windows' counters in the Analytics
//! table; fraud signals through the Outbox table; poison records to the DLQ.
#![forbid(unsafe_code)]

mod handler;

use lambda_runtime::Error;
use orderflow_analytics_store::DynamoAnalytics;
use orderflow_aws::config::positive_env_or;
use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};

use crate::handler::{Analytics, Config};

/// Records of one batch in flight at once: one, as the events of one order (often in one batch) touch the same
/// sale, and concurrent transactions on it would only conflict and retry.
const CONCURRENCY: usize = 1;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("ANALYTICS_TABLE")?;
    let outbox_table = required_env("OUTBOX_TABLE")?;
    let defaults = Config::default();
    let config = Config {
        window_seconds: positive_env_or("ANALYTICS_WINDOW_SECONDS", defaults.window_seconds)?,
        fraud_orders_per_window: positive_env_or("FRAUD_ORDERS_PER_WINDOW", defaults.fraud_orders_per_window)?,
    };
    let sdk_config = load_sdk_config().await;
    let store = DynamoAnalytics::new(aws_sdk_dynamodb::Client::new(&sdk_config), table, outbox_table);
    let analytics = Analytics::new(store, config);
    run_sqs_consumer(&sdk_config, CONCURRENCY, |record| analytics.handle_record(record)).await
}
