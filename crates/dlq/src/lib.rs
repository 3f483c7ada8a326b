//! Operations on orderflow's dead-letter queues (DLQs), over the `aws-sdk-sqs` client, for the `orderflow-dlq`
//! operator tool: find the DLQs and where their messages come from ([`DeadLetterQueues::list`]), look at failed
//! messages with their failure reason ([`DeadLetterQueues::show`]), move them back to their source queue
//! ([`DeadLetterQueues::redrive`]) and empty a DLQ ([`DeadLetterQueues::purge`]).
//!
//! A failed message reaches a DLQ in one of three ways, and [`Failure`] reads the reason of each:
//!
//! - an SQS consumer sent it itself because it can never succeed (malformed, unknown type or version): the body is
//!   the original one, the reason is in the message attributes [`REASON_ATTRIBUTE`], [`CLASS_ATTRIBUTE`] and
//!   [`SOURCE_MESSAGE_ATTRIBUTE`] (see `orderflow_aws::dead_letter`);
//! - SQS moved it after `maxReceiveCount` receives (the queue's RedrivePolicy): no reason beyond the receive count;
//! - Lambda sent an asynchronous invocation's or a stream batch's failure record to an on-failure destination: the
//!   body is a JSON record with `requestContext` and, for async invokes, `responsePayload.errorMessage`.
//!
//! Nothing here loses a message: [`DeadLetterQueues::show`] only hides the messages it looks at while it reads
//! them, and [`DeadLetterQueues::redrive`] deletes a message from the DLQ only after it was sent to the target
//! queue. Messages that are looked at but not moved become visible again when the operation ends (or, if the
//! process dies, when their visibility timeout expires: at most [`SHOW_HOLD_SECONDS`] or [`REDRIVE_HOLD_SECONDS`]).
#![forbid(unsafe_code)]

pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, Write};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use serde_json::Value;
use time::OffsetDateTime;

pub use orderflow_aws::dead_letter::{CLASS_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE};

/// Message attributes whose name starts with this are the failure description a consumer added when it dead-lettered
/// a message; a redrive drops them.
pub const ERROR_ATTRIBUTE_PREFIX: &str = "orderflow-error-";
/// Seconds a message [`DeadLetterQueues::show`] looks at stays hidden if the tool dies before it releases it.
pub const SHOW_HOLD_SECONDS: i32 = 60;
/// Seconds a message a redrive received but did not move stays hidden if the tool dies before it releases it.
pub const REDRIVE_HOLD_SECONDS: i32 = 300;
/// Long-poll wait of each receive: a receive that comes back empty after it means the queue has nothing visible.
const RECEIVE_WAIT_SECONDS: i32 = 1;
/// Receives in a row that bring only messages already seen, after which a scan stops.
const IDLE_RECEIVES: u32 = 3;
/// The message group of a message redriven into a FIFO queue when the DLQ message has none.
const DEFAULT_MESSAGE_GROUP: &str = "orderflow-dlq-redrive";

/// What can go wrong in a DLQ operation.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No queue with this name (or URL) exists in the account and region.
    #[error("queue {0} does not exist")]
    QueueNotFound(String),
    /// The argument is neither a queue URL, a queue ARN nor a valid queue name.
    #[error("{0:?} is not a queue name, URL or ARN")]
    InvalidQueue(String),
    /// An SQS call failed.
    #[error("{operation} on {queue} failed: {message}")]
    Sqs {
        /// The SQS action, e.g. `ReceiveMessage`.
        operation: &'static str,
        /// The queue it was called on.
        queue: String,
        /// The service's `Code: message`, or the chain of causes of a transport error.
        message: String,
    },
    /// A redrive without a target, from a DLQ no queue's RedrivePolicy names.
    #[error("no queue has {dlq} as its dead-letter queue, so there is no source to redrive to: name the target (--to)")]
    NoSource {
        /// The DLQ's name.
        dlq: String,
    },
    /// A redrive without a target, from a DLQ that several queues use.
    #[error("several queues have {dlq} as their dead-letter queue ({}): name the target (--to)", sources.join(", "))]
    AmbiguousSource {
        /// The DLQ's name.
        dlq: String,
        /// The names of the queues that redrive to it.
        sources: Vec<String>,
    },
    /// A redrive whose target is the DLQ itself.
    #[error("refusing to redrive {0} into itself")]
    SameQueue(String),
    /// A purge without `--yes` when there is no terminal to ask for confirmation on.
    #[error("refusing to purge {queue}: no terminal to confirm on (pass --yes to purge without confirmation)")]
    NoTerminal {
        /// The DLQ's name.
        queue: String,
    },
    /// A purge whose confirmation was not the queue's name.
    #[error("purge of {queue} not confirmed (typed {typed:?}, not the queue name); nothing was purged")]
    NotConfirmed {
        /// The DLQ's name.
        queue: String,
        /// What was typed instead.
        typed: String,
    },
    /// Reading the confirmation or writing the prompt failed.
    #[error("asking for confirmation: {0}")]
    Io(#[from] std::io::Error),
}

