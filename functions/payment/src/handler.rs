//! The payment function: charges an order at the payment provider (over HTTP, behind a circuit breaker) and
//! records the outcome with its event in ONE transaction; voids the payment when its order is cancelled.
//!
//! - `PaymentRequested`: if the order's payment is already recorded (a decision, or a void tombstone), nothing
//!   happens (a redelivery neither charges again nor emits again). Otherwise the provider decides (declined above
//!   the customer's limit), and `PAYMENT#<order>` (conditional on none existing) is written with
//!   `PaymentAuthorized` or `PaymentDeclined`.
//! - The provider call and that write run under the charge's idempotency lock ([`Idempotency::run`], key
//!   `CHARGE#<order>`, payload the request's data): two deliveries of one request at the same time never both
//!   call the provider. The one that finds the lock held fails transiently (the queue retries it, and the retry
//!   finds the payment recorded). A repeat that finds the lock completed but no payment (the charge lost to its
//!   order's cancellation, whose tombstone is not written yet) is a duplicate, the provider not called. The lock
//!   expires with the invocation holding it: after a crash between the charge and its write, the retry charges
//!   the same payment id again, which the provider answers as before without charging twice, and records it with
//!   the same conditional write. The same order requested with other data while the lock lives is permanent.
//! - `OrderCancelled`: an `AUTHORIZED` payment is voided at the provider, then `AUTHORIZED -> VOIDED` is written
//!   with `PaymentVoided` in one transaction. With no payment recorded, the provider voids the payment id first
//!   (a charge being made right now then cannot authorize) and a `VOIDED` tombstone is written (no event), so a
//!   later `PaymentRequested` charges nothing. `DECLINED` or `VOIDED`: nothing to do.
//! - A charge and its order's cancellation processed at the same time: every write is conditional and the loser
//!   re-reads and acts. A charge the provider authorized whose write finds the tombstone voids the authorization
//!   (the provider's void is idempotent) and records nothing; a tombstone write that finds a payment voids that.
//! - An unavailable provider, or an open circuit, is transient: the record is retried by the queue. After
//!   `FAILURE_THRESHOLD` consecutive provider failures the circuit opens and calls fail fast for `COOL_DOWN`,
//!   sparing the provider. A refusal is an answer from a working provider: it does not count against the circuit,
//!   and it is permanent.
//! - Anything else is a permanent failure: the record goes to the DLQ with the reason.

use std::future::Future;
use std::time::Duration;

