//! The payment Lambda (SQS PaymentQueue): a simulated payment provider behind a circuit breaker. See [`handler`].
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod provider;
mod store;

use orderflow_aws::config::{ConfigError, env_or};
use orderflow_aws::{load_sdk_config, required_env, run_sqs_consumer};
use orderflow_domain::Decimal;
use orderflow_domain::payment::default_customer_limit;

use crate::dynamo::DynamoPayments;
use crate::handler::Payment;
use crate::provider::SimulatedProvider;

/// Records of one batch in flight at once.
const CONCURRENCY: usize = 4;

/// CUSTOMER_LIMIT (default 10000.00) and PAYMENT_TRANSIENT_FAILURE_RATE (default 0, at most 1).
fn provider_from_env() -> Result<SimulatedProvider, ConfigError> {
    let limit: Decimal = env_or("CUSTOMER_LIMIT", default_customer_limit())?;
    if limit < Decimal::ZERO {
        let value = limit.to_string();
        return Err(ConfigError::Invalid { name: "CUSTOMER_LIMIT", value, reason: "must not be negative".into() });
    }
    let rate: f64 = env_or("PAYMENT_TRANSIENT_FAILURE_RATE", 0.0)?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(ConfigError::Invalid {
            name: "PAYMENT_TRANSIENT_FAILURE_RATE",
            value: rate.to_string(),
            reason: "must be a fraction between 0 and 1".into(),
        });
    }
    Ok(SimulatedProvider::new(limit, rate))
}

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    orderflow_toolkit::logging::init();
    let table = required_env("PAYMENTS_TABLE")?;
    let outbox_table = required_env("OUTBOX_TABLE")?;
    let provider = provider_from_env()?;

    let config = load_sdk_config().await;
    let payment =
        Payment::new(DynamoPayments::new(aws_sdk_dynamodb::Client::new(&config), table, outbox_table), provider);
    run_sqs_consumer(&config, CONCURRENCY, |record| payment.handle(record)).await
}