/// A queue: its name and URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueRef {
    /// The queue name, e.g. `orderflow-dev-InventoryDlq`.
    pub name: String,
    /// The queue URL every SQS call takes.
    pub url: String,
}

impl QueueRef {
    /// The queue a URL names (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or an emulator's URL), without
    /// asking SQS whether it exists.
    pub fn from_url(url: &str) -> Result<QueueRef, DlqError> {
        let path = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(_authority, path)| path.trim_end_matches('/'));
        let name = path.rsplit('/').next().unwrap_or_default();
        if !is_queue_name(name) {
            return Err(DlqError::InvalidQueue(url.to_owned()));
        }
        Ok(QueueRef { name: name.to_owned(), url: url.to_owned() })
    }

    /// Whether it is a FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }

    /// Whether `other` is the same queue: the same name in the same account (the URL's path is
    /// `/<account>/<name>`; its host may be spelt differently).
    pub fn is_same_queue(&self, other: &QueueRef) -> bool {
        let account = |q: &QueueRef| q.url.trim_end_matches('/').rsplit('/').nth(1).map(str::to_owned);
        self.name == other.name && account(self) == account(other)
    }
}

/// Whether `name` is a valid SQS queue name: 1 to 80 letters, digits, `-` and `_`, with `.fifo` at the end of a
/// FIFO queue's name.
fn is_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty() && name.len() <= 80 && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether a queue's name says it is a dead-letter queue: it ends in `Dlq`, `DLQ`, `-dlq` or `_dlq` (before a
/// `.fifo`). An on-failure destination of Lambda (orderflow's `RelayDlq`) is a DLQ that no RedrivePolicy names, so
/// it is found by name.
pub fn has_dlq_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    base.ends_with("Dlq") || base.ends_with("DLQ") || lower.ends_with("-dlq") || lower.ends_with("_dlq")
}

/// How many messages a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// `ApproximateNumberOfMessages`: ready to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received by someone and not yet deleted or released.
    pub in_flight: u64,
}

impl Depth {
    /// Every message the queue holds: visible + in flight.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// A dead-letter queue found by [`DeadLetterQueues::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// The DLQ.
    pub queue: QueueRef,
    /// Its ARN.
    pub arn: String,
    /// Its depth (approximate, as SQS reports it).
    pub depth: Depth,
    /// The queues whose RedrivePolicy names it, by name; empty for a DLQ found by its name only (e.g. a Lambda
    /// on-failure destination).
    pub sources: Vec<QueueRef>,
}

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
    receipt_handle: String,
}

impl DeadLetterMessage {
    fn from_sqs(message: &Message) -> Option<DeadLetterMessage> {
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

/// What [`DeadLetterQueues::show`] read.
#[derive(Debug, Clone, Default)]
pub struct Peek {
    /// The messages, oldest first.
    pub messages: Vec<DeadLetterMessage>,
    /// Problems that lost nothing (a message that could not be made visible again at once reappears after
    /// [`SHOW_HOLD_SECONDS`]).
    pub warnings: Vec<String>,
}

/// Which messages a redrive moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every message in the DLQ.
    All,
    /// The messages with these message ids.
    Ids(BTreeSet<String>),
}

impl Selection {
    fn contains(&self, id: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(id),
        }
    }
}

