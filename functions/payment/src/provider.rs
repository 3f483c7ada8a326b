//! The simulated payment provider: deterministic, so tests and demos can steer it.
//!
//! - It declines a charge above the customer's limit ([`orderflow_domain::payment::decide`]).
//! - It fails transiently for a configured fraction of calls. Whether a call fails depends only on the order and
//!   the attempt (the SQS receive count), through a hash: the same delivery fails the same way every time, and a
//!   later attempt draws again.

use std::future::Future;

use orderflow_domain::Decimal;
use orderflow_domain::payment::{self, PaymentDecision};

/// One charge as the provider receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Decimal,
    /// The delivery attempt of the request (1 for the first).
    pub attempt: u32,
    /// Stable per order: the provider's idempotency key, so a charge retried after a lost answer is made once.
    pub payment_id: String,
}

/// The provider did not answer with a decision; trying again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// A payment provider.
pub trait PaymentProvider: Send + Sync {
    fn charge(&self, charge: &Charge) -> impl Future<Output = Result<PaymentDecision, ProviderUnavailable>> + Send;
}

/// A draw in `[0, 1)` determined by the order and the attempt (FNV-1a, then a SplitMix64 finaliser).
pub fn failure_draw(order_id: &str, attempt: u32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in order_id.bytes().chain([0]).chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    // The top 53 bits fill an f64 mantissa exactly.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The simulated provider.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    limit: Decimal,
    transient_failure_rate: f64,
}

impl SimulatedProvider {
    /// `transient_failure_rate` in `[0, 1]`: 0 never fails, 1 always does.
    pub fn new(limit: Decimal, transient_failure_rate: f64) -> Self {
        Self { limit, transient_failure_rate }
    }

    /// Whether the call for this order and attempt fails transiently.
    pub fn fails(&self, order_id: &str, attempt: u32) -> bool {
        failure_draw(order_id, attempt) < self.transient_failure_rate
    }
}

impl PaymentProvider for SimulatedProvider {
    async fn charge(&self, charge: &Charge) -> Result<PaymentDecision, ProviderUnavailable> {
        if self.fails(&charge.order_id, charge.attempt) {
            return Err(ProviderUnavailable(format!(
                "simulated transient failure for order {} attempt {} (PAYMENT_TRANSIENT_FAILURE_RATE = {})",
                charge.order_id, charge.attempt, self.transient_failure_rate
            )));
        }
        Ok(payment::decide(charge.amount, self.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_is_deterministic_and_changes_with_the_attempt() {
        assert_eq!(failure_draw("o-1", 1), failure_draw("o-1", 1));
        assert_ne!(failure_draw("o-1", 1), failure_draw("o-1", 2));
        assert_ne!(failure_draw("o-1", 1), failure_draw("o-2", 1));
    }

    #[test]
    fn the_failure_rate_is_the_fraction_of_calls_that_fail() {
        let provider = SimulatedProvider::new(Decimal::ONE, 0.3);
        let failures = (0..10_000).filter(|i| provider.fails(&format!("order-{i}"), 1)).count();
        assert!((2_800..=3_200).contains(&failures), "{failures} of 10000");
    }

    #[test]
    fn rate_zero_never_fails_and_rate_one_always_does() {
        let never = SimulatedProvider::new(Decimal::ONE, 0.0);
        let always = SimulatedProvider::new(Decimal::ONE, 1.0);
        for i in 0..1_000 {
            assert!(!never.fails(&format!("o-{i}"), i));
            assert!(always.fails(&format!("o-{i}"), i));
        }
    }
}
