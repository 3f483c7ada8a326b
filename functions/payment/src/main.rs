//! The payment Lambda (SQS PaymentQueue): charges and voids at the payment provider's HTTP API, behind a circuit
//! breaker. See [`handler`].
#![forbid(unsafe_code)]

mod dynamo;
mod handler;
#[cfg(test)]
mod memory;
mod provider;
mod store;

use std::time::Duration;

use orderflow_aws::config::{ConfigError, env_or};
use orderflow_aws::consumer::run_sqs_consumer_with_deadline;
use orderflow_aws::{load_sdk_config, required_env};
use orderflow_toolkit::idempotency::Idempotency;

use crate::dynamo::DynamoPayments;
use crate::handler::Payment;
use crate::provider::HttpProvider;

/// Records of one batch in flight at once.
const CONCURRENCY: usize = 4;
/// How long a provider call may take unless PAYMENT_PROVIDER_TIMEOUT_MS says otherwise.
const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 2_000;
/// The longest provider timeout accepted: a minute is already far beyond the function's own timeout.
const MAX_PROVIDER_TIMEOUT_MS: u64 = 60_000;

/// PAYMENT_PROVIDER_URL (required) and PAYMENT_PROVIDER_TIMEOUT_MS (default 2000, 1..=60000).
fn provider_from_env() -> Result<HttpProvider, ConfigError> {
    let url = required_env("PAYMENT_PROVIDER_URL")?;
    let timeout_ms: u64 = env_or("PAYMENT_PROVIDER_TIMEOUT_MS", DEFAULT_PROVIDER_TIMEOUT_MS)?;
    if !(1..=MAX_PROVIDER_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError::Invalid {
            name: "PAYMENT_PROVIDER_TIMEOUT_MS",
            value: timeout_ms.to_string(),
            reason: format!("must be between 1 and {MAX_PROVIDER_TIMEOUT_MS} milliseconds"),
        });
    }
    HttpProvider::new(&url, Duration::from_millis(timeout_ms)).map_err(|reason| ConfigError::Invalid {
        name: "PAYMENT_PROVIDER_URL",
        value: url.clone(),
        reason,
    })
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
    let payments = DynamoPayments::new(aws_sdk_dynamodb::Client::new(&config), table, outbox_table);
    let charge_locks = Idempotency::new(payments.charge_locks());
    let payment = Payment::new(payments, provider, charge_locks);
    run_sqs_consumer_with_deadline(&config, CONCURRENCY, |record, deadline| payment.handle(record, deadline)).await
}
