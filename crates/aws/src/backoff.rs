//! Exponential backoff of SQS retries by message visibility.
//!
//! Lambda leaves a record reported in `batchItemFailures` in its queue, and the queue delivers it again once the
//! queue's visibility timeout has passed: every retry would come after the same short wait, hammering a dependency
//! that is down. [`SqsRetryBackoff`] raises the visibility timeout of each failed record to
//! `base * 2^(receiveCount - 1)`, capped ([`BackoffPolicy`]), with `ChangeMessageVisibilityBatch` on the record's
//! source queue (its URL found once per queue ARN with `GetQueueUrl`, then cached). A failure to change the
//! visibility is logged and never fails the batch: the record then simply comes back after the queue's timeout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use orderflow_toolkit::batch::BatchError;
use orderflow_toolkit::{DeadLetterSink, HandlerError, SqsBatchProcessor, SqsRecord};

use crate::config::{ConfigError, env_or};
use crate::dynamo::describe;

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(43_200);

/// The visibility timeout of the n-th failed delivery of a message: `base * 2^(n - 1)`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    /// 2 s, 4 s, 8 s, ... up to 15 minutes.
    fn default() -> Self {
        Self { base: Duration::from_secs(2), cap: Duration::from_secs(900) }
    }
}

impl BackoffPolicy {
    /// The policy from `RETRY_BACKOFF_BASE_SECONDS` and `RETRY_BACKOFF_MAX_SECONDS`, each defaulting to
    /// [`BackoffPolicy::default`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            base: Duration::from_secs(env_or("RETRY_BACKOFF_BASE_SECONDS", default.base.as_secs())?),
            cap: Duration::from_secs(env_or("RETRY_BACKOFF_MAX_SECONDS", default.cap.as_secs())?),
        })
    }

    /// The visibility timeout after the delivery numbered `receive_count` (1 for the first) failed, in whole
    /// seconds (rounded up, as SQS counts them), never above the cap nor SQS's 12 hours.
    ///
    /// ```
    /// use std::time::Duration;
    /// use orderflow_aws::backoff::BackoffPolicy;
    ///
    /// let policy = BackoffPolicy::default();
    /// let timeouts: Vec<_> = (1..=5).map(|n| policy.visibility_timeout(n).as_secs()).collect();
    /// assert_eq!(timeouts, [2, 4, 8, 16, 32]);
    /// assert_eq!(policy.visibility_timeout(100), Duration::from_secs(900));
    /// ```
    pub fn visibility_timeout(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.max(1) - 1;
        let timeout = 2u32
            .checked_pow(exponent)
            .and_then(|factor| self.base.checked_mul(factor))
            .unwrap_or(Duration::MAX)
            .min(self.cap)
            .min(MAX_VISIBILITY_TIMEOUT);
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        Duration::from_secs(seconds)
    }
}

/// What the backoff needs of one delivery: its receipt handle, source queue and receive count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`.
    pub event_source_arn: String,
    pub receive_count: u32,
}

/// The deliveries of one batch, taken out of the event before it is processed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deliveries(Vec<Delivery>);

impl Deliveries {
    /// Moves each record's receipt handle and source ARN out of `event` (the batch processor needs neither);
    /// records without a message id, receipt handle or source ARN cannot be backed off and are left out.
    pub fn take(event: &mut SqsEvent) -> Self {
        Self(
            event
                .records
                .iter_mut()
                .filter_map(|message| {
                    Some(Delivery {
                        message_id: message.message_id.clone()?,
                        receipt_handle: message.receipt_handle.take()?,
                        event_source_arn: message.event_source_arn.take()?,
                        receive_count: message
                            .attributes
                            .get("ApproximateReceiveCount")
                            .and_then(|count| count.parse().ok())
                            .unwrap_or(1),
                    })
                })
                .collect(),
        )
    }

    /// The deliveries the response reports as failed.
    pub fn failed(self, response: &SqsBatchResponse) -> Vec<Delivery> {
        if response.batch_item_failures.is_empty() {
            return Vec::new();
        }
        let failed: HashSet<&str> =
            response.batch_item_failures.iter().map(|failure| failure.item_identifier.as_str()).collect();
        self.0.into_iter().filter(|delivery| failed.contains(delivery.message_id.as_str())).collect()
    }
}

