//! The Lambda runtime every SQS consumer runs.

use std::future::Future;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::{HandlerError, SqsBatchProcessor, SqsRecord};

use crate::config::required_env;
use crate::dead_letter::SqsDeadLetters;

/// Runs an SQS-triggered function: every batch is processed with up to `concurrency` records in flight, each by
/// `handler`; poison records go to the dead-letter queue at `DLQ_URL` and the partial batch response names the
/// records to deliver again. A batch that cannot have a partial response fails the invocation as a `BatchError`.
pub async fn run_sqs_consumer<F, Fut>(
    config: &SdkConfig,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsRecord) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let dead_letters = SqsDeadLetters::new(aws_sdk_sqs::Client::new(config), required_env("DLQ_URL")?);
    let processor = SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let (processor, handler) = (&processor, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        processor
            .process(event.payload, handler)
            .await
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}