use orderflow_aws::StoreError;
use orderflow_aws::consumer::Deadline;
use orderflow_domain::Decimal;
use orderflow_domain::events::{
    self, OrderCancelled, PaymentAuthorized, PaymentDeclined, PaymentRequested, PaymentVoided,
};
use orderflow_toolkit::batch::log_effect;
use orderflow_toolkit::circuit::{CircuitBreaker, CircuitError, CircuitOpen};
use orderflow_toolkit::idempotency::{Idempotency, IdempotencyError, IdempotencyStore};
use orderflow_toolkit::outbox::Written;
use orderflow_toolkit::{Envelope, EnvelopeError, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::provider::{
    Charge, ChargeOutcome, PaymentProvider, ProviderError, ProviderRefused, ProviderUnavailable, VoidOutcome,
};
use crate::store::{PaymentRecord, PaymentStatus, PaymentStore};

/// Consecutive provider failures that open the circuit.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an open circuit fails fast before it lets a trial call through.
pub const COOL_DOWN: Duration = Duration::from_secs(10);
/// How long a charge's lock holds when the invocation's deadline is unknown (an emulator that sends none):
/// Lambda's longest invocation, so a lock never frees itself while its holder may still be charging.
pub const LOCK_WITHOUT_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// What a record did. A charge's effect is also the result its idempotency record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Authorized,
    Declined,
    /// The request or the cancellation was applied before: nothing charged, voided or emitted.
    Duplicate,
    /// The authorized payment was voided at the provider and recorded `VOIDED` with `PaymentVoided`.
    Voided,
    /// The order was cancelled before it was charged: a `VOIDED` tombstone stops any later charge.
    VoidedBeforeCharge,
    /// The charge lost to its order's cancellation: no authorization stands, nothing was recorded.
    ChargeCancelled,
    /// The order's payment was declined: there is nothing to void.
    NothingToVoid,
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Event(#[from] EnvelopeError),
    #[error("order {order_id}: invalid amount {amount}: must be positive")]
    InvalidAmount { order_id: String, amount: Decimal },
    #[error(transparent)]
    Provider(#[from] ProviderUnavailable),
    #[error(transparent)]
    ProviderRefused(#[from] ProviderRefused),
    #[error("payment provider not called: {0}")]
    CircuitOpen(#[from] CircuitOpen),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The charge's idempotency lock is held by another delivery, was taken with other data, or its store failed;
    /// never [`IdempotencyError::Handler`] (that is the charge's own error, returned as it is).
    #[error(transparent)]
    ChargeLock(Box<IdempotencyError<PaymentError>>),
}

impl From<PaymentError> for HandlerError {
    fn from(err: PaymentError) -> Self {
        match err {
            // The record waits out the circuit's cool-down instead of spending its receives while it is open; a
            // zero wait (a trial call in flight) leaves it the usual backoff.
            PaymentError::CircuitOpen(open) => HandlerError::transient_after(err, open.retry_in),
            PaymentError::Store(err) => err.into(),
            PaymentError::ChargeLock(err) => HandlerError::from(*err),
            PaymentError::Provider(_) => HandlerError::transient(err),
            PaymentError::Event(_) | PaymentError::ProviderRefused(_) | PaymentError::InvalidAmount { .. } => {
                HandlerError::permanent(err)
            }
        }
    }
}

/// The payment id of an order: stable, so it doubles as the provider's idempotency key.
pub fn payment_id(order_id: &str) -> String {
    format!("pay-{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("orderflow.payment/{order_id}").as_bytes()))
}

/// The idempotency key of an order's charge. In the Payments table it is the partition key of the lock's item,
/// beside the order's `PAYMENT#<order>` (see `dynamo.rs`).
fn charge_key(order_id: &str) -> String {
    format!("CHARGE#{order_id}")
}

/// The payment handler over its store, its provider, and the idempotency records of its charges.
#[derive(Debug)]
pub struct Payment<S, P, I> {
    store: S,
    provider: P,
    charge_locks: Idempotency<I>,
    breaker: CircuitBreaker,
    registry: Registry,
}

impl<S: PaymentStore, P: PaymentProvider, I: IdempotencyStore> Payment<S, P, I> {
    pub fn new(store: S, provider: P, charge_locks: Idempotency<I>) -> Self {
        Self::with_breaker(store, provider, charge_locks, CircuitBreaker::new(FAILURE_THRESHOLD, COOL_DOWN))
    }

    pub fn with_breaker(store: S, provider: P, charge_locks: Idempotency<I>, breaker: CircuitBreaker) -> Self {
        Self { store, provider, charge_locks, breaker, registry: events::registry() }
    }

    /// Handles one SQS record of an invocation ending at `deadline`.
    pub async fn handle(&self, record: SqsRecord, deadline: Deadline) -> Result<(), HandlerError> {
        log_effect(&record, self.apply(&record.body, deadline)).await
    }

    /// Applies one bus event (an SQS body): `PaymentRequested` or `OrderCancelled`. A charge's lock expires at
    /// `deadline`, the end of the invocation.
    pub async fn apply(&self, body: &str, deadline: Deadline) -> Result<Effect, PaymentError> {
        let raw = self.registry.read_bus_event(body)?;
        if raw.event_type == OrderCancelled::TYPE {
            self.cancel(&raw.decode()?).await
        } else {
            // Any other type than PaymentRequested fails to decode as not handled.
            self.charge(&raw.decode()?, deadline).await
        }
    }

    /// Calls the provider through the circuit breaker. Only an unavailable provider counts against the circuit.
    async fn guarded<T, Fut>(&self, call: impl FnOnce() -> Fut) -> Result<T, PaymentError>
    where
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let answered = self
            .breaker
            .call(|| async {
                match call().await {
                    Ok(value) => Ok(Ok(value)),
                    Err(ProviderError::Refused(refused)) => Ok(Err(refused)),
                    Err(ProviderError::Unavailable(unavailable)) => Err(unavailable),
                }
            })
            .await;
        match answered {
            Ok(outcome) => Ok(outcome?),
            Err(CircuitError::Open(open)) => Err(PaymentError::CircuitOpen(open)),
            Err(CircuitError::Failed(unavailable)) => Err(PaymentError::Provider(unavailable)),
        }
    }

    async fn void_at_provider(&self, order_id: &str, payment_id: &str) -> Result<(), PaymentError> {
        let outcome: VoidOutcome = self.guarded(|| self.provider.void(payment_id)).await?;
        tracing::info!(order_id, payment_id, ?outcome, "payment voided at the provider");
        Ok(())
    }

    async fn charge(&self, request: &Envelope<PaymentRequested>, deadline: Deadline) -> Result<Effect, PaymentError> {
        let data = &request.data;
        if data.amount <= Decimal::ZERO {
            return Err(PaymentError::InvalidAmount { order_id: data.order_id.clone(), amount: data.amount });
        }
        if let Some(payment) = self.store.payment(&data.order_id).await? {
            tracing::info!(order_id = data.order_id, status = %payment.status, "payment already recorded, not charging again");
            return Ok(Effect::Duplicate);
        }
        let lock_time = deadline.remaining().unwrap_or(LOCK_WITHOUT_DEADLINE);
        let mut charged_here = false;
        let locked = self
            .charge_locks
            .run(&charge_key(&data.order_id), data, lock_time, || {
                charged_here = true;
                self.charge_and_record(request)
            })
            .await;
        match locked {
            Ok(effect) if charged_here => Ok(effect),
            Ok(first) => {
                tracing::info!(order_id = data.order_id, ?first, "charged by another delivery, not charging again");
                Ok(Effect::Duplicate)
            }
            Err(IdempotencyError::Handler(err)) => Err(err),
            Err(err) => Err(PaymentError::ChargeLock(Box::new(err))),
        }
    }

    /// Charges at the provider and records the decision with its event (under the charge's lock).
    async fn charge_and_record(&self, request: &Envelope<PaymentRequested>) -> Result<Effect, PaymentError> {
        let data = &request.data;
        let charge = Charge {
            order_id: data.order_id.clone(),
            customer_id: data.customer_id.clone(),
            amount: data.amount,
            payment_id: payment_id(&data.order_id),
        };
        let (status, reason, outbox, effect) = match self.guarded(|| self.provider.authorize(&charge)).await? {
            ChargeOutcome::Authorized => {
                let event = PaymentAuthorized {
                    order_id: charge.order_id.clone(),
                    payment_id: charge.payment_id.clone(),
                    amount: charge.amount,
                };
                (PaymentStatus::Authorized, None, OutboxRecord::caused_by(request, event), Effect::Authorized)
            }
            ChargeOutcome::Declined { reason } => {
                tracing::info!(order_id = charge.order_id, reason, "payment declined");
                let event = PaymentDeclined {
                    order_id: charge.order_id.clone(),
                    amount: charge.amount,
                    reason: reason.clone(),
                };
                (PaymentStatus::Declined, Some(reason), OutboxRecord::caused_by(request, event), Effect::Declined)
            }
            ChargeOutcome::Voided => {
                // The cancellation voided the payment id first; it records the tombstone itself.
                tracing::info!(order_id = charge.order_id, "order cancelled before it was charged: nothing charged");
                return Ok(Effect::ChargeCancelled);
            }
        };
        let payment = PaymentRecord {
            order_id: charge.order_id.clone(),
            customer_id: charge.customer_id.clone(),
            amount: Some(charge.amount),
            payment_id: charge.payment_id.clone(),
            status,
            reason,
        };
        if self.store.record(&payment, &outbox).await? == Written::Committed {
            return Ok(effect);
        }
        // Recorded since the read: by another delivery of this request, or as a tombstone by the cancellation,
        // which may have voided at the provider before this authorization was made.
        let recorded = self.store.payment(&charge.order_id).await?;
        if status == PaymentStatus::Authorized && recorded.is_some_and(|p| p.status == PaymentStatus::Voided) {
            self.void_at_provider(&charge.order_id, &charge.payment_id).await?;
            return Ok(Effect::ChargeCancelled);
        }
        Ok(Effect::Duplicate)
    }

    async fn cancel(&self, cancelled: &Envelope<OrderCancelled>) -> Result<Effect, PaymentError> {
        let order_id = &cancelled.data.order_id;
        let payment = match self.store.payment(order_id).await? {
            Some(payment) => payment,
            None => {
                let tombstone = PaymentRecord {
                    order_id: order_id.clone(),
                    customer_id: cancelled.data.customer_id.clone(),
                    amount: None,
                    payment_id: payment_id(order_id),
                    status: PaymentStatus::Voided,
                    reason: Some(cancelled.data.reason.clone()),
                };
                // The provider first: a charge being made right now cannot authorize after this.
                self.void_at_provider(order_id, &tombstone.payment_id).await?;
                if self.store.record_tombstone(&tombstone).await? == Written::Committed {
                    tracing::info!(order_id, "order cancelled before it was charged: tombstone recorded");
                    return Ok(Effect::VoidedBeforeCharge);
                }
                // A charge was recorded since the read: void it as recorded.
                self.store.payment(order_id).await?.ok_or_else(|| {
                    StoreError::Transient(format!(
                        "order {order_id}: the tombstone write found a payment, the read after it none"
                    ))
                })?
            }
        };
        match payment.status {
            PaymentStatus::Voided => Ok(Effect::Duplicate),
            PaymentStatus::Declined => Ok(Effect::NothingToVoid),
            PaymentStatus::Authorized => {
                let amount = payment.amount.ok_or_else(|| {
                    StoreError::Corrupt(format!("order {order_id}: an AUTHORIZED payment without an amount"))
                })?;
                self.void_at_provider(order_id, &payment.payment_id).await?;
                let event = PaymentVoided { order_id: order_id.clone(), payment_id: payment.payment_id, amount };
                match self.store.record_void(order_id, &OutboxRecord::caused_by(cancelled, event)).await? {
                    Written::Committed => Ok(Effect::Voided),
                    // Another delivery of the cancellation voided it since the read.
                    Written::Duplicate => Ok(Effect::Duplicate),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_domain::payment::{PaymentDecision, decide, default_customer_limit};
    use orderflow_test_support::{Samples, SqsHarness, bus_body, envelopes, failed_ids, sqs_batch};
    use orderflow_toolkit::RawEnvelope;
    use orderflow_toolkit::idempotency::{MemoryIdempotencyStore, RecordStatus, epoch_millis};
    use tokio::sync::oneshot;

    use super::*;
    use crate::memory::MemoryPayments;

    const SAMPLES: Samples = Samples::of("payment");
    const PAYMENT_REQUESTED: &str = "payment-requested.json";
    const PAYMENT_OVER_LIMIT: &str = "payment-over-limit.json";
    const ORDER_CANCELLED: &str = "order-cancelled.json";
    const UNKNOWN_VERSION: &str = "unknown-version.json";

    const ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";
    /// The message id of the PaymentRequested sample.
    const PAYMENT_REQUESTED_MESSAGE: &str = "2f8b2c3d-0001-4a5b-8c6d-7e8f9a0b1c01";
    const OVER_LIMIT_ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e02";

    fn payment_requested(order_id: &str, amount: &str) -> String {
        let data =
            PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount: amount.parse().unwrap() };
        bus_body(&Envelope::new(order_id, data))
    }

    fn order_cancelled(order_id: &str) -> String {
        let data = OrderCancelled { order_id: order_id.into(), customer_id: "c-1".into(), reason: "customer".into() };
        bus_body(&Envelope::new(order_id, data))
    }

    /// The provider's state of one payment id, as the real provider keeps it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum AtProvider {
        Authorized,
        Declined { reason: String },
        Voided { authorization: bool },
    }

    /// Where a paused provider call waits until the test releases it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum PausePoint {
        BeforeAuthorize,
        AfterAuthorize,
        BeforeVoid,
    }

    struct Pause {
        point: PausePoint,
        reached: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    /// An in-memory provider with the real one's rules (limit, idempotency, void tombstones): unavailable while
    /// `down`, and one call can be paused to interleave a charge with a cancellation.
    #[derive(Default)]
    struct FakeProvider {
        down: AtomicBool,
        refuse: AtomicBool,
        payments: Mutex<HashMap<String, AtProvider>>,
        calls: Mutex<Vec<&'static str>>,
        pause: Mutex<Option<Pause>>,
    }

    impl FakeProvider {
        /// Pauses the next call at `point`: `reached` fires when it gets there, and it goes on when `release` does.
        fn pause_at(&self, point: PausePoint) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (reached, reached_rx) = oneshot::channel();
            let (release_tx, release) = oneshot::channel();
            *self.pause.lock().unwrap() = Some(Pause { point, reached, release });
            (reached_rx, release_tx)
        }

        async fn pass(&self, point: PausePoint) {
            let pause = {
                let mut pause = self.pause.lock().unwrap();
                if pause.as_ref().is_some_and(|p| p.point == point) { pause.take() } else { None }
            };
            if let Some(pause) = pause {
                pause.reached.send(()).unwrap();
                pause.release.await.unwrap();
            }
        }

        fn answer(&self, call: &'static str) -> Result<(), ProviderError> {
            self.calls.lock().unwrap().push(call);
            if self.down.load(Ordering::SeqCst) {
                return Err(ProviderUnavailable("connection reset".into()).into());
            }
            if self.refuse.load(Ordering::SeqCst) {
                return Err(ProviderRefused("HTTP 400: amount: invalid".into()).into());
            }
            Ok(())
        }

        fn at_provider(&self, order_id: &str) -> Option<AtProvider> {
            self.payments.lock().unwrap().get(&payment_id(order_id)).cloned()
        }

        fn calls(&self, call: &str) -> usize {
            self.calls.lock().unwrap().iter().filter(|c| **c == call).count()
        }
    }

    impl PaymentProvider for &FakeProvider {
        async fn authorize(&self, charge: &Charge) -> Result<ChargeOutcome, ProviderError> {
            self.pass(PausePoint::BeforeAuthorize).await;
            self.answer("authorize")?;
            let outcome = {
                let mut payments = self.payments.lock().unwrap();
                let state = payments.entry(charge.payment_id.clone()).or_insert_with(|| {
                    match decide(charge.amount, default_customer_limit()) {
                        PaymentDecision::Authorized => AtProvider::Authorized,
                        PaymentDecision::Declined { reason } => AtProvider::Declined { reason },
                    }
                });
                match state {
                    AtProvider::Authorized => ChargeOutcome::Authorized,
                    AtProvider::Declined { reason } => ChargeOutcome::Declined { reason: reason.clone() },
                    AtProvider::Voided { .. } => ChargeOutcome::Voided,
                }
            };
            self.pass(PausePoint::AfterAuthorize).await;
            Ok(outcome)
        }

        async fn void(&self, payment_id: &str) -> Result<VoidOutcome, ProviderError> {
            self.pass(PausePoint::BeforeVoid).await;
            self.answer("void")?;
            let mut payments = self.payments.lock().unwrap();
            let state = payments.entry(payment_id.to_owned()).or_insert(AtProvider::Voided { authorization: false });
            let authorization = match state {
                AtProvider::Voided { authorization } => *authorization,
                AtProvider::Authorized => true,
                AtProvider::Declined { .. } => false,
            };
            *state = AtProvider::Voided { authorization };
            Ok(if authorization { VoidOutcome::AuthorizationVoided } else { VoidOutcome::NothingAuthorized })
        }
    }

    /// How long every test invocation has left when a record starts.
    const INVOCATION: Duration = Duration::from_secs(30);

    fn deadline() -> Deadline {
        Deadline::at(SystemTime::now() + INVOCATION)
    }

    /// The clock of the charges' locks: the system's, moved ahead by hand (a lock's expiry without waiting).
    #[derive(Clone, Default)]
    struct LockClock(Arc<AtomicU64>);

    impl LockClock {
        fn now(&self) -> SystemTime {
            SystemTime::now() + Duration::from_millis(self.0.load(Ordering::SeqCst))
        }

        fn advance(&self, by: Duration) {
            self.0.fetch_add(u64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
        }
    }

    struct World<'p> {
        store: MemoryPayments,
        locks: MemoryIdempotencyStore,
        clock: LockClock,
        payment: Payment<MemoryPayments, &'p FakeProvider, MemoryIdempotencyStore>,
        sqs: SqsHarness,
    }

    impl<'p> World<'p> {
        fn new(provider: &'p FakeProvider) -> Self {
            Self::with_breaker(provider, CircuitBreaker::new(FAILURE_THRESHOLD, COOL_DOWN))
        }

        fn with_breaker(provider: &'p FakeProvider, breaker: CircuitBreaker) -> Self {
            let (store, locks, clock) =
                (MemoryPayments::default(), MemoryIdempotencyStore::default(), LockClock::default());
            let now = clock.clone();
            let charge_locks = Idempotency::new(locks.clone()).with_clock(move || now.now());
            let payment = Payment::with_breaker(store.clone(), provider, charge_locks, breaker);
            Self { payment, store, locks, clock, sqs: SqsHarness::default() }
        }

        /// Processes a batch in an invocation with [`INVOCATION`] left.
        async fn process(&self, event: SqsEvent) -> Vec<String> {
            failed_ids(&self.sqs.process(event, |record| self.payment.handle(record, deadline())).await)
        }

        /// Applies one SQS body in an invocation with [`INVOCATION`] left.
        async fn apply(&self, body: &str) -> Result<Effect, PaymentError> {
            self.payment.apply(body, deadline()).await
        }

        /// The charge lock's expiry while the order's charge is in progress (epoch milliseconds).
        fn lock_expiry(&self, order_id: &str) -> Option<u64> {
            self.locks.record(&charge_key(order_id)).and_then(|lock| lock.in_progress_expiry)
        }

        fn outbox(&self) -> Vec<RawEnvelope> {
            envelopes(&self.store.outbox())
        }

        fn event_types(&self) -> Vec<String> {
            self.outbox().into_iter().map(|e| e.event_type).collect()
        }
    }

    #[tokio::test]
    async fn a_payment_within_the_limit_is_authorized_and_recorded_with_its_event_in_one_write() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);

        let failed = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        let payment = world.store.stored(ORDER).unwrap();
        assert_eq!(payment.status, PaymentStatus::Authorized);
        assert_eq!(payment.amount, Some("38.49".parse().unwrap()));
        assert_eq!(payment.customer_id, "c-1");
        let authorized = world.outbox()[0].decode::<PaymentAuthorized>().unwrap();
        assert_eq!(authorized.data.payment_id, payment.payment_id);
        assert_eq!(Some(authorized.data.amount), payment.amount);
        assert_eq!(authorized.correlation_id, ORDER);
        assert_eq!(world.store.outbox()[0].source, "orderflow.payment");
        assert_eq!(world.store.write_requests(), 1);
        assert_eq!(provider.at_provider(ORDER), Some(AtProvider::Authorized));
    }

    #[tokio::test]
    async fn a_payment_over_the_limit_is_declined_with_the_reason() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);

        let failed = world.process(SAMPLES.event(PAYMENT_OVER_LIMIT)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored(OVER_LIMIT_ORDER).unwrap().status, PaymentStatus::Declined);
        let declined = world.outbox()[0].decode::<PaymentDeclined>().unwrap();
        assert_eq!(declined.data.reason, "amount 10000.01 exceeds the customer's limit 10000.00");
        assert_eq!(declined.data.amount, "10000.01".parse::<Decimal>().unwrap());
    }

    #[tokio::test]
    async fn a_redelivered_request_does_not_charge_again_and_emits_nothing() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        let failed = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        assert_eq!(provider.calls("authorize"), 1, "charged once");
        assert_eq!(world.store.outbox().len(), 1, "one event");
        assert_eq!(world.store.write_requests(), 1, "the duplicate is recognised on the read");
    }

    #[tokio::test]
    async fn an_unknown_version_goes_to_the_dlq_naming_the_supported_ones() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);

        let failed = world.process(SAMPLES.event(UNKNOWN_VERSION)).await;

        assert!(failed.is_empty());
        let letters = world.sqs.dead_letters();
        assert_eq!(letters[0].reason, "unsupported version 2 of PaymentRequested (this consumer reads versions 1..=1)");
        assert_eq!(world.store.write_requests(), 0);
    }

    #[tokio::test]
    async fn a_non_positive_amount_goes_to_the_dlq() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);

        world.process(sqs_batch(&[payment_requested("o-neg", "-1.00")])).await;

        assert_eq!(world.sqs.dead_letters()[0].reason, "order o-neg: invalid amount -1.00: must be positive");
        assert_eq!(provider.calls("authorize"), 0);
    }

    #[tokio::test]
    async fn an_unavailable_provider_is_retried_by_the_queue_and_the_retry_charges_once() {
        let provider = FakeProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::new(&provider);
        let body = payment_requested("o-1", "20.00");

        let failed = world.process(sqs_batch(std::slice::from_ref(&body))).await;

        assert_eq!(failed, ["m-0"], "reported for retry");
        assert!(world.store.stored("o-1").is_none());
        assert!(world.sqs.dead_letters().is_empty());

        provider.down.store(false, Ordering::SeqCst);
        let failed = world.process(sqs_batch(&[body])).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored("o-1").unwrap().status, PaymentStatus::Authorized);
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn a_refusal_by_the_provider_goes_to_the_dlq_with_its_message_and_does_not_open_the_circuit() {
        let provider = FakeProvider::default();
        provider.refuse.store(true, Ordering::SeqCst);
        let world = World::with_breaker(&provider, CircuitBreaker::new(1, Duration::from_secs(60)));

        let failed =
            world.process(sqs_batch(&[payment_requested("o-1", "5.00"), payment_requested("o-2", "5.00")])).await;

        assert!(failed.is_empty(), "not retried");
        let letters = world.sqs.dead_letters();
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].reason, "payment provider refused the request: HTTP 400: amount: invalid");
        assert_eq!(provider.calls("authorize"), 2, "the circuit stayed closed after a refusal");
    }

    #[tokio::test]
    async fn consecutive_provider_failures_open_the_circuit_which_then_fails_fast_without_calling() {
        let provider = FakeProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::with_breaker(&provider, CircuitBreaker::new(3, Duration::from_secs(60)));
        let bodies: Vec<String> = (0..5).map(|i| payment_requested(&format!("o-{i}"), "5.00")).collect();

        let failed = world.process(sqs_batch(&bodies)).await;

        assert_eq!(failed.len(), 5, "every record is retried later");
        assert_eq!(provider.calls("authorize"), 3, "the circuit opened after 3 failures");
        assert!(world.sqs.dead_letters().is_empty(), "an open circuit is transient, not poison");
        assert!(world.store.outbox().is_empty());
    }

    #[tokio::test]
    async fn an_open_circuit_also_spares_the_provider_the_voids() {
        let provider = FakeProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::with_breaker(&provider, CircuitBreaker::new(1, Duration::from_secs(60)));
        world.process(sqs_batch(&[payment_requested("o-1", "5.00")])).await;

        let failed = world.process(sqs_batch(&[order_cancelled("o-1")])).await;

        assert_eq!(failed, ["m-0"]);
        assert_eq!(provider.calls("void"), 0);
        assert!(world.store.stored("o-1").is_none(), "no tombstone before the provider voided");
    }

    #[tokio::test]
    async fn after_the_cool_down_a_successful_trial_closes_the_circuit() {
        let provider = FakeProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::with_breaker(&provider, CircuitBreaker::new(1, Duration::from_millis(50)));
        world.process(sqs_batch(&[payment_requested("o-1", "5.00")])).await;
        provider.down.store(false, Ordering::SeqCst);

        let refused = world.process(sqs_batch(&[payment_requested("o-1", "5.00")])).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let bodies: Vec<String> = (1..4).map(|i| payment_requested(&format!("o-{i}"), "5.00")).collect();
        let failed = world.process(sqs_batch(&bodies)).await;

        assert_eq!(refused.len(), 1, "still open during the cool-down");
        assert!(failed.is_empty(), "the trial call closed the circuit: {failed:?}");
        assert_eq!(provider.calls("authorize"), 4);
        assert_eq!(world.store.outbox().len(), 3);
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_and_the_retry_records_the_payment_once() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        world.store.fail_next_writes(1);

        let failed = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;
        assert_eq!(failed.len(), 1);
        let failed = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.outbox().len(), 1);
        assert_eq!(provider.at_provider(ORDER), Some(AtProvider::Authorized), "the provider authorized once");
    }

    #[tokio::test]
    async fn an_event_type_payment_does_not_handle_goes_to_the_dlq_naming_it() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let authorized = PaymentAuthorized { order_id: "o".into(), payment_id: "p".into(), amount: Decimal::ONE };

        world.process(sqs_batch(&[bus_body(&Envelope::new("o", authorized))])).await;

        assert_eq!(world.sqs.dead_letters()[0].reason, "this consumer does not handle PaymentAuthorized");
    }

    #[tokio::test]
    async fn cancelling_an_authorized_order_voids_it_at_the_provider_and_records_voided_with_its_event_once() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        let failed = world.process(SAMPLES.event(ORDER_CANCELLED)).await;
        let redelivered = world.process(SAMPLES.event(ORDER_CANCELLED)).await;

        assert!(failed.is_empty() && redelivered.is_empty());
        let payment = world.store.stored(ORDER).unwrap();
        assert_eq!(payment.status, PaymentStatus::Voided);
        assert_eq!(provider.at_provider(ORDER), Some(AtProvider::Voided { authorization: true }));
        assert_eq!(provider.calls("void"), 1, "the redelivery finds it voided");
        assert_eq!(world.event_types(), ["PaymentAuthorized", "PaymentVoided"]);
        let voided = world.outbox()[1].decode::<PaymentVoided>().unwrap();
        assert_eq!(voided.data.payment_id, payment.payment_id);
        assert_eq!(Some(voided.data.amount), payment.amount);
        assert_eq!(voided.correlation_id, ORDER);
        assert_eq!(world.store.write_requests(), 2, "the void and its event are one write");
    }

    #[tokio::test]
    async fn cancelling_before_the_charge_leaves_a_tombstone_so_the_late_request_charges_nothing() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);

        let failed = world.process(SAMPLES.event(ORDER_CANCELLED)).await;
        let late = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty() && late.is_empty());
        let tombstone = world.store.stored(ORDER).unwrap();
        assert_eq!((tombstone.status, tombstone.amount), (PaymentStatus::Voided, None));
        assert_eq!(tombstone.reason.as_deref(), Some("customer requested"));
        assert_eq!(provider.at_provider(ORDER), Some(AtProvider::Voided { authorization: false }));
        assert_eq!(provider.calls("authorize"), 0, "the late request finds the tombstone");
        assert!(world.outbox().is_empty(), "no event for a payment that never was");
    }

    #[tokio::test]
    async fn cancelling_a_declined_order_does_nothing() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        world.process(sqs_batch(&[payment_requested("o-1", "20000.00")])).await;

        let effect = world.apply(&order_cancelled("o-1")).await.unwrap();

        assert_eq!(effect, Effect::NothingToVoid);
        assert_eq!(world.store.stored("o-1").unwrap().status, PaymentStatus::Declined);
        assert_eq!(provider.calls("void"), 0);
        assert_eq!(world.event_types(), ["PaymentDeclined"]);
    }

    #[tokio::test]
    async fn a_charge_authorized_while_its_order_is_cancelled_loses_to_the_tombstone_and_voids_its_authorization() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::AfterAuthorize);
        let (charge_body, cancel_body) = (payment_requested("o-1", "5.00"), order_cancelled("o-1"));
        let charge = world.apply(&charge_body);
        let cancel = async {
            reached.await.unwrap();
            // The charge is authorized at the provider and not yet recorded.
            let effect = world.apply(&cancel_body).await;
            release.send(()).unwrap();
            effect
        };

        let (charged, cancelled) = tokio::join!(charge, cancel);

        assert_eq!(cancelled.unwrap(), Effect::VoidedBeforeCharge);
        assert_eq!(charged.unwrap(), Effect::ChargeCancelled);
        assert_eq!(world.store.stored("o-1").unwrap().amount, None, "the tombstone stands");
        assert_eq!(provider.at_provider("o-1"), Some(AtProvider::Voided { authorization: true }));
        assert_eq!(provider.calls("void"), 2, "the losing charge voided too");
        assert!(world.outbox().is_empty());
    }

    #[tokio::test]
    async fn a_charge_recorded_while_its_order_is_cancelled_is_voided_by_the_cancellation_that_lost_the_write() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::BeforeVoid);
        let (charge_body, cancel_body) = (payment_requested("o-1", "5.00"), order_cancelled("o-1"));
        let cancel = world.apply(&cancel_body);
        let charge = async {
            reached.await.unwrap();
            // The cancellation read no payment and has not voided yet.
            let effect = world.apply(&charge_body).await;
            release.send(()).unwrap();
            effect
        };

        let (cancelled, charged) = tokio::join!(cancel, charge);

        assert_eq!(charged.unwrap(), Effect::Authorized);
        assert_eq!(cancelled.unwrap(), Effect::Voided);
        let payment = world.store.stored("o-1").unwrap();
        assert_eq!((payment.status, payment.amount), (PaymentStatus::Voided, Some("5.00".parse().unwrap())));
        assert_eq!(provider.at_provider("o-1"), Some(AtProvider::Voided { authorization: true }));
        assert_eq!(world.event_types(), ["PaymentAuthorized", "PaymentVoided"]);
    }

    #[tokio::test]
    async fn a_charge_reaching_the_provider_after_the_cancellation_voided_it_charges_and_records_nothing() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::BeforeAuthorize);
        let (charge_body, cancel_body) = (payment_requested("o-1", "5.00"), order_cancelled("o-1"));
        let charge = world.apply(&charge_body);
        let cancel = async {
            reached.await.unwrap();
            let effect = world.apply(&cancel_body).await;
            release.send(()).unwrap();
            effect
        };

        let (charged, cancelled) = tokio::join!(charge, cancel);

        assert_eq!(cancelled.unwrap(), Effect::VoidedBeforeCharge);
        assert_eq!(charged.unwrap(), Effect::ChargeCancelled);
        assert_eq!(provider.at_provider("o-1"), Some(AtProvider::Voided { authorization: false }));
        assert_eq!(world.store.write_requests(), 1, "only the tombstone");
        assert!(world.outbox().is_empty());
    }

    #[tokio::test]
    async fn two_deliveries_of_one_request_at_once_charge_once_and_the_one_finding_the_charge_locked_is_retried() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::AfterAuthorize);
        let first = world.process(SAMPLES.event(PAYMENT_REQUESTED));
        let second = async {
            reached.await.unwrap();
            // The first delivery is authorized at the provider and has not recorded it yet.
            let failed = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;
            release.send(()).unwrap();
            failed
        };

        let (first, second) = tokio::join!(first, second);
        let retried = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(first.is_empty());
        assert_eq!(second, [PAYMENT_REQUESTED_MESSAGE], "the locked delivery is retried by the queue");
        assert!(world.sqs.dead_letters().is_empty(), "a held lock is transient");
        assert!(retried.is_empty(), "the retry finds the payment recorded");
        assert_eq!(provider.calls("authorize"), 1, "the provider was called once");
        assert_eq!(world.store.stored(ORDER).unwrap().status, PaymentStatus::Authorized);
        assert_eq!(world.event_types(), ["PaymentAuthorized"]);
        assert_eq!(world.store.write_requests(), 1, "one payment recorded");
    }

    #[tokio::test]
    async fn a_delivery_finding_the_charge_locked_fails_as_in_progress() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::BeforeAuthorize);
        let body = payment_requested("o-1", "5.00");
        let second = async {
            reached.await.unwrap();
            let effect = world.apply(&body).await;
            release.send(()).unwrap();
            effect
        };

        let (first, second) = tokio::join!(world.apply(&body), second);

        assert_eq!(first.unwrap(), Effect::Authorized);
        let err = HandlerError::from(second.unwrap_err());
        assert_eq!(
            err,
            HandlerError::transient(
                "idempotency key \"CHARGE#o-1\" is being processed by another invocation; retry later"
            )
        );
        assert_eq!(provider.calls("authorize"), 1);
    }

    #[tokio::test]
    async fn a_charge_lock_expires_at_the_invocations_deadline_or_after_the_longest_invocation_without_one() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let cases = [
            ("o-1", Deadline::at(SystemTime::now() + INVOCATION), INVOCATION),
            ("o-2", Deadline::UNKNOWN, LOCK_WITHOUT_DEADLINE),
        ];
        for (order_id, deadline, lock_time) in cases {
            let (reached, release) = provider.pause_at(PausePoint::BeforeAuthorize);
            let body = payment_requested(order_id, "5.00");
            let expected = epoch_millis(SystemTime::now() + lock_time);
            let expiry = async {
                reached.await.unwrap();
                let expiry = world.lock_expiry(order_id);
                release.send(()).unwrap();
                expiry
            };

            let (charged, expiry) = tokio::join!(world.payment.apply(&body, deadline), expiry);

            assert_eq!(charged.unwrap(), Effect::Authorized);
            let expiry = expiry.expect("a lock while the provider is called");
            assert!(expiry.abs_diff(expected) < 1_000, "{order_id}: expires at {expiry}, expected {expected}");
            assert_eq!(world.locks.record(&charge_key(order_id)).unwrap().status, RecordStatus::Completed);
        }
    }

    #[tokio::test]
    async fn after_a_crash_between_the_charge_and_its_record_the_lock_expires_and_the_retry_records_the_payment_once() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, _release) = provider.pause_at(PausePoint::AfterAuthorize);
        let crashing = world.process(SAMPLES.event(PAYMENT_REQUESTED));
        tokio::select! {
            _ = crashing => panic!("the delivery was to stop at the provider's answer"),
            // Authorized at the provider, nothing recorded: the invocation dies here (its future is dropped).
            _ = reached => {}
        }

        let while_locked = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;
        world.clock.advance(INVOCATION + Duration::from_millis(1));
        let after_expiry = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;
        let redelivered = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert_eq!(while_locked, [PAYMENT_REQUESTED_MESSAGE], "the crashed delivery's lock holds until its deadline");
        assert!(after_expiry.is_empty() && redelivered.is_empty());
        assert_eq!(provider.calls("authorize"), 2, "the retry asked the provider for the same payment id again");
        assert_eq!(provider.at_provider(ORDER), Some(AtProvider::Authorized));
        assert_eq!(world.event_types(), ["PaymentAuthorized"]);
        assert_eq!(world.store.write_requests(), 1, "recorded once");
    }

    #[tokio::test]
    async fn after_a_crash_between_the_record_and_the_locks_completion_nothing_is_charged_or_recorded_again() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (reached, release) = provider.pause_at(PausePoint::AfterAuthorize);
        let first = world.process(SAMPLES.event(PAYMENT_REQUESTED));
        let lose_the_completion = async {
            reached.await.unwrap();
            // The lock's COMPLETED write fails, as if the invocation died after recording: it stays INPROGRESS.
            world.locks.fail_next_writes(1);
            release.send(()).unwrap();
        };
        let (first, ()) = tokio::join!(first, lose_the_completion);
        assert_eq!(world.locks.record(&charge_key(ORDER)).unwrap().status, RecordStatus::InProgress);

        world.clock.advance(INVOCATION + Duration::from_millis(1));
        let redelivered = world.process(SAMPLES.event(PAYMENT_REQUESTED)).await;

        assert!(first.is_empty() && redelivered.is_empty());
        assert_eq!(provider.calls("authorize"), 1, "the redelivery finds the payment recorded");
        assert_eq!(world.event_types(), ["PaymentAuthorized"]);
        assert_eq!(world.store.write_requests(), 1, "recorded once");
    }

    #[tokio::test]
    async fn a_repeat_of_a_charge_its_cancellation_stopped_is_a_duplicate_answered_by_the_lock_without_the_provider() {
        let provider = FakeProvider::default();
        let world = World::new(&provider);
        let (charge_body, cancel_body) = (payment_requested("o-1", "5.00"), order_cancelled("o-1"));
        // The cancellation voids at the provider; its tombstone write is throttled, so no payment is recorded yet.
        world.store.fail_next_writes(1);
        assert!(world.apply(&cancel_body).await.is_err());

        let charged = world.apply(&charge_body).await.unwrap();
        let repeated = world.apply(&charge_body).await.unwrap();
        let cancelled = world.apply(&cancel_body).await.unwrap();

        assert_eq!(charged, Effect::ChargeCancelled);
        assert_eq!(repeated, Effect::Duplicate);
        assert_eq!(provider.calls("authorize"), 1, "the repeat did not reach the provider");
        assert_eq!(cancelled, Effect::VoidedBeforeCharge);
        assert_eq!(world.store.stored("o-1").unwrap().amount, None, "the tombstone stands");
        assert!(world.outbox().is_empty());
    }
}