/// The outcome of [`DeadLetterQueues::redrive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// The DLQ.
    pub dlq: QueueRef,
    /// Where the messages went.
    pub target: QueueRef,
    /// Ids of the messages sent to the target and deleted from the DLQ.
    pub moved: Vec<String>,
    /// Messages whose send failed, with the reason: they are still in the DLQ, visible again.
    pub failed: Vec<(String, String)>,
    /// Messages sent to the target whose delete from the DLQ failed, with the reason: they are in both queues now
    /// (delete them from the DLQ by hand, or expect a duplicate on the next redrive).
    pub not_deleted: Vec<(String, String)>,
    /// Selected message ids that were not in the DLQ (or not visible: received by someone else meanwhile).
    pub not_found: Vec<String>,
    /// Why the redrive stopped before it had read the whole DLQ (a receive failed): the messages it did not get to
    /// are still in the DLQ.
    pub interrupted: Option<String>,
    /// Problems that lost nothing (a message that could not be made visible again at once reappears after
    /// [`REDRIVE_HOLD_SECONDS`]).
    pub warnings: Vec<String>,
}

impl RedriveReport {
    /// Whether every selected message was moved.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.not_deleted.is_empty() && self.not_found.is_empty() && self.interrupted.is_none()
    }
}

/// The DLQ operations, over one SQS client.
#[derive(Debug, Clone)]
pub struct DeadLetterQueues {
    sqs: Client,
}

impl DeadLetterQueues {
    /// Operations through `sqs` (its region, credentials and endpoint).
    pub fn new(sqs: Client) -> DeadLetterQueues {
        DeadLetterQueues { sqs }
    }

    /// Finds a queue by URL (taken as it is), ARN or name (looked up with GetQueueUrl).
    pub async fn resolve(&self, queue: &str) -> Result<QueueRef, DlqError> {
        let queue = queue.trim();
        if queue.starts_with("http://") || queue.starts_with("https://") {
            return QueueRef::from_url(queue);
        }
        let (name, owner) = match queue.strip_prefix("arn:") {
            // arn:<partition>:sqs:<region>:<account>:<name>
            Some(_) => match queue.split(':').collect::<Vec<_>>().as_slice() {
                [_, _, "sqs", _, account, name] => (*name, Some(*account)),
                _ => return Err(DlqError::InvalidQueue(queue.to_owned())),
            },
            None => (queue, None),
        };
        if !is_queue_name(name) {
            return Err(DlqError::InvalidQueue(queue.to_owned()));
        }
        let found = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(owner.map(str::to_owned))
            .send()
            .await;
        match found {
            Ok(out) => Ok(QueueRef {
                name: name.to_owned(),
                url: out.queue_url().ok_or_else(|| DlqError::QueueNotFound(name.to_owned()))?.to_owned(),
            }),
            Err(err) if is_missing_queue(&err) => Err(DlqError::QueueNotFound(name.to_owned())),
            Err(err) => Err(sqs_error("GetQueueUrl", name, &err)),
        }
    }

    /// Every DLQ among the queues whose name starts with `prefix` (every queue without one): the queues another
    /// listed queue's RedrivePolicy names as `deadLetterTargetArn`, and the queues with a DLQ name
    /// ([`has_dlq_name`]). Sorted by name, each with its depth and its source queues.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<DeadLetterQueue>, DlqError> {
        let mut queues = Vec::new();
        for url in self.queue_urls(prefix).await? {
            let queue = QueueRef::from_url(&url)?;
            let attributes = match self
                .sqs
                .get_queue_attributes()
                .queue_url(&queue.url)
                .attribute_names(QueueAttributeName::QueueArn)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
            {
                Ok(out) => out.attributes().cloned().unwrap_or_default(),
                // Deleted since ListQueues.
                Err(err) if is_missing_queue(&err) => continue,
                Err(err) => return Err(sqs_error("GetQueueAttributes", &queue.name, &err)),
            };
            queues.push((queue, attributes));
        }

