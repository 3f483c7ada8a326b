//! The zipped size of every function: `cargo xtask package --arm64` (the architecture `infra/functions.yaml`
//! deploys), then the size of each `target/lambda/<function>/bootstrap.zip`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, FromArgMatches};
use orderflow_local_cloud::cloud::FUNCTIONS;

use super::{Table, Verdict};
use crate::package;

/// The DESIGN target.
const ZIP_TARGET_BYTES: u64 = 2_500_000;

pub fn measure(root: &Path, table: &mut Table) -> Result<()> {
    // `cargo xtask package --arm64` itself, through its own argument parser.
    let command = package::PackageArgs::augment_args(clap::Command::new("package"));
    let args = package::PackageArgs::from_arg_matches(&command.try_get_matches_from(["package", "--arm64"])?)?;
    package::run(args)?;
    for function in FUNCTIONS {
        let zip = root.join("target/lambda").join(function).join("bootstrap.zip");
        let bytes = std::fs::metadata(&zip).with_context(|| format!("{} was not built", zip.display()))?.len();
        table.row(
            format!("zipped bootstrap, {function} (arm64)"),
            format!("{:.2} MB", bytes as f64 / 1e6),
            "<= 2.5 MB",
            Verdict::target(bytes <= ZIP_TARGET_BYTES),
        );
    }
    Ok(())
}