/// The queue name and owner account of an SQS queue ARN (`arn:PARTITION:sqs:REGION:ACCOUNT:NAME`).
pub fn parse_queue_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("sqs"), Some(_region), Some(account), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!account.is_empty() && !name.is_empty()).then_some((name, account))
}

/// Backs off failed SQS records by raising their visibility timeout.
#[derive(Debug)]
pub struct SqsRetryBackoff {
    client: Client,
    policy: BackoffPolicy,
    queue_urls: Mutex<HashMap<String, String>>,
}

impl SqsRetryBackoff {
    pub fn new(client: Client) -> Self {
        Self { client, policy: BackoffPolicy::default(), queue_urls: Mutex::new(HashMap::new()) }
    }

    pub fn with_policy(mut self, policy: BackoffPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Processes one SQS batch with `processor` and backs off the records its response reports as failed: what
    /// [`crate::run_sqs_consumer`] does with every batch.
    ///
    /// A consumer of a FIFO queue builds its runtime with it (`run_sqs_consumer` serves standard queues):
    ///
    /// ```no_run
    /// use aws_lambda_events::event::sqs::SqsEvent;
    /// use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
    /// use orderflow_aws::{SqsDeadLetters, SqsRetryBackoff, load_sdk_config, required_env};
    /// use orderflow_toolkit::{HandlerError, SqsBatchProcessor, SqsRecord};
    ///
    /// async fn handle(record: SqsRecord) -> Result<(), HandlerError> {
    ///     let _order: serde_json::Value = record.json()?;
    ///     Ok(())
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), lambda_runtime::Error> {
    ///     let sqs = aws_sdk_sqs::Client::new(&load_sdk_config().await);
    ///     let dead_letters = SqsDeadLetters::new(sqs.clone(), required_env("DLQ_URL")?);
    ///     // Each message group in order, up to 8 groups at a time.
    ///     let processor = &SqsBatchProcessor::new(dead_letters).with_concurrency(8).fifo();
    ///     let backoff = &SqsRetryBackoff::new(sqs);
    ///     lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
    ///         let batch_error = |e: orderflow_toolkit::batch::BatchError| Diagnostic {
    ///             error_type: "BatchError".into(),
    ///             error_message: e.to_string(),
    ///         };
    ///         backoff.process(processor, event.payload, handle).await.map_err(batch_error)
    ///     }))
    ///     .await
    /// }
    /// ```
    pub async fn process<S, F, Fut>(
        &self,
        processor: &SqsBatchProcessor<S>,
        mut event: SqsEvent,
        handler: F,
    ) -> Result<SqsBatchResponse, BatchError>
    where
        S: DeadLetterSink,
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let deliveries = Deliveries::take(&mut event);
        let response = processor.process(event, handler).await?;
        self.back_off(deliveries.failed(&response)).await;
        Ok(response)
    }

    /// Raises the visibility timeout of every failed delivery per [`BackoffPolicy::visibility_timeout`]. Never
    /// fails: what cannot be changed is logged, and that record comes back after its queue's own timeout.
    pub async fn back_off(&self, failed: Vec<Delivery>) {
        let mut by_queue: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for delivery in failed {
            by_queue.entry(delivery.event_source_arn.clone()).or_default().push(delivery);
        }
        for (arn, deliveries) in by_queue {
            let queue_url = match self.queue_url(&arn).await {
                Ok(url) => url,
                Err(reason) => {
                    tracing::warn!(
                        event_source_arn = arn,
                        reason,
                        records = deliveries.len(),
                        "cannot find the source queue; failed records come back after its visibility timeout"
                    );
                    continue;
                }
            };
            for chunk in deliveries.chunks(10) {
                self.change_visibility(&queue_url, chunk).await;
            }
        }
    }

