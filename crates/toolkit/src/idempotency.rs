//! Idempotency with the semantics of Powertools for AWS Lambda: a record per idempotency key makes a handler's
//! effect run once, and repeats of the same request get the first result back.
//!
//! [`Idempotency::run`] does, for a key the caller derives from the request (a message id, an `Idempotency-Key`
//! header, an event id):
//!
//! 1. hashes the payload (SHA-256 of its JSON) and writes an `INPROGRESS` record in ONE conditional write, which
//!    succeeds only when no record of the key exists, the existing one has expired (`expiration`, a TTL in epoch
//!    seconds), or it is an `INPROGRESS` lock whose invocation is over (`in_progress_expiry`, epoch milliseconds,
//!    set to now + the invocation's remaining time, so the lock of a crashed or timed-out invocation frees itself);
//! 2. runs `f`;
//! 3. on success, stores the `COMPLETED` record with the result as JSON and a fresh `expiration` (default 1 h,
//!    [`Idempotency::expires_after`]); on failure, deletes the `INPROGRESS` record so a retry can run.
//!
//! When the conditional write finds a live record instead, nothing runs and:
//! - a different payload hash is [`IdempotencyError::PayloadMismatch`] (permanent: the key was reused for another
//!   request, retrying cannot help);
//! - an `INPROGRESS` record is [`IdempotencyError::InProgress`] (transient: another invocation holds the key; when
//!   it finishes, a retry gets its result, and when it crashed, its lock expires);
//! - a `COMPLETED` record returns its stored result, deserialized, without running `f`.
//!
//! Both errors convert into [`HandlerError`] with those classes, so with [`crate::SqsBatchProcessor`] a duplicate
//! in flight becomes a batch item failure and a reused key goes to the dead-letter queue.
//!
//! The store is a port ([`IdempotencyStore`]) with an in-memory adapter here ([`MemoryIdempotencyStore`]) and a
//! DynamoDB adapter in `orderflow-aws` (`DynamoIdempotencyStore`).
//!
//! ```
//! use std::time::Duration;
//! use orderflow_toolkit::HandlerError;
//! use orderflow_toolkit::idempotency::{Idempotency, IdempotencyError, MemoryIdempotencyStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryIdempotencyStore::default();
//! let idempotency = Idempotency::new(store.clone()).expires_after(Duration::from_secs(3600));
//! let remaining = Duration::from_secs(30); // from the Lambda context's deadline
//! let charge = |cents: u32| async move { Ok::<_, HandlerError>(format!("charged {cents}")) };
//!
//! // The first call runs the effect and stores its result...
//! let first = idempotency.run("payment-42", &1250, remaining, || charge(1250)).await.unwrap();
//! // ...a repeat returns it without running anything (this function would fail)...
//! let not_run = || async { Err(HandlerError::transient("not run")) };
//! let again: String = idempotency.run("payment-42", &1250, remaining, not_run).await.unwrap();
//! assert_eq!(first, again);
//! // ...and the same key with another payload is an error that no retry can fix.
//! let reused = idempotency.run("payment-42", &999, remaining, || charge(999)).await;
//! assert!(matches!(reused, Err(IdempotencyError::PayloadMismatch { .. })));
//! assert!(matches!(HandlerError::from(reused.unwrap_err()), HandlerError::Permanent(_)));
//! // A new message costs two store writes (INPROGRESS, COMPLETED), a repeat one (the conditional write that fails).
//! assert_eq!(store.write_requests(), 4);
//! # });
//! ```
//!
//! # This generic way or a conditional business write
//!
//! This way wraps any effect, at the price of two extra write requests per new message (the `INPROGRESS` put and
//! the `COMPLETED` update) on top of the effect's own write: three write requests where the effect is one
//! DynamoDB write. It is not atomic with the effect: if the invocation dies after the effect and before the
//! `COMPLETED` write, the lock expires and a redelivery runs `f` again, so `f` should still tolerate a rare repeat.
//! Use it when the effect is not a write you control in DynamoDB: a call to a payment provider, an e-mail, another
//! service's API, several stores; or when the handler is expensive and repeats should skip it. orderflow's payment
//! uses it: the generic way around its provider call.
//!
//! When the effect is a DynamoDB write (or one `TransactWriteItems`) of your own, make that write carry the
//! idempotency condition instead: ONE write request per message, and the effect happens exactly once, because the
//! record and the effect commit together. Two forms:
//! - The record itself in the effect's transaction, when a repeat must get the first response back (an HTTP API
//!   answering a retried `POST`). Build the `COMPLETED` record with [`IdempotencyRecord::completed`] and put it in
//!   the effect's transaction on the condition of [`IdempotencyStore::put_in_progress`], so a live record cancels
//!   the transaction and an expired one is replaced (`orderflow_aws::DynamoIdempotencyStore::transact_put`); the
//!   live record comes back in the cancellation (`DynamoIdempotencyStore::existing_record`), and
//!   [`IdempotencyRecord::replay`] answers the repeat from it as `run` does. orderflow's orders-api does this: the
//!   record of a request's `Idempotency-Key` is in its placement transaction, with the order and its outbox event
//!   (`crates/orders-store`).
//! - The business item as the record, when the effect's outcome is readable from the state it left. orderflow's
//!   inventory does this, its own conditional business write (`crates/inventory-store/src/dynamo.rs`): the
//!   reservation item `RESERVATION#<order>` is put with `attribute_not_exists(pk)` in the same transaction as the
//!   stock updates and the outbox event, so a duplicate fails the condition and changes nothing, and its outcome is
//!   the reservation's status.

