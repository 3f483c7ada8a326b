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
/// `RETRY_BACKOFF_BASE_SECONDS` and `RETRY_BACKOFF_MAX_SECONDS`, default 2 s doubling up to 15 min). A batch that
/// cannot have a partial response fails the invocation as a `BatchError`.
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
    // Fault injection for chaos tests (ORDERFLOW_FAULT_*, off by default): see orderflow_toolkit::faults.
    let faults = &orderflow_toolkit::faults::Faults::from_env()?;
    let handler = move |record: SqsRecord| faults.guard(record, &handler);
    let (processor, handler) = (&processor, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        backoff
            .process(processor, event.payload, handler)
            .await
            .inspect(|_| faults.maybe_crash_after_write())
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}
