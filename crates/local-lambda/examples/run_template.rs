//! Runs the functions of a SAM template against an AWS-API endpoint until Ctrl-C, printing one line per delivery:
//!
//! ```sh
//! cargo run -p local-lambda --example run_template -- template.yaml target/debug http://127.0.0.1:4566 Stage=dev
//! ```
//!
//! Arguments: the template, the directory of the function binaries (named after the last directory of each
//! `CodeUri`), the endpoint, then template parameters as `Name=value`. The queues, streams, buses and destinations
//! the template names must exist there already (deploy them first, e.g. with `local_lambda::deploy::deploy_stack`);
//! every export at the endpoint resolves `Fn::ImportValue`. The HTTP API, when the template has `HttpApi` events,
//! is served on http://127.0.0.1:3000 (`sam local start-api`'s port), the fault rules at `/_local/faults` beside it.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use local_lambda::aws::sdk_config;
use local_lambda::iac::Resolver;
use local_lambda::runner::{Runner, RunnerConfig};
use tokio::sync::broadcast::error::RecvError;

const USAGE: &str = "usage: run_template <template.yaml> <binaries dir> <endpoint URL> [Name=value ...]";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(template), Some(binaries), Some(endpoint)) = (args.next(), args.next(), args.next()) else {
        bail!(USAGE);
    };
    let sdk = sdk_config(&endpoint);
    let mut resolver = Resolver::new().load_exports(&aws_sdk_cloudformation::Client::new(&sdk)).await?;
    for parameter in args {
        let (name, value) =
            parameter.split_once('=').with_context(|| format!("{parameter:?} is not Name=value; {USAGE}"))?;
        resolver = resolver.with_parameter(name, value);
    }
    let log_dir = std::env::temp_dir().join("local-lambda-logs");
    let mut config = RunnerConfig::new(template, resolver, binaries, sdk, endpoint, &log_dir);
    config.http_addr = Some(SocketAddr::from(([127, 0, 0, 1], 3000)));
    let runner = Runner::start(config).await?;
    // Subscribed before anything is printed, so no delivery is missed.
    let mut deliveries = runner.subscribe();
    let names: Vec<&str> = runner.functions().iter().map(|function| function.name.as_str()).collect();
    println!("running {} (logs in {})", names.join(", "), log_dir.display());
    if let Some(addr) = runner.http_addr() {
        println!("HTTP API on http://{addr}, fault rules at http://{addr}/_local/faults");
    }
    loop {
        tokio::select! {
            delivery = deliveries.recv() => match delivery {
                Ok(delivery) => println!("{delivery}"),
                Err(RecvError::Lagged(missed)) => println!("({missed} deliveries not shown)"),
                Err(RecvError::Closed) => break,
            },
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                break;
            }
        }
    }
    runner.shutdown().await
}