use std::convert::Infallible;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::HandlerError;

/// How long a `COMPLETED` record answers repeats, unless [`Idempotency::expires_after`] says otherwise.
pub const DEFAULT_EXPIRES_AFTER: Duration = Duration::from_secs(60 * 60);

/// The state of an idempotency record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// An invocation holds the key and is running the effect.
    InProgress,
    /// The effect ran; the record holds its result.
    Completed,
}

impl RecordStatus {
    /// The stored form: `INPROGRESS` or `COMPLETED`, as Powertools writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "INPROGRESS",
            Self::Completed => "COMPLETED",
        }
    }
}

impl FromStr for RecordStatus {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "INPROGRESS" => Ok(Self::InProgress),
            "COMPLETED" => Ok(Self::Completed),
            other => Err(format!("unknown idempotency record status {other:?}")),
        }
    }
}

/// One idempotency key's record, as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The idempotency key the caller gave.
    pub key: String,
    pub status: RecordStatus,
    /// SHA-256 (hex) of the payload's JSON; see [`payload_hash`].
    pub payload_hash: String,
    /// Epoch seconds after which the record no longer counts (the table's TTL attribute `expiration`).
    pub expiration: u64,
    /// Epoch milliseconds after which an `INPROGRESS` record no longer locks the key: the end of the invocation
    /// that wrote it. `None` on `COMPLETED` records.
    pub in_progress_expiry: Option<u64>,
    /// The result as JSON (`COMPLETED` records).
    pub response: Option<String>,
}

impl IdempotencyRecord {
    /// The `COMPLETED` record of `key` for `payload`, holding `response` and answering repeats until
    /// `expires_after` after `now`: the record of the second way (see the [module docs](self)), which the caller
    /// writes in the same transaction as its effect, on the condition [`Self::is_replaceable_at`] states.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::{Duration, SystemTime};
    /// use orderflow_toolkit::idempotency::{IdempotencyError, IdempotencyRecord, payload_hash};
    ///
    /// let request = serde_json::json!({"sku": "SKU-1", "quantity": 2});
    /// let an_hour = Duration::from_secs(3600);
    /// let record = IdempotencyRecord::completed("checkout-1", &request, "o-1", SystemTime::now(), an_hour).unwrap();
    /// // ...committed with the effect. A repeat's transaction is cancelled by it, and answered from it:
    /// let again: Result<String, IdempotencyError<Infallible>> = record.clone().replay(&payload_hash(&request).unwrap());
    /// assert_eq!(again.unwrap(), "o-1");
    /// let other = serde_json::json!({"sku": "SKU-1", "quantity": 3});
    /// let reused: Result<String, IdempotencyError<Infallible>> = record.replay(&payload_hash(&other).unwrap());
    /// assert!(matches!(reused, Err(IdempotencyError::PayloadMismatch { key }) if key == "checkout-1"));
    /// ```
    pub fn completed<P, T>(
        key: &str,
        payload: &P,
        response: &T,
        now: SystemTime,
        expires_after: Duration,
    ) -> Result<Self, IdempotencyError<Infallible>>
    where
        P: Serialize + ?Sized,
        T: Serialize + ?Sized,
    {
        let hash = payload_hash(payload).map_err(|err| not_serializable(key, "payload", &err))?;
        Self::completed_with_hash(key.to_owned(), hash, response, now, expires_after)
    }

    fn completed_with_hash<T: Serialize + ?Sized>(
        key: String,
        payload_hash: String,
        response: &T,
        now: SystemTime,
        expires_after: Duration,
    ) -> Result<Self, IdempotencyError<Infallible>> {
        let response = serde_json::to_string(response).map_err(|err| not_serializable(&key, "result", &err))?;
        Ok(Self {
            key,
            status: RecordStatus::Completed,
            payload_hash,
            expiration: epoch_seconds(now + expires_after),
            in_progress_expiry: None,
            response: Some(response),
        })
    }

