//! The notifications Lambda: an EventBridge rule invokes it asynchronously; it records the customer notification
//! each order outcome would send in the Notifications table (`NOTIFICATIONS_TABLE`).
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod store;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use orderflow_aws::{load_sdk_config, required_env};
use serde_json::{Value, json};

use crate::dynamo::DynamoNotifications;
use crate::handler::Notifier;
use crate::store::Recorded;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("NOTIFICATIONS_TABLE")?;
    let config = load_sdk_config().await;
    let notifier = Notifier::new(DynamoNotifications::new(aws_sdk_dynamodb::Client::new(&config), table));
    let notifier = &notifier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let recorded = notifier.handle(event.payload).await?;
        Ok::<_, handler::NotificationError>(json!({ "recorded": recorded == Recorded::New }))
    }))
    .await
}
