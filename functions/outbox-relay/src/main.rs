//! The outbox relay Lambda: DynamoDB stream of the Outbox table -> EventBridge bus (`EVENT_BUS_NAME`).
#![forbid(unsafe_code)]
// The invocation's future (Lambda runtime > stream processor > publish_in_order > EventBridge SDK) nests deeper than
// the 128 levels the compiler computes a type's layout through by default.
#![recursion_limit = "256"]

use lambda_runtime::Error;
use orderflow_aws::{EventBridgeBus, load_sdk_config, required_env, run_stream_consumer};
use outbox_relay::handler::Relay;

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let bus_name = required_env("EVENT_BUS_NAME")?;
    let config = load_sdk_config().await;
    let relay = Relay::new(EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), bus_name));
    run_stream_consumer(|event| relay.handle(event)).await
}
