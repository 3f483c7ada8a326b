//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (libFuzzer, nightly) for a while each and prints,
//! per target, what libFuzzer's final stats line says (executions, coverage, features) and any crash it found.
//!
//! cargo-fuzz is installed project-locally, into `.local/cargo-tools` (pinned, [`CARGO_FUZZ_VERSION`]), as the
//! local cloud keeps its tools under `.local/`. New inputs a run finds go to `.local/fuzz/corpus/<target>/`, not
//! into the committed seeds of `fuzz/corpus/<target>/` (both are read); crashes go where cargo-fuzz puts them,
//! `fuzz/artifacts/<target>/`: minimise one with `cargo +nightly fuzz tmin <target> <file>`, fix its cause, and keep
//! the minimised file there, where `crates/fuzz-targets/tests/corpus_replay.rs` replays it in `cargo xtask test`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::project_root;

/// The cargo-fuzz installed into [`TOOLS_ROOT`].
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// `cargo install --root` of the project's cargo tools, relative to the project root.
pub const TOOLS_ROOT: &str = ".local/cargo-tools";
/// Where each target's run corpus (the inputs a run found) is kept, relative to the project root.
pub const RUN_CORPUS: &str = ".local/fuzz/corpus";
/// Where each target's last run log is kept, relative to the project root.
pub const RUN_LOGS: &str = ".local/fuzz/logs";

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds each target runs (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (one of fuzz/fuzz_targets/); default: every target.
    #[arg(long)]
    target: Option<String>,
}

/// What one target's run reported.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    /// The figures of the last stats line: executions, coverage (edges), features.
    executions: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    /// Whether libFuzzer reached its `DONE` line (ran its time out without a crash).
    done: bool,
    /// The crash, timeout or OOM input libFuzzer wrote (`Test unit written to <file>`).
    artifact: Option<String>,
}

impl RunStats {
    /// Reads one line of libFuzzer's output: stats lines `#1234\tDONE   cov: 56 ft: 78 corp: ...` and the
    /// `Test unit written to <file>` of a crash.
    fn add_line(&mut self, line: &str) {
        if let Some(file) = line.split("Test unit written to ").nth(1) {
            self.artifact = Some(file.trim().to_owned());
            return;
        }
        let Some(rest) = line.strip_prefix('#') else { return };
        let mut words = rest.split_whitespace();
        let (Some(executions), Some(event)) = (words.next(), words.next()) else { return };
        let Ok(executions) = executions.parse::<u64>() else { return };
        let figure = |name: &str| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            words.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse::<u64>().ok())
        };
        let (cov, ft) = (figure("cov:"), figure("ft:"));
        if cov.is_none() {
            return;
        }
        self.executions = Some(executions);
        self.cov = cov;
        self.ft = ft;
        self.done |= event == "DONE";
    }
}

pub fn run(args: FuzzArgs) -> Result<()> {
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen = match &args.target {
        Some(name) if all.contains(name) => vec![name.clone()],
        Some(name) => bail!("unknown fuzz target {name:?} (targets: {})", all.join(", ")),
        None => all,
    };
    let cargo_fuzz = ensure_cargo_fuzz(&root)?;
    let path = path_with(cargo_fuzz.parent().expect("cargo-fuzz is in a bin directory"))?;

    eprintln!("==> cargo +nightly fuzz build ({})", chosen.join(", "));
    let started = Instant::now();
    let mut build = fuzz_command(&root, &path);
    build.args(["build", "--fuzz-dir", "fuzz"]);
    if let [only] = chosen.as_slice() {
        build.arg(only);
    }
    let status = build.status().context("running cargo +nightly fuzz build (is the nightly toolchain installed?)")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed");
    }
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());

    let mut results = Vec::new();
    for target in &chosen {
        eprintln!("==> fuzzing {target} for {} s", args.seconds);
        results.push((target.as_str(), fuzz_target(&root, &path, target, args.seconds)?));
    }

    println!("{:<20} {:>12} {:>8} {:>8}  result", "target", "executions", "cov", "ft");
    let figure = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut crashed = Vec::new();
    for (target, stats) in &results {
        let result = match (&stats.artifact, stats.done) {
            (Some(artifact), _) => {
                crashed.push(*target);
                format!("CRASH {artifact}")
            }
            (None, true) => "ok, no crash".to_owned(),
            (None, false) => {
                crashed.push(*target);
                format!("FAILED without a crash file (see {RUN_LOGS}/{target}.log)")
            }
        };
        println!(
            "{target:<20} {:>12} {:>8} {:>8}  {result}",
            figure(stats.executions),
            figure(stats.cov),
            figure(stats.ft)
        );
    }
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes in {}: minimise with `cargo +nightly fuzz tmin <target> <file>`, fix the cause, keep \
             the minimised file in fuzz/artifacts/<target>/",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The targets of `fuzz/fuzz_targets/`, by name, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            names.push(path.file_stem().expect("a file name").to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// Runs one target for `seconds`, its output into `.local/fuzz/logs/<target>.log`, and reads the stats.
