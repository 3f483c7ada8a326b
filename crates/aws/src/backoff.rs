//! Exponential backoff of SQS retries by message visibility, with jitter.
//!
//! Lambda leaves a record reported in `batchItemFailures` in its queue, and the queue delivers it again once the
//! queue's visibility timeout has passed: every retry would come after the same short wait, hammering a dependency
//! that is down, and a handful of them would send a healthy message to its DLQ within a minute.
//! [`SqsRetryBackoff`] raises the visibility timeout of each failed record to its [`BackoffPolicy::retry_delay`]:
//! `base * 2^(receiveCount - 1)`, capped, shortened by a random fraction of at most `jitter` (records that failed
//! together do not come back together), and never shorter than the wait its handler asked for
//! ([`HandlerError::transient_after`], e.g. an open circuit's `retry_in`), itself lengthened by up to `jitter`. It
//! does so with `ChangeMessageVisibilityBatch` on the record's source queue (its URL found once per queue ARN with
//! `GetQueueUrl`, then cached). A failure to change the visibility is logged and never fails the batch: the record
//! then simply comes back after the queue's own timeout. `docs/retry-budget.md` has what outage each default
//! survives.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use orderflow_toolkit::batch::{BatchError, BatchOutcome, receive_count};
use orderflow_toolkit::{DeadLetterSink, HandlerError, SqsBatchProcessor, SqsRecord};

use crate::config::{ConfigError, env_or};
use crate::dynamo::describe;

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(43_200);

/// How long a failed SQS record waits before its next delivery: after the delivery numbered n failed,
/// `min(cap, base * 2^(n - 1))` scaled by a factor drawn uniformly from `[1 - jitter, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// The largest fraction, from 0 to 1, by which a delay is shortened (or a handler's wait lengthened).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// 2 s, 4 s, 8 s, ... up to 5 minutes, each up to 20% shorter: with `MaxReceiveCount` 13 (infra/stateful.yaml)
    /// a message is retried for at least 22.9 minutes before it reaches its DLQ.
    fn default() -> Self {
        Self { base: Duration::from_secs(2), cap: Duration::from_secs(300), jitter: 0.2 }
    }
}

