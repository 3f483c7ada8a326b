//! `cargo xtask <command>`: the project's automation, so a new machine needs only Rust, Python 3 and Node.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod fuzz;
mod package;
mod test;
mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orderflow_local_cloud::tools::Tools;

#[derive(Parser)]
#[command(about = "orderflow automation: local cloud, demo, tests, packaging")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the project-local tools (.local/venv: moto, cargo-lambda, cfn-lint); --localstack adds LocalStack.
    Setup {
        #[arg(long)]
        localstack: bool,
    },
    /// Start the local cloud, run a scenario with one order per outcome, print the flow and the outcomes.
    Demo(demo::DemoArgs),
    /// Keep the local cloud running (HTTP API on 127.0.0.1:9000) until Ctrl-C or `cargo xtask down`.
    Up(demo::UpArgs),
    /// Stop the local cloud started by `cargo xtask up`.
    Down,
    /// rustfmt, clippy, unit tests, integration tests on moto then LocalStack, cfn-lint.
    Test(test::TestArgs),
    /// Build every function for Lambda with cargo-lambda (release, zip) and print the zipped sizes.
    Package(package::PackageArgs),
    /// Benchmarks of the DESIGN targets (zipped size, CPU per message, init time, memory), one table.
    Bench(bench::BenchArgs),
    /// Print a token the local HTTP API accepts: a customer's (`--customer c-1`) or an operator's (`--admin`).
    Token(token::TokenArgs),
    /// Run each cargo-fuzz target of fuzz/ (nightly) for --seconds and print executions, coverage and crashes.
    Fuzz(fuzz::FuzzArgs),
}

/// The workspace root (this crate lives in `<root>/xtask`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { localstack } => setup(localstack),
        Command::Demo(args) => demo::demo(args),
        Command::Up(args) => demo::up(args),
        Command::Down => demo::down(),
        Command::Test(args) => test::run(args),
        Command::Package(args) => package::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup(localstack: bool) -> anyhow::Result<()> {
    let root = project_root();
    let tools = if localstack { Tools::ensure_localstack(&root)? } else { Tools::ensure(&root)? };
    println!("tools ready in {}", tools.local_dir().display());
    Ok(())
}
