//! What orderflow's operator commands (`orderflow-dlq`, `orderflow-views`) share: the SDK configuration of a
//! command run against AWS or a local emulator, and (feature `cli`) their command line: help on stdout, a usage
//! error or a failure in one line on stderr.

use std::fmt::Display;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The region used against a local emulator when none is configured.
const LOCAL_REGION: &str = "us-east-1";

/// Why an operator command has no SDK configuration.
#[derive(Debug, thiserror::Error)]
pub enum OperatorConfigError {
    #[error("endpoint URL {0:?} must start with http:// or https://")]
    EndpointScheme(String),
    #[error("no AWS region configured: set AWS_REGION, a profile's region, or pass --region")]
    NoRegion,
}

/// The SDK configuration: the default chain, at `endpoint` (else `AWS_ENDPOINT_URL`, which the SDK reads itself).
/// For an endpoint on this machine, the emulators' static test credentials (named `credentials_name`) unless
/// AWS_ACCESS_KEY_ID or AWS_PROFILE is set, and region us-east-1 unless one is configured.
pub async fn operator_sdk_config(
    endpoint: Option<&str>,
    region: Option<String>,
    credentials_name: &'static str,
) -> Result<SdkConfig, OperatorConfigError> {
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|url| !url.trim().is_empty());
    let endpoint = endpoint.map(str::to_owned).or(env_endpoint);
    if let Some(url) = &endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(OperatorConfigError::EndpointScheme(url.clone()));
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
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, credentials_name));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return Ok(config);
    }
    if local {
        return Ok(config.into_builder().region(Region::new(LOCAL_REGION)).build());
    }
    Err(OperatorConfigError::NoRegion)
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

/// The parsed command line of `command`, or the exit code after clap printed help or the version (0), or after
/// a usage error printed in one line (2). `subcommands` names the commands for the error of a missing one.
#[cfg(feature = "cli")]
pub fn parse_command_line<C: clap::Parser>(command: &str, subcommands: &str) -> Result<C, ExitCode> {
    use clap::error::ErrorKind;
    match C::try_parse() {
        Ok(cli) => Ok(cli),
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = err.print();
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{}", usage_error(&err, command, subcommands));
            Err(ExitCode::from(2))
        }
    }
}

/// A usage error of `command` in one line (see [`one_line_usage_error`]); a missing subcommand names them all.
#[cfg(feature = "cli")]
pub fn usage_error(err: &clap::Error, command: &str, subcommands: &str) -> String {
    use clap::error::ErrorKind;
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand || err.kind() == ErrorKind::MissingSubcommand {
        return format!("error: a command is required: {subcommands} (see '{command} --help')");
    }
    one_line_usage_error(&err.render().to_string(), command)
}

/// The exit code of a command's run: its own, or 1 after its failure is printed as one line `error: ...` on stderr
/// (an `anyhow` chain printed with `{:#}` keeps its causes).
pub fn exit_code_of<E: Display>(result: Result<ExitCode, E>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("error: {}", text.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "cli")]
/// A usage error of `command` in one line, from the error as clap renders it: what is wrong and clap's tips,
/// without the usage block, and where to read more.
fn one_line_usage_error(rendered: &str, command: &str) -> String {
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
    format!("{message} (see '{command} --help')")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[cfg(feature = "cli")]
    #[test]
    fn a_usage_error_keeps_its_message_and_tips_and_drops_the_usage_block() {
        let rendered = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use \
                        '-- --bogus'\n\nUsage: tool <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered, "tool"),
            "error: unexpected argument '--bogus' found; tip: to pass '--bogus' as a value, use '-- --bogus' (see \
             'tool --help')"
        );
    }
}
