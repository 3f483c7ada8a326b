//! The Lambda runtime every SQS consumer runs.

use std::future::Future;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::{HandlerError, SqsBatchProcessor, SqsRecord};

use crate::backoff::{BackoffPolicy, SqsRetryBackoff};
use crate::config::required_env;
use crate::dead_letter::SqsDeadLetters;

/// Runs an SQS-triggered function: every batch is processed with up to `concurrency` records in flight, each by
/// `handler`; poison records go to the dead-letter queue at `DLQ_URL` and the partial batch response names the
/// records to deliver again, each after a visibility timeout that grows with its receive count ([`BackoffPolicy`],
/// `RETRY_BACKOFF_BASE_SECONDS`, `RETRY_BACKOFF_MAX_SECONDS` and `RETRY_BACKOFF_JITTER`, default 2 s doubling up
/// to 5 min, up to 20% shorter), and no sooner than a wait the handler asked for
/// ([`HandlerError::transient_after`]). A batch that cannot have a partial response fails the invocation as a
/// `BatchError`.
///
/// The `main` and handler of a consumer (it runs inside Lambda, or `cargo lambda watch`, with `DLQ_URL` and its
/// tables set by the IaC). The write carries the consumer's idempotency: a redelivery writes nothing.
///
/// ```no_run
/// use aws_sdk_dynamodb::Client;
/// use orderflow_aws::dynamo::key;
/// use orderflow_aws::outbox::put_new_with_event;
/// use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};
/// use orderflow_toolkit::{Envelope, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderConfirmed { order_id: String }
/// impl Event for OrderConfirmed {
///     const TYPE: &'static str = "OrderConfirmed";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.orders";
/// }
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct ShipmentScheduled { order_id: String }
/// impl Event for ShipmentScheduled {
///     const TYPE: &'static str = "ShipmentScheduled";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.shipping";
/// }
///
/// struct Shipping { registry: Registry, db: Client, table: String, outbox_table: String }
///
/// impl Shipping {
///     async fn handle(&self, record: SqsRecord) -> Result<(), HandlerError> {
///         // Malformed, unknown type or version, invalid data: Permanent, to the DLQ with the reason.
///         let confirmed: Envelope<OrderConfirmed> = self.registry.read_bus_event(&record.body)?.decode()?;
///         let order_id = confirmed.data.order_id.clone();
///         let event = OutboxRecord::caused_by(&confirmed, ShipmentScheduled { order_id: order_id.clone() });
///         // ONE TransactWriteItems: the shipment if absent, and its event into the outbox.
///         let item = key(format!("SHIPMENT#{order_id}"), "SHIPMENT");
///         // A failure is a `StoreError`, transient (throttling, timeouts) or permanent (an invalid request).
///         let written = put_new_with_event(&self.db, &self.table, item, &self.outbox_table, &event).await?;
///         tracing::info!(order_id, ?written, "applied"); // Committed, or Duplicate on a redelivery
///         Ok(())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), lambda_runtime::Error> {
///     orderflow_toolkit::logging::init();
///     let config = load_sdk_config().await;
///     let shipping = Shipping {
///         registry: Registry::new().register::<OrderConfirmed>(),
///         db: Client::new(&config),
///         table: required_env("SHIPMENTS_TABLE")?,
///         outbox_table: required_env("OUTBOX_TABLE")?,
///     };
///     run_sqs_consumer(&config, 4, |record| shipping.handle(record)).await
/// }
/// ```
pub async fn run_sqs_consumer<F, Fut>(
    config: &SdkConfig,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsRecord) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let client = aws_sdk_sqs::Client::new(config);
    let dead_letters = SqsDeadLetters::new(client.clone(), required_env("DLQ_URL")?);
    let processor = SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let backoff = &SqsRetryBackoff::new(client).with_policy(BackoffPolicy::from_env()?);
    let (processor, handler) = (&processor, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        backoff
            .process(processor, event.payload, handler)
            .await
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}
