//! The notifications Lambda: an EventBridge rule invokes it asynchronously, and its retry queue (the on-failure
//! destination of those invocations) with the events whose retries Lambda gave up on; it records the customer
//! notification each order outcome would send in the Notifications table (`NOTIFICATIONS_TABLE`). Events that can
//! never be notified go from the retry queue to NotificationsDlq (`DLQ_URL`) with their reason.
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod store;

use lambda_runtime::Error;
use orderflow_aws::{load_sdk_config, required_env, run_bus_function_with_retry_queue};
use orderflow_domain::events::registry;
use orderflow_toolkit::HandlerError;
use serde_json::json;

use crate::dynamo::DynamoNotifications;
use crate::handler::{NotifiedEvent, Notifier};
use crate::store::Recorded;

/// Records of a retry batch handled at a time: each is one conditional write, independent of the others.
const CONCURRENCY: usize = 4;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("NOTIFICATIONS_TABLE")?;
    let config = load_sdk_config().await;
    let notifier = Notifier::new(DynamoNotifications::new(aws_sdk_dynamodb::Client::new(&config), table));
    let notifier = &notifier;
    run_bus_function_with_retry_queue(&config, registry(), CONCURRENCY, |event: NotifiedEvent| async move {
        let recorded = notifier.handle(event).await?;
        Ok::<_, HandlerError>(json!({ "recorded": recorded == Recorded::New }))
    })
    .await
}
