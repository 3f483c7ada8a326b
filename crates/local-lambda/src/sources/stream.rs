//! The DynamoDB stream event source mapping.
//!
//! One task per shard reads records in order, drops those the `FilterCriteria` reject, and
//! invokes the function with batches of Lambda's DynamoDB stream event. A shard's records are
//! never processed concurrently or out of order: the next batch starts only when the current
//! one has succeeded or been given up. On batch item failures the shard is retried from the
//! lowest failed sequence number; on a function error the batch is retried (split in two first
//! when `BisectBatchOnFunctionError` is set, which does not count as a retry); once a record has
//! failed `MaximumRetryAttempts + 1` times, or is older than `MaximumRecordAgeInSeconds`, Lambda's
//! failure record for the batch goes to the on-failure destination and the shard moves on. With
//! both at `-1` (Lambda's default) a failing record is retried until it leaves the stream, holding
//! its shard. Child shards start when their parent is done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, Shard, ShardIteratorType};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{DeliveredRecord, Delivery, DeliveryOutcome, SourceContext, SourceRef, batch_item_failures, timestamp_now};
use crate::aws::describe_sdk_error;
use crate::iac::{StartingPosition, StreamSource};
use crate::pattern;
use crate::runtime_api::InvocationOutcome;

/// `GetRecords` returns at most this many records.
const GET_RECORDS_LIMIT: i32 = 1000;

/// Everything a stream source needs besides the [`SourceContext`].
#[derive(Clone)]
pub struct StreamClients {
    /// DynamoDB Streams client.
    pub streams: aws_sdk_dynamodbstreams::Client,
    /// SQS client, for the on-failure destination.
    pub sqs: aws_sdk_sqs::Client,
    /// URL of the on-failure destination queue, if any.
    pub destination_url: Option<String>,
    /// Counts the records this source is done with: handed to the function with success, or given up to the
    /// on-failure destination (records the filter drops are not counted).
    pub finished: Arc<AtomicU64>,
}

/// Lists the stream's shards and takes the `LATEST` iterators (so that records written after
/// this returns are seen), then starts the source's supervisor task.
pub async fn spawn(ctx: &SourceContext, clients: StreamClients, source: &StreamSource) -> Result<JoinHandle<()>> {
    let shards = describe_shards(&clients.streams, &source.stream_arn).await?;
    let mut supervisor = Supervisor { ctx: ctx.clone(), clients, source: source.clone(), shards: HashMap::new() };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    for shard in &shards {
        let iterator = match source.starting_position {
            StartingPosition::Latest => {
                Some(supervisor.iterator(shard_id(shard), ShardIteratorType::Latest, None).await?)
            }
            StartingPosition::TrimHorizon => None,
        };
        supervisor.add(shard, iterator);
    }
    supervisor.start_ready(&done_tx);
    Ok(tokio::spawn(supervisor.run(done_tx, done_rx)))
}

fn shard_id(shard: &Shard) -> &str {
    shard.shard_id().unwrap_or_default()
}

async fn describe_shards(client: &aws_sdk_dynamodbstreams::Client, stream_arn: &str) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut start = None;
    loop {
        let output = client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(start)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!(describe_sdk_error(&err)))
            .with_context(|| format!("DescribeStream {stream_arn} (is the table deployed with a stream?)"))?;
        let Some(description) = output.stream_description else {
            return Ok(shards);
        };
        shards.extend(description.shards().iter().cloned());
        start = description.last_evaluated_shard_id().map(str::to_owned);
        if start.is_none() {
            return Ok(shards);
        }
    }
}

struct ShardState {
    parent: Option<String>,
    /// An iterator taken when the source started (`LATEST`); otherwise `TRIM_HORIZON`.
    iterator: Option<String>,
    task: Option<JoinHandle<()>>,
    done: bool,
}

struct Supervisor {
    ctx: SourceContext,
    clients: StreamClients,
    source: StreamSource,
    shards: HashMap<String, ShardState>,
}

impl Supervisor {
    fn add(&mut self, shard: &Shard, iterator: Option<String>) {
        self.shards.entry(shard_id(shard).to_owned()).or_insert_with(|| ShardState {
            parent: shard.parent_shard_id().map(str::to_owned),
            iterator,
            task: None,
            done: false,
        });
    }

