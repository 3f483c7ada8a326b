//! sales-windows: closes the sales windows the watermark has passed, invoked every minute by an EventBridge
//! schedule. Wiring only; the logic is in [`handler`].
#![forbid(unsafe_code)]

mod handler;

use lambda_runtime::Error;
use orderflow_analytics_store::DynamoAnalytics;
use orderflow_aws::config::{env_or, positive_env_or};
use orderflow_aws::{ConfigError, load_sdk_config, required_env, run_scheduled_function};
use orderflow_domain::analytics::WindowSpec;

use crate::handler::{Closer, Config};

fn config() -> Result<Config, ConfigError> {
    let defaults = Config::default();
    Ok(Config {
        spec: WindowSpec {
            window_seconds: positive_env_or("ANALYTICS_WINDOW_SECONDS", defaults.spec.window_seconds)?,
            allowed_lateness_seconds: env_or("SALES_ALLOWED_LATENESS_SECONDS", defaults.spec.allowed_lateness_seconds)?,
        },
        watermark_delay_seconds: env_or("SALES_WATERMARK_DELAY_SECONDS", defaults.watermark_delay_seconds)?,
    })
}

// One thread: a Lambda instance handles one event at a time and its handlers wait on I/O, so worker threads
// would only add start-up time and malloc arenas (memory that grows as each thread warms its own).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    orderflow_toolkit::logging::init();
    let env = || Ok::<_, ConfigError>((required_env("ANALYTICS_TABLE")?, required_env("OUTBOX_TABLE")?, config()?));
    let (table, outbox_table, config) = env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let sdk_config = load_sdk_config().await;
    let store = DynamoAnalytics::new(aws_sdk_dynamodb::Client::new(&sdk_config), table, outbox_table);
    let closer = Closer::new(store, config);
    let closer = &closer;
    run_scheduled_function(|tick| closer.handle(tick)).await
}
