//! The SQS event source mapping: pollers that receive batches, invoke the function with Lambda's
//! SQS event, and delete what succeeded.
//!
//! Failed records are never touched: they become visible again when the queue's visibility
//! timeout passes, and SQS moves them to the DLQ after `maxReceiveCount` receives, exactly as
//! with Lambda.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::chaos::ChaosState;
use super::{DeliveredRecord, Delivery, DeliveryOutcome, SourceContext, SourceRef, batch_item_failures};
use crate::aws::describe_sdk_error;
use crate::iac::{Arn, SqsSource};
use crate::runtime_api::InvocationOutcome;

/// SQS returns at most this many messages per `ReceiveMessage`.
const MAX_RECEIVE: u32 = 10;

/// The queue URL of a queue ARN, with `GetQueueUrl` (queue name = last ARN segment).
pub async fn queue_url(client: &aws_sdk_sqs::Client, queue_arn: &str) -> Result<String> {
    let arn = Arn::parse(queue_arn)?;
    let output = client
        .get_queue_url()
        .queue_name(arn.resource)
        .queue_owner_aws_account_id(arn.account)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!(describe_sdk_error(&err)))
        .with_context(|| format!("GetQueueUrl for {queue_arn} (is the queue deployed?)"))?;
    output.queue_url().map(str::to_owned).with_context(|| format!("GetQueueUrl for {queue_arn} returned no URL"))
}

/// Starts `source.max_concurrency` pollers of one SQS event source, with delivery chaos when `chaos` is given.
pub fn spawn(
    ctx: &SourceContext,
    client: &aws_sdk_sqs::Client,
    source: &SqsSource,
    queue_url: &str,
    chaos: Option<Arc<ChaosState>>,
) -> Vec<JoinHandle<()>> {
    (0..source.max_concurrency)
        .map(|_| {
            let poller = Poller {
                ctx: ctx.clone(),
                client: client.clone(),
                source: source.clone(),
                queue_url: queue_url.to_owned(),
                chaos: chaos.clone(),
            };
            tokio::spawn(poller.run())
        })
        .collect()
}

struct Poller {
    ctx: SourceContext,
    client: aws_sdk_sqs::Client,
    source: SqsSource,
    queue_url: String,
    chaos: Option<Arc<ChaosState>>,
}

impl Poller {
    async fn run(self) {
        let mut shutdown = self.ctx.shutdown.clone();
        while !shutdown.is_requested() {
            match self.gather().await {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => self.deliver(batch).await,
                Err(err) => {
                    tracing::warn!(function = %self.ctx.function, queue = %self.source.queue_arn, error = %format!("{err:#}"), "SQS poll failed");
                    shutdown.sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Receives up to `BatchSize` messages: the first receive long-polls; once a message is
    /// in hand, receiving goes on until the batch is full or `MaximumBatchingWindowInSeconds`
    /// has passed since it arrived.
    async fn gather(&self) -> Result<Vec<Message>> {
        let batch_size = self.source.batch_size as usize;
        let mut batch = Vec::new();
        let mut window_end: Option<Instant> = None;
        loop {
            let wanted = (batch_size - batch.len()).min(MAX_RECEIVE as usize) as i32;
            let wait = match window_end {
                None => self.ctx.timing.sqs_wait,
                Some(end) => end.saturating_duration_since(Instant::now()),
            };
            let mut shutdown = self.ctx.shutdown.clone();
            let received = tokio::select! {
                received = self.receive(wanted, wait) => received,
                // A long poll is dropped at shutdown, so a poller stops at once rather than after its wait.
                () = shutdown.requested() => return Ok(batch),
            };
            match received {
                Ok(received) => batch.extend(received),
                // Messages in hand are delivered; the error shows again on the next poll.
                Err(err) if !batch.is_empty() => {
                    tracing::warn!(function = %self.ctx.function, error = %format!("{err:#}"), "SQS receive failed while batching");
                    return Ok(batch);
                }
                Err(err) => return Err(err),
            }
            if batch.is_empty() {
                return Ok(batch);
            }
            let end = *window_end.get_or_insert_with(|| Instant::now() + self.source.batching_window);
            if batch.len() >= batch_size || Instant::now() >= end || self.ctx.shutdown.is_requested() {
                return Ok(batch);
            }
        }
    }

    async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<Message>> {
        // WaitTimeSeconds is whole seconds; below one second, short-poll and pause briefly so
        // the batching window is honoured without spinning.
        let wait_seconds = wait.as_secs().min(20) as i32;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .with_context(|| format!("ReceiveMessage on {}", self.queue_url))?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() && wait_seconds == 0 && !wait.is_zero() {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
        }
        Ok(messages)
    }

    async fn deliver(&self, batch: Vec<Message>) {
        let batch = match &self.chaos {
            Some(chaos) => chaos.apply(&self.client, &self.queue_url, batch).await,
            None => batch,
        };
        let event = sqs_event(&batch, &self.source.queue_arn);
        let ids: Vec<&str> = batch.iter().map(|m| m.message_id().unwrap_or_default()).collect();
        let records = batch
            .iter()
            .map(|m| DeliveredRecord::from_body(m.message_id().unwrap_or_default(), m.body().unwrap_or_default()))
            .collect();
        let attempt = batch
            .iter()
            .filter_map(|m| m.attributes()?.get(&MessageSystemAttributeName::ApproximateReceiveCount)?.parse().ok())
            .max()
            .unwrap_or(1);

        let invocation = match self.ctx.pool.invoke(event).await {
            Ok(invocation) => invocation,
            Err(err) => {
                // The pool is shut down: leave the messages to their visibility timeout.
                tracing::warn!(function = %self.ctx.function, error = %format!("{err:#}"), "invoke failed");
                return;
            }
        };
        let (delete, outcome): (Vec<&Message>, DeliveryOutcome) = match &invocation.outcome {
            InvocationOutcome::Success(response) if self.source.report_batch_item_failures => {
                match batch_item_failures(response, &ids) {
                    Ok(failed) if failed.is_empty() => (batch.iter().collect(), DeliveryOutcome::Succeeded),
                    Ok(failed) => (
                        batch.iter().filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id())).collect(),
                        DeliveryOutcome::PartiallyFailed { failed_ids: failed },
                    ),
                    Err(reason) => (
                        Vec::new(),
                        DeliveryOutcome::Failed {
                            error_type: "Runner.InvalidBatchResponse".to_owned(),
                            error_message: reason,
                        },
                    ),
                }
            }
            InvocationOutcome::Success(_) => (batch.iter().collect(), DeliveryOutcome::Succeeded),
            failed @ InvocationOutcome::FunctionError { .. } => (Vec::new(), DeliveryOutcome::of(failed)),
        };
        if let Err(err) = self.delete(&delete).await {
            tracing::warn!(function = %self.ctx.function, error = %format!("{err:#}"), "deleting processed messages failed; they will be redelivered");
        }
        self.ctx.publish(Delivery {
            function: self.ctx.function.clone(),
            source: SourceRef::Queue { arn: self.source.queue_arn.clone() },
            request_id: invocation.request_id,
            records,
            attempt,
            outcome,
        });
    }

    async fn delete(&self, messages: &[&Message]) -> Result<()> {
        for chunk in messages.chunks(MAX_RECEIVE as usize) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .context("building a delete entry")
                })
                .collect::<Result<Vec<_>>>()?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("DeleteMessageBatch")?;
            if let Some(failed) = output.failed().first() {
                anyhow::bail!("DeleteMessageBatch failed for {} entries, e.g. {failed:?}", output.failed().len());
            }
        }
        Ok(())
    }
}

