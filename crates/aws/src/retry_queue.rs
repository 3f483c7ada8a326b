//! The runtime of a function an EventBridge rule invokes asynchronously whose failures must outlast Lambda's own
//! retries: the function also consumes its on-failure destination, an SQS retry queue.
//!
//! Lambda retries a failed asynchronous invocation twice only, about one and two minutes later, then sends its
//! destination record (`{"requestContext": {"condition": "RetriesExhausted", ...}, "requestPayload": <the event>,
//! "responsePayload": <the error>, ...}`) to the on-failure destination: on its own, an outage of a few minutes sends
//! healthy events there. When that destination is a queue with the same function as its event source (batch item
//! failures reported), each record's `requestPayload` is handled again by the same handler; a transient failure backs
//! off by visibility ([`SqsRetryBackoff`]) until the queue's `maxReceiveCount` moves the record to the queue's DLQ,
//! and a permanent one goes to the DLQ at `DLQ_URL` at once with its reason ([`SqsDeadLetters`]). One binary so
//! serves two payloads, told apart by [`Invocation::classify`].

use std::future::Future;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::{DeadLetterSink, HandlerError, SqsBatchProcessor, SqsRecord};
use serde::Serialize;
use serde_json::Value;

use crate::backoff::{BackoffPolicy, SqsRetryBackoff};
use crate::bus_function::diagnostic;
use crate::config::required_env;
use crate::dead_letter::SqsDeadLetters;

/// What one invocation carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// The EventBridge event of the asynchronous invocation.
    Event(Value),
    /// A batch of Lambda destination records from the retry queue.
    RetryBatch(SqsEvent),
}

impl Invocation {
    /// A payload with `Records` is an SQS batch (an EventBridge event has no such field), `Err` when it is not a
    /// valid one; anything else is an event, left to the handler's typed parse step to accept or refuse.
    pub fn classify(payload: Value) -> Result<Self, serde_json::Error> {
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload).map(Self::RetryBatch);
        }
        Ok(Self::Event(payload))
    }
}

/// The original event of the Lambda destination record in `record`'s body: its `requestPayload`. A body that is not
/// such a record is a permanent failure (to the DLQ with the reason).
pub fn request_payload(record: &SqsRecord) -> Result<Value, HandlerError> {
    let mut destination_record: Value = record.json()?;
    match destination_record.get_mut("requestPayload").map(Value::take) {
        None | Some(Value::Null) => Err(HandlerError::permanent(format!(
            "message {} is not a Lambda destination record: it has no requestPayload",
            record.message_id
        ))),
        Some(event) => Ok(event),
    }
}

/// The response of an invocation: the handler's output for an event, the partial batch response for a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response<R> {
    Event(R),
    RetryBatch(SqsBatchResponse),
}

