//! The payment function: charges an order through the simulated provider, behind a circuit breaker, and records
//! the outcome with its event in ONE transaction.
//!
//! - `PaymentRequested`: if the order's payment is already recorded, nothing happens (a redelivery neither charges
//!   again nor emits again). Otherwise the provider decides (declined above the customer's limit), and
//!   `PAYMENT#<order>` (conditional on none existing) is written with `PaymentAuthorized` or `PaymentDeclined`.
//! - A provider failure, or an open circuit, is transient: the record is retried by the queue (the next attempt
//!   draws again). After `FAILURE_THRESHOLD` consecutive provider failures the circuit opens and calls fail fast
//!   for `COOL_DOWN`, sparing the provider.
//! - Anything else is a permanent failure: the record goes to the DLQ with the reason.

use std::time::Duration;

use orderflow_domain::Decimal;
use orderflow_domain::events::{self, PaymentAuthorized, PaymentDeclined, PaymentRequested};
use orderflow_domain::payment::PaymentDecision;
use orderflow_toolkit::batch::log_effect;
use orderflow_toolkit::circuit::{CircuitBreaker, CircuitError, CircuitOpen};
use orderflow_toolkit::outbox::Written;
use orderflow_toolkit::{Envelope, EnvelopeError, Event, HandlerError, OutboxRecord, Registry, SqsRecord};
use uuid::Uuid;

use crate::provider::{Charge, PaymentProvider, ProviderUnavailable};
use crate::store::{PaymentRecord, PaymentStatus, PaymentStore, StoreError};

/// Consecutive provider failures that open the circuit.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an open circuit fails fast before it lets a trial call through.
pub const COOL_DOWN: Duration = Duration::from_secs(10);

/// What a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Authorized,
    Declined,
    /// The order's payment was already recorded: no charge, no event.
    Duplicate,
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
    #[error("payment provider not called: {0}")]
    CircuitOpen(#[from] CircuitOpen),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PaymentError> for HandlerError {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::Provider(_)
            | PaymentError::CircuitOpen(_)
            | PaymentError::Store(StoreError::Unavailable(_)) => HandlerError::transient(err),
            PaymentError::Event(_)
            | PaymentError::InvalidAmount { .. }
            | PaymentError::Store(StoreError::Invalid(_)) => HandlerError::permanent(err),
        }
    }
}