impl BackoffPolicy {
    /// The policy from `RETRY_BACKOFF_BASE_SECONDS`, `RETRY_BACKOFF_MAX_SECONDS` and `RETRY_BACKOFF_JITTER` (a
    /// fraction), each defaulting to [`BackoffPolicy::default`]; a value that is not valid names its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let default = Self::default();
        Self::from_settings(
            env_or("RETRY_BACKOFF_BASE_SECONDS", default.base.as_secs())?,
            env_or("RETRY_BACKOFF_MAX_SECONDS", default.cap.as_secs())?,
            env_or("RETRY_BACKOFF_JITTER", default.jitter)?,
        )
    }

    /// The policy from the values of the three variables of [`Self::from_env`], checked.
    fn from_settings(base_seconds: u64, max_seconds: u64, jitter: f64) -> Result<Self, ConfigError> {
        let invalid = |name, value: String, reason: String| ConfigError::Invalid { name, value, reason };
        if base_seconds == 0 {
            let reason = "must be at least 1 (0 would redeliver at once)".to_owned();
            return Err(invalid("RETRY_BACKOFF_BASE_SECONDS", base_seconds.to_string(), reason));
        }
        if max_seconds < base_seconds {
            let reason = format!("must be at least RETRY_BACKOFF_BASE_SECONDS ({base_seconds})");
            return Err(invalid("RETRY_BACKOFF_MAX_SECONDS", max_seconds.to_string(), reason));
        }
        if max_seconds > MAX_VISIBILITY_TIMEOUT.as_secs() {
            let reason =
                format!("must be at most {} (SQS's longest visibility timeout)", MAX_VISIBILITY_TIMEOUT.as_secs());
            return Err(invalid("RETRY_BACKOFF_MAX_SECONDS", max_seconds.to_string(), reason));
        }
        if !(0.0..=1.0).contains(&jitter) {
            let reason = "must be a fraction from 0 to 1".to_owned();
            return Err(invalid("RETRY_BACKOFF_JITTER", jitter.to_string(), reason));
        }
        Ok(Self { base: Duration::from_secs(base_seconds), cap: Duration::from_secs(max_seconds), jitter })
    }

    /// The delay after the delivery numbered `receive_count` (1 for the first) failed, before jitter:
    /// `base * 2^(receive_count - 1)`, never above the cap nor SQS's 12 hours.
    pub fn exponential_delay(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.max(1) - 1;
        2u32.checked_pow(exponent)
            .and_then(|factor| self.base.checked_mul(factor))
            .unwrap_or(Duration::MAX)
            .min(self.cap)
            .min(MAX_VISIBILITY_TIMEOUT)
    }

    /// The visibility timeout after the delivery numbered `receive_count` failed, for a jitter `draw` from
    /// `[0, 1)`: the exponential delay shortened by `jitter * draw` of itself, in whole seconds (rounded up, as SQS
    /// counts them).
    ///
    /// ```
    /// use std::time::Duration;
    /// use orderflow_aws::backoff::BackoffPolicy;
    ///
    /// let policy = BackoffPolicy::default();
    /// let longest: Vec<_> = (1..=5).map(|n| policy.visibility_timeout(n, 0.0).as_secs()).collect();
    /// assert_eq!(longest, [2, 4, 8, 16, 32]);
    /// let shortest: Vec<_> = (1..=5).map(|n| policy.shortest_visibility_timeout(n).as_secs()).collect();
    /// assert_eq!(shortest, [2, 4, 7, 13, 26]); // 80%, rounded up
    /// assert_eq!(policy.visibility_timeout(100, 0.0), Duration::from_secs(300));
    /// // From its first delivery, a message that keeps failing is delivered for the 13th time after 22.9 min at
    /// // the soonest: the outage it survives with `MaxReceiveCount` 13.
    /// assert_eq!(policy.shortest_time_to_receive(13), Duration::from_secs(1372));
    /// ```
    pub fn visibility_timeout(&self, receive_count: u32, draw: f64) -> Duration {
        whole_seconds(self.exponential_delay(receive_count).as_secs_f64() * (1.0 - self.jitter_share(draw)))
    }

    /// The visibility timeout of a record whose handler asked to wait `retry_after` (None: it did not): the longer
    /// of [`Self::visibility_timeout`] and `retry_after` lengthened by `jitter * draw` of itself (so the records an
    /// open circuit refused do not all come back at the instant it lets one trial call through), at most 12 hours.
    pub fn retry_delay(&self, receive_count: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
        let backoff = self.visibility_timeout(receive_count, draw);
        let Some(wait) = retry_after else {
            return backoff;
        };
        let asked = whole_seconds(wait.min(MAX_VISIBILITY_TIMEOUT).as_secs_f64() * (1.0 + self.jitter_share(draw)));
        backoff.max(asked).min(MAX_VISIBILITY_TIMEOUT)
    }

    /// The shortest visibility timeout after the delivery numbered `receive_count` failed (jitter at its largest).
    pub fn shortest_visibility_timeout(&self, receive_count: u32) -> Duration {
        self.visibility_timeout(receive_count, 1.0)
    }

    /// The least time from a message's first delivery to its delivery numbered `receive_count`, when every
    /// delivery before it failed and was backed off: with `maxReceiveCount` = `receive_count`, the longest outage
    /// of a dependency that the message is sure to outlive (its last delivery comes after the outage).
    pub fn shortest_time_to_receive(&self, receive_count: u32) -> Duration {
        let mut total = Duration::ZERO;
        for failed in 1..receive_count {
            let delay = self.shortest_visibility_timeout(failed);
            if self.exponential_delay(failed) == self.exponential_delay(failed.saturating_add(1)) {
                // Capped: every later delay is this one (at most ~33 doublings get here).
                return total.saturating_add(delay.saturating_mul(receive_count - failed));
            }
            total = total.saturating_add(delay);
        }
        total
    }

    /// The share of a delay that `draw` takes off (or adds to a handler's wait): `jitter * draw`, both kept in
    /// [0, 1] (the fields are public, and a value outside must not panic the float-to-duration steps).
    fn jitter_share(&self, draw: f64) -> f64 {
        let unit = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        unit(self.jitter) * unit(draw)
    }
}

/// `seconds` rounded up to whole seconds (the callers' values are at most 2 x 12 hours).
fn whole_seconds(seconds: f64) -> Duration {
    // `as` saturates: NaN and negatives would become 0, never a panic.
    Duration::from_secs(seconds.ceil() as u64)
}