    async fn change_visibility(&self, queue_url: &str, deliveries: &[Delivery]) {
        let mut request = self.client.change_message_visibility_batch().queue_url(queue_url);
        for (index, delivery) in deliveries.iter().enumerate() {
            let timeout = self.policy.visibility_timeout(delivery.receive_count);
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(&delivery.receipt_handle)
                .visibility_timeout(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX))
                .build()
                .expect("id and receipt handle are set");
            request = request.entries(entry);
            tracing::info!(
                message_id = delivery.message_id,
                receive_count = delivery.receive_count,
                retry_in_seconds = timeout.as_secs(),
                "backing off the failed record"
            );
        }
        match request.send().await {
            Ok(output) => {
                for failed in output.failed() {
                    let message_id = failed
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| deliveries.get(i))
                        .map(|d| d.message_id.as_str());
                    tracing::warn!(
                        message_id = message_id.unwrap_or("-"),
                        code = failed.code(),
                        reason = failed.message().unwrap_or("-"),
                        "could not back off the failed record; it comes back after the queue's visibility timeout"
                    );
                }
            }
            Err(error) => tracing::warn!(
                queue_url,
                records = deliveries.len(),
                reason = describe(&error),
                "could not back off the failed records; they come back after the queue's visibility timeout"
            ),
        }
    }

    async fn queue_url(&self, arn: &str) -> Result<String, String> {
        if let Some(url) = self.queue_urls.lock().expect("queue url cache").get(arn) {
            return Ok(url.clone());
        }
        let (name, account) = parse_queue_arn(arn).ok_or_else(|| format!("{arn:?} is not an SQS queue ARN"))?;
        let output = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|error| describe(&error))?;
        let url = output.queue_url().ok_or("GetQueueUrl answered without a URL")?.to_owned();
        self.queue_urls.lock().expect("queue url cache").insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::BatchItemFailure;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_timeout_doubles_with_each_delivery_from_the_base() {
        let policy = BackoffPolicy { base: Duration::from_secs(3), cap: Duration::from_secs(60) };
        let timeouts: Vec<_> = (0..=7).map(|n| policy.visibility_timeout(n).as_secs()).collect();
        // Receive count 0 (never reported by SQS) counts as the first delivery.
        assert_eq!(timeouts, [3, 3, 6, 12, 24, 48, 60, 60]);
    }

    #[test]
    fn the_timeout_is_capped_and_never_overflows() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.visibility_timeout(10), Duration::from_secs(900));
        for receive_count in [31, 32, 33, 64, u32::MAX] {
            assert_eq!(policy.visibility_timeout(receive_count), Duration::from_secs(900), "{receive_count}");
        }
        let uncapped = BackoffPolicy { base: Duration::from_secs(1), cap: Duration::MAX };
        assert_eq!(uncapped.visibility_timeout(u32::MAX), MAX_VISIBILITY_TIMEOUT);
    }

    #[test]
    fn a_fractional_timeout_rounds_up_to_whole_seconds() {
        let policy = BackoffPolicy { base: Duration::from_millis(300), cap: Duration::from_secs(10) };
        let timeouts: Vec<_> = (1..=4).map(|n| policy.visibility_timeout(n).as_secs()).collect();
        assert_eq!(timeouts, [1, 1, 2, 3]);
    }

    #[test]
    fn queue_arns_give_name_and_account() {
        assert_eq!(parse_queue_arn("arn:aws:sqs:eu-west-1:123456789012:orders"), Some(("orders", "123456789012")));
        assert_eq!(parse_queue_arn("arn:aws-cn:sqs:cn-north-1:1:q.fifo"), Some(("q.fifo", "1")));
        for bad in ["", "arn:aws:sns:eu-west-1:1:topic", "arn:aws:sqs:eu-west-1:1:", "arn:aws:sqs:eu-west-1"] {
            assert_eq!(parse_queue_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn deliveries_are_taken_out_and_matched_to_failures() {
        let mut event: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "a", "receiptHandle": "ra", "eventSourceARN": "arn:aws:sqs:r:1:q",
             "attributes": {"ApproximateReceiveCount": "3"}},
            {"messageId": "b", "receiptHandle": "rb", "eventSourceARN": "arn:aws:sqs:r:1:q"},
            {"messageId": "c"}
        ]}))
        .unwrap();
        let deliveries = Deliveries::take(&mut event);
        assert_eq!(event.records[0].receipt_handle, None, "moved out, not copied");
        let mut response = SqsBatchResponse::default();
        for id in ["a", "c"] {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.into();
            response.batch_item_failures.push(failure);
        }
        let failed = deliveries.clone().failed(&response);
        assert_eq!(
            failed,
            [Delivery {
                message_id: "a".into(),
                receipt_handle: "ra".into(),
                event_source_arn: "arn:aws:sqs:r:1:q".into(),
                receive_count: 3,
            }]
        );
        assert!(deliveries.failed(&SqsBatchResponse::default()).is_empty());
    }
}
