//! The runtime of a function an EventBridge rule invokes asynchronously whose failures must outlast Lambda's own
//! retries: the function also consumes its on-failure destination, an SQS retry queue.
//!
//! Lambda retries a failed asynchronous invocation twice only, about one and two minutes later, then sends its
//! destination record (`{"requestContext": {"condition": "RetriesExhausted", ...}, "requestPayload": <the event>,
//! "responsePayload": <the error>, ...}`) to the on-failure destination: on its own, an outage of a few minutes sends
//! healthy events there. When that destination is a queue with the same function as its event source (batch item
//! failures reported), each record's `requestPayload` is read and handled again like the event itself; a transient
//! failure backs off by visibility ([`SqsRetryBackoff`]) until the queue's `maxReceiveCount` moves the record to the
//! queue's DLQ, and a permanent one goes to the DLQ at `DLQ_URL` at once with its reason ([`SqsDeadLetters`]). One
//! binary so serves two payloads, told apart by [`Invocation::classify`].

use std::future::Future;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::eventbridge::{ensure_registered, parse_bus_event};
use orderflow_toolkit::{DeadLetterSink, EventSet, HandlerError, Registry, SqsBatchProcessor, SqsRecord};
use serde::Serialize;
use serde_json::Value;

use crate::backoff::{BackoffPolicy, SqsRetryBackoff};
use crate::bus_function;
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

/// One invocation: an event is read as an `E` with `registry` and handled by `handler`
/// ([`bus_function::handle_invocation`]: a failure fails the invocation, so Lambda retries it, then sends it to the
/// retry queue); a retry batch has each record's `requestPayload` read and handled the same way through `processor`,
/// failed records backed off by `backoff`.
///
/// ```
/// use aws_sdk_sqs::config::{BehaviorVersion, Region};
/// use orderflow_aws::SqsRetryBackoff;
/// use orderflow_aws::retry_queue::{Response, handle_invocation};
/// use orderflow_toolkit::{Envelope, Event, HandlerError, MemoryDeadLetters, Registry, SqsBatchProcessor};
/// use serde_json::{Value, json};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderShipped { order_id: String }
/// impl Event for OrderShipped {
///     const TYPE: &'static str = "OrderShipped";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.shipping";
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let config = aws_sdk_sqs::Config::builder().behavior_version(BehaviorVersion::latest());
/// let sqs = aws_sdk_sqs::Client::from_conf(config.region(Region::new("us-east-1")).build());
/// let (letters, backoff) = (MemoryDeadLetters::default(), SqsRetryBackoff::new(sqs));
/// let processor = SqsBatchProcessor::new(letters.clone());
/// let registry = Registry::new().register::<OrderShipped>();
/// let notify = |shipped: Envelope<OrderShipped>| async move {
///     Ok::<_, HandlerError>(format!("order {} has shipped", shipped.data.order_id))
/// };
/// let shipped = json!({"id": "e-1", "detail-type": "OrderShipped", "detail": {
///     "id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": "OrderShipped", "version": 1,
///     "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-1", "causation_id": null,
///     "data": {"order_id": "o-1"}}});
///
/// // The asynchronous invocation with the event itself.
/// let response = handle_invocation(&registry, &processor, &backoff, shipped.clone(), notify).await.unwrap();
/// assert_eq!(response, Response::Event("order o-1 has shipped".to_owned()));
///
/// // The retry queue's batch: one destination record whose event now succeeds, one that never can.
/// let record = |id: &str, event: &Value| json!({"messageId": id, "eventSource": "aws:sqs",
///     "body": json!({"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event}).to_string()});
/// let batch = json!({"Records": [record("m-1", &shipped), record("m-2", &json!({"id": "e-2"}))]});
/// let Response::RetryBatch(batch_response) =
///     handle_invocation(&registry, &processor, &backoff, batch, notify).await.unwrap()
/// else { panic!("a batch gets a batch response") };
/// assert!(batch_response.batch_item_failures.is_empty());
/// let letter = &letters.letters()[0];
/// let reason = "malformed event: missing field `detail-type`";
/// assert_eq!((letter.message_id.as_str(), letter.reason.as_str()), ("m-2", reason));
/// # })
/// ```
pub async fn handle_invocation<S, E, R, F, Fut>(
    registry: &Registry,
    processor: &SqsBatchProcessor<S>,
    backoff: &SqsRetryBackoff,
    payload: Value,
    handler: F,
) -> Result<Response<R>, Diagnostic>
where
    S: DeadLetterSink,
    E: EventSet,
    F: Fn(E) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let batch = match Invocation::classify(payload) {
        Ok(Invocation::Event(event)) => {
            return bus_function::handle_invocation(registry, event, handler).await.map(Response::Event);
        }
        Ok(Invocation::RetryBatch(batch)) => batch,
        Err(error) => {
            return Err(Diagnostic {
                error_type: "BatchError".into(),
                error_message: format!("the payload has Records but is not an SQS batch: {error}"),
            });
        }
    };
    let handler = &handler;
    // The batch processor logs, dead-letters or reports each failed record.
    let retry = |record: SqsRecord| async move {
        let event = parse_bus_event(registry, request_payload(&record)?)?;
        handler(event).await.map(drop)
    };
    backoff
        .process(processor, batch, retry)
        .await
        .map(Response::RetryBatch)
        .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
}

/// Runs a function invoked both by its EventBridge rule (asynchronously) and by its retry queue, the on-failure
/// destination of those invocations: every event, first or retried, is read as an `E` with `registry` and handled
/// by `handler`, whose output is the response of a direct invocation. Poison records of the retry queue go to the
/// queue at `DLQ_URL`; failed ones back off per `RETRY_BACKOFF_*` ([`BackoffPolicy::from_env`]); up to
/// `concurrency` records of a batch run at a time. It does not start when `registry` does not read every type of
/// `E` ([`ensure_registered`]).
pub async fn run_bus_function_with_retry_queue<E, R, F, Fut>(
    config: &SdkConfig,
    registry: Registry,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    E: EventSet,
    R: Serialize,
    F: Fn(E) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    ensure_registered::<E>(&registry)?;
    let client = aws_sdk_sqs::Client::new(config);
    let dead_letters = SqsDeadLetters::new(client.clone(), required_env("DLQ_URL")?);
    let processor = &SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let backoff = &SqsRetryBackoff::new(client).with_policy(BackoffPolicy::from_env()?);
    let (registry, handler) = (&registry, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_invocation(registry, processor, backoff, event.payload, handler).await
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
