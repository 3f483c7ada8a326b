//! `orderflow-replay`: re-publishes events of the orders event store to the bus. See `orderflow-replay --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use orderflow_aws::EventBridgeBus;
use orderflow_aws::operator::{exit_code_of, operator_sdk_config, parse_command_line};
use orderflow_orders_store::{DynamoOrders, deadlines_from_env};
use orderflow_replay::{Selection, replay};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Parser)]
#[command(
    name = "orderflow-replay",
    version,
    about = "Re-publish events of orderflow's orders event store to the bus, for a consumer added after the fact",
    long_about = "Re-publish events of orderflow's orders event store to the bus, for a consumer added after the \
        fact.\n\n\
        Each event goes out as it was stored and first published (same detail, same envelope id), an order's events \
        in version order. Every rule of the bus gets them: the consumers that saw them before take them as \
        duplicates. No bus archive is needed, and the event store holds every order's whole history.\n\n\
        Talks to DynamoDB and EventBridge with the AWS SDK's default configuration (AWS_REGION / AWS_PROFILE / \
        ~/.aws, the default credential chain). Against a local emulator pass --endpoint-url or set \
        AWS_ENDPOINT_URL; for an endpoint on this machine (localhost, 127.x) the emulators' test credentials and \
        region us-east-1 are used unless AWS_ACCESS_KEY_ID, AWS_PROFILE or AWS_REGION say otherwise. The names are \
        the stateful stack's outputs OrdersTableName and EventBusName."
)]
struct Cli {
    /// AWS endpoint URL, e.g. http://127.0.0.1:4566 for the local cloud [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, global = true, value_name = "URL")]
    endpoint_url: Option<String>,

    /// AWS region [default: from AWS_REGION or the profile]
    #[arg(long, global = true)]
    region: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Target {
    /// The orders event store, e.g. orderflow-dev-Orders
    #[arg(long, env = "ORDERS_TABLE", value_name = "TABLE")]
    orders_table: String,
    /// The event bus, e.g. orderflow-dev
    #[arg(long, env = "EVENT_BUS_NAME", value_name = "BUS")]
    bus: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Re-publish every event of the given orders.
    Orders {
        /// The order ids
        #[arg(required = true, value_name = "ORDER_ID")]
        order_ids: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Re-publish every event of every order that occurred in [--from, --to).
    Range {
        /// The earliest event time, RFC 3339, e.g. 2026-12-01T00:00:00Z
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        from: OffsetDateTime,
        /// The end of the range (exclusive), RFC 3339
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        to: OffsetDateTime,
        #[command(flatten)]
        target: Target,
    },
}

/// The commands, for the error of a missing one.
const COMMANDS: &str = "orders, range";

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse_command_line::<Cli>("orderflow-replay", COMMANDS) {
        Ok(cli) => exit_code_of(run(cli).await),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let (selection, target) = match cli.command {
        Command::Orders { order_ids, target } => (Selection::Orders(order_ids), target),
        Command::Range { from, to, target } => {
            anyhow::ensure!(from < to, "--to must be later than --from");
            (Selection::Between { from, to }, target)
        }
    };
    let config = operator_sdk_config(cli.endpoint_url.as_deref(), cli.region, "orderflow-replay-local").await?;
    let orders = DynamoOrders::new(aws_sdk_dynamodb::Client::new(&config), &target.orders_table, deadlines_from_env()?);
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), &target.bus);
    let replayed = replay(&orders, &bus, &selection)
        .await
        .with_context(|| format!("replaying from {} to {}", target.orders_table, target.bus))?;
    println!(
        "replayed {} events of {} orders from {} to {}",
        replayed.events, replayed.orders, target.orders_table, target.bus
    );
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
            &["orderflow-replay", "--bogus"],
            &["orderflow-replay"],
            &["orderflow-replay", "orders", "--orders-table", "T", "--bus", "B"],
            &["orderflow-replay", "range", "--from", "yesterday", "--to", "2026-12-01T00:00:00Z"],
            &["orderflow-replay", "frobnicate"],
        ];
        for args in cases {
            let err = Cli::try_parse_from(*args).expect_err("invalid");
            let line = usage_error(&err, "orderflow-replay", COMMANDS);
            assert!(!line.contains('\n') && line.starts_with("error: "), "{args:?}: {line}");
        }
    }
}
