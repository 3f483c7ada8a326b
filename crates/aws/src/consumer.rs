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
    let client = aws_sdk_sqs::Client::new(config);
    let dead_letters = SqsDeadLetters::new(client.clone(), required_env("DLQ_URL")?);
    let processor = SqsBatchProcessor::new(dead_letters).with_concurrency(concurrency);
    let backoff = &SqsRetryBackoff::new(client).with_policy(BackoffPolicy::from_env()?);
    let (processor, handler) = (&processor, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let cutoff = Cutoff::before(event.context.deadline, SystemTime::now(), Instant::now());
        backoff
            .process(processor, event.payload, |record| cutoff.run(record, handler))
            .await
            .map_err(|error| Diagnostic { error_type: "BatchError".into(), error_message: error.to_string() })
    }))
    .await
}

/// What an invocation keeps of its time for the records it has started and its batch response: once less is left,
/// no record starts. A quarter of the invocation's time when that is shorter.
pub const TIME_RESERVED: Duration = Duration::from_secs(2);

/// The instant after which an invocation starts no record.
#[derive(Debug, Clone, Copy)]
struct Cutoff(Option<Instant>);

impl Cutoff {
    /// The cutoff of an invocation whose deadline is `deadline_ms` (epoch milliseconds, the runtime's
    /// `Lambda-Runtime-Deadline-Ms`; 0 when an emulator gives none, which means no cutoff), as of `now`, which is
    /// the instant `start`.
    fn before(deadline_ms: u64, now: SystemTime, start: Instant) -> Self {
        if deadline_ms == 0 {
            return Self(None);
        }
        let remaining = (UNIX_EPOCH + Duration::from_millis(deadline_ms)).duration_since(now).unwrap_or_default();
        let reserved = TIME_RESERVED.min(remaining / 4);
        Self(Some(start + (remaining - reserved)))
    }

    /// Runs `handler` on `record`, or, past the cutoff, reports it as a transient failure without running it.
    async fn run<F, Fut>(self, record: SqsRecord, handler: &F) -> Result<(), HandlerError>
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        if self.0.is_some_and(|cutoff| Instant::now() >= cutoff) {
            return Err(HandlerError::transient("not started: the invocation's time is nearly up"));
        }
        handler(record).await
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
        let after = |deadline_ms| Cutoff::before(deadline_ms, now, start).0.map(|cutoff| cutoff - start);
        // `now` in whole milliseconds is up to 1 ms before `now`: the remaining time is that much shorter.
        let close =
            |got: Option<Duration>, want: Duration| got.is_some_and(|got| want - got < Duration::from_millis(2));
        assert!(close(after(millis + 10_000), Duration::from_secs(8)), "{:?}", after(millis + 10_000));
        assert!(close(after(millis + 4_000), Duration::from_secs(3)), "{:?}", after(millis + 4_000));
        assert_eq!(after(millis - 1_000), Some(Duration::ZERO), "a deadline passed: nothing starts");
        assert_eq!(after(0), None, "no deadline given: no cutoff");
    }

    #[tokio::test]
    async fn past_the_cutoff_a_record_is_not_run_but_failed_transiently() {
        let runs = Cell::new(0);
        let handler = |_record: SqsRecord| {
            runs.set(runs.get() + 1);
            async { Ok(()) }
        };
        let passed = Cutoff(Some(Instant::now()));
        let error = passed.run(record(), &handler).await.unwrap_err();
        assert_eq!((error.class(), runs.get()), ("Transient", 0));
        assert!(Cutoff(None).run(record(), &handler).await.is_ok());
        let later = Cutoff(Some(Instant::now() + Duration::from_secs(60)));
        assert!(later.run(record(), &handler).await.is_ok());
        assert_eq!(runs.get(), 2);
    }
}
