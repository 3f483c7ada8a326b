//! orders-api: the HTTP API (API Gateway HTTP API, payload v2) of orders and stock. Wiring only; the routes are
//! in [`handler`].
#![forbid(unsafe_code)]

use std::convert::Infallible;

use lambda_http::{Error, Request, service_fn};
use orderflow_analytics_store::DynamoAnalytics;
use orderflow_aws::config::env_or;
use orderflow_aws::{ConfigError, required_env};
use orderflow_domain::events::DEFAULT_CURRENCY;
use orderflow_inventory_store::DynamoInventory;
use orderflow_order_views::DynamoViews;
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};

use orders_api::handler::Api;

/// The environment variable of the ISO 4217 code of the currency the catalogue prices in.
const STORE_CURRENCY: &str = "STORE_CURRENCY";

/// The currency of [`STORE_CURRENCY`], [`DEFAULT_CURRENCY`] when unset: three capital letters.
fn store_currency() -> Result<String, ConfigError> {
    let currency: String = env_or(STORE_CURRENCY, DEFAULT_CURRENCY.to_owned())?;
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(currency)
    } else {
        Err(ConfigError::Invalid {
            name: STORE_CURRENCY,
            value: currency,
            reason: "must be an ISO 4217 code: three capital letters, e.g. USD".into(),
        })
    }
}

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let env = || {
        Ok::<_, ConfigError>((
            required_env("ORDERS_TABLE")?,
            required_env("INVENTORY_TABLE")?,
            required_env("OUTBOX_TABLE")?,
            required_env("ORDER_VIEWS_TABLE")?,
            required_env("ANALYTICS_TABLE")?,
            deadlines_from_env()?,
            store_currency()?,
        ))
    };
    let (orders_table, inventory_table, outbox_table, views_table, analytics_table, deadlines, currency) =
        env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;

    let config = orderflow_aws::load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let api = Api::new(
        DynamoOrders::new(dynamodb.clone(), orders_table, deadlines),
        DynamoViews::new(dynamodb.clone(), views_table),
        DynamoInventory::new(dynamodb.clone(), inventory_table, outbox_table.clone()),
        // Reads the closed windows only: the outbox is the closer's, never written from here.
        DynamoAnalytics::new(dynamodb, analytics_table, outbox_table),
        currency,
    );

    let api = &api;
    lambda_http::run(service_fn(move |request: Request| async move { Ok::<_, Infallible>(api.handle(request).await) }))
        .await
}
