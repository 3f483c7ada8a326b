//! order-saga: the choreographed order saga, an SQS consumer (OrderSagaQueue) that advances the order state
//! machine and issues compensations. Wiring only; the logic is in [`handler`].
#![forbid(unsafe_code)]

mod handler;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use orderflow_aws::{ConfigError, SqsDeadLetters, required_env};
use orderflow_orders_store::DynamoOrders;
use orderflow_toolkit::SqsBatchProcessor;

use crate::handler::{CONCURRENCY, Saga, handle_batch};

#[tokio::main]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let env = || {
        Ok::<_, ConfigError>((required_env("ORDERS_TABLE")?, required_env("OUTBOX_TABLE")?, required_env("DLQ_URL")?))
    };
    let (orders_table, outbox_table, dlq_url) = env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;

    let config = orderflow_aws::load_sdk_config().await;
    let store = DynamoOrders::new(aws_sdk_dynamodb::Client::new(&config), orders_table, outbox_table);
    let dead_letters = SqsDeadLetters::new(aws_sdk_sqs::Client::new(&config), dlq_url);
    let saga = Saga::new(store);
    let processor = SqsBatchProcessor::new(dead_letters).with_concurrency(CONCURRENCY);

    let (saga, processor) = (&saga, &processor);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        handle_batch(saga, processor, event.payload).await.map_err(Error::from)
    }))
    .await
}
