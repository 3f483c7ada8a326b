//! `payment-provider`: the simulated payment provider of the local cloud (see the library docs for the API).
//!
//! Once bound it prints exactly one line on stdout, `payment-provider listening on http://ADDR`, so whoever starts
//! it learns the port it was given (`--listen 127.0.0.1:0`) without a choose-then-bind race. It stops on SIGTERM
//! or SIGINT.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use orderflow_domain::Decimal;
use orderflow_domain::payment::default_customer_limit;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(name = "payment-provider", version, about = "A simulated payment provider over HTTP (authorize and void)")]
struct Cli {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Amount above which an authorization is declined [default: 10000.00]
    #[arg(long, value_name = "AMOUNT", value_parser = parse_limit, allow_hyphen_values = true)]
    customer_limit: Option<Decimal>,
}

fn parse_limit(text: &str) -> Result<Decimal, String> {
    let limit: Decimal = text.parse().map_err(|_| format!("{text:?} is not a decimal number"))?;
    if limit < Decimal::ZERO {
        return Err(format!("{text} must not be negative"));
    }
    Ok(limit)
}

/// Completes on the first SIGTERM or SIGINT.
async fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

async fn run(cli: Cli) -> Result<(), String> {
    let stop = stop_signal().await.map_err(|err| format!("installing the signal handlers: {err}"))?;
    let listener = TcpListener::bind(cli.listen).await.map_err(|err| format!("binding {}: {err}", cli.listen))?;
    let address = listener.local_addr().map_err(|err| format!("reading the bound address: {err}"))?;
    writeln!(std::io::stdout().lock(), "payment-provider listening on http://{address}")
        .and_then(|()| std::io::stdout().flush())
        .map_err(|err| format!("writing the address to stdout: {err}"))?;
    let limit = cli.customer_limit.unwrap_or_else(default_customer_limit);
    payment_provider::serve(listener, limit, stop).await.map_err(|err| format!("serving on {address}: {err}"))
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
            // clap's first line names the argument and the problem; the usage lines after it are noise here.
            let rendered = err.render().to_string();
            let message = rendered.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{message} (see 'payment-provider --help')");
            return ExitCode::from(2);
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
