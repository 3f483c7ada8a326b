//! The Lambda runtime every SQS consumer runs.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::{HandlerError, SqsBatchProcessor, SqsRecord};

use crate::backoff::{BackoffPolicy, SqsRetryBackoff};
use crate::config::required_env;
use crate::dead_letter::SqsDeadLetters;

/// Runs an SQS-triggered function: every batch is processed with up to `concurrency` records in flight, each by
/// `handler`; poison records go to the dead-letter queue at `DLQ_URL` and the partial batch response names the
/// records to deliver again, each after a visibility timeout that grows with its receive count ([`BackoffPolicy`],
/// `RETRY_BACKOFF_BASE_SECONDS`, `RETRY_BACKOFF_MAX_SECONDS` and `RETRY_BACKOFF_JITTER`, default 2 s doubling up
/// to 5 min, up to 20% shorter), and no sooner than a wait the handler asked for
/// ([`HandlerError::transient_after`]). A batch that cannot have a partial response fails the invocation as a
/// `BatchError`. A record not started while [`TIME_RESERVED`] of the invocation's time is left is not run but
/// delivered again, so a slow batch acknowledges what it finished instead of timing out as a whole.
///
/// The `main` and handler of a consumer (it runs inside Lambda, or `cargo lambda watch`, with `DLQ_URL` and its
/// tables set by the IaC). The write carries the consumer's idempotency: a redelivery writes nothing.
///
/// ```no_run
/// use aws_sdk_dynamodb::Client;
/// use orderflow_aws::dynamo::key;
/// use orderflow_aws::outbox::put_new_with_event;
/// use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};
/// use orderflow_toolkit::{Envelope, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderConfirmed { order_id: String }
/// impl Event for OrderConfirmed {
///     const TYPE: &'static str = "OrderConfirmed";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.orders";
/// }
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct ShipmentScheduled { order_id: String }
/// impl Event for ShipmentScheduled {
///     const TYPE: &'static str = "ShipmentScheduled";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.shipping";
/// }
///
/// struct Shipping { registry: Registry, db: Client, table: String, outbox_table: String }
///
/// impl Shipping {
///     async fn handle(&self, record: SqsRecord) -> Result<(), HandlerError> {
///         // Malformed, unknown type or version, invalid data: Permanent, to the DLQ with the reason.
///         let confirmed: Envelope<OrderConfirmed> = self.registry.read_bus_event(&record.body)?.decode()?;
///         let order_id = confirmed.data.order_id.clone();
///         let event = OutboxRecord::caused_by(&confirmed, ShipmentScheduled { order_id: order_id.clone() });
///         // ONE TransactWriteItems: the shipment if absent, and its event into the outbox.
///         let item = key(format!("SHIPMENT#{order_id}"), "SHIPMENT");
///         // A failure is a `StoreError`, transient (throttling, timeouts) or permanent (an invalid request).
///         let written = put_new_with_event(&self.db, &self.table, item, &self.outbox_table, &event).await?;
///         tracing::info!(order_id, ?written, "applied"); // Committed, or Duplicate on a redelivery
///         Ok(())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), lambda_runtime::Error> {
///     orderflow_toolkit::logging::init();
///     let config = load_sdk_config().await;
///     let shipping = Shipping {
///         registry: Registry::new().register::<OrderConfirmed>(),
///         db: Client::new(&config),
///         table: required_env("SHIPMENTS_TABLE")?,
///         outbox_table: required_env("OUTBOX_TABLE")?,
///     };
///     run_sqs_consumer(&config, 4, |record| shipping.handle(record)).await
/// }
/// ```
pub async fn run_sqs_consumer<F, Fut>(
    config: &SdkConfig,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsRecord) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    run_sqs_consumer_with_deadline(config, concurrency, |record, _| handler(record)).await
}

/// [`run_sqs_consumer`] for a handler that also needs the [`Deadline`] of the invocation its record runs in, e.g.
/// for the in-progress expiry of an idempotency lock
/// ([`Idempotency::run`](orderflow_toolkit::Idempotency::run)'s `remaining_time`).
pub async fn run_sqs_consumer_with_deadline<F, Fut>(
    config: &SdkConfig,
    concurrency: usize,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsRecord, Deadline) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let client = aws_sdk_sqs::Client::new(config);
    let dead_letters = SqsDeadLetters::new(client.clone(), required_env("DLQ_URL")?);
    let processor = SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let backoff = &SqsRetryBackoff::new(client).with_policy(BackoffPolicy::from_env()?);
    let (processor, handler) = (&processor, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        let cutoff = Cutoff::before(deadline, SystemTime::now(), Instant::now());
        backoff
            .process(processor, event.payload, |record| cutoff.run(|| handler(record, deadline)))
            .await
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}

/// The end of an invocation, as the Lambda runtime gives it (`Lambda-Runtime-Deadline-Ms`); unknown when an
/// emulator gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<SystemTime>);