        let mut sources: HashMap<String, Vec<QueueRef>> = HashMap::new();
        for (queue, attributes) in &queues {
            if let Some(target) = attributes.get(&QueueAttributeName::RedrivePolicy).and_then(|p| dead_letter_target(p))
            {
                sources.entry(target).or_default().push(queue.clone());
            }
        }
        let mut found = Vec::new();
        for (queue, attributes) in queues {
            let arn = attributes.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
            let mut its_sources = sources.remove(&arn).unwrap_or_default();
            if its_sources.is_empty() && !has_dlq_name(&queue.name) {
                continue;
            }
            its_sources.sort();
            let count = |name: QueueAttributeName| attributes.get(&name).and_then(|n| n.parse().ok()).unwrap_or(0);
            let depth = Depth {
                visible: count(QueueAttributeName::ApproximateNumberOfMessages),
                in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            };
            found.push(DeadLetterQueue { queue, arn, depth, sources: its_sources });
        }
        found.sort_by(|a, b| a.queue.name.cmp(&b.queue.name));
        Ok(found)
    }

    /// The queue's depth.
    pub async fn depth(&self, queue: &QueueRef) -> Result<Depth, DlqError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|err| match is_missing_queue(&err) {
                true => DlqError::QueueNotFound(queue.name.clone()),
                false => sqs_error("GetQueueAttributes", &queue.name, &err),
            })?;
        let count = |name: QueueAttributeName| {
            out.attributes().and_then(|a| a.get(&name)).and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        Ok(Depth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// The queues whose RedrivePolicy names `dlq` (ListDeadLetterSourceQueues), sorted by name.
    pub async fn sources(&self, dlq: &QueueRef) -> Result<Vec<QueueRef>, DlqError> {
        let mut sources = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sqs
                .list_dead_letter_source_queues()
                .queue_url(&dlq.url)
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|err| match is_missing_queue(&err) {
                    true => DlqError::QueueNotFound(dlq.name.clone()),
                    false => sqs_error("ListDeadLetterSourceQueues", &dlq.name, &err),
                })?;
            for url in page.queue_urls() {
                sources.push(QueueRef::from_url(url)?);
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        sources.sort();
        Ok(sources)
    }

    /// Where a redrive of `dlq` goes without an explicit target: its only source queue.
    pub async fn redrive_target(&self, dlq: &QueueRef) -> Result<QueueRef, DlqError> {
        let mut sources = self.sources(dlq).await?;
        match sources.len() {
            0 => Err(DlqError::NoSource { dlq: dlq.name.clone() }),
            1 => Ok(sources.remove(0)),
            _ => Err(DlqError::AmbiguousSource {
                dlq: dlq.name.clone(),
                sources: sources.into_iter().map(|s| s.name).collect(),
            }),
        }
    }

    /// Up to `max` messages of `dlq`, oldest first, with their failure. Each message is received (which counts as a
    /// receive in its `ApproximateReceiveCount`), hidden while the others are read so none is read twice, and made
    /// visible again at the end.
    pub async fn show(&self, dlq: &QueueRef, max: usize) -> Result<Peek, DlqError> {
        let mut held: Vec<DeadLetterMessage> = Vec::new();
        let mut seen = HashSet::new();
        let mut idle = 0;
        let scanned = async {
            while held.len() < max && idle < IDLE_RECEIVES {
                let want = (max - held.len()).min(10);
                let batch = self.receive(dlq, want, SHOW_HOLD_SECONDS).await?;
                if batch.is_empty() {
                    break;
                }
                let before = held.len();
                for message in batch {
                    if seen.insert(message.message_id.clone()) {
                        held.push(message);
                    } else if let Some(old) = held.iter_mut().find(|m| m.message_id == message.message_id) {
                        // Its hold expired and it came back: only the newest receipt handle releases it.
                        old.receipt_handle = message.receipt_handle;
                    }
                }
                idle = if held.len() == before { idle + 1 } else { 0 };
            }
            Ok::<(), DlqError>(())
        }
        .await;
        let handles: Vec<(String, String)> =
            held.iter().map(|m| (m.message_id.clone(), m.receipt_handle.clone())).collect();
        let warnings = self.release(dlq, &handles, SHOW_HOLD_SECONDS).await;
        scanned?;
        held.sort_by_key(|m| m.sent_at);
        Ok(Peek { messages: held, warnings })
    }

    /// Moves the selected messages of `dlq` to `target`: each one is sent with its body and its message attributes
    /// except ours starting with [`ERROR_ATTRIBUTE_PREFIX`] ([`DeadLetterMessage::redrive_attributes`]), and deleted
    /// from the DLQ only once the send succeeded. A message whose send fails stays in the DLQ and is reported in
    /// [`RedriveReport::failed`]. Into a FIFO target a message goes with its own message group (or
    /// `orderflow-dlq-redrive`) and its deduplication id (or its message id).
    ///
    /// The DLQ is read until a receive comes back empty (or every selected id was found); messages not selected
    /// are hidden meanwhile so they are not read twice, and made visible again at the end. In a FIFO DLQ a hidden
    /// message holds back the rest of its message group, so selected ids behind it are reported not found. A receive
    /// that fails ends the redrive early ([`RedriveReport::interrupted`]) with what moved until then reported.
    pub async fn redrive(
        &self,
        dlq: &QueueRef,
        target: &QueueRef,
        selection: &Selection,
    ) -> Result<RedriveReport, DlqError> {
        if dlq.is_same_queue(target) {
            return Err(DlqError::SameQueue(dlq.name.clone()));
        }
        let mut report = RedriveReport {
            dlq: dlq.clone(),
            target: target.clone(),
            moved: Vec::new(),
            failed: Vec::new(),
            not_deleted: Vec::new(),
            not_found: Vec::new(),
            interrupted: None,
            warnings: Vec::new(),
        };
        // Messages to make visible again at the end: id -> newest receipt handle.
        let mut to_release: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        let scanned = async {
            let mut idle = 0;
            while idle < IDLE_RECEIVES {
                if let Selection::Ids(ids) = selection
                    && ids.iter().all(|id| seen.contains(id))
                {
                    break;
                }
                let batch = self.receive(dlq, 10, REDRIVE_HOLD_SECONDS).await?;
                if batch.is_empty() {
                    break;
                }
                let mut new = 0;
                for message in batch {
                    if !seen.insert(message.message_id.clone()) {
                        // Came back after its hold expired (or a failed delete): release it with its newest handle.
                        to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        continue;
                    }
                    new += 1;
                    if !selection.contains(&message.message_id) {
                        to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        continue;
                    }
                    match self.send_to(target, &message).await {
                        Err(reason) => {
                            report.failed.push((message.message_id.clone(), reason));
                            to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                        }
                        Ok(()) => match self.delete(dlq, &message).await {
                            Ok(()) => report.moved.push(message.message_id.clone()),
                            Err(reason) => {
                                report.not_deleted.push((message.message_id.clone(), reason));
                                to_release.insert(message.message_id.clone(), message.receipt_handle.clone());
                            }
                        },
                    }
                }
                idle = if new == 0 { idle + 1 } else { 0 };
            }
            Ok::<(), DlqError>(())
        }
        .await;
        let handles: Vec<(String, String)> = to_release.into_iter().collect();
        report.warnings = self.release(dlq, &handles, REDRIVE_HOLD_SECONDS).await;
        // What moved before a failing receive is reported all the same.
        report.interrupted = scanned.err().map(|err| err.to_string());
        if let Selection::Ids(ids) = selection
            && report.interrupted.is_none()
        {
            report.not_found = ids.iter().filter(|id| !seen.contains(*id)).cloned().collect();
        }
        Ok(report)
    }

    /// Deletes every message of `dlq` (PurgeQueue) and returns its depth just before. SQS may take up to 60 seconds
    /// to finish, and allows one purge per queue every 60 seconds.
    pub async fn purge(&self, dlq: &QueueRef) -> Result<Depth, DlqError> {
        let depth = self.depth(dlq).await?;
        self.sqs.purge_queue().queue_url(&dlq.url).send().await.map_err(|err| match is_missing_queue(&err) {
            true => DlqError::QueueNotFound(dlq.name.clone()),
            false => sqs_error("PurgeQueue", &dlq.name, &err),
        })?;
        Ok(depth)
    }

    /// Every queue URL, or those whose name starts with `prefix`.
    async fn queue_urls(&self, prefix: Option<&str>) -> Result<Vec<String>, DlqError> {
        let mut urls = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sqs
                .list_queues()
                .set_queue_name_prefix(prefix.map(str::to_owned))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|err| sqs_error("ListQueues", prefix.unwrap_or("(all queues)"), &err))?;
            urls.extend(page.queue_urls().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(urls)
    }

    /// Receives up to `max` (<= 10) messages with every attribute, hiding them for `hold` seconds.
    async fn receive(&self, queue: &QueueRef, max: usize, hold: i32) -> Result<Vec<DeadLetterMessage>, DlqError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(hold)
            .wait_time_seconds(RECEIVE_WAIT_SECONDS)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|err| match is_missing_queue(&err) {
                true => DlqError::QueueNotFound(queue.name.clone()),
                false => sqs_error("ReceiveMessage", &queue.name, &err),
            })?;
        Ok(out.messages().iter().filter_map(DeadLetterMessage::from_sqs).collect())
    }

    /// Sends one message to `target` as a redrive does; the error is the reason to report.
    async fn send_to(&self, target: &QueueRef, message: &DeadLetterMessage) -> Result<(), String> {
        let mut request = self.sqs.send_message().queue_url(&target.url).message_body(&message.body);
        for (name, value) in message.redrive_attributes() {
            let copy = MessageAttributeValue::builder()
                .data_type(value.data_type())
                .set_string_value(value.string_value().map(str::to_owned))
                .set_binary_value(value.binary_value().cloned())
                .build()
                .map_err(|err| format!("message attribute {name}: {err}"))?;
            request = request.message_attributes(name, copy);
        }
        if target.is_fifo() {
            request = request
                .message_group_id(message.message_group_id.as_deref().unwrap_or(DEFAULT_MESSAGE_GROUP))
                .message_deduplication_id(message.deduplication_id.as_deref().unwrap_or(&message.message_id));
        }
        request.send().await.map(|_| ()).map_err(|err| format!("SendMessage to {}: {}", target.name, describe(&err)))
    }

    /// Deletes a received message; the error is the reason to report.
    async fn delete(&self, queue: &QueueRef, message: &DeadLetterMessage) -> Result<(), String> {
        self.sqs
            .delete_message()
            .queue_url(&queue.url)
            .receipt_handle(&message.receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| format!("DeleteMessage from {}: {}", queue.name, describe(&err)))
    }

    /// Makes received messages (id, receipt handle) visible again at once; returns what could not be released.
    async fn release(&self, queue: &QueueRef, handles: &[(String, String)], hold: i32) -> Vec<String> {
        let mut warnings = Vec::new();
        for chunk in handles.chunks(10) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            let later = format!("it becomes visible again within {hold} s");
            match self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for failed in out.failed() {
                        let id =
                            failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i)).map(|(id, _)| id.as_str());
                        warnings.push(format!(
                            "message {} was not made visible again ({}: {}); {later}",
                            id.unwrap_or("?"),
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        ));
                    }
                }
                Err(err) => warnings.push(format!(
                    "{} messages were not made visible again ({}); each becomes visible again within {hold} s",
                    chunk.len(),
                    describe(&err)
                )),
            }
        }
        warnings
    }
}