/// Uniform jitter draws from `[0, 1)`: a xorshift64* generator, cheap and lock-free, seeded once per process
/// ([`Self::per_process`]) or by a test ([`Self::seeded`], the same draws for the same seed).
#[derive(Debug)]
pub struct JitterDraws {
    state: AtomicU64,
}

impl JitterDraws {
    /// Seeded from the process's own random hash keys, so that the instances of a function draw differently.
    pub fn per_process() -> Self {
        Self::seeded(RandomState::new().build_hasher().finish())
    }

    pub fn seeded(seed: u64) -> Self {
        // xorshift's state must not be zero.
        Self { state: AtomicU64::new(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed }) }
    }

    /// The next draw, in `[0, 1)`.
    pub fn next_draw(&self) -> f64 {
        let step = |x: u64| {
            let x = x ^ (x >> 12);
            let x = x ^ (x << 25);
            x ^ (x >> 27)
        };
        // The closure never declines, so both arms hold the previous state.
        let previous = match self.state.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))) {
            Ok(previous) | Err(previous) => previous,
        };
        let scrambled = step(previous).wrapping_mul(0x2545_F491_4F6C_DD1D);
        // The top 53 bits, as many as an f64 holds exactly.
        (scrambled >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the backoff needs of one delivery: its receipt handle, source queue and receive count, and once it failed,
/// the wait its handler asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`.
    pub event_source_arn: String,
    pub receive_count: u32,
    /// [`HandlerError::transient_after`]'s wait, if the handler failed with one.
    pub retry_after: Option<Duration>,
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
                        receive_count: receive_count(message),
                        retry_after: None,
                    })
                })
                .collect(),
        )
    }

    /// The deliveries the batch's response reports as failed, each with the wait its handler asked for.
    pub fn failed(self, outcome: &BatchOutcome) -> Vec<Delivery> {
        let response = &outcome.response;
        if response.batch_item_failures.is_empty() {
            return Vec::new();
        }
        let failed: HashSet<&str> =
            response.batch_item_failures.iter().map(|failure| failure.item_identifier.as_str()).collect();
        self.0
            .into_iter()
            .filter(|delivery| failed.contains(delivery.message_id.as_str()))
            .map(|delivery| Delivery {
                retry_after: outcome.retry_after.get(&delivery.message_id).copied(),
                ..delivery
            })
            .collect()
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
    jitter: JitterDraws,
    queue_urls: Mutex<HashMap<String, String>>,
}

impl SqsRetryBackoff {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            policy: BackoffPolicy::default(),
            jitter: JitterDraws::per_process(),
            queue_urls: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_policy(mut self, policy: BackoffPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The same jitter draws on every run (tests); by default they are seeded per process.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = JitterDraws::seeded(seed);
        self
    }

    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// The visibility timeout a failed delivery gets: [`BackoffPolicy::retry_delay`] with the next jitter draw.
    pub fn visibility_timeout(&self, delivery: &Delivery) -> Duration {
        self.policy.retry_delay(delivery.receive_count, delivery.retry_after, self.jitter.next_draw())
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
        let outcome = processor.process_with_retry_hints(event, handler).await?;
        self.back_off(deliveries.failed(&outcome)).await;
        Ok(outcome.response)
    }

