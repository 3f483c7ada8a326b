//! The SQS dead-letter sink: a poison record goes to the function's DLQ with its reason as message attributes.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use orderflow_toolkit::{DeadLetter, DeadLetterSink};

use crate::dynamo::describe;

/// Message attribute names a dead letter carries, besides its original attributes.
pub const REASON_ATTRIBUTE: &str = "orderflow-error-reason";
pub const CLASS_ATTRIBUTE: &str = "orderflow-error-class";
pub const SOURCE_MESSAGE_ATTRIBUTE: &str = "orderflow-source-message-id";

/// Sends dead letters to one SQS queue. [`crate::run_sqs_consumer`] makes one for `DLQ_URL`; the example of
/// [`SqsRetryBackoff::process`](crate::SqsRetryBackoff::process) builds a processor with one by hand.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type is set")
}

impl DeadLetterSink for SqsDeadLetters {
    async fn send(&self, letter: DeadLetter) -> Result<(), String> {
        // SQS allows 10 message attributes; ours come first, the original ones fill the rest.
        let ours = [
            (REASON_ATTRIBUTE, letter.reason.as_str()),
            (CLASS_ATTRIBUTE, letter.error_class.as_str()),
            (SOURCE_MESSAGE_ATTRIBUTE, letter.message_id.as_str()),
        ];
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(letter.body.clone());
        for (name, value) in ours {
            request = request.message_attributes(name, string_attribute(value));
        }
        for (name, value) in letter.attributes.iter().take(10 - ours.len()) {
            request = request.message_attributes(name, string_attribute(value));
        }
        request.send().await.map(|_| ()).map_err(|e| describe(&e))
    }
}