    /// The answer this live record gives a request whose payload hashes to `payload_hash`, the one
    /// [`Idempotency::run`] gives when its write finds the record: [`IdempotencyError::PayloadMismatch`] for
    /// another payload, [`IdempotencyError::InProgress`] while the record is `INPROGRESS`, and the stored result,
    /// deserialized, once it is `COMPLETED`.
    pub fn replay<T: DeserializeOwned, E>(self, payload_hash: &str) -> Result<T, IdempotencyError<E>> {
        let key = self.key;
        if self.payload_hash != payload_hash {
            return Err(IdempotencyError::PayloadMismatch { key });
        }
        match self.status {
            RecordStatus::InProgress => Err(IdempotencyError::InProgress { key }),
            RecordStatus::Completed => {
                let Some(response) = self.response else {
                    return Err(IdempotencyError::Serialization {
                        key,
                        reason: "the COMPLETED record has no result".into(),
                    });
                };
                serde_json::from_str(&response).map_err(|err| IdempotencyError::Serialization {
                    key,
                    reason: format!("the stored result does not deserialize: {err}"),
                })
            }
        }
    }

    /// Whether a new `INPROGRESS` record may replace this one at `now`: the condition of
    /// [`IdempotencyStore::put_in_progress`], `expiration < now_s OR (status = INPROGRESS AND in_progress_expiry <
    /// now_ms)` (and no record at all).
    pub fn is_replaceable_at(&self, now: SystemTime) -> bool {
        self.expiration < epoch_seconds(now)
            || (self.status == RecordStatus::InProgress
                && self.in_progress_expiry.is_some_and(|expiry| expiry < epoch_millis(now)))
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn epoch_millis(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// SHA-256, in lowercase hex, of the payload's JSON. Structs serialize their fields in declaration order and
/// `serde_json::Value` objects in key order, so equal payloads hash equally.
pub fn payload_hash<P: Serialize + ?Sized>(payload: &P) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(payload)?;
    Ok(format!("{:x}", Sha256::digest(&json)))
}

/// What [`IdempotencyStore::put_in_progress`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The `INPROGRESS` record is written: the caller holds the key.
    Written,
    /// A live record of the key exists; nothing was written.
    Exists(IdempotencyRecord),
}

/// Where idempotency records live. Each method is one request to the store.
pub trait IdempotencyStore: Send + Sync {
    /// A failed request; its [`HandlerError`] class says whether retrying the message may help.
    type Error: std::error::Error + Into<HandlerError> + Send + Sync + 'static;

    /// Writes `record` (`INPROGRESS`) in one atomic conditional write, when no record of its key exists or the
    /// existing one [is replaceable](IdempotencyRecord::is_replaceable_at) at `now`; otherwise writes nothing and
    /// returns the existing record.
    fn put_in_progress(
        &self,
        record: &IdempotencyRecord,
        now: SystemTime,
    ) -> impl Future<Output = Result<PutOutcome, Self::Error>> + Send;

