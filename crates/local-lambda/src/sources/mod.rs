//! Event sources, driven with Lambda's semantics: SQS event source mappings, DynamoDB stream
//! event source mappings, and EventBridge rules and schedules invoking a function asynchronously.
//!
//! Each source runs as tasks that poll the emulator through the AWS SDK, build the exact event
//! JSON Lambda would send, invoke the function's [`FunctionPool`], act on the outcome as Lambda
//! does, and publish a [`Delivery`] for every invocation so callers can show the flow.

pub mod chaos;
pub mod rule;
pub mod schedule;
pub mod sqs;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::runtime_api::{FunctionPool, InvocationOutcome};

/// Which event source delivered a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    /// An SQS event source mapping.
    Queue {
        /// Queue ARN.
        arn: String,
    },
    /// A DynamoDB stream event source mapping.
    Stream {
        /// Stream ARN.
        arn: String,
        /// Shard the batch came from.
        shard_id: String,
    },
    /// An EventBridge rule, invoking asynchronously.
    Rule {
        /// Event bus name.
        bus: String,
        /// Event ids (keys under `Events`) of the function's rules.
        event_ids: Vec<String>,
    },
    /// A schedule, invoking asynchronously.
    Schedule {
        /// The rule's or schedule's name.
        name: String,
        /// Its event id (key under `Events`).
        event_id: String,
    },
    /// An HTTP API route.
    Http {
        /// Route key, e.g. `GET /orders/{id}`.
        route_key: String,
    },
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = |arn: &str| arn.rsplit([':', '/']).next().unwrap_or(arn).to_owned();
        match self {
            Self::Queue { arn } => write!(f, "sqs:{}", last(arn)),
            Self::Stream { arn, shard_id } => {
                let table = arn.split("table/").nth(1).and_then(|t| t.split('/').next()).unwrap_or(arn);
                write!(f, "stream:{table}/{shard_id}")
            }
            Self::Rule { bus, .. } => write!(f, "rule:{bus}"),
            Self::Schedule { name, .. } => write!(f, "schedule:{name}"),
            Self::Http { route_key } => write!(f, "http:{route_key}"),
        }
    }
}

/// One record of a delivered batch, as far as callers need to follow the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredRecord {
    /// SQS message id, stream sequence number, EventBridge event id or HTTP request id.
    pub id: String,
    /// `detail-type` of the EventBridge event carried by the record, or of a stream record that holds an event
    /// in the attributes `detail_type` and `detail` (a transactional outbox's shape).
    pub detail_type: Option<String>,
    /// `detail.correlation_id` of that event, when its detail has one.
    pub correlation_id: Option<String>,
}

impl DeliveredRecord {
    /// Reads the event type and correlation id from an EventBridge event (or a bare envelope).
    pub fn from_event(id: impl Into<String>, event: &Value) -> Self {
        let (detail_type, detail) = match event.get("detail-type") {
            Some(detail_type) => (detail_type.as_str().map(str::to_owned), event.get("detail")),
            // A bare envelope: `{"type": ..., "correlation_id": ...}`.
            None => (event.get("type").and_then(Value::as_str).map(str::to_owned), Some(event)),
        };
        let correlation_id = detail.and_then(|d| d.get("correlation_id")).and_then(Value::as_str).map(str::to_owned);
        Self { id: id.into(), detail_type, correlation_id }
    }

    /// Reads them from the text of an SQS message body.
    pub fn from_body(id: impl Into<String>, body: &str) -> Self {
        match serde_json::from_str::<Value>(body) {
            Ok(event) => Self::from_event(id, &event),
            Err(_) => Self { id: id.into(), detail_type: None, correlation_id: None },
        }
    }
}

/// What came of a delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryOutcome {
    /// Every record was processed.
    Succeeded,
    /// The function reported these records (ids as in [`DeliveredRecord::id`]) as failed.
    PartiallyFailed {
        /// Failed record ids.
        failed_ids: Vec<String>,
    },
    /// The whole batch failed: a function error, or a batch response Lambda rejects.
    Failed {
        /// Lambda's or the function's error type (`Runner.InvalidBatchResponse` for a response
        /// that fails the batch).
        error_type: String,
        /// The message.
        error_message: String,
    },
    /// Retries were exhausted and Lambda's failure record was sent to the on-failure
    /// destination (or dropped when there is none).
    DeadLettered {
        /// The destination queue ARN, `None` when the function has none (the event is lost, as
        /// on Lambda).
        destination_arn: Option<String>,
    },
}

