//! `cargo xtask package`: what `cargo lambda build --release --output-format zip` produces, with the sizes.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use orderflow_local_cloud::cloud::FUNCTIONS;
use orderflow_local_cloud::tools::Tools;

use crate::project_root;

#[derive(Args)]
pub struct PackageArgs {
    /// Build for arm64 (Graviton, as infra/functions.yaml deploys) instead of x86_64.
    #[arg(long)]
    arm64: bool,
}

pub fn run(args: PackageArgs) -> Result<()> {
    let root = project_root();
    let tools = Tools::ensure(&root)?;
    let mut command = Command::new(tools.cargo_lambda());
    command.args(["lambda", "build", "--release", "--output-format", "zip"]);
    if args.arm64 {
        command.arg("--arm64");
    }
    for function in FUNCTIONS {
        command.args(["--package", function]);
    }
    let started = Instant::now();
    let status =
        command.current_dir(&root).env("PATH", tools.path_env()?).status().context("running cargo lambda build")?;
    if !status.success() {
        bail!("cargo lambda build failed");
    }
    let elapsed = started.elapsed();
    println!("{:<16} {:>12}", "function", "bootstrap.zip");
    for function in FUNCTIONS {
        let zip = root.join("target/lambda").join(function).join("bootstrap.zip");
        let bytes = std::fs::metadata(&zip).with_context(|| format!("{} was not built", zip.display()))?.len();
        println!("{function:<16} {:>9.2} MB", bytes as f64 / 1_000_000.0);
    }
    println!("built in {:.0} s", elapsed.as_secs_f64());
    Ok(())
}