    async fn iterator(&self, shard_id: &str, kind: ShardIteratorType, sequence: Option<&str>) -> Result<String> {
        shard_iterator(&self.clients.streams, &self.source.stream_arn, shard_id, kind, sequence).await
    }

    /// Starts every shard whose parent is done or unknown (expired from the stream).
    fn start_ready(&mut self, done_tx: &mpsc::UnboundedSender<String>) {
        let ready: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, s)| s.task.is_none() && !s.done)
            .filter(|(_, s)| match &s.parent {
                Some(parent) => self.shards.get(parent).is_none_or(|p| p.done),
                None => true,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            let Some(state) = self.shards.get_mut(&id) else { continue };
            let reader = ShardReader {
                ctx: self.ctx.clone(),
                clients: self.clients.clone(),
                source: self.source.clone(),
                shard_id: id.clone(),
                iterator: state.iterator.take(),
                done: done_tx.clone(),
            };
            state.task = Some(tokio::spawn(reader.run()));
        }
    }

    async fn run(mut self, done_tx: mpsc::UnboundedSender<String>, mut done_rx: mpsc::UnboundedReceiver<String>) {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut next_listing = Instant::now() + self.ctx.timing.shard_discovery_interval;
        loop {
            tokio::select! {
                () = shutdown.requested() => break,
                done = done_rx.recv() => {
                    if let Some(state) = done.and_then(|id| self.shards.get_mut(&id)) {
                        state.done = true;
                    }
                }
                () = tokio::time::sleep_until(next_listing) => {
                    next_listing = Instant::now() + self.ctx.timing.shard_discovery_interval;
                    match describe_shards(&self.clients.streams, &self.source.stream_arn).await {
                        // Shards that appear later are read from their start.
                        Ok(shards) => shards.iter().for_each(|shard| self.add(shard, None)),
                        Err(err) => tracing::warn!(stream = %self.source.stream_arn, error = %format!("{err:#}"), "listing shards failed"),
                    }
                }
            }
            self.start_ready(&done_tx);
        }
        for state in self.shards.values_mut() {
            if let Some(task) = state.task.take() {
                let _ = task.await;
            }
        }
    }
}

async fn shard_iterator(
    client: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
    kind: ShardIteratorType,
    sequence: Option<&str>,
) -> Result<String> {
    let output = client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(kind.clone())
        .set_sequence_number(sequence.map(str::to_owned))
        .send()
        .await
        .with_context(|| format!("GetShardIterator {kind:?} on {shard_id}"))?;
    output.shard_iterator.context("GetShardIterator returned no iterator")
}

/// A record as the function gets it, plus what the reader needs to know about it.
struct Buffered {
    sequence: String,
    event: Value,
    arrival_secs: Option<i64>,
}

/// How one invocation of a batch ended, for the retry logic.
enum BatchResult {
    Done,
    /// Retry from this index of the batch (the lowest failed record).
    RetryFrom(usize),
    Failed,
}

struct ShardReader {
    ctx: SourceContext,
    clients: StreamClients,
    source: StreamSource,
    shard_id: String,
    iterator: Option<String>,
    done: mpsc::UnboundedSender<String>,
}

impl ShardReader {
    fn source_ref(&self) -> SourceRef {
        SourceRef::Stream { arn: self.source.stream_arn.clone(), shard_id: self.shard_id.clone() }
    }

    async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut buffer: VecDeque<Buffered> = VecDeque::new();
        let mut last_read: Option<String> = None;
        let mut closed = false;
        let mut first_buffered: Option<Instant> = None;
        let batch_size = self.source.batch_size as usize;

