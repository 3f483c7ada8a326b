//! `orderflow-dlq`: the operators' tool for orderflow's dead-letter queues. See `orderflow-dlq --help`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgGroup, Parser, Subcommand};
use orderflow_aws::operator::{exit_code_of, operator_sdk_config, parse_command_line};
use orderflow_dlq::{DeadLetterQueues, Selection, confirm_purge, render};

#[derive(Debug, Parser)]
#[command(
    name = "orderflow-dlq",
    version,
    about = "List, inspect, redrive and purge orderflow's dead-letter queues",
    long_about = "List, inspect, redrive and purge orderflow's dead-letter queues.\n\n\
        Talks to SQS with the AWS SDK's default configuration (AWS_REGION / AWS_PROFILE / ~/.aws, the default \
        credential chain). Against a local emulator pass --endpoint-url or set AWS_ENDPOINT_URL; for an endpoint on \
        this machine (localhost, 127.x) the emulators' test credentials and region us-east-1 are used unless \
        AWS_ACCESS_KEY_ID, AWS_PROFILE or AWS_REGION say otherwise."
)]
struct Cli {
    /// SQS endpoint URL, e.g. http://127.0.0.1:4566 for the local cloud [default: AWS_ENDPOINT_URL, else AWS]
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
    /// Every dead-letter queue with its depth (visible + in flight) and its source queues.
    ///
    /// A DLQ is a queue another queue's RedrivePolicy names (deadLetterTargetArn), or a queue whose name ends in
    /// Dlq or -dlq (e.g. the on-failure destinations of Lambda functions).
    List {
        /// Only queues whose name starts with this, e.g. orderflow-dev-
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Messages of a DLQ with why they failed, their receive count, sent time and body.
    ///
    /// The reason comes from the attributes orderflow's functions set (orderflow-error-reason,
    /// orderflow-error-class, orderflow-source-message-id), or from responsePayload.errorMessage of a Lambda
    /// failure record. Reading a message counts as a receive; it stays in the DLQ.
    Show {
        /// The DLQ: name, URL or ARN
        dlq: String,
        /// How many messages to show, at most
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
        /// Show whole bodies (otherwise cut after 1000 characters)
        #[arg(long)]
        full: bool,
    },
    /// Move messages from a DLQ back to their source queue (or --to).
    ///
    /// Each message is sent with its body and message attributes, without the orderflow-error-* attributes, and
    /// deleted from the DLQ only after the send succeeded: a message whose send fails stays in the DLQ and is
    /// reported. Exits with 1 unless every selected message moved.
    #[command(group(ArgGroup::new("which").required(true).args(["message_ids", "all"])))]
    Redrive {
        /// The DLQ: name, URL or ARN
        dlq: String,
        /// Target queue (name, URL or ARN) [default: the queue whose RedrivePolicy names the DLQ]
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
        /// Move only the messages with these ids (repeatable)
        #[arg(long = "message-id", value_name = "ID")]
        message_ids: Vec<String>,
        /// Move every message
        #[arg(long)]
        all: bool,
    },
    /// Delete every message of a DLQ, after typing its name to confirm.
    ///
    /// Without --yes the queue name must be typed on the terminal; without a terminal it refuses.
    Purge {
        /// The DLQ: name, URL or ARN
        dlq: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

/// The commands, for the error of a missing one.
const COMMANDS: &str = "list, show, redrive or purge";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse_command_line::<Cli>("orderflow-dlq", COMMANDS) {
        Ok(cli) => exit_code_of(run(cli).await),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = operator_sdk_config(cli.endpoint_url.as_deref(), cli.region, "orderflow-dlq-local").await?;
    let dlqs = DeadLetterQueues::new(aws_sdk_sqs::Client::new(&config));
    match cli.command {
        Command::List { prefix } => {
            let prefix = prefix.filter(|p| !p.is_empty());
            let found = dlqs.list(prefix.as_deref()).await.context("listing the dead-letter queues")?;
            print!("{}", render::dead_letter_queues(&found, prefix.as_deref()));
        }
        Command::Show { dlq, max, full } => {
            let dlq = dlqs.resolve(&dlq).await?;
            let depth = dlqs.depth(&dlq).await?;
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            let peek = dlqs.show(&dlq, max).await.with_context(|| format!("reading {}", dlq.name))?;
            print!("{}", render::peek(&dlq, Some(depth), &peek, full));
        }
        Command::Redrive { dlq, to, message_ids, all } => {
            let dlq = dlqs.resolve(&dlq).await?;
            let target = match to {
                Some(to) => dlqs.resolve(&to).await?,
                None => dlqs.redrive_target(&dlq).await?,
            };
            let selection =
                if all { Selection::All } else { Selection::Ids(message_ids.into_iter().collect::<BTreeSet<_>>()) };
            let report = dlqs
                .redrive(&dlq, &target, &selection)
                .await
                .with_context(|| format!("redriving {} to {}", dlq.name, target.name))?;
            print!("{}", render::redrive(&report));
            if !report.is_complete() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Purge { dlq, yes } => {
            let dlq = dlqs.resolve(&dlq).await?;
            let depth = dlqs.depth(&dlq).await?;
            let stdin = std::io::stdin();
            let is_terminal = stdin.is_terminal();
            confirm_purge(&dlq, depth, yes, is_terminal, &mut stdin.lock(), &mut std::io::stderr())?;
            let before = dlqs.purge(&dlq).await?;
            println!(
                "purged {} ({} message{}: {} visible, {} in flight; SQS may take up to 60 seconds to finish)",
                dlq.name,
                before.total(),
                if before.total() == 1 { "" } else { "s" },
                before.visible,
                before.in_flight
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
            &["orderflow-dlq", "--bogus"],
            &["orderflow-dlq"],
            &["orderflow-dlq", "redrive", "q-dlq"],
            &["orderflow-dlq", "redrive", "q-dlq", "--all", "--message-id", "m-1"],
            &["orderflow-dlq", "show", "q-dlq", "--max", "0"],
            &["orderflow-dlq", "frobnicate"],
        ];
        for args in cases {
            let err = Cli::try_parse_from(*args).expect_err("invalid");
            let line = usage_error(&err, "orderflow-dlq", COMMANDS);
            assert!(!line.contains('\n') && line.starts_with("error: "), "{args:?}: {line}");
        }
        let err = Cli::try_parse_from(["orderflow-dlq", "redrive", "q-dlq"]).expect_err("needs a selection");
        let line = usage_error(&err, "orderflow-dlq", COMMANDS);
        assert!(line.contains("--all"), "{line}");
    }
}