/// Asks on `prompt` for the queue's name to be typed on `input` before a purge. `yes` skips the question;
/// without it, `is_terminal` must say that `input` is a terminal (nobody can answer otherwise).
pub fn confirm_purge(
    queue: &QueueRef,
    depth: Depth,
    yes: bool,
    is_terminal: bool,
    input: &mut impl BufRead,
    prompt: &mut impl Write,
) -> Result<(), DlqError> {
    if yes {
        return Ok(());
    }
    if !is_terminal {
        return Err(DlqError::NoTerminal { queue: queue.name.clone() });
    }
    write!(
        prompt,
        "This deletes every message of {} ({} visible, {} in flight) for good.\nType the queue name to confirm: ",
        queue.name, depth.visible, depth.in_flight
    )?;
    prompt.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let typed = line.trim();
    if typed == queue.name {
        Ok(())
    } else {
        Err(DlqError::NotConfirmed { queue: queue.name.clone(), typed: typed.to_owned() })
    }
}

/// The `deadLetterTargetArn` of a RedrivePolicy (a JSON string).
fn dead_letter_target(policy: &str) -> Option<String> {
    let policy: Value = serde_json::from_str(policy).ok()?;
    policy.get("deadLetterTargetArn")?.as_str().map(str::to_owned)
}