        while !shutdown.is_requested() {
            if buffer.len() < batch_size && !closed {
                match self.read(&mut last_read).await {
                    Ok((records, open)) => {
                        closed = !open;
                        for record in records {
                            if pattern::any_matches(&self.source.filter_patterns, &record.event) {
                                buffer.push_back(record);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(shard = %self.shard_id, error = %format!("{err:#}"), "reading the stream failed");
                        shutdown.sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if buffer.is_empty() {
                first_buffered = None;
                if closed {
                    break;
                }
                shutdown.sleep(self.ctx.timing.stream_poll_interval).await;
                continue;
            }
            let first = *first_buffered.get_or_insert_with(Instant::now);
            // MaximumBatchingWindowInSeconds: keep reading until the batch is full or the
            // window has passed since the first record arrived.
            if buffer.len() < batch_size && !closed && first.elapsed() < self.source.batching_window {
                shutdown.sleep(self.ctx.timing.stream_poll_interval).await;
                continue;
            }
            if !self.process(&mut buffer).await {
                break;
            }
            first_buffered = None;
        }
        if closed && buffer.is_empty() {
            let _ = self.done.send(self.shard_id.clone());
        }
    }

    /// One `GetRecords`; returns the records and whether the shard is still open.
    async fn read(&mut self, last_read: &mut Option<String>) -> Result<(Vec<Buffered>, bool)> {
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => {
                let (kind, sequence) = match last_read.as_deref() {
                    Some(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq)),
                    None => (ShardIteratorType::TrimHorizon, None),
                };
                shard_iterator(&self.clients.streams, &self.source.stream_arn, &self.shard_id, kind, sequence).await?
            }
        };
        let output =
            match self.clients.streams.get_records().shard_iterator(iterator).limit(GET_RECORDS_LIMIT).send().await {
                Ok(output) => output,
                Err(err) => {
                    // An expired or trimmed iterator is replaced from the last record read.
                    let expired = err
                        .as_service_error()
                        .is_some_and(|e| e.is_expired_iterator_exception() || e.is_trimmed_data_access_exception());
                    if expired {
                        return Ok((Vec::new(), true));
                    }
                    return Err(err).context("GetRecords");
                }
            };
        let records: Vec<Buffered> = output
            .records()
            .iter()
            .map(|record| {
                let event = stream_record(record, &self.source.stream_arn, &self.ctx.region);
                let dynamodb = record.dynamodb();
                Buffered {
                    sequence: dynamodb.and_then(|d| d.sequence_number()).unwrap_or_default().to_owned(),
                    arrival_secs: dynamodb.and_then(|d| d.approximate_creation_date_time()).map(|t| t.secs()),
                    event,
                }
            })
            .collect();
        if let Some(last) = records.last() {
            *last_read = Some(last.sequence.clone());
        }
        self.iterator = output.next_shard_iterator;
        Ok((records, self.iterator.is_some()))
    }

    /// Processes the batch at the front of the buffer until it is done or given up. Returns
    /// false when interrupted by shutdown (the batch stays unprocessed).
    async fn process(&self, buffer: &mut VecDeque<Buffered>) -> bool {
        let batch_size = self.source.batch_size as usize;
        let mut shutdown = self.ctx.shutdown.clone();
        let mut len = buffer.len().min(batch_size);
        // Failed invocations of the record at the front of the buffer.
        let mut attempts: u32 = 0;
        let mut backoff = self.ctx.timing.retry_backoff;
        // The last invocation's request id and function error, for a failure record.
        let (mut request_id, mut last_error) = (String::new(), None);
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let expired = expired_prefix(buffer.iter().take(len), self.source.max_record_age, now);
            if expired > 0 {
                self.dead_letter(buffer, expired, attempts, "RecordAgeExceeded", &request_id, last_error).await;
                self.finish(buffer, expired);
                return true;
            }
            let batch: Vec<&Buffered> = buffer.iter().take(len).collect();
            let (result, id, error) = self.invoke(&batch, attempts.saturating_add(1)).await;
            (request_id, last_error) = (id, error);
            match result {
                None => return false,
                Some(BatchResult::Done) => {
                    self.finish(buffer, len);
                    return true;
                }
                Some(BatchResult::RetryFrom(index)) => {
                    if index > 0 {
                        // Records before the lowest failure are checkpointed.
                        self.finish(buffer, index);
                        attempts = 1;
                        backoff = self.ctx.timing.retry_backoff;
                    } else {
                        attempts = attempts.saturating_add(1);
                    }
                    len = buffer.len().min(batch_size);
                }
                Some(BatchResult::Failed) => {
                    if self.source.bisect_on_error && len > 1 {
                        // Splitting does not count towards the retry quota.
                        len = len.div_ceil(2);
                        continue;
                    }
                    attempts = attempts.saturating_add(1);
                }
            }
            // MaximumRetryAttempts -1 (`None`): retried until the record is too old or leaves the stream.
            if self.source.max_retry_attempts.is_some_and(|max| attempts > max) {
                self.dead_letter(buffer, len, attempts, "RetryAttemptsExhausted", &request_id, last_error).await;
                self.finish(buffer, len);
                return true;
            }
            if !shutdown.sleep(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(self.ctx.timing.max_retry_backoff);
        }
    }

    /// Checkpoints the first `count` records of the buffer: the shard moves past them.
    fn finish(&self, buffer: &mut VecDeque<Buffered>, count: usize) {
        buffer.drain(..count);
        self.clients.finished.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Invokes with `batch`; `None` when the pool is gone. Also returns the request id and the
    /// function error, if any, for a failure record.
    async fn invoke(
        &self,
        batch: &[&Buffered],
        attempt: u32,
    ) -> (Option<BatchResult>, String, Option<(String, String)>) {
        let records: Vec<Value> = batch.iter().map(|b| b.event.clone()).collect();
        let invocation = match self.ctx.pool.invoke(json!({ "Records": records })).await {
            Ok(invocation) => invocation,
            Err(err) => {
                tracing::warn!(function = %self.ctx.function, error = %format!("{err:#}"), "invoke failed");
                return (None, String::new(), None);
            }
        };
        let ids: Vec<&str> = batch.iter().map(|b| b.sequence.as_str()).collect();
        let mut error = None;
        let (result, outcome) = match &invocation.outcome {
            InvocationOutcome::Success(response) if self.source.report_batch_item_failures => {
                match batch_item_failures(response, &ids) {
                    Ok(failed) if failed.is_empty() => (BatchResult::Done, DeliveryOutcome::Succeeded),
                    Ok(failed) => {
                        let lowest = ids.iter().position(|id| failed.iter().any(|f| f == id)).unwrap_or(0);
                        (BatchResult::RetryFrom(lowest), DeliveryOutcome::PartiallyFailed { failed_ids: failed })
                    }
                    Err(reason) => (
                        BatchResult::Failed,
                        DeliveryOutcome::Failed {
                            error_type: "Runner.InvalidBatchResponse".to_owned(),
                            error_message: reason,
                        },
                    ),
                }
            }
            InvocationOutcome::Success(_) => (BatchResult::Done, DeliveryOutcome::Succeeded),
            failed @ InvocationOutcome::FunctionError { error_type, error_message } => {
                error = Some((error_type.clone(), error_message.clone()));
                (BatchResult::Failed, DeliveryOutcome::of(failed))
            }
        };
        self.ctx.publish(Delivery {
            function: self.ctx.function.clone(),
            source: self.source_ref(),
            request_id: invocation.request_id.clone(),
            records: batch.iter().map(|b| delivered_record(&b.sequence, &b.event)).collect(),
            attempt,
            outcome,
        });
        (Some(result), invocation.request_id, error)
    }

    /// Sends Lambda's stream failure record for `buffer[..len]` to the on-failure destination; `condition` says
    /// why they are given up, `request_id` is the last invocation's (empty when there was none).
    async fn dead_letter(
        &self,
        buffer: &VecDeque<Buffered>,
        len: usize,
        attempts: u32,
        condition: &str,
        request_id: &str,
        error: Option<(String, String)>,
    ) {
        let batch: Vec<&Buffered> = buffer.iter().take(len).collect();
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let arrival = |secs: Option<i64>| {
            secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        };
        let mut response_context = json!({"statusCode": 200, "executedVersion": "$LATEST"});
        if error.is_some() {
            response_context["functionError"] = json!("Unhandled");
        }
        // A record too old before its first invocation has no request of its own.
        let request_id = if request_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { request_id.to_owned() };
        let record = json!({
            "requestContext": {
                "requestId": request_id,
                "functionArn": self.ctx.pool.function_arn(),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": response_context,
            "version": "1.0",
            "timestamp": timestamp_now(),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": first.sequence,
                "endSequenceNumber": last.sequence,
                "approximateArrivalOfFirstRecord": arrival(first.arrival_secs),
                "approximateArrivalOfLastRecord": arrival(last.arrival_secs),
                "batchSize": batch.len(),
                "streamArn": self.source.stream_arn,
            },
        });
        if let Some(url) = &self.clients.destination_url {
            let sent = self.clients.sqs.send_message().queue_url(url).message_body(record.to_string()).send().await;
            if let Err(err) = sent {
                tracing::error!(function = %self.ctx.function, error = %err, "sending the stream failure record failed; the batch is skipped");
            }
        } else {
            tracing::warn!(function = %self.ctx.function, shard = %self.shard_id, "retries exhausted and no on-failure destination: the batch is skipped");
        }
        self.ctx.publish(Delivery {
            function: self.ctx.function.clone(),
            source: self.source_ref(),
            request_id,
            records: batch.iter().map(|b| delivered_record(&b.sequence, &b.event)).collect(),
            attempt: attempts,
            outcome: DeliveryOutcome::DeadLettered { destination_arn: self.source.on_failure_destination_arn.clone() },
        });
    }
}

/// How many records at the front of `batch` are older than `max_age` at `now` (Unix seconds). Records come in
/// order, so the expired ones are a prefix; a record without an arrival time never expires.
fn expired_prefix<'a>(batch: impl Iterator<Item = &'a Buffered>, max_age: Option<Duration>, now: i64) -> usize {
    let Some(max_age) = max_age else {
        return 0;
    };
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    batch.take_while(|record| record.arrival_secs.is_some_and(|arrival| now.saturating_sub(arrival) > max_age)).count()
}

/// Names a record by the attributes `detail_type` and `detail` (an event's detail as JSON text) of its image, when it
/// has them, as a transactional outbox's records do.
fn delivered_record(sequence: &str, event: &Value) -> DeliveredRecord {
    let dynamodb = &event["dynamodb"];
    let image = dynamodb.get("NewImage").or_else(|| dynamodb.get("OldImage"));
    let string = |name: &str| image.and_then(|i| i.get(name)).and_then(|a| a.get("S")).and_then(Value::as_str);
    let correlation_id = string("detail")
        .and_then(|detail| serde_json::from_str::<Value>(detail).ok())
        .and_then(|detail| detail.get("correlation_id")?.as_str().map(str::to_owned));
    DeliveredRecord { id: sequence.to_owned(), detail_type: string("detail_type").map(str::to_owned), correlation_id }
}

/// One record of the DynamoDB stream event Lambda sends.
pub fn stream_record(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut dynamodb = Map::new();
    if let Some(change) = record.dynamodb() {
        if let Some(at) = change.approximate_creation_date_time() {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(at.secs()));
        }
        let images = [("Keys", change.keys()), ("NewImage", change.new_image()), ("OldImage", change.old_image())];
        for (name, image) in images {
            if let Some(image) = image {
                dynamodb.insert(name.into(), item_json(image));
            }
        }
        if let Some(sequence) = change.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(sequence));
        }
        if let Some(size) = change.size_bytes() {
            dynamodb.insert("SizeBytes".into(), json!(size));
        }
        if let Some(view) = change.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    let mut event = json!({
        "eventID": record.event_id().unwrap_or_default(),
        "eventName": record.event_name().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": record.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region().unwrap_or(region),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    });
    // TTL deletions carry the service as the user identity.
    if let (Some(identity), Some(object)) = (record.user_identity(), event.as_object_mut()) {
        object
            .insert("userIdentity".into(), json!({"type": identity.r#type(), "principalId": identity.principal_id()}));
    }
    event
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect())
}

/// An attribute value in DynamoDB JSON (`{"S": ..}`, `{"N": ..}`, `{"M": ..}`, ...).
pub fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |blob: &aws_sdk_dynamodbstreams::primitives::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(blob.as_ref()))
    };
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::Ss(items) => json!({ "SS": items }),
        AttributeValue::Ns(items) => json!({ "NS": items }),
        AttributeValue::Bs(items) => json!({ "BS": items.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(items) => json!({ "L": items.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::M(map) => json!({ "M": item_json(map) }),
        // A type newer than this SDK: keep the record processable and say so.
        _ => {
            tracing::warn!("an attribute of an unknown type is passed as NULL");
            json!({ "NULL": true })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    fn buffered(arrival_secs: Option<i64>) -> Buffered {
        Buffered { sequence: "1".into(), event: Value::Null, arrival_secs }
    }

    #[test]
    fn only_the_records_older_than_the_maximum_age_at_the_front_expire() {
        let minute = Some(Duration::from_secs(60));
        let batch = [buffered(Some(0)), buffered(Some(10)), buffered(Some(100)), buffered(Some(5))];
        assert_eq!(expired_prefix(batch.iter(), minute, 100), 2, "0 and 10 are more than 60 s old at 100");
        assert_eq!(expired_prefix(batch.iter(), minute, 60), 0, "exactly the maximum age is not older");
        assert_eq!(expired_prefix(batch.iter(), None, i64::MAX), 0, "-1: no age limit");
        assert_eq!(expired_prefix([buffered(None)].iter(), minute, i64::MAX), 0, "no arrival time: never expires");
        assert_eq!(expired_prefix(batch.iter(), Some(Duration::MAX), i64::MAX), 0, "no overflow");
    }

    #[test]
    fn records_have_lambdas_shape_and_parse_as_a_dynamodb_event() {
        let change = StreamRecord::builder()
            .approximate_creation_date_time(DateTime::from_secs(1_479_499_740))
            .keys("pk", AttributeValue::S("o-1".into()))
            .keys("sk", AttributeValue::S("e-1".into()))
            .new_image("pk", AttributeValue::S("o-1".into()))
            .new_image("detail_type", AttributeValue::S("OrderPlaced".into()))
            .new_image("detail", AttributeValue::S(r#"{"correlation_id":"o-1"}"#.into()))
            .new_image("n", AttributeValue::N("1.5".into()))
            .new_image("b", AttributeValue::B(Blob::new(vec![0u8, 1])))
            .new_image(
                "m",
                AttributeValue::M(HashMap::from([(
                    "l".to_owned(),
                    AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::Null(true)]),
                )])),
            )
            .sequence_number("111")
            .size_bytes(26)
            .stream_view_type(StreamViewType::NewImage)
            .build();
        let record = Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .aws_region("us-east-1")
            .dynamodb(change)
            .build();
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/outbox/stream/2024";
        let event = stream_record(&record, arn, "us-east-1");
        assert_eq!(event["eventName"], "INSERT");
        assert_eq!(event["eventSource"], "aws:dynamodb");
        assert_eq!(event["eventSourceARN"], arn);
        let change = &event["dynamodb"];
        assert_eq!(change["ApproximateCreationDateTime"], 1_479_499_740);
        assert_eq!(change["Keys"], json!({"pk": {"S": "o-1"}, "sk": {"S": "e-1"}}));
        assert_eq!(change["NewImage"]["n"], json!({"N": "1.5"}));
        assert_eq!(change["NewImage"]["b"], json!({"B": "AAE="}));
        assert_eq!(change["NewImage"]["m"], json!({"M": {"l": {"L": [{"BOOL": true}, {"NULL": true}]}}}));
        assert_eq!(change["SequenceNumber"], "111");
        assert_eq!(change["SizeBytes"], 26);
        assert_eq!(change["StreamViewType"], "NEW_IMAGE");
        assert!(change.get("OldImage").is_none());

        let delivered = delivered_record("111", &event);
        assert_eq!(delivered.detail_type.as_deref(), Some("OrderPlaced"));
        assert_eq!(delivered.correlation_id.as_deref(), Some("o-1"));

        let parsed: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(json!({ "Records": [event] })).unwrap();
        assert_eq!(parsed.records[0].change.sequence_number.as_deref(), Some("111"));
        assert_eq!(parsed.records[0].change.approximate_creation_date_time.timestamp(), 1_479_499_740);
    }
}