fn fuzz_target(root: &Path, path: &std::ffi::OsStr, target: &str, seconds: u64) -> Result<RunStats> {
    let run_corpus = root.join(RUN_CORPUS).join(target);
    fs::create_dir_all(&run_corpus).with_context(|| format!("creating {}", run_corpus.display()))?;
    let logs = root.join(RUN_LOGS);
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let mut log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let mut command = fuzz_command(root, path);
    command
        .args(["run", "--fuzz-dir", "fuzz", target])
        // The first directory receives what the run finds; the seeds are read, not written.
        .arg(&run_corpus)
        .arg(root.join("fuzz/corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A unit that runs for 10 s is a hang, not a slow input.
        .arg("-timeout=10")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("running cargo +nightly fuzz run")?;
    let mut stats = RunStats::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        writeln!(log, "{line}").with_context(|| format!("writing {}", log_path.display()))?;
        stats.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    if !status.success() && stats.artifact.is_none() {
        eprintln!("cargo fuzz run {target} failed ({status}); its output is in {}", log_path.display());
    }
    if let Some(artifact) = &stats.artifact {
        eprintln!("{target}: crash written to {artifact}; its output is in {}", log_path.display());
    }
    Ok(stats)
}

/// `cargo +nightly fuzz ...` from the project root, with the project's cargo-fuzz on `PATH`, building into
/// `fuzz/target` whatever target directory the caller's environment names.
fn fuzz_command(root: &Path, path: &std::ffi::OsStr) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .current_dir(root)
        .env("PATH", path)
        // Set by the `cargo run` of the xtask (stable): they would pin the nightly build to it.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    command
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> Result<std::ffi::OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).context("building PATH")
}

/// The project's cargo-fuzz, installed with `cargo install --locked` into [`TOOLS_ROOT`] when it is missing or not
/// [`CARGO_FUZZ_VERSION`].
fn ensure_cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let tools_root = root.join(TOOLS_ROOT);
    let cargo_fuzz = tools_root.join("bin/cargo-fuzz");
    let installed = Command::new(&cargo_fuzz)
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if installed.as_deref() == Some(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}")) {
        return Ok(cargo_fuzz);
    }
    eprintln!("==> installing cargo-fuzz {CARGO_FUZZ_VERSION} into {TOOLS_ROOT} (a few minutes, once)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--root"])
        .arg(&tools_root)
        .current_dir(root)
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz {CARGO_FUZZ_VERSION} failed");
    }
    Ok(cargo_fuzz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_stats_line_gives_executions_coverage_and_features() {
        let mut stats = RunStats::default();
        for line in [
            "INFO: Seed: 1234",
            "#2\tINITED cov: 120 ft: 130 corp: 40/20Kb exec/s: 0 rss: 40Mb",
            "#4096\tpulse  cov: 150 ft: 170 corp: 45/22Kb lim: 4096 exec/s: 2048 rss: 60Mb",
            "#123456\tDONE   cov: 812 ft: 2950 corp: 301/120Kb lim: 4096 exec/s: 2057 rss: 120Mb",
            "Done 123456 runs in 61 second(s)",
        ] {
            stats.add_line(line);
        }
        let expected =
            RunStats { executions: Some(123456), cov: Some(812), ft: Some(2950), done: true, artifact: None };
        assert_eq!(stats, expected);
    }

    #[test]
    fn a_crash_names_its_artifact_and_is_not_done() {
        let mut stats = RunStats::default();
        for line in [
            "#1000\tNEW    cov: 300 ft: 400 corp: 50/2Kb lim: 4096 exec/s: 0 rss: 50Mb L: 10/10 MS: 1 ChangeBit-",
            "thread '<unnamed>' panicked at crates/fuzz-targets/src/lib.rs:1:1:",
            "artifact_prefix='fuzz/artifacts/sqs_record/'; Test unit written to fuzz/artifacts/sqs_record/crash-ab12",
        ] {
            stats.add_line(line);
        }
        assert_eq!(stats.executions, Some(1000));
        assert!(!stats.done);
        assert_eq!(stats.artifact.as_deref(), Some("fuzz/artifacts/sqs_record/crash-ab12"));
    }
}