impl DeliveryOutcome {
    /// The outcome of an invocation that does not report batch item failures.
    pub fn of(outcome: &InvocationOutcome) -> Self {
        match outcome {
            InvocationOutcome::Success(_) => Self::Succeeded,
            InvocationOutcome::FunctionError { error_type, error_message } => {
                Self::Failed { error_type: error_type.clone(), error_message: error_message.clone() }
            }
        }
    }
}

/// One invocation by an event source (or a dead-lettering after its last retry).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The function (binary) name.
    pub function: String,
    /// Where the records came from.
    pub source: SourceRef,
    /// Request id of the invocation.
    pub request_id: String,
    /// The records, in the order the function got them.
    pub records: Vec<DeliveredRecord>,
    /// 1 for the first attempt at these records.
    pub attempt: u32,
    /// What happened.
    pub outcome: DeliveryOutcome,
}

impl std::fmt::Display for Delivery {
    /// One line for a flow log: `inventory <- sqs:queue #2 [OrderPlaced o-1, ...]: failed (...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <- {} #{} [", self.function, self.source, self.attempt)?;
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match (&record.detail_type, &record.correlation_id) {
                (Some(t), Some(c)) => write!(f, "{t} {c}")?,
                (Some(t), None) => f.write_str(t)?,
                _ => f.write_str(&record.id)?,
            }
        }
        f.write_str("]: ")?;
        match &self.outcome {
            DeliveryOutcome::Succeeded => f.write_str("ok"),
            DeliveryOutcome::PartiallyFailed { failed_ids } => write!(f, "{} failed", failed_ids.len()),
            DeliveryOutcome::Failed { error_type, error_message } => {
                write!(f, "failed ({error_type}: {error_message})")
            }
            DeliveryOutcome::DeadLettered { destination_arn: Some(arn) } => write!(f, "dead-lettered to {arn}"),
            DeliveryOutcome::DeadLettered { destination_arn: None } => f.write_str("dropped after retries"),
        }
    }
}

