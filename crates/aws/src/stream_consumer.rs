//! The Lambda runtime of a function a DynamoDB stream triggers.

use std::future::Future;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::stream::StreamBatchError;

/// Runs a function a DynamoDB stream triggers: each batch goes to `handler`, which processes it with a
/// [`DynamoDbStreamProcessor`](orderflow_toolkit::DynamoDbStreamProcessor) (record by record, or as a whole) and
/// answers with the records Lambda must deliver again. A batch that cannot have a partial response fails the
/// invocation with `errorType` `StreamBatchError` and the reason as `errorMessage`, and Lambda retries it whole.
///
/// ```no_run
/// use orderflow_aws::run_stream_consumer;
/// use orderflow_toolkit::stream::new_image;
/// use orderflow_toolkit::{DynamoDbStreamProcessor, MemoryDeadLetters};
///
/// #[derive(serde::Deserialize)]
/// struct Stock { sku: String, available: u32 }
///
/// #[tokio::main]
/// async fn main() -> Result<(), lambda_runtime::Error> {
///     orderflow_toolkit::logging::init();
///     let processor = DynamoDbStreamProcessor::new(MemoryDeadLetters::default());
///     let processor = &processor;
///     run_stream_consumer(|event| async move {
///         processor
///             .process(event, |record| async move {
///                 let stock: Stock = new_image(&record)?;
///                 tracing::info!(stock.sku, stock.available, "stock level changed");
///                 Ok(())
///             })
///             .await
///     })
///     .await
/// }
/// ```
pub async fn run_stream_consumer<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Event) -> Fut,
    Fut: Future<Output = Result<DynamoDbEventResponse, StreamBatchError>>,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        handler(event.payload).await.map_err(|error| diagnostic(&error))
    }))
    .await
}

/// The Lambda error of a batch that failed whole.
fn diagnostic(error: &StreamBatchError) -> Diagnostic {
    Diagnostic { error_type: "StreamBatchError".into(), error_message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_without_sequence_numbers_fails_as_a_stream_batch_error_that_names_the_record() {
        let diagnostic = diagnostic(&StreamBatchError::MissingSequenceNumber(3));
        assert_eq!(diagnostic.error_type, "StreamBatchError");
        assert_eq!(
            diagnostic.error_message,
            "stream record 3 has no SequenceNumber, so its failure could not be reported; failing the whole batch"
        );
    }
}