    /// Replaces the record of `record.key` with this `COMPLETED` one.
    fn complete(&self, record: &IdempotencyRecord) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Deletes the record of `key` (nothing to delete is fine).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why [`Idempotency::run`] returned no result. `E` is the error of the wrapped function.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError<E = HandlerError> {
    /// Another invocation holds the key and has not finished (transient).
    #[error("{}", in_progress(key))]
    InProgress { key: String },
    /// The key was already used with a different payload (permanent).
    #[error("idempotency key {key:?} was already used with a different payload")]
    PayloadMismatch { key: String },
    /// The payload or the stored result could not be (de)serialized (permanent).
    #[error("idempotency key {key:?}: {reason}")]
    Serialization { key: String, reason: String },
    /// The store failed; its class says whether a retry may help.
    #[error("idempotency store: {0}")]
    Store(HandlerError),
    /// The wrapped function failed; its record was deleted so a retry can run it.
    #[error("{0}")]
    Handler(E),
}

impl<E: Into<HandlerError>> From<IdempotencyError<E>> for HandlerError {
    fn from(err: IdempotencyError<E>) -> Self {
        let err: IdempotencyError<Infallible> = match err {
            IdempotencyError::Handler(err) => return err.into(),
            IdempotencyError::Store(HandlerError::Transient { reason, retry_after }) => {
                return HandlerError::Transient { reason: format!("idempotency store: {reason}"), retry_after };
            }
            IdempotencyError::Store(HandlerError::Permanent(reason)) => {
                return HandlerError::Permanent(format!("idempotency store: {reason}"));
            }
            IdempotencyError::InProgress { key } => return HandlerError::transient(in_progress(&key)),
            IdempotencyError::PayloadMismatch { key } => IdempotencyError::PayloadMismatch { key },
            IdempotencyError::Serialization { key, reason } => IdempotencyError::Serialization { key, reason },
        };
        HandlerError::Permanent(err.to_string())
    }
}

fn not_serializable<E>(key: &str, what: &str, err: &serde_json::Error) -> IdempotencyError<E> {
    IdempotencyError::Serialization { key: key.to_owned(), reason: format!("{what} is not serializable: {err}") }
}

fn in_progress(key: &str) -> String {
    format!("idempotency key {key:?} is being processed by another invocation; retry later")
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Runs functions at most once per idempotency key (see the [module docs](self)). Clones share the store.
#[derive(Clone)]
pub struct Idempotency<S> {
    store: S,
    expires_after: Duration,
    clock: Clock,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("store", &self.store).field("expires_after", &self.expires_after).finish()
    }
}

impl<S: IdempotencyStore> Idempotency<S> {
    /// Records expire [`DEFAULT_EXPIRES_AFTER`] (1 h) after completion; the clock is the system's.
    pub fn new(store: S) -> Self {
        Self { store, expires_after: DEFAULT_EXPIRES_AFTER, clock: Arc::new(SystemTime::now) }
    }

    /// How long a record answers repeats (its `expiration` is set this far ahead, on write and on completion).
    /// Choose it longer than the window in which duplicates can arrive (SQS: the retention period of the queue).
    pub fn expires_after(mut self, expires_after: Duration) -> Self {
        self.expires_after = expires_after;
        self
    }

    /// Replaces the clock (tests: expiry without waiting).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs `f` once for `key` (see the [module docs](self)), or returns the result stored by the run that did.
    ///
    /// `remaining_time` is what is left of the invocation (the Lambda context's deadline minus now): the
    /// `INPROGRESS` lock expires then, so a crashed invocation does not block the key until `expiration`.
    ///
    /// If the `COMPLETED` record cannot be stored after `f` succeeded, the result is still returned (and the
    /// failure logged): the effect happened, and failing the message now would make the queue redeliver it after
    /// the lock has expired and run `f` again. (Powertools raises there.) If `f` fails and the `INPROGRESS`
    /// record cannot be deleted, `f`'s error is returned and the lock frees itself at `in_progress_expiry`.
    pub async fn run<P, T, E, F, Fut>(
        &self,
        key: &str,
        payload: &P,
        remaining_time: Duration,
        f: F,
    ) -> Result<T, IdempotencyError<E>>
    where
        P: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let hash = payload_hash(payload).map_err(|err| not_serializable(key, "payload", &err))?;
        let now = (self.clock)();
        let record = IdempotencyRecord {
            key: key.to_owned(),
            status: RecordStatus::InProgress,
            payload_hash: hash,
            expiration: epoch_seconds(now + self.expires_after),
            in_progress_expiry: Some(epoch_millis(now + remaining_time)),
            response: None,
        };
        let outcome = self.store.put_in_progress(&record, now).await.map_err(|e| IdempotencyError::Store(e.into()))?;
        if let PutOutcome::Exists(existing) = outcome {
            return existing.replay(&record.payload_hash);
        }

        match f().await {
            Ok(value) => {
                self.save_result(record, &value).await;
                Ok(value)
            }
            Err(err) => {
                if let Err(delete_error) = self.store.delete(key).await {
                    let delete_error: HandlerError = delete_error.into();
                    tracing::error!(
                        key,
                        error = %delete_error,
                        "deleting the INPROGRESS record after a failure failed; the key stays locked until its \
                         in-progress expiry"
                    );
                }
                Err(IdempotencyError::Handler(err))
            }
        }
    }

