//! Payment rules of the simulated provider.

use rust_decimal::Decimal;

/// The limit a customer may spend on one order unless configured otherwise.
pub fn default_customer_limit() -> Decimal {
    Decimal::new(1_000_000, 2)
}

/// What the provider answers for a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentDecision {
    Authorized,
    Declined { reason: String },
}

/// Declines when the amount exceeds the customer's limit; deterministic so tests can steer it.
pub fn decide(amount: Decimal, limit: Decimal) -> PaymentDecision {
    if amount > limit {
        PaymentDecision::Declined { reason: format!("amount {amount} exceeds the customer's limit {limit}") }
    } else {
        PaymentDecision::Authorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_itself_is_authorized_and_a_cent_more_is_declined() {
        let limit = default_customer_limit();
        assert_eq!(decide("10000.00".parse().unwrap(), limit), PaymentDecision::Authorized);
        assert_eq!(
            decide("10000.01".parse().unwrap(), limit),
            PaymentDecision::Declined { reason: "amount 10000.01 exceeds the customer's limit 10000.00".into() }
        );
    }
}