/// Lets source tasks know the runner is stopping.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`].
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown is requested.
    pub async fn requested(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration` unless shutdown comes first; returns false on shutdown.
    pub async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.is_requested(),
            () = self.requested() => false,
        }
    }
}

impl ShutdownTrigger {
    /// Requests shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Timing knobs of the sources. Lambda's own values are in the field docs; the defaults are
/// shorter where waiting would only slow local runs down.
#[derive(Clone, Debug)]
pub struct SourceTiming {
    /// Long-poll wait of an idle SQS poller (Lambda's: 20 s). A poll in progress is dropped at shutdown. Each
    /// receive costs an emulator about as much as a write (LocalStack: ~15 ms of CPU), so idle pollers should
    /// ask rarely.
    pub sqs_wait: Duration,
    /// Pause between `GetRecords` calls on an idle shard (Lambda polls 4 times a second).
    pub stream_poll_interval: Duration,
    /// How often a stream's shards are listed again to find new ones.
    pub shard_discovery_interval: Duration,
    /// First backoff before a stream batch is retried; doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// Cap of the stream retry backoff.
    pub max_retry_backoff: Duration,
    /// Delay before each asynchronous retry (Lambda: about 1 min, then 2 min).
    pub async_retry_delay: Duration,
}

impl Default for SourceTiming {
    fn default() -> Self {
        Self {
            sqs_wait: Duration::from_secs(20),
            stream_poll_interval: Duration::from_millis(250),
            shard_discovery_interval: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(2),
            async_retry_delay: Duration::from_millis(500),
        }
    }
}

/// What every source task needs.
#[derive(Clone)]
pub struct SourceContext {
    /// The function (binary) name, for [`Delivery::function`].
    pub function: String,
    /// The function's instances.
    pub pool: Arc<FunctionPool>,
    /// Where deliveries are published.
    pub deliveries: broadcast::Sender<Delivery>,
    /// Stop signal.
    pub shutdown: Shutdown,
    /// Timing knobs.
    pub timing: SourceTiming,
    /// Region of the emulator (for `awsRegion`).
    pub region: String,
}

impl SourceContext {
    /// Publishes a delivery; nobody listening is fine.
    pub fn publish(&self, delivery: Delivery) {
        tracing::debug!(
            function = %delivery.function, source = %delivery.source, attempt = delivery.attempt,
            outcome = ?delivery.outcome, records = delivery.records.len(), "delivery"
        );
        let _ = self.deliveries.send(delivery);
    }
}

/// Reads `batchItemFailures` from a function response, with Lambda's rules: a null or empty
/// response, or a null or empty list, means every record succeeded; an item without a string
/// `itemIdentifier`, an identifier not in the batch, or a response that is not such an object
/// fails the whole batch (`Err` with the reason).
pub fn batch_item_failures(response: &Value, batch_ids: &[&str]) -> Result<Vec<String>, String> {
    let failures = match response {
        Value::Null => return Ok(Vec::new()),
        Value::Object(object) => match object.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
        },
        other => return Err(format!("the response is not a batch response: {other}")),
    };
    let mut ids = Vec::with_capacity(failures.len());
    for item in failures {
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && batch_ids.contains(&id) => {
                if !ids.iter().any(|known| known == id) {
                    ids.push(id.to_owned());
                }
            }
            Some(id) if !id.is_empty() => return Err(format!("itemIdentifier {id:?} is not in the batch")),
            _ => return Err(format!("a batch item failure has no itemIdentifier: {item}")),
        }
    }
    Ok(ids)
}

/// The current time as Lambda writes it in failure records (RFC 3339, milliseconds, `Z`).
pub(crate) fn timestamp_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_item_failures_follow_lambda_rules() {
        let ids = ["a", "b"];
        assert_eq!(batch_item_failures(&Value::Null, &ids), Ok(vec![]));
        assert_eq!(batch_item_failures(&json!({}), &ids), Ok(vec![]));
        assert_eq!(batch_item_failures(&json!({"batchItemFailures": null}), &ids), Ok(vec![]));
        assert_eq!(batch_item_failures(&json!({"batchItemFailures": []}), &ids), Ok(vec![]));
        assert_eq!(
            batch_item_failures(&json!({"batchItemFailures": [{"itemIdentifier": "b"}]}), &ids),
            Ok(vec!["b".to_owned()])
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": "c"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"id": "a"}]}),
            json!("ok"),
            json!({"batchItemFailures": "a"}),
        ] {
            assert!(batch_item_failures(&bad, &ids).is_err(), "{bad}");
        }
    }

    #[test]
    fn deliveries_print_as_one_line() {
        let delivery = Delivery {
            function: "inventory".into(),
            source: SourceRef::Queue { arn: "arn:aws:sqs:us-east-1:1:inventory-queue".into() },
            request_id: "r".into(),
            records: vec![
                DeliveredRecord::from_event(
                    "m-1",
                    &json!({"detail-type": "OrderPlaced", "detail": {"correlation_id": "o-1"}}),
                ),
                DeliveredRecord::from_body("m-2", "x"),
            ],
            attempt: 2,
            outcome: DeliveryOutcome::PartiallyFailed { failed_ids: vec!["m-2".into()] },
        };
        assert_eq!(delivery.to_string(), "inventory <- sqs:inventory-queue #2 [OrderPlaced o-1, m-2]: 1 failed");
    }

    #[test]
    fn records_name_the_event_and_correlation() {
        let event = json!({"detail-type": "OrderPlaced", "detail": {"correlation_id": "o-1"}});
        let record = DeliveredRecord::from_event("m-1", &event);
        assert_eq!(record.detail_type.as_deref(), Some("OrderPlaced"));
        assert_eq!(record.correlation_id.as_deref(), Some("o-1"));
        let bare = DeliveredRecord::from_body("m-2", r#"{"type": "OrderCreated", "correlation_id": "o-2"}"#);
        assert_eq!(bare.detail_type.as_deref(), Some("OrderCreated"));
        assert_eq!(DeliveredRecord::from_body("m-3", "not json").detail_type, None);
    }
}