    /// Stores the `COMPLETED` record; a failure is logged, not returned (see [`Self::run`]).
    async fn save_result<T: Serialize>(&self, record: IdempotencyRecord, value: &T) {
        let key = record.key.clone();
        let completed = match IdempotencyRecord::completed_with_hash(
            record.key,
            record.payload_hash,
            value,
            (self.clock)(),
            self.expires_after,
        ) {
            Ok(completed) => completed,
            Err(err) => {
                tracing::error!(key, error = %err, "the key stays INPROGRESS");
                return;
            }
        };
        if let Err(err) = self.store.complete(&completed).await {
            let err: HandlerError = err.into();
            tracing::error!(
                key,
                error = %err,
                "storing the COMPLETED record failed; the effect happened, repeats get InProgress until the lock \
                 expires"
            );
        }
    }
}

/// A request to [`MemoryIdempotencyStore`] failed (injected with [`MemoryIdempotencyStore::fail_next_writes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected store failure ({0})")]
pub struct MemoryStoreError(pub &'static str);

impl From<MemoryStoreError> for HandlerError {
    fn from(err: MemoryStoreError) -> Self {
        HandlerError::transient(err)
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    records: std::collections::HashMap<String, IdempotencyRecord>,
    write_requests: u64,
    failing_writes: u32,
}

/// The in-memory adapter, with the same conditions as the DynamoDB one; for handler tests. Clones share the same
/// records. It counts write requests as DynamoDB bills them: one per request, also when a condition fails.
#[derive(Debug, Clone, Default)]
pub struct MemoryIdempotencyStore {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryIdempotencyStore {
    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a write request and fails it when a failure was injected.
    fn write(&self, operation: &'static str) -> Result<MutexGuard<'_, MemoryState>, MemoryStoreError> {
        let mut state = self.lock();
        state.write_requests += 1;
        if state.failing_writes > 0 {
            state.failing_writes -= 1;
            return Err(MemoryStoreError(operation));
        }
        Ok(state)
    }

    /// The record of `key`, expired or not.
    pub fn record(&self, key: &str) -> Option<IdempotencyRecord> {
        self.lock().records.get(key).cloned()
    }

    /// Write requests so far.
    pub fn write_requests(&self) -> u64 {
        self.lock().write_requests
    }

    /// Makes the next `n` write requests fail (transient).
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing_writes = n;
    }

    /// Puts a record as it is, without conditions (tests: a record left by a crashed invocation).
    pub fn insert(&self, record: IdempotencyRecord) {
        self.lock().records.insert(record.key.clone(), record);
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    type Error = MemoryStoreError;

    async fn put_in_progress(&self, record: &IdempotencyRecord, now: SystemTime) -> Result<PutOutcome, Self::Error> {
        let mut state = self.write("put in progress")?;
        match state.records.get(&record.key) {
            Some(existing) if !existing.is_replaceable_at(now) => Ok(PutOutcome::Exists(existing.clone())),
            _ => {
                state.records.insert(record.key.clone(), record.clone());
                Ok(PutOutcome::Written)
            }
        }
    }

    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), Self::Error> {
        self.write("complete")?.records.insert(record.key.clone(), record.clone());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Self::Error> {
        self.write("delete")?.records.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    const REMAINING: Duration = Duration::from_secs(30);

    /// A clock tests move by hand, starting at a fixed instant.
    #[derive(Clone)]
    struct TestClock(Arc<AtomicU64>);

    impl TestClock {
        fn new() -> Self {
            Self(Arc::new(AtomicU64::new(1_700_000_000_000)))
        }
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
        fn advance(&self, by: Duration) {
            self.0.fetch_add(u64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
        }
    }

    fn setup() -> (Idempotency<MemoryIdempotencyStore>, MemoryIdempotencyStore, TestClock) {
        let store = MemoryIdempotencyStore::default();
        let clock = TestClock::new();
        let c = clock.clone();
        (Idempotency::new(store.clone()).with_clock(move || c.now()), store, clock)
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Receipt {
        order_id: String,
        amount: u32,
    }

    /// A handler that counts its runs and answers with the run number.
    async fn counting(runs: &AtomicU32) -> Result<u32, HandlerError> {
        Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[tokio::test]
    async fn the_first_call_runs_and_stores_the_completed_result_with_a_one_hour_expiration() {
        let (idempotency, store, clock) = setup();
        let receipt = Receipt { order_id: "o-1".into(), amount: 1250 };
        let payload = json!({"order_id": "o-1", "amount": 1250});
        let result = idempotency
            .run("k", &payload, REMAINING, || async { Ok::<_, HandlerError>(receipt.clone()) })
            .await
            .unwrap();
        assert_eq!(result, receipt);
        let record = store.record("k").unwrap();
        assert_eq!(record.status, RecordStatus::Completed);
        assert_eq!(record.payload_hash, payload_hash(&payload).unwrap());
        assert_eq!(record.payload_hash.len(), 64);
        assert_eq!(record.expiration, epoch_seconds(clock.now()) + 3600);
        assert_eq!(record.in_progress_expiry, None);
        assert_eq!(serde_json::from_str::<Receipt>(record.response.as_deref().unwrap()).unwrap(), receipt);
        assert_eq!(store.write_requests(), 2, "INPROGRESS put + COMPLETED update");
    }

    #[tokio::test]
    async fn while_running_the_record_is_in_progress_with_the_invocation_deadline() {
        let (idempotency, store, clock) = setup();
        let seen = Mutex::new(None);
        idempotency
            .run("k", "p", Duration::from_millis(2500), || async {
                *seen.lock().unwrap() = store.record("k");
                Ok::<_, HandlerError>(())
            })
            .await
            .unwrap();
        let seen = seen.into_inner().unwrap().expect("a record while f runs");
        assert_eq!(seen.status, RecordStatus::InProgress);
        assert_eq!(seen.in_progress_expiry, Some(epoch_millis(clock.now()) + 2500));
        assert_eq!(seen.expiration, epoch_seconds(clock.now()) + 3600);
        assert_eq!(seen.response, None);
    }

    #[tokio::test]
    async fn a_repeat_returns_the_stored_result_without_running_f() {
        let (idempotency, store, _) = setup();
        let runs = AtomicU32::new(0);
        let first = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap();
        let second = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap();
        assert_eq!((first, second), (1, 1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(store.write_requests(), 3, "2 for the first call, 1 (the failed conditional put) for the repeat");
    }

    #[tokio::test]
    async fn a_repeat_while_in_progress_is_a_transient_error() {
        let (idempotency, _, _) = setup();
        let repeat = Mutex::new(None);
        idempotency
            .run("k", "p", REMAINING, || async {
                let result = idempotency.run("k", "p", REMAINING, || async { Ok::<u32, HandlerError>(2) }).await;
                *repeat.lock().unwrap() = Some(result.map_err(HandlerError::from));
                Ok::<_, HandlerError>(1)
            })
            .await
            .unwrap();
        let err = repeat.into_inner().unwrap().unwrap().unwrap_err();
        assert!(matches!(err, HandlerError::Transient { .. }), "{err:?}");
        assert!(err.reason().contains("\"k\" is being processed by another invocation"), "{err}");
    }

    #[tokio::test]
    async fn the_in_progress_error_is_the_in_progress_variant() {
        let (idempotency, store, clock) = setup();
        store.insert(IdempotencyRecord {
            key: "k".into(),
            status: RecordStatus::InProgress,
            payload_hash: payload_hash("p").unwrap(),
            expiration: epoch_seconds(clock.now()) + 3600,
            in_progress_expiry: Some(epoch_millis(clock.now()) + 1000),
            response: None,
        });
        let runs = AtomicU32::new(0);
        let err = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap_err();
        assert!(matches!(&err, IdempotencyError::InProgress { key } if key == "k"), "{err:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_same_key_with_another_payload_is_a_permanent_error() {
        let (idempotency, store, _) = setup();
        let runs = AtomicU32::new(0);
        idempotency.run("k", &json!({"amount": 1}), REMAINING, || counting(&runs)).await.unwrap();
        let err = idempotency.run("k", &json!({"amount": 2}), REMAINING, || counting(&runs)).await.unwrap_err();
        assert!(matches!(&err, IdempotencyError::PayloadMismatch { key } if key == "k"), "{err:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let handler_error = HandlerError::from(err);
        assert_eq!(
            handler_error,
            HandlerError::Permanent("idempotency key \"k\" was already used with a different payload".into())
        );
        assert_eq!(store.record("k").unwrap().response.as_deref(), Some("1"), "the first result is kept");
    }

    #[tokio::test]
    async fn a_mismatched_payload_is_an_error_even_while_in_progress() {
        let (idempotency, _, _) = setup();
        let inner = Mutex::new(None);
        idempotency
            .run("k", "p", REMAINING, || async {
                let result = idempotency.run("k", "other", REMAINING, || async { Ok::<u32, ()>(2) }).await;
                *inner.lock().unwrap() = Some(result);
                Ok::<_, HandlerError>(1)
            })
            .await
            .unwrap();
        let inner = inner.into_inner().unwrap().unwrap();
        assert!(matches!(inner, Err(IdempotencyError::PayloadMismatch { .. })), "{inner:?}");
    }

    #[tokio::test]
    async fn an_expired_completed_record_is_overwritten_and_f_runs_again() {
        let (idempotency, store, clock) = setup();
        let idempotency = idempotency.expires_after(Duration::from_secs(60));
        let runs = AtomicU32::new(0);
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
        clock.advance(Duration::from_secs(60));
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1, "not expired yet");
        clock.advance(Duration::from_secs(1));
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 2, "expired");
        assert_eq!(store.record("k").unwrap().expiration, epoch_seconds(clock.now()) + 60);
        // An expired record no longer guards its payload either.
        clock.advance(Duration::from_secs(61));
        assert_eq!(idempotency.run("k", "other", REMAINING, || counting(&runs)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_lock_of_a_crashed_invocation_expires_with_its_remaining_time() {
        let (idempotency, store, clock) = setup();
        // The invocation dies inside f: its future is dropped, the INPROGRESS record stays.
        let crashed = idempotency.run("k", "p", Duration::from_secs(5), || async {
            std::future::pending::<Result<u32, HandlerError>>().await
        });
        assert!(tokio::time::timeout(Duration::from_millis(10), crashed).await.is_err());
        assert_eq!(store.record("k").unwrap().status, RecordStatus::InProgress);

        let runs = AtomicU32::new(0);
        clock.advance(Duration::from_secs(5));
        let err = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap_err();
        assert!(matches!(err, IdempotencyError::InProgress { .. }), "at the deadline the lock still holds: {err:?}");
        clock.advance(Duration::from_millis(1));
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
        assert_eq!(store.record("k").unwrap().status, RecordStatus::Completed);
    }

    #[tokio::test]
    async fn a_failure_of_f_deletes_the_record_so_a_retry_runs() {
        let (idempotency, store, _) = setup();
        let err = idempotency
            .run("k", "p", REMAINING, || async { Err::<u32, _>(HandlerError::transient("provider down")) })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IdempotencyError::Handler(HandlerError::Transient { reason, .. }) if reason == "provider down")
        );
        assert_eq!(HandlerError::from(err), HandlerError::transient("provider down"), "f's class is kept");
        assert_eq!(store.record("k"), None);
        assert_eq!(store.write_requests(), 2, "INPROGRESS put + delete");
        let runs = AtomicU32::new(0);
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_permanent_failure_of_f_stays_permanent() {
        let (idempotency, _, _) = setup();
        let err = idempotency
            .run("k", "p", REMAINING, || async { Err::<u32, _>(HandlerError::permanent("invalid card")) })
            .await
            .unwrap_err();
        assert_eq!(HandlerError::from(err), HandlerError::permanent("invalid card"));
    }

    #[tokio::test]
    async fn a_store_failure_before_f_runs_nothing_and_is_transient() {
        let (idempotency, store, _) = setup();
        store.fail_next_writes(1);
        let runs = AtomicU32::new(0);
        let err = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap_err();
        assert!(matches!(err, IdempotencyError::Store(HandlerError::Transient { .. })), "{err:?}");
        assert_eq!(HandlerError::from(err).class(), "Transient");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(store.record("k"), None);
    }

    #[tokio::test]
    async fn a_failed_completion_still_returns_the_result_and_leaves_the_lock() {
        let (idempotency, store, clock) = setup();
        let result = idempotency
            .run("k", "p", REMAINING, || async {
                store.fail_next_writes(1);
                Ok::<u32, HandlerError>(7)
            })
            .await
            .unwrap();
        assert_eq!(result, 7);
        assert_eq!(store.record("k").unwrap().status, RecordStatus::InProgress);
        clock.advance(REMAINING + Duration::from_millis(1));
        let runs = AtomicU32::new(0);
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1, "the lock expired");
    }

    #[tokio::test]
    async fn a_failed_delete_returns_the_error_of_f_and_the_lock_expires() {
        let (idempotency, store, clock) = setup();
        let err = idempotency
            .run("k", "p", REMAINING, || async {
                store.fail_next_writes(1);
                Err::<u32, _>(HandlerError::transient("boom"))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, IdempotencyError::Handler(_)), "{err:?}");
        let runs = AtomicU32::new(0);
        let blocked = idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap_err();
        assert!(matches!(blocked, IdempotencyError::InProgress { .. }), "{blocked:?}");
        clock.advance(REMAINING + Duration::from_millis(1));
        assert_eq!(idempotency.run("k", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_stored_result_of_another_type_is_a_permanent_error() {
        let (idempotency, _, _) = setup();
        idempotency.run("k", "p", REMAINING, || async { Ok::<_, HandlerError>("text".to_owned()) }).await.unwrap();
        let err = idempotency.run("k", "p", REMAINING, || async { Ok::<u32, HandlerError>(1) }).await.unwrap_err();
        assert!(
            matches!(&err, IdempotencyError::Serialization { reason, .. } if reason.contains("does not deserialize"))
        );
        assert_eq!(HandlerError::from(err).class(), "Permanent");
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let (idempotency, _, _) = setup();
        let runs = AtomicU32::new(0);
        assert_eq!(idempotency.run("a", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
        assert_eq!(idempotency.run("b", "p", REMAINING, || counting(&runs)).await.unwrap(), 2);
        assert_eq!(idempotency.run("a", "p", REMAINING, || counting(&runs)).await.unwrap(), 1);
    }

    #[test]
    fn a_completed_record_holds_the_payload_hash_the_response_and_its_expiration() {
        let now = TestClock::new().now();
        let payload = json!({"amount": 1250});
        let receipt = Receipt { order_id: "o-1".into(), amount: 1250 };
        let record = IdempotencyRecord::completed("k", &payload, &receipt, now, Duration::from_secs(60)).unwrap();
        assert_eq!(
            record,
            IdempotencyRecord {
                key: "k".into(),
                status: RecordStatus::Completed,
                payload_hash: payload_hash(&payload).unwrap(),
                expiration: epoch_seconds(now) + 60,
                in_progress_expiry: None,
                response: Some(serde_json::to_string(&receipt).unwrap()),
            }
        );
        assert!(!record.is_replaceable_at(now + Duration::from_secs(60)), "live until its expiration");
        assert!(record.is_replaceable_at(now + Duration::from_secs(61)));
    }

    #[test]
    fn a_response_that_does_not_serialize_is_a_serialization_error() {
        let not_json = std::collections::HashMap::from([((1, 2), "a map with non-string keys")]);
        let err =
            IdempotencyRecord::completed("k", "p", &not_json, SystemTime::now(), DEFAULT_EXPIRES_AFTER).unwrap_err();
        assert!(
            matches!(&err, IdempotencyError::Serialization { key, reason } if key == "k" && reason.starts_with("result is not serializable")),
            "{err:?}"
        );
    }

    #[test]
    fn a_found_record_replays_as_run_answers_a_repeat() {
        let now = TestClock::new().now();
        let completed = IdempotencyRecord::completed("k", "p", &7_u32, now, DEFAULT_EXPIRES_AFTER).unwrap();
        let same = payload_hash("p").unwrap();
        assert_eq!(completed.clone().replay::<u32, ()>(&same).unwrap(), 7);
        let other = completed.clone().replay::<u32, ()>(&payload_hash("q").unwrap()).unwrap_err();
        assert!(matches!(&other, IdempotencyError::PayloadMismatch { key } if key == "k"), "{other:?}");
        let wrong_type = completed.clone().replay::<String, ()>(&same).unwrap_err();
        assert!(matches!(wrong_type, IdempotencyError::Serialization { .. }), "{wrong_type:?}");
        let in_progress = IdempotencyRecord {
            status: RecordStatus::InProgress,
            in_progress_expiry: Some(epoch_millis(now)),
            response: None,
            ..completed
        };
        let err = in_progress.replay::<u32, ()>(&same).unwrap_err();
        assert!(matches!(&err, IdempotencyError::InProgress { key } if key == "k"), "{err:?}");
    }

    #[test]
    fn equal_payloads_hash_equally_whatever_their_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": [1, 2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b": [1, 2], "a": 1}"#).unwrap();
        assert_eq!(payload_hash(&a).unwrap(), payload_hash(&b).unwrap());
        assert_ne!(payload_hash(&a).unwrap(), payload_hash(&json!({"a": 2, "b": [1, 2]})).unwrap());
        // SHA-256 of the JSON text `"p"`.
        assert_eq!(payload_hash("p").unwrap(), format!("{:x}", Sha256::digest(b"\"p\"")));
    }

    #[test]
    fn status_round_trips_through_its_stored_form() {
        for status in [RecordStatus::InProgress, RecordStatus::Completed] {
            assert_eq!(status.as_str().parse::<RecordStatus>().unwrap(), status);
        }
        assert!("EXPIRED".parse::<RecordStatus>().is_err());
    }

    #[test]
    fn replaceable_follows_the_write_condition() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000_500);
        let record = |status, expiration, in_progress_expiry| IdempotencyRecord {
            key: "k".into(),
            status,
            payload_hash: String::new(),
            expiration,
            in_progress_expiry,
            response: None,
        };
        use RecordStatus::{Completed, InProgress};
        assert!(!record(Completed, 10_000, None).is_replaceable_at(now), "expiration == now: still live");
        assert!(record(Completed, 9_999, None).is_replaceable_at(now));
        assert!(!record(InProgress, 20_000, Some(10_000_500)).is_replaceable_at(now));
        assert!(record(InProgress, 20_000, Some(10_000_499)).is_replaceable_at(now));
        assert!(!record(InProgress, 20_000, None).is_replaceable_at(now), "no in-progress expiry: until expiration");
        assert!(!record(Completed, 20_000, Some(0)).is_replaceable_at(now), "only INPROGRESS locks expire early");
    }
}