impl Deadline {
    /// No deadline known.
    pub const UNKNOWN: Self = Self(None);

    /// The deadline `deadline_ms` epoch milliseconds; 0, what an emulator without deadlines sends, is
    /// [`Self::UNKNOWN`].
    pub fn from_epoch_millis(deadline_ms: u64) -> Self {
        match deadline_ms {
            0 => Self::UNKNOWN,
            ms => Self(Some(UNIX_EPOCH + Duration::from_millis(ms))),
        }
    }

    /// The deadline `at`.
    pub fn at(at: SystemTime) -> Self {
        Self(Some(at))
    }

    /// What is left of the invocation at `now`: zero once the deadline has passed, `None` when it is unknown.
    pub fn remaining_at(self, now: SystemTime) -> Option<Duration> {
        self.0.map(|deadline| deadline.duration_since(now).unwrap_or_default())
    }

    /// What is left of the invocation now (see [`Self::remaining_at`]).
    pub fn remaining(self) -> Option<Duration> {
        self.remaining_at(SystemTime::now())
    }
}

/// What an invocation keeps of its time for the records it has started and its batch response: once less is left,
/// no record starts. A quarter of the invocation's time when that is shorter.
pub const TIME_RESERVED: Duration = Duration::from_secs(2);

/// The instant after which an invocation starts no record.
#[derive(Debug, Clone, Copy)]
struct Cutoff(Option<Instant>);

impl Cutoff {
    /// The cutoff of an invocation ending at `deadline` (an unknown one means no cutoff), as of `now`, which is the
    /// instant `start`.
    fn before(deadline: Deadline, now: SystemTime, start: Instant) -> Self {
        let Some(remaining) = deadline.remaining_at(now) else { return Self(None) };
        let reserved = TIME_RESERVED.min(remaining / 4);
        Self(Some(start + (remaining - reserved)))
    }

    /// Runs the record `handle` starts, or, past the cutoff, reports it as a transient failure without running it.
    async fn run<Fut>(self, handle: impl FnOnce() -> Fut) -> Result<(), HandlerError>
    where
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        if self.0.is_some_and(|cutoff| Instant::now() >= cutoff) {
            return Err(HandlerError::transient("not started: the invocation's time is nearly up"));
        }
        handle().await
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn record() -> SqsRecord {
        SqsRecord { message_id: "m-1".into(), body: "{}".into(), receive_count: 1, attributes: Default::default() }
    }

    #[test]
    fn an_invocation_keeps_two_seconds_or_a_quarter_of_its_time() {
        let (now, start) = (SystemTime::now(), Instant::now());
        let millis = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let after = |deadline_ms| {
            Cutoff::before(Deadline::from_epoch_millis(deadline_ms), now, start).0.map(|cutoff| cutoff - start)
        };
        // `now` in whole milliseconds is up to 1 ms before `now`: the remaining time is that much shorter.
        let close =
            |got: Option<Duration>, want: Duration| got.is_some_and(|got| want - got < Duration::from_millis(2));
        assert!(close(after(millis + 10_000), Duration::from_secs(8)), "{:?}", after(millis + 10_000));
        assert!(close(after(millis + 4_000), Duration::from_secs(3)), "{:?}", after(millis + 4_000));
        assert_eq!(after(millis - 1_000), Some(Duration::ZERO), "a deadline passed: nothing starts");
        assert_eq!(after(0), None, "no deadline given: no cutoff");
    }

    #[test]
    fn a_deadline_tells_the_time_left_until_it_and_zero_is_an_unknown_deadline() {
        let deadline = Deadline::from_epoch_millis(1_700_000_010_000);
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_007_500);
        assert_eq!(deadline, Deadline::at(UNIX_EPOCH + Duration::from_millis(1_700_000_010_000)));
        assert_eq!(deadline.remaining_at(now), Some(Duration::from_millis(2_500)));
        assert_eq!(deadline.remaining_at(now + Duration::from_secs(3)), Some(Duration::ZERO), "passed: none left");
        assert_eq!(Deadline::from_epoch_millis(0), Deadline::UNKNOWN);
        assert_eq!(Deadline::UNKNOWN.remaining_at(now), None);
    }

    #[tokio::test]
    async fn past_the_cutoff_a_record_is_not_run_but_failed_transiently() {
        let runs = Cell::new(0);
        let handler = |_record: SqsRecord| {
            runs.set(runs.get() + 1);
            async { Ok(()) }
        };
        let passed = Cutoff(Some(Instant::now()));
        let error = passed.run(|| handler(record())).await.unwrap_err();
        assert_eq!((error.class(), runs.get()), ("Transient", 0));
        assert!(Cutoff(None).run(|| handler(record())).await.is_ok());
        let later = Cutoff(Some(Instant::now() + Duration::from_secs(60)));
        assert!(later.run(|| handler(record())).await.is_ok());
        assert_eq!(runs.get(), 2);
    }
}