/// The payment id of an order: stable, so it doubles as the provider's idempotency key.
pub fn payment_id(order_id: &str) -> String {
    format!("pay-{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("orderflow.payment/{order_id}").as_bytes()))
}

/// The payment handler over its store and provider.
#[derive(Debug)]
pub struct Payment<S, P> {
    store: S,
    provider: P,
    breaker: CircuitBreaker,
    registry: Registry,
}

impl<S: PaymentStore, P: PaymentProvider> Payment<S, P> {
    pub fn new(store: S, provider: P) -> Self {
        Self::with_breaker(store, provider, CircuitBreaker::new(FAILURE_THRESHOLD, COOL_DOWN))
    }

    pub fn with_breaker(store: S, provider: P, breaker: CircuitBreaker) -> Self {
        Self { store, provider, breaker, registry: events::registry() }
    }

    /// Handles one SQS record; its receive count is the attempt the provider sees.
    pub async fn handle(&self, record: SqsRecord) -> Result<(), HandlerError> {
        log_effect(&record, self.apply(&record.body, record.receive_count)).await
    }

    /// Applies one bus event (an SQS body) delivered for the `attempt`-th time.
    pub async fn apply(&self, body: &str, attempt: u32) -> Result<Effect, PaymentError> {
        let raw = self.registry.read_bus_event(body)?;
        if raw.event_type != PaymentRequested::TYPE {
            return Err(EnvelopeError::NotHandled(raw.event_type).into());
        }
        let request: Envelope<PaymentRequested> = raw.decode()?;
        let data = &request.data;
        if data.amount <= Decimal::ZERO {
            return Err(PaymentError::InvalidAmount { order_id: data.order_id.clone(), amount: data.amount });
        }
        if let Some(payment) = self.store.payment(&data.order_id).await? {
            tracing::info!(order_id = data.order_id, status = %payment.status, "payment already recorded, not charging again");
            return Ok(Effect::Duplicate);
        }
        let charge = Charge {
            order_id: data.order_id.clone(),
            customer_id: data.customer_id.clone(),
            amount: data.amount,
            attempt,
            payment_id: payment_id(&data.order_id),
        };
        let decision = self.breaker.call(|| self.provider.charge(&charge)).await.map_err(|err| match err {
            CircuitError::Open(open) => PaymentError::CircuitOpen(open),
            CircuitError::Failed(failed) => PaymentError::Provider(failed),
        })?;
        let (status, reason, outbox, effect) = match decision {
            PaymentDecision::Authorized => {
                let event = PaymentAuthorized {
                    order_id: charge.order_id.clone(),
                    payment_id: charge.payment_id.clone(),
                    amount: charge.amount,
                };
                (PaymentStatus::Authorized, None, OutboxRecord::caused_by(&request, event), Effect::Authorized)
            }
            PaymentDecision::Declined { reason } => {
                tracing::info!(order_id = charge.order_id, reason, "payment declined");
                let event = PaymentDeclined {
                    order_id: charge.order_id.clone(),
                    amount: charge.amount,
                    reason: reason.clone(),
                };
                (PaymentStatus::Declined, Some(reason), OutboxRecord::caused_by(&request, event), Effect::Declined)
            }
        };
        let payment = PaymentRecord {
            order_id: charge.order_id,
            customer_id: charge.customer_id,
            amount: charge.amount,
            payment_id: charge.payment_id,
            status,
            reason,
        };
        match self.store.record(&payment, &outbox).await? {
            Written::Committed => Ok(effect),
            Written::Duplicate => Ok(Effect::Duplicate),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use aws_lambda_events::event::sqs::SqsEvent;
    use orderflow_domain::payment::default_customer_limit;
    use orderflow_toolkit::{MemoryDeadLetters, RawEnvelope, SqsBatchProcessor};
    use serde_json::{Value, json};

    use super::*;
    use crate::memory::MemoryPayments;
    use crate::provider::{SimulatedProvider, failure_draw};

    const PAYMENT_REQUESTED: &str = include_str!("../../../events/payment/payment-requested.json");
    const PAYMENT_OVER_LIMIT: &str = include_str!("../../../events/payment/payment-over-limit.json");
    const UNKNOWN_VERSION: &str = include_str!("../../../events/payment/unknown-version.json");

    const ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";
    const OVER_LIMIT_ORDER: &str = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e02";

    fn sqs_event(sample: &str) -> SqsEvent {
        serde_json::from_str(sample).expect("sample is an SQS event")
    }

    /// An SQS event with one record per (body, receive count).
    fn batch(bodies: &[(String, u32)]) -> SqsEvent {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, (body, attempt))| {
                json!({"messageId": format!("m-{i}"), "body": body, "eventSource": "aws:sqs",
                       "attributes": {"ApproximateReceiveCount": attempt.to_string()}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    fn payment_requested(order_id: &str, amount: &str) -> String {
        let data =
            PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount: amount.parse().unwrap() };
        let envelope = Envelope::new(order_id, data);
        json!({"version": "0", "id": Uuid::new_v4(), "detail-type": "PaymentRequested", "source": "orderflow.saga",
               "account": "000000000000", "time": "2026-11-24T10:00:00Z", "region": "us-east-1", "resources": [],
               "detail": envelope})
        .to_string()
    }

    /// Counts charges and fails them while `down` is set.
    #[derive(Default)]
    struct FlakyProvider {
        down: AtomicBool,
        calls: AtomicU32,
    }

    impl PaymentProvider for FlakyProvider {
        async fn charge(&self, charge: &Charge) -> Result<PaymentDecision, ProviderUnavailable> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(ProviderUnavailable("connection reset".into()));
            }
            Ok(orderflow_domain::payment::decide(charge.amount, default_customer_limit()))
        }
    }

    impl PaymentProvider for &FlakyProvider {
        async fn charge(&self, charge: &Charge) -> Result<PaymentDecision, ProviderUnavailable> {
            (*self).charge(charge).await
        }
    }

    struct World<P> {
        store: MemoryPayments,
        dead_letters: MemoryDeadLetters,
        payment: Payment<MemoryPayments, P>,
        processor: SqsBatchProcessor<MemoryDeadLetters>,
    }

    impl<P: PaymentProvider> World<P> {
        fn new(provider: P, breaker: CircuitBreaker) -> Self {
            let store = MemoryPayments::default();
            let dead_letters = MemoryDeadLetters::default();
            Self {
                payment: Payment::with_breaker(store.clone(), provider, breaker),
                processor: SqsBatchProcessor::new(dead_letters.clone()),
                store,
                dead_letters,
            }
        }

        async fn process(&self, event: SqsEvent) -> Vec<String> {
            let response = self.processor.process(event, |record| self.payment.handle(record)).await.unwrap();
            response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
        }

        fn outbox(&self) -> Vec<RawEnvelope> {
            self.store.outbox().iter().map(|r| serde_json::from_str(&r.detail).unwrap()).collect()
        }
    }

    /// The configuration's defaults: limit 10,000.00, no injected failures.
    fn simulated(rate: f64) -> World<SimulatedProvider> {
        World::new(
            SimulatedProvider::new(default_customer_limit(), rate),
            CircuitBreaker::new(FAILURE_THRESHOLD, COOL_DOWN),
        )
    }

    #[tokio::test]
    async fn a_payment_within_the_limit_is_authorized_and_recorded_with_its_event_in_one_write() {
        let world = simulated(0.0);

        let failed = world.process(sqs_event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        let payment = world.store.stored(ORDER).unwrap();
        assert_eq!(payment.status, PaymentStatus::Authorized);
        assert_eq!(payment.amount, "38.49".parse::<Decimal>().unwrap());
        assert_eq!(payment.customer_id, "c-1");
        let authorized = world.outbox()[0].decode::<PaymentAuthorized>().unwrap();
        assert_eq!(authorized.data.payment_id, payment.payment_id);
        assert_eq!(authorized.data.amount, payment.amount);
        assert_eq!(authorized.correlation_id, ORDER);
        assert_eq!(world.store.outbox()[0].source, "orderflow.payment");
        assert_eq!(world.store.write_requests(), 1);
    }

    #[tokio::test]
    async fn a_payment_over_the_limit_is_declined_with_the_reason() {
        let world = simulated(0.0);

        let failed = world.process(sqs_event(PAYMENT_OVER_LIMIT)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored(OVER_LIMIT_ORDER).unwrap().status, PaymentStatus::Declined);
        let declined = world.outbox()[0].decode::<PaymentDeclined>().unwrap();
        assert_eq!(declined.data.reason, "amount 10000.01 exceeds the customer's limit 10000.00");
        assert_eq!(declined.data.amount, "10000.01".parse::<Decimal>().unwrap());
    }

    #[tokio::test]
    async fn a_redelivered_request_does_not_charge_again_and_emits_nothing() {
        let provider = FlakyProvider::default();
        let world = World::new(&provider, CircuitBreaker::new(FAILURE_THRESHOLD, COOL_DOWN));
        world.process(sqs_event(PAYMENT_REQUESTED)).await;

        let failed = world.process(sqs_event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1, "charged once");
        assert_eq!(world.store.outbox().len(), 1, "one event");
        assert_eq!(world.store.write_requests(), 1, "the duplicate is recognised on the read");
    }

    #[tokio::test]
    async fn an_unknown_version_goes_to_the_dlq_naming_the_supported_ones() {
        let world = simulated(0.0);

        let failed = world.process(sqs_event(UNKNOWN_VERSION)).await;

        assert!(failed.is_empty());
        let letters = world.dead_letters.letters();
        assert_eq!(letters[0].reason, "unsupported version 2 of PaymentRequested (this consumer reads versions 1..=1)");
        assert_eq!(world.store.write_requests(), 0);
    }

    #[tokio::test]
    async fn a_non_positive_amount_goes_to_the_dlq() {
        let world = simulated(0.0);

        world.process(batch(&[(payment_requested("o-neg", "-1.00"), 1)])).await;

        assert_eq!(world.dead_letters.letters()[0].reason, "order o-neg: invalid amount -1.00: must be positive");
    }

    #[tokio::test]
    async fn a_transient_provider_failure_is_retried_by_the_queue_and_the_next_attempt_draws_again() {
        // An order whose first attempt draws lower than its second, and a rate between the two draws: the first
        // attempt fails, the second succeeds.
        let order = (0..100).map(|i| format!("o-{i}")).find(|o| failure_draw(o, 1) < failure_draw(o, 2)).unwrap();
        let rate = (failure_draw(&order, 1) + failure_draw(&order, 2)) / 2.0;
        let world = simulated(rate);
        let body = payment_requested(&order, "20.00");

        let failed = world.process(batch(&[(body.clone(), 1)])).await;

        assert_eq!(failed, ["m-0"], "reported for retry");
        assert!(world.store.stored(&order).is_none());
        assert!(world.dead_letters.letters().is_empty());

        let failed = world.process(batch(&[(body, 2)])).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.stored(&order).unwrap().status, PaymentStatus::Authorized);
    }

    #[tokio::test]
    async fn consecutive_provider_failures_open_the_circuit_which_then_fails_fast_without_calling() {
        let provider = FlakyProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::new(&provider, CircuitBreaker::new(3, Duration::from_secs(60)));
        let bodies: Vec<(String, u32)> = (0..5).map(|i| (payment_requested(&format!("o-{i}"), "5.00"), 1)).collect();

        let failed = world.process(batch(&bodies)).await;

        assert_eq!(failed.len(), 5, "every record is retried later");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3, "the circuit opened after 3 failures");
        assert!(world.dead_letters.letters().is_empty(), "an open circuit is transient, not poison");
        assert!(world.store.outbox().is_empty());
    }

    #[tokio::test]
    async fn after_the_cool_down_a_successful_trial_closes_the_circuit() {
        let provider = FlakyProvider::default();
        provider.down.store(true, Ordering::SeqCst);
        let world = World::new(&provider, CircuitBreaker::new(1, Duration::from_millis(50)));
        world.process(batch(&[(payment_requested("o-1", "5.00"), 1)])).await;
        provider.down.store(false, Ordering::SeqCst);

        let refused = world.process(batch(&[(payment_requested("o-1", "5.00"), 2)])).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let bodies: Vec<(String, u32)> = (1..4).map(|i| (payment_requested(&format!("o-{i}"), "5.00"), 3)).collect();
        let failed = world.process(batch(&bodies)).await;

        assert_eq!(refused.len(), 1, "still open during the cool-down");
        assert!(failed.is_empty(), "the trial call closed the circuit: {failed:?}");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
        assert_eq!(world.store.outbox().len(), 3);
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_and_the_retry_records_the_payment_once() {
        let world = simulated(0.0);
        world.store.fail_next_writes(1);

        let failed = world.process(sqs_event(PAYMENT_REQUESTED)).await;
        assert_eq!(failed.len(), 1);
        let failed = world.process(sqs_event(PAYMENT_REQUESTED)).await;

        assert!(failed.is_empty());
        assert_eq!(world.store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_event_type_payment_does_not_handle_goes_to_the_dlq_naming_it() {
        let world = simulated(0.0);
        let authorized = PaymentAuthorized { order_id: "o".into(), payment_id: "p".into(), amount: Decimal::ONE };
        let body = json!({"id": Uuid::new_v4(), "detail-type": "PaymentAuthorized", "source": "orderflow.payment",
                          "time": "2026-11-24T10:00:00Z", "detail": Envelope::new("o", authorized)});

        world.process(batch(&[(body.to_string(), 1)])).await;

        assert_eq!(world.dead_letters.letters()[0].reason, "this consumer does not handle PaymentAuthorized");
    }
}