/// Whether an SQS error says the queue does not exist.
fn is_missing_queue<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code().is_some_and(|code| code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist"))
}

fn sqs_error<E, R>(operation: &'static str, queue: &str, err: &SdkError<E, R>) -> DlqError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    DlqError::Sqs { operation, queue: queue.to_owned(), message: describe(err) }
}

/// `Code: message` for an error the service answered, the chain of causes otherwise (connection refused, no
/// credentials, ...), on one line.
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let text = match err.as_service_error() {
        Some(service) => {
            format!("{}: {}", service.code().unwrap_or("unknown error"), service.message().unwrap_or("(no message)"))
        }
        None => {
            // The chain of causes; DisplayErrorContext would append a Debug dump of the whole error too.
            let mut parts: Vec<String> = Vec::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(current) = cause {
                let text = current.to_string();
                if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                cause = current.source();
            }
            parts.join(": ")
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(value: &str) -> MessageAttributeValue {
        MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type set")
    }

    #[test]
    fn queue_ref_from_url_takes_the_last_path_segment() {
        let queue = QueueRef::from_url("http://127.0.0.1:4566/123456789012/orderflow-dev-InventoryDlq").unwrap();
        assert_eq!(queue.name, "orderflow-dev-InventoryDlq");
        assert!(!queue.is_fifo());
        let fifo = QueueRef::from_url("https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq.fifo/").unwrap();
        assert_eq!(fifo.name, "orders-dlq.fifo");
        assert!(fifo.is_fifo());
        assert!(matches!(QueueRef::from_url("http://host/"), Err(DlqError::InvalidQueue(_))));
        assert!(matches!(QueueRef::from_url("ftp://host/q"), Err(DlqError::InvalidQueue(_))));
    }

    #[test]
    fn dlq_names() {
        for name in ["orderflow-dev-InventoryDlq", "orders-dlq", "orders_DLQ", "ordersDLQ", "orders-dlq.fifo"] {
            assert!(has_dlq_name(name), "{name}");
        }
        for name in ["orderflow-dev-InventoryQueue", "dlqs", "orderflow-dev-Dlqueue", "handle"] {
            assert!(!has_dlq_name(name), "{name}");
        }
    }

    #[test]
    fn queue_names() {
        assert!(is_queue_name("orderflow-dev-InventoryDlq"));
        assert!(is_queue_name("a.fifo"));
        assert!(!is_queue_name(".fifo"));
        assert!(!is_queue_name("has space"));
        assert!(!is_queue_name(&"q".repeat(81)));
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

    #[test]
    fn redrive_target_from_the_policy() {
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":"3"}"#;
        assert_eq!(dead_letter_target(policy).as_deref(), Some("arn:aws:sqs:us-east-1:123456789012:q-dlq"));
        assert_eq!(dead_letter_target("{}"), None);
        assert_eq!(dead_letter_target("not json"), None);
    }

    #[test]
    fn purge_confirmation() {
        let queue = QueueRef { name: "q-dlq".into(), url: "http://h/1/q-dlq".into() };
        let depth = Depth { visible: 2, in_flight: 1 };
        let mut prompt = Vec::new();
        confirm_purge(&queue, depth, true, false, &mut &b""[..], &mut prompt).expect("--yes needs no terminal");
        assert!(prompt.is_empty());

        let refused = confirm_purge(&queue, depth, false, false, &mut &b"q-dlq\n"[..], &mut prompt);
        assert!(matches!(refused, Err(DlqError::NoTerminal { .. })), "{refused:?}");
        assert!(prompt.is_empty(), "nothing asked without a terminal");

        confirm_purge(&queue, depth, false, true, &mut &b"q-dlq\n"[..], &mut prompt).expect("confirmed");
        let asked = String::from_utf8(prompt.clone()).unwrap();
        assert!(asked.contains("q-dlq (2 visible, 1 in flight)") && asked.ends_with("to confirm: "), "{asked}");

        let wrong = confirm_purge(&queue, depth, false, true, &mut &b"yes\n"[..], &mut prompt);
        assert!(matches!(wrong, Err(DlqError::NotConfirmed { ref typed, .. }) if typed == "yes"), "{wrong:?}");
        let eof = confirm_purge(&queue, depth, false, true, &mut &b""[..], &mut prompt);
        assert!(matches!(eof, Err(DlqError::NotConfirmed { .. })), "{eof:?}");
    }
}
