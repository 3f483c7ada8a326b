//! `orderflow-dlq`: the operators' tool for orderflow's dead-letter queues. See `orderflow-dlq --help`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use clap::error::ErrorKind;
use clap::{ArgGroup, Parser, Subcommand};
use orderflow_dlq::{DeadLetterQueues, Selection, confirm_purge, render};

/// The region used against a local emulator when none is configured.
const LOCAL_REGION: &str = "us-east-1";

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{}", usage_error(&err));
            return ExitCode::from(2);
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("error: {}", text.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::FAILURE
        }
    }
}

/// A usage error on one line: clap's message without the usage and tips that follow it.
fn usage_error(err: &clap::Error) -> String {
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand || err.kind() == ErrorKind::MissingSubcommand {
        return "error: a command is required: list, show, redrive or purge (see 'orderflow-dlq --help')".to_owned();
    }
    let rendered = err.render().to_string();
    let (mut parts, mut tips) = (Vec::new(), Vec::new());
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.starts_with("tip:") {
            tips.push(line);
        } else if !line.is_empty() && tips.is_empty() {
            parts.push(line);
        }
    }
    let mut message = parts.join(" ");
    for tip in tips {
        message.push_str("; ");
        message.push_str(tip);
    }
    let message = if message.is_empty() { "error: invalid arguments".to_owned() } else { message };
    format!("{message} (see 'orderflow-dlq --help')")
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = sdk_config(cli.endpoint_url.as_deref(), cli.region).await?;
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

/// The SDK configuration: the default chain, at `endpoint` (else `AWS_ENDPOINT_URL`, which the SDK reads itself).
/// For an endpoint on this machine, the emulators' static test credentials unless AWS_ACCESS_KEY_ID or AWS_PROFILE
/// is set, and region us-east-1 unless one is configured.
async fn sdk_config(endpoint: Option<&str>, region: Option<String>) -> Result<SdkConfig> {
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|url| !url.trim().is_empty());
    let endpoint = endpoint.map(str::to_owned).or(env_endpoint);
    if let Some(url) = &endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("endpoint URL {url:?} must start with http:// or https://");
    }
    let local = endpoint.as_deref().is_some_and(is_local);
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = &endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    let has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if local && !has("AWS_ACCESS_KEY_ID") && !has("AWS_PROFILE") {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "orderflow-dlq-local"));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return Ok(config);
    }
    if local {
        return Ok(config.into_builder().region(Region::new(LOCAL_REGION)).build());
    }
    bail!("no AWS region configured: set AWS_REGION, a profile's region, or pass --region")
}

/// Whether the endpoint URL names this machine (an emulator).
fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "::1"
        || host == "localhost.localstack.cloud"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn local_endpoints() {
        for url in [
            "http://127.0.0.1:4566",
            "http://localhost:5000/",
            "http://[::1]:4566",
            "http://localhost.localstack.cloud:4566",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in ["https://sqs.eu-west-1.amazonaws.com", "http://10.0.0.5:4566", "http://example.com:127"] {
            assert!(!is_local(url), "{url}");
        }
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
            let line = usage_error(&err);
            assert!(!line.contains('\n') && line.starts_with("error: "), "{args:?}: {line}");
        }
        let err = Cli::try_parse_from(["orderflow-dlq", "redrive", "q-dlq"]).expect_err("needs a selection");
        assert!(usage_error(&err).contains("--all"), "{}", usage_error(&err));
    }
}