/// The SQS event Lambda sends for a batch of messages.
pub fn sqs_event(batch: &[Message], queue_arn: &str) -> Value {
    let region = Arn::parse(queue_arn).map(|a| a.region.to_owned()).unwrap_or_default();
    let records: Vec<Value> = batch.iter().map(|m| sqs_record(m, queue_arn, &region)).collect();
    json!({ "Records": records })
}

fn sqs_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let b64 = |blob: &aws_sdk_sqs::primitives::Blob| base64::engine::general_purpose::STANDARD.encode(blob.as_ref());
    let attributes: Map<String, Value> = message
        .attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str().to_owned(), Value::String(value.clone())))
        .collect();
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let mut attribute = Map::new();
            if let Some(s) = value.string_value() {
                attribute.insert("stringValue".into(), json!(s));
            }
            if let Some(b) = value.binary_value() {
                attribute.insert("binaryValue".into(), json!(b64(b)));
            }
            attribute.insert("stringListValues".into(), json!(value.string_list_values()));
            let binaries: Vec<String> = value.binary_list_values().iter().map(b64).collect();
            attribute.insert("binaryListValues".into(), json!(binaries));
            attribute.insert("dataType".into(), json!(value.data_type()));
            (name.clone(), Value::Object(attribute))
        })
        .collect();
    let mut record = json!({
        "messageId": message.message_id().unwrap_or_default(),
        "receiptHandle": message.receipt_handle().unwrap_or_default(),
        "body": message.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if let (Some(md5), Some(object)) = (message.md5_of_message_attributes(), record.as_object_mut()) {
        object.insert("md5OfMessageAttributes".into(), json!(md5));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::MessageAttributeValue;

    #[test]
    fn the_event_has_lambdas_shape_and_parses_as_an_sqs_event() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body(r#"{"detail-type":"OrderPlaced"}"#)
            .md5_of_body("abc")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1545082649183")
            .message_attributes(
                "reason",
                MessageAttributeValue::builder().data_type("String").string_value("bad").build().unwrap(),
            )
            .message_attributes(
                "raw",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(vec![1u8, 2]))
                    .build()
                    .unwrap(),
            )
            .build();
        let event = sqs_event(&[message], "arn:aws:sqs:us-east-1:123456789012:q");
        let record = &event["Records"][0];
        assert_eq!(record["messageId"], "m-1");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "2");
        assert_eq!(
            record["messageAttributes"]["reason"],
            json!({"stringValue": "bad", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
        );
        assert_eq!(record["messageAttributes"]["raw"]["binaryValue"], "AQI=");
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(record["eventSourceARN"], "arn:aws:sqs:us-east-1:123456789012:q");
        assert_eq!(record["awsRegion"], "us-east-1");

        let parsed: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.records[0].message_id.as_deref(), Some("m-1"));
        assert_eq!(parsed.records[0].message_attributes["reason"].string_value.as_deref(), Some("bad"));
    }
}
