//! `orderflow-views`: the operators' tool for orderflow's read models. See `orderflow-views --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use orderflow_aws::operator::{exit_code_of, operator_sdk_config, parse_command_line};
use orderflow_order_views::{DynamoViews, rebuild};
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};

#[derive(Debug, Parser)]
#[command(
    name = "orderflow-views",
    version,
    about = "Rebuild orderflow's read models (the OrderViews table) from the orders event store",
    long_about = "Rebuild orderflow's read models (the OrderViews table) from the orders event store.\n\n\
        Talks to DynamoDB with the AWS SDK's default configuration (AWS_REGION / AWS_PROFILE / ~/.aws, the default \
        credential chain). Against a local emulator pass --endpoint-url or set AWS_ENDPOINT_URL; for an endpoint on \
        this machine (localhost, 127.x) the emulators' test credentials and region us-east-1 are used unless \
        AWS_ACCESS_KEY_ID, AWS_PROFILE or AWS_REGION say otherwise. The table names are the stacks' outputs \
        OrdersTableName and OrderViewsTableName."
)]
struct Cli {
    /// DynamoDB endpoint URL, e.g. http://127.0.0.1:4566 for the local cloud [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, global = true, value_name = "URL")]
    endpoint_url: Option<String>,

    /// AWS region [default: from AWS_REGION or the profile]
    #[arg(long, global = true)]
    region: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Re-derive every order view from the event store.
    ///
    /// Folds each order of the event store and writes its view unless a newer one is stored (so it is safe while
    /// the order-views function runs), then deletes the views of orders the event store does not hold. Run it
    /// after restoring or emptying the OrderViews table, or after a change to what a view holds.
    Rebuild {
        /// The orders event store, e.g. orderflow-dev-Orders
        #[arg(long, env = "ORDERS_TABLE", value_name = "TABLE")]
        orders_table: String,
        /// The read models' table, e.g. orderflow-dev-OrderViews
        #[arg(long, env = "ORDER_VIEWS_TABLE", value_name = "TABLE")]
        views_table: String,
    },
}

/// The commands, for the error of a missing one.
const COMMANDS: &str = "rebuild";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse_command_line::<Cli>("orderflow-views", COMMANDS) {
        Ok(cli) => exit_code_of(run(cli).await),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = operator_sdk_config(cli.endpoint_url.as_deref(), cli.region, "orderflow-views-local").await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    match cli.command {
        Command::Rebuild { orders_table, views_table } => {
            let deadlines = deadlines_from_env()?;
            let orders = DynamoOrders::new(dynamodb.clone(), &orders_table, deadlines);
            let views = DynamoViews::new(dynamodb, &views_table);
            let started = Instant::now();
            let rebuilt = rebuild(&orders, &views, &deadlines)
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))
                .with_context(|| format!("rebuilding {views_table} from {orders_table}"))?;
            println!(
                "rebuilt {views_table} from {orders_table}: {} orders projected, {} stray views deleted, in {:.1} s",
                rebuilt.projected,
                rebuilt.removed,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use orderflow_aws::operator::usage_error;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_one_line() {
        let cases: &[&[&str]] = &[
            &["orderflow-views", "--bogus"],
            &["orderflow-views"],
            &["orderflow-views", "rebuild", "--orders-table"],
            &["orderflow-views", "frobnicate"],
        ];
        for args in cases {
            let err = Cli::try_parse_from(*args).expect_err("invalid");
            let line = usage_error(&err, "orderflow-views", COMMANDS);
            assert!(!line.contains('\n') && line.starts_with("error: "), "{args:?}: {line}");
        }
    }
}
