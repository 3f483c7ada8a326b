//! `cargo xtask test`: every check CI runs, in order, each timed, stopping the emulators it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use orderflow_local_cloud::emulator::Emulator;
use orderflow_local_cloud::tools::Tools;

use crate::project_root;

#[derive(Args)]
pub struct TestArgs {
    /// Skip the LocalStack pass (moto only).
    #[arg(long)]
    moto_only: bool,
}

/// Counts from cargo's "test result:" lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

struct Report {
    steps: Vec<(String, Duration, bool)>,
    tally: Tally,
}

impl Report {
    fn step(&mut self, name: &str, run: impl FnOnce(&mut Tally) -> Result<()>) -> Result<()> {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = run(&mut self.tally);
        self.steps.push((name.to_owned(), started.elapsed(), result.is_ok()));
        result.with_context(|| format!("step failed: {name}"))
    }

    fn print(&self, total: Duration) {
        eprintln!("\nsteps:");
        for (name, duration, ok) in &self.steps {
            eprintln!("  {:<6} {:>7.1}s  {name}", if *ok { "ok" } else { "FAILED" }, duration.as_secs_f64());
        }
        eprintln!("  total  {:>7.1}s", total.as_secs_f64());
        println!("tests: {} passed, {} failed, {} skipped", self.tally.passed, self.tally.failed, self.tally.ignored);
    }
}

pub fn run(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    let mut report = Report { steps: Vec::new(), tally: Tally::default() };
    let result = run_steps(&args, &mut report);
    report.print(started.elapsed());
    result
}

fn run_steps(args: &TestArgs, report: &mut Report) -> Result<()> {
    let root = project_root();
    report.step("rustfmt --check", |_| cargo(&["fmt", "--all", "--", "--check"]))?;
    report
        .step("clippy -D warnings", |_| cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let tools = Tools::ensure(&root)?;
    report.step("cfn-lint infra/*.yaml", |_| {
        let status = Command::new(tools.cfn_lint())
            .args(["infra/stateful.yaml", "infra/functions.yaml"])
            .current_dir(&root)
            .status()
            .context("running cfn-lint")?;
        if !status.success() {
            bail!("cfn-lint found problems");
        }
        Ok(())
    })?;
    report.step("checkov infra/", |_| {
        // Offline and quick: no platform download, no mapping, no update check (infra/.checkov.yaml).
        let status = Command::new(tools.checkov())
            .args(["--config-file", "infra/.checkov.yaml"])
            .env("BC_SKIP_MAPPING", "TRUE")
            .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
            .current_dir(&root)
            .status()
            .context("running checkov")?;
        if !status.success() {
            bail!("checkov found problems (a skip needs its reason in infra/.checkov.yaml)");
        }
        Ok(())
    })?;
    report.step("cargo-deny bans, licenses, sources", |_| {
        // Only what needs no network: advisories need the RustSec database from GitHub (see deny.toml).
        let status = Command::new(tools.cargo_deny())
            .args(["--locked", "check", "bans", "licenses", "sources"])
            .current_dir(&root)
            .status()
            .context("running cargo-deny")?;
        if !status.success() {
            bail!("cargo-deny found problems (an exception needs its reason in deny.toml)");
        }
        Ok(())
    })?;
    report.step("unit, integration and end-to-end tests on moto", |tally| {
        let runtime = tokio::runtime::Runtime::new()?;
        let moto = runtime.block_on(Emulator::start_moto(&tools, 0))?;
        let result = cargo_test(&["test", "--workspace", "--no-fail-fast"], moto.endpoint(), "moto", tally);
        drop(moto);
        result
    })?;
    if args.moto_only {
        return Ok(());
    }
    report.step("integration tests on LocalStack", |tally| {
        let runtime = tokio::runtime::Runtime::new()?;
        // A LocalStack the user already runs (e.g. the Docker container) is used as it is.
        let localstack = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) => Emulator::external(url),
            Err(_) => {
                let tools = Tools::ensure_localstack(&root)?;
                runtime.block_on(Emulator::start_localstack(&tools, 0))?
            }
        };
        let result = cargo_test(
            &["test", "-p", "orderflow-tests", "--no-fail-fast"],
            localstack.endpoint(),
            "localstack",
            tally,
        );
        drop(localstack);
        result
    })
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO")).args(args).current_dir(project_root()).status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo test` against an emulator, echoing its output and counting its results.
fn cargo_test(args: &[&str], endpoint: &str, emulator: &str, tally: &mut Tally) -> Result<()> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(project_root())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("ORDERFLOW_EMULATOR", emulator)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.add_line(&line);
    }
    if !child.wait()?.success() {
        bail!("cargo test failed against {emulator}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_reads_cargo_result_lines() {
        let mut tally = Tally::default();
        tally.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        tally.add_line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        tally.add_line("running 3 tests");
        assert_eq!((tally.passed, tally.failed, tally.ignored), (4, 2, 1));
    }
}