    /// Raises the visibility timeout of every failed delivery per [`Self::visibility_timeout`]. Never fails: what
    /// cannot be changed is logged, and that record comes back after its queue's own timeout.
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
            let timeout = self.visibility_timeout(delivery);
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(&delivery.receipt_handle)
                .visibility_timeout(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX))
                .build();
            // Both required fields are set above, so the build does not fail; if it did, the record would simply
            // come back after the queue's own timeout.
            let Ok(entry) = entry else { continue };
            request = request.entries(entry);
            tracing::info!(
                message_id = delivery.message_id,
                receive_count = delivery.receive_count,
                retry_in_seconds = timeout.as_secs(),
                asked_seconds = delivery.retry_after.map(|wait| wait.as_secs_f64()),
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
        if let Some(url) = self.queue_urls.lock().unwrap_or_else(PoisonError::into_inner).get(arn) {
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
        self.queue_urls.lock().unwrap_or_else(PoisonError::into_inner).insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::BatchItemFailure;
    use orderflow_toolkit::MemoryDeadLetters;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const TWELVE_HOURS: Duration = MAX_VISIBILITY_TIMEOUT;

    fn no_jitter(base: Duration, cap: Duration) -> BackoffPolicy {
        BackoffPolicy { base, cap, jitter: 0.0 }
    }

    #[test]
    fn the_delay_doubles_with_each_delivery_from_the_base() {
        let policy = no_jitter(Duration::from_secs(3), Duration::from_secs(60));
        let timeouts: Vec<_> = (0..=7).map(|n| policy.visibility_timeout(n, 0.5).as_secs()).collect();
        // Receive count 0 (never reported by SQS) counts as the first delivery.
        assert_eq!(timeouts, [3, 3, 6, 12, 24, 48, 60, 60]);
    }

    #[test]
    fn the_delay_is_capped_and_never_overflows_for_huge_receive_counts() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.exponential_delay(9), Duration::from_secs(300), "256 s, then the cap");
        for receive_count in [31, 32, 33, 64, u32::MAX] {
            assert_eq!(policy.exponential_delay(receive_count), Duration::from_secs(300), "{receive_count}");
            assert_eq!(policy.visibility_timeout(receive_count, 0.0), Duration::from_secs(300), "{receive_count}");
            assert_eq!(policy.shortest_visibility_timeout(receive_count), Duration::from_secs(240), "{receive_count}");
        }
        let uncapped = no_jitter(Duration::from_secs(1), Duration::MAX);
        assert_eq!(uncapped.visibility_timeout(u32::MAX, 0.0), TWELVE_HOURS);
        assert_eq!(uncapped.retry_delay(u32::MAX, Some(Duration::MAX), 0.99), TWELVE_HOURS);
        // 1 + 2 + ... + 32768 s, then 12 hours for each of the other deliveries before the last; summed at once.
        let capped_deliveries = u64::from(u32::MAX - 1 - 16);
        let total = Duration::from_secs(65_535 + 43_200 * capped_deliveries);
        assert_eq!(uncapped.shortest_time_to_receive(u32::MAX), total);
        assert_eq!(uncapped.shortest_time_to_receive(0), Duration::ZERO);
        assert_eq!(uncapped.shortest_time_to_receive(1), Duration::ZERO, "no failed delivery before the first");
    }

    #[test]
    fn a_fractional_delay_rounds_up_to_whole_seconds() {
        let policy = no_jitter(Duration::from_millis(300), Duration::from_secs(10));
        let timeouts: Vec<_> = (1..=4).map(|n| policy.visibility_timeout(n, 0.0).as_secs()).collect();
        assert_eq!(timeouts, [1, 1, 2, 3]);
    }

    #[test]
    fn jitter_shortens_a_delay_by_at_most_its_fraction_and_spreads_the_records() {
        let policy = BackoffPolicy::default();
        let draws = JitterDraws::seeded(7);
        let timeouts: Vec<u64> = (0..1000).map(|_| policy.visibility_timeout(9, draws.next_draw()).as_secs()).collect();
        assert!(timeouts.iter().all(|&t| (240..=300).contains(&t)), "within [80%, 100%] of 300 s");
        let (shortest, longest) = (timeouts.iter().min().unwrap(), timeouts.iter().max().unwrap());
        assert!(*shortest < 245 && *longest > 295, "spread over the range: {shortest}..={longest}");
    }

    #[test]
    fn the_same_seed_draws_the_same_jitter_and_another_seed_does_not() {
        let run = |seed| {
            let draws = JitterDraws::seeded(seed);
            (0..20).map(|_| draws.next_draw()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        assert_ne!(run(0), vec![0.0; 20], "a zero seed still draws");
        let per_process = (JitterDraws::per_process(), JitterDraws::per_process());
        assert_ne!(per_process.0.next_draw(), per_process.1.next_draw(), "each instance seeds its own draws");
    }

    #[test]
    fn a_wait_the_handler_asked_for_outlasts_a_shorter_backoff_with_jitter_on_top() {
        let policy = BackoffPolicy::default();
        let circuit_retry_in = Duration::from_secs(30);
        let draws = JitterDraws::seeded(3);
        for _ in 0..200 {
            let delay = policy.retry_delay(1, Some(circuit_retry_in), draws.next_draw()).as_secs();
            assert!((30..=36).contains(&delay), "30 s lengthened by at most 20%, not the 2 s backoff: {delay}");
        }
        // A longer backoff stands: the wait is a floor, not a replacement.
        assert_eq!(policy.retry_delay(9, Some(circuit_retry_in), 0.0), Duration::from_secs(300));
        // A circuit whose trial call is in flight refuses with a zero wait: the usual backoff applies.
        assert_eq!(policy.retry_delay(3, Some(Duration::ZERO), 0.0), policy.visibility_timeout(3, 0.0));
        assert_eq!(policy.retry_delay(3, None, 0.5), policy.visibility_timeout(3, 0.5));
    }

    #[test]
    fn out_of_range_jitter_or_draws_do_not_panic_and_stay_in_bounds() {
        for jitter in [f64::NAN, f64::INFINITY, -1.0, 5.0] {
            let policy = BackoffPolicy { jitter, ..BackoffPolicy::default() };
            for draw in [f64::NAN, -3.0, 0.9, 7.0] {
                let delay = policy.retry_delay(4, Some(Duration::from_secs(10)), draw);
                assert!(
                    delay >= Duration::from_secs(10) && delay <= Duration::from_secs(20),
                    "{jitter} {draw}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn the_settings_are_checked_naming_the_variable() {
        assert_eq!(BackoffPolicy::from_settings(2, 300, 0.2).unwrap(), BackoffPolicy::default());
        for (base, max, jitter, variable) in [
            (0, 300, 0.2, "RETRY_BACKOFF_BASE_SECONDS"),
            (10, 5, 0.2, "RETRY_BACKOFF_MAX_SECONDS"),
            (2, 43_201, 0.2, "RETRY_BACKOFF_MAX_SECONDS"),
            (2, 300, 1.5, "RETRY_BACKOFF_JITTER"),
            (2, 300, -0.1, "RETRY_BACKOFF_JITTER"),
            (2, 300, f64::NAN, "RETRY_BACKOFF_JITTER"),
        ] {
            let error = BackoffPolicy::from_settings(base, max, jitter).unwrap_err();
            assert!(matches!(error, ConfigError::Invalid { name, .. } if name == variable), "{error}");
        }
    }

    /// The `Default` of a parameter of infra/stateful.yaml.
    fn stateful_default(name: &str) -> u32 {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/stateful.yaml");
        let template = std::fs::read_to_string(path).unwrap();
        let declaration = format!("  {name}:");
        let mut lines = template.lines().skip_while(|line| line.trim_end() != declaration).skip(1);
        let default = lines.find_map(|line| line.trim().strip_prefix("Default:")).unwrap();
        default.trim().trim_matches('"').parse().unwrap()
    }

    #[test]
    fn the_default_iac_keeps_a_failing_message_out_of_its_dlq_for_over_20_minutes() {
        let max_receive_count = stateful_default("MaxReceiveCount");
        let at_least = Duration::from_secs(20 * 60);
        // Visibility changed by the backoff, jitter at its largest (docs/retry-budget.md).
        let backed_off = BackoffPolicy::default().shortest_time_to_receive(max_receive_count);
        assert!(backed_off >= at_least, "MaxReceiveCount {max_receive_count}: {backed_off:?}");
        // SQS itself down, so no visibility can be changed: each retry after the queue's own timeout.
        let visibility_timeout = stateful_default("VisibilityTimeoutSeconds");
        let unchanged = Duration::from_secs(u64::from(visibility_timeout) * u64::from(max_receive_count - 1));
        assert!(unchanged >= at_least, "VisibilityTimeoutSeconds {visibility_timeout}: {unchanged:?}");
        assert!(visibility_timeout >= 6 * 10, "Lambda's advice: at least 6 x the functions' 10 s timeout");
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_its_shortest_and_the_longer_of_backoff_and_wait(
            base in 1u64..=3_600,
            extra in 0u64..=43_200,
            jitter in 0.0f64..=1.0,
            receive_count: u32,
            draw in 0.0f64..1.0,
            wait in proptest::option::of(0u64..=100_000),
        ) {
            let cap = (base + extra).min(43_200).max(base);
            let policy = BackoffPolicy::from_settings(base, cap, jitter).unwrap();
            let retry_after = wait.map(Duration::from_secs);
            let delay = policy.retry_delay(receive_count, retry_after, draw);
            prop_assert!(delay >= policy.shortest_visibility_timeout(receive_count));
            prop_assert!(delay <= TWELVE_HOURS);
            let longest_backoff = policy.visibility_timeout(receive_count, 0.0);
            match retry_after {
                None => prop_assert!(delay <= longest_backoff),
                Some(wait) => {
                    prop_assert!(delay >= wait.min(TWELVE_HOURS));
                    let longest_wait = whole_seconds(wait.as_secs_f64() * (1.0 + jitter)).min(TWELVE_HOURS);
                    prop_assert!(delay <= longest_backoff.max(longest_wait));
                }
            }
        }
    }

    #[test]
    fn queue_arns_give_name_and_account() {
        assert_eq!(parse_queue_arn("arn:aws:sqs:eu-west-1:123456789012:orders"), Some(("orders", "123456789012")));
        assert_eq!(parse_queue_arn("arn:aws-cn:sqs:cn-north-1:1:q.fifo"), Some(("q.fifo", "1")));
        for bad in ["", "arn:aws:sns:eu-west-1:1:topic", "arn:aws:sqs:eu-west-1:1:", "arn:aws:sqs:eu-west-1"] {
            assert_eq!(parse_queue_arn(bad), None, "{bad}");
        }
    }

    fn failures(ids: &[&str]) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for id in ids {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = (*id).into();
            response.batch_item_failures.push(failure);
        }
        response
    }

    #[test]
    fn deliveries_are_taken_out_and_matched_to_failures_with_their_waits() {
        let mut event: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "a", "receiptHandle": "ra", "eventSourceARN": "arn:aws:sqs:r:1:q",
             "attributes": {"ApproximateReceiveCount": "3"}},
            {"messageId": "b", "receiptHandle": "rb", "eventSourceARN": "arn:aws:sqs:r:1:q"},
            {"messageId": "c"}
        ]}))
        .unwrap();
        let deliveries = Deliveries::take(&mut event);
        assert_eq!(event.records[0].receipt_handle, None, "moved out, not copied");
        let outcome = BatchOutcome {
            response: failures(&["a", "c"]),
            retry_after: BTreeMap::from([("a".to_owned(), Duration::from_secs(20))]),
        };
        let failed = deliveries.clone().failed(&outcome);
        assert_eq!(
            failed,
            [Delivery {
                message_id: "a".into(),
                receipt_handle: "ra".into(),
                event_source_arn: "arn:aws:sqs:r:1:q".into(),
                receive_count: 3,
                retry_after: Some(Duration::from_secs(20)),
            }]
        );
        assert!(deliveries.failed(&BatchOutcome::default()).is_empty());
    }

    #[tokio::test]
    async fn a_permanent_failure_is_never_backed_off_and_a_waiting_record_keeps_its_wait() {
        let record = |id: &str, body: &str| {
            json!({"messageId": id, "receiptHandle": format!("r{id}"), "body": body,
                   "eventSourceARN": "arn:aws:sqs:r:1:q", "attributes": {"ApproximateReceiveCount": "1"}})
        };
        let mut event: SqsEvent = serde_json::from_value(json!({"Records": [
            record("poison", "garbage"), record("throttled", "later"), record("refused", "open")]}))
        .unwrap();
        let deliveries = Deliveries::take(&mut event);
        let dead_letters = MemoryDeadLetters::default();
        let outcome = SqsBatchProcessor::new(dead_letters.clone())
            .process_with_retry_hints(event, |record| async move {
                match record.body.as_str() {
                    "later" => Err(HandlerError::transient("throttled")),
                    "open" => Err(HandlerError::transient_after("circuit open", Duration::from_secs(25))),
                    _ => Err(HandlerError::permanent("not an event")),
                }
            })
            .await
            .unwrap();
        let failed = deliveries.failed(&outcome);
        let waits: Vec<_> = failed.iter().map(|d| (d.message_id.as_str(), d.retry_after)).collect();
        assert_eq!(waits, [("throttled", None), ("refused", Some(Duration::from_secs(25)))]);
        assert_eq!(dead_letters.letters()[0].message_id, "poison", "in its DLQ at once, no visibility change");
        let policy = BackoffPolicy::default();
        assert!(policy.retry_delay(1, failed[1].retry_after, 0.0) >= Duration::from_secs(25));
        assert_eq!(policy.retry_delay(1, failed[0].retry_after, 0.0), Duration::from_secs(2));
    }
}