/// One invocation: an event is handled by `handler` (a failure fails the invocation, so Lambda retries it, then
/// sends it to the retry queue); a retry batch has each record's `requestPayload` handled by `handler` through
/// `processor`, failed records backed off by `backoff`.
///
/// ```
/// use aws_sdk_sqs::config::{BehaviorVersion, Region};
/// use orderflow_aws::SqsRetryBackoff;
/// use orderflow_aws::retry_queue::{Response, handle_invocation};
/// use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
/// use serde_json::{Value, json};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let config = aws_sdk_sqs::Config::builder().behavior_version(BehaviorVersion::latest());
/// let sqs = aws_sdk_sqs::Client::from_conf(config.region(Region::new("us-east-1")).build());
/// let (letters, backoff) = (MemoryDeadLetters::default(), SqsRetryBackoff::new(sqs));
/// let processor = SqsBatchProcessor::new(letters.clone());
/// let notify = |event: Value| async move {
///     match event["detail-type"].as_str() {
///         Some("OrderShipped") => Ok("notified"),
///         _ => Err(HandlerError::permanent("not an order event")),
///     }
/// };
/// let shipped = json!({"id": "e-1", "detail-type": "OrderShipped", "detail": {}});
///
/// // The asynchronous invocation with the event itself.
/// let response = handle_invocation(&processor, &backoff, shipped.clone(), notify).await.unwrap();
/// assert_eq!(response, Response::Event("notified"));
///
/// // The retry queue's batch: one destination record whose event now succeeds, one that never can.
/// let record = |id: &str, event: &Value| json!({"messageId": id, "eventSource": "aws:sqs",
///     "body": json!({"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event}).to_string()});
/// let batch = json!({"Records": [record("m-1", &shipped), record("m-2", &json!({"id": "e-2"}))]});
/// let Response::RetryBatch(batch_response) = handle_invocation(&processor, &backoff, batch, notify).await.unwrap()
/// else { panic!("a batch gets a batch response") };
/// assert!(batch_response.batch_item_failures.is_empty());
/// let letter = &letters.letters()[0];
/// assert_eq!((letter.message_id.as_str(), letter.reason.as_str()), ("m-2", "not an order event"));
/// # })
/// ```
pub async fn handle_invocation<S, R, F, Fut>(
    processor: &SqsBatchProcessor<S>,
    backoff: &SqsRetryBackoff,
    payload: Value,
    handler: F,
) -> Result<Response<R>, Diagnostic>
where
    S: DeadLetterSink,
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let batch = match Invocation::classify(payload) {
        Ok(Invocation::Event(event)) => return handler(event).await.map(Response::Event).map_err(|e| diagnostic(&e)),
        Ok(Invocation::RetryBatch(batch)) => batch,
        Err(error) => {
            return Err(Diagnostic {
                error_type: "BatchError".into(),
                error_message: format!("the payload has Records but is not an SQS batch: {error}"),
            });
        }
    };
    let handler = &handler;
    let retry = |record: SqsRecord| async move { handler(request_payload(&record)?).await.map(drop) };
    backoff
        .process(processor, batch, retry)
        .await
        .map(Response::RetryBatch)
        .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
}

/// Runs a function invoked both by its EventBridge rule (asynchronously) and by its retry queue, the on-failure
/// destination of those invocations: every event, first or retried, goes to `handler`, whose output is the response
/// of a direct invocation. Poison records of the retry queue go to the queue at `DLQ_URL`; failed ones back off per
/// `RETRY_BACKOFF_*` ([`BackoffPolicy::from_env`]); up to `concurrency` records of a batch run at a time.
pub async fn run_bus_function_with_retry_queue<R, F, Fut>(
    config: &SdkConfig,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    R: Serialize,
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let client = aws_sdk_sqs::Client::new(config);
    let dead_letters = SqsDeadLetters::new(client.clone(), required_env("DLQ_URL")?);
    let processor = &SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let backoff = &SqsRetryBackoff::new(client).with_policy(BackoffPolicy::from_env()?);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_invocation(processor, backoff, event.payload, handler).await
    }))
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(body: &str) -> SqsRecord {
        SqsRecord { message_id: "m-1".into(), body: body.into(), receive_count: 1, attributes: Default::default() }
    }

    #[test]
    fn a_payload_with_records_is_a_retry_batch_and_anything_else_an_event() {
        let batch = json!({"Records": [{"messageId": "m-1", "eventSource": "aws:sqs", "body": "{}"}]});
        let Ok(Invocation::RetryBatch(event)) = Invocation::classify(batch) else { panic!("a batch") };
        assert_eq!(event.records[0].message_id.as_deref(), Some("m-1"));
        for event in [json!({"id": "e-1", "detail-type": "OrderShipped"}), json!("not an event"), json!({})] {
            assert_eq!(Invocation::classify(event.clone()).unwrap(), Invocation::Event(event));
        }
        assert!(Invocation::classify(json!({"Records": "nope"})).is_err());
    }

    #[test]
    fn the_request_payload_is_the_original_event_and_anything_else_is_permanent() {
        let event = json!({"id": "e-1", "detail-type": "OrderShipped"});
        let destination = json!({"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event});
        assert_eq!(request_payload(&record(&destination.to_string())), Ok(event));
        for body in ["not json", "{}", r#"{"requestPayload": null}"#] {
            let error = request_payload(&record(body)).unwrap_err();
            assert_eq!(error.class(), "Permanent", "{body}: {error}");
            assert!(error.reason().contains("m-1"), "names the message: {error}");
        }
    }
}
