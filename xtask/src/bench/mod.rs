//! `cargo xtask bench`: the benchmarks of the DESIGN targets, measured side by side in one run and printed as one
//! table. Benchmarks, not tests: nothing here runs in `cargo xtask test`.
//!
//! One module per figure, each saying what it measures and how: [`size`] (the zipped `bootstrap` per function),
//! [`cpu`] (CPU per message and per invocation, criterion), [`init`] (process start -> first poll of the Runtime
//! API, against a bare lambda_runtime hello world, and the connections made before the first event) and
//! [`memory`] (peak RSS and its growth over thousands of messages through the release inventory binary).
//! [`stubs`] holds the HTTP endpoints the processes talk to instead of AWS (a Runtime API that only timestamps, a
//! DynamoDB that serves the inventory's reservation path), [`setup`] the release build and the stack that init
//! and memory share.
//!
//! moto is started (project helpers) only to deploy `infra/stateful.yaml` under a fresh stage, so that every
//! process runs with the environment `infra/functions.yaml` gives it.

mod cpu;
mod init;
mod memory;
mod setup;
mod size;
mod stubs;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use clap::{Args, ValueEnum};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_local_cloud::tools::Tools;

use crate::project_root;

#[derive(Args)]
pub struct BenchArgs {
    /// Short runs (5 init runs per binary, 1,000 messages, criterion --quick) to try the bench out; not the
    /// figures to publish.
    #[arg(long)]
    quick: bool,
    /// Init runs per binary.
    #[arg(long, default_value_t = 20)]
    init_runs: usize,
    /// Messages through the function for the memory figures (RSS is read after every tenth of them).
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// More environment for the function of the memory run (KEY=VALUE, repeatable), e.g. to see what changes
    /// its memory (`RUST_LOG=warn`, `MALLOC_ARENA_MAX=1`).
    #[arg(long = "memory-env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    memory_env: Vec<(String, String)>,
    /// Measure only these (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
}

fn parse_key_value(pair: &str) -> Result<(String, String), String> {
    let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Size,
    Cpu,
    Init,
    Memory,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let root = project_root();
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let (init_runs, messages) =
        if args.quick { (args.init_runs.min(5), args.messages.min(1000)) } else { (args.init_runs, args.messages) };
    ensure!(init_runs >= 1, "--init-runs must be at least 1");
    ensure!(messages >= 10, "--messages must be at least 10");
    let mut table = Table::default();
    let result = measure(&root, &args, wants, init_runs, messages, &mut table);
    table.print(&args, init_runs, messages);
    result
}

fn measure(
    root: &Path,
    args: &BenchArgs,
    wants: impl Fn(Part) -> bool,
    init_runs: usize,
    messages: usize,
    table: &mut Table,
) -> Result<()> {
    if wants(Part::Size) {
        step("zipped size: cargo xtask package --arm64");
        size::measure(root, table)?;
    }
    if wants(Part::Cpu) {
        step("CPU: cargo bench -p orderflow-domain --bench batch");
        cpu::measure(root, args.quick, table)?;
    }
    if !wants(Part::Init) && !wants(Part::Memory) {
        return Ok(());
    }
    step("release build of the measured binaries");
    let binaries = setup::build_release(root)?;
    step("moto with infra/stateful.yaml under a fresh stage");
    let runtime = tokio::runtime::Runtime::new()?;
    let tools = Tools::ensure(root)?;
    let moto = runtime.block_on(Emulator::start_moto(&tools, 0))?;
    let result = runtime.block_on(async {
        let stack = setup::deploy(root, moto.endpoint()).await?;
        if wants(Part::Init) {
            step(&format!("init: {init_runs} runs of each binary"));
            init::measure(&binaries, &stack, init_runs, table).await?;
        }
        if wants(Part::Memory) {
            step(&format!("memory: {messages} messages through {}", memory::MEMORY_FUNCTION));
            memory::measure(root, &binaries, &stack, messages, &args.memory_env, table).await?;
        }
        Ok(())
    });
    drop(moto);
    result
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO")).args(args).current_dir(root).status().context("running cargo")?;
    ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// `9000` as `9k`: the message counts of the report.
fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

// ------------------------------------------------------------------------------------------------ report

/// How a figure compares with its DESIGN target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    Info,
}

impl Verdict {
    fn target(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "ok",
            Self::Missed => "MISSED",
            Self::Info => "",
        }
    }
}

/// The report: one row per figure, printed as one Markdown table when the run ends (after a failure too, with
/// the rows measured until then).
#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, target: &str, verdict: Verdict) {
        self.rows.push([what.into(), figure.into(), target.to_owned(), verdict.label().to_owned()]);
    }

    fn print(&self, args: &BenchArgs, init_runs: usize, messages: usize) {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        println!();
        println!(
            "cargo xtask bench{}: {cores} cores, load average {} at the end; {init_runs} init runs per binary, {} messages",
            if args.quick { " --quick (NOT figures to publish)" } else { "" },
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            thousands(messages),
        );
        let headers = ["what", "figure", "target", "verdict"].map(str::to_owned);
        let widths: Vec<usize> = (0..4)
            .map(|i| self.rows.iter().chain([&headers]).map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let line = |row: &[String; 4]| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            println!("| {} |", cells.join(" | "));
        };
        line(&headers);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for row in &self.rows {
            line(row);
        }
        let missed = self.rows.iter().filter(|r| r[3] == Verdict::Missed.label()).count();
        println!("{missed} target(s) missed");
    }
}
