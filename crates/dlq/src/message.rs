//! A message received from a DLQ, and why it is there: the reason a consumer recorded in its attributes, or the
//! context of a Lambda failure record in its body.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{CLASS_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE};

/// Message attributes whose name starts with this are the failure description a consumer added when it dead-lettered
/// a message; a redrive drops them.
pub const ERROR_ATTRIBUTE_PREFIX: &str = "orderflow-error-";

/// Why a message is in a DLQ, as far as the message tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The reason: the [`REASON_ATTRIBUTE`] attribute, or a Lambda failure record's `responsePayload.errorMessage`
    /// (else its `requestContext.condition`, e.g. `RetryAttemptsExhausted` for a stream batch).
    pub reason: Option<String>,
    /// The error class: the [`CLASS_ATTRIBUTE`] attribute (`Permanent`, ...) or `responsePayload.errorType`.
    pub class: Option<String>,
    /// The id the message had in its source queue: the [`SOURCE_MESSAGE_ATTRIBUTE`] attribute.
    pub source_message_id: Option<String>,
    /// Set when the body is a Lambda failure record (async invoke or stream on-failure destination).
    pub lambda: Option<LambdaFailure>,
}

/// The context of a Lambda on-failure destination record (`requestContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LambdaFailure {
    /// `requestContext.functionArn`.
    pub function_arn: Option<String>,
    /// `requestContext.condition`: `RetriesExhausted`, `EventAgeExceeded`, `RetryAttemptsExhausted`, ...
    pub condition: Option<String>,
    /// `requestContext.requestId`.
    pub request_id: Option<String>,
    /// `requestContext.approximateInvokeCount`.
    pub attempts: Option<u64>,
}

impl Failure {
    /// Reads the failure from our message attributes, or from the body when it is a Lambda failure record.
    pub fn of(attributes: &BTreeMap<String, MessageAttributeValue>, body: &str) -> Failure {
        let attribute = |name: &str| attributes.get(name).and_then(|v| v.string_value()).map(str::to_owned);
        let mut failure = Failure {
            reason: attribute(REASON_ATTRIBUTE),
            class: attribute(CLASS_ATTRIBUTE),
            source_message_id: attribute(SOURCE_MESSAGE_ATTRIBUTE),
            lambda: None,
        };
        if let Some(record) = lambda_failure_record(body) {
            let context = &record["requestContext"];
            let text = |value: &Value| value.as_str().map(str::to_owned);
            let lambda = LambdaFailure {
                function_arn: text(&context["functionArn"]),
                condition: text(&context["condition"]),
                request_id: text(&context["requestId"]),
                attempts: context["approximateInvokeCount"].as_u64(),
            };
            let payload = &record["responsePayload"];
            failure.reason =
                failure.reason.or_else(|| text(&payload["errorMessage"])).or_else(|| lambda.condition.clone());
            failure.class = failure.class.or_else(|| text(&payload["errorType"]));
            failure.lambda = Some(lambda);
        }
        failure
    }
}

/// The body parsed as a Lambda destination record: a JSON object with a `requestContext` object and a
/// `responsePayload` or `responseContext`.
fn lambda_failure_record(body: &str) -> Option<Value> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    let is_record = value.get("requestContext").is_some_and(Value::is_object)
        && (value.get("responsePayload").is_some() || value.get("responseContext").is_some());
    is_record.then_some(value)
}

/// A message received from a DLQ.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterMessage {
    /// Its SQS message id (kept when SQS moved it from its source queue).
    pub message_id: String,
    /// The body, unchanged.
    pub body: String,
    /// Its message attributes, ours ([`REASON_ATTRIBUTE`], ...) and the original ones.
    pub attributes: BTreeMap<String, MessageAttributeValue>,
    /// `ApproximateReceiveCount`, which includes the receive that read it.
    pub receive_count: Option<u64>,
    /// `SentTimestamp`: when it was sent to the DLQ (or, when SQS moved it there, to its source queue).
    pub sent_at: Option<OffsetDateTime>,
    /// `MessageGroupId` (FIFO queues).
    pub message_group_id: Option<String>,
    /// `MessageDeduplicationId` (FIFO queues).
    pub deduplication_id: Option<String>,
    /// Why it is there.
    pub failure: Failure,
    pub(crate) receipt_handle: String,
}

impl DeadLetterMessage {
    pub(crate) fn from_sqs(message: &Message) -> Option<DeadLetterMessage> {
        let message_id = message.message_id()?.to_owned();
        let receipt_handle = message.receipt_handle()?.to_owned();
        let body = message.body().unwrap_or_default().to_owned();
        let attributes: BTreeMap<String, MessageAttributeValue> = message
            .message_attributes()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let system = |name: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&name)).cloned();
        let sent_at = system(MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<i128>().ok())
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok());
        let failure = Failure::of(&attributes, &body);
        Some(DeadLetterMessage {
            message_id,
            receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount).and_then(|c| c.parse().ok()),
            sent_at,
            message_group_id: system(MessageSystemAttributeName::MessageGroupId),
            deduplication_id: system(MessageSystemAttributeName::MessageDeduplicationId),
            failure,
            attributes,
            body,
            receipt_handle,
        })
    }

    /// The message attributes a redrive sends along: every one except ours that starts with
    /// [`ERROR_ATTRIBUTE_PREFIX`].
    pub fn redrive_attributes(&self) -> impl Iterator<Item = (&String, &MessageAttributeValue)> {
        self.attributes.iter().filter(|(name, _)| !name.starts_with(ERROR_ATTRIBUTE_PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(value: &str) -> MessageAttributeValue {
        MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type set")
    }

    #[test]
    fn failure_from_our_attributes() {
        let attributes = BTreeMap::from([
            (REASON_ATTRIBUTE.to_owned(), string("unknown event type \"Teleported\"")),
            (CLASS_ATTRIBUTE.to_owned(), string("Permanent")),
            (SOURCE_MESSAGE_ATTRIBUTE.to_owned(), string("m-1")),
        ]);
        let failure = Failure::of(&attributes, "{\"detail\": {}}");
        assert_eq!(failure.reason.as_deref(), Some("unknown event type \"Teleported\""));
        assert_eq!(failure.class.as_deref(), Some("Permanent"));
        assert_eq!(failure.source_message_id.as_deref(), Some("m-1"));
        assert_eq!(failure.lambda, None);
    }

    #[test]
    fn failure_from_an_async_invoke_record() {
        let body = serde_json::json!({
            "version": "1.0",
            "requestContext": {
                "requestId": "r-1",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:notifications:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": {"detail-type": "OrderShipped"},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": "HandlerError", "errorMessage": "table not found"}
        })
        .to_string();
        let failure = Failure::of(&BTreeMap::new(), &body);
        assert_eq!(failure.reason.as_deref(), Some("table not found"));
        assert_eq!(failure.class.as_deref(), Some("HandlerError"));
        let lambda = failure.lambda.expect("a Lambda record");
        assert_eq!(lambda.condition.as_deref(), Some("RetriesExhausted"));
        assert_eq!(lambda.attempts, Some(3));
        assert_eq!(lambda.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn failure_of_a_stream_batch_record_is_its_condition() {
        let body = r#"{"requestContext": {"condition": "RetryAttemptsExhausted"}, "responseContext": {}}"#;
        assert_eq!(Failure::of(&BTreeMap::new(), body).reason.as_deref(), Some("RetryAttemptsExhausted"));
        assert_eq!(Failure::of(&BTreeMap::new(), r#"{"requestContext": "x"}"#), Failure::default());
        assert_eq!(Failure::of(&BTreeMap::new(), "not json"), Failure::default());
    }
}
