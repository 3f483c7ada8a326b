//! CPU per message and per invocation: the criterion bench `cargo bench -p orderflow-domain --bench batch`
//! (`crates/domain/benches/batch.rs`) runs `SqsBatchProcessor::process` on batches of 1, 10 and 100 `OrderPlaced`
//! records read with the real registry, alone and wrapped in the payload's JSON decode and the response's encode.
//! Per message = the slope (t(100) - t(1)) / 99; per invocation = t(1) - one message. Medians of criterion, read
//! from the `estimates.json` it writes in this run.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{Table, Verdict, target_dir};

/// The DESIGN targets.
const CPU_PER_MESSAGE_TARGET_US: f64 = 10.0;
const CPU_PER_INVOCATION_TARGET_US: f64 = 100.0;

/// The criterion groups of the bench and what each times.
const CPU_GROUPS: [(&str, &str); 2] =
    [("process", "SqsBatchProcessor::process"), ("invocation", "payload JSON -> process -> response JSON")];
/// The batch sizes of each group.
const CPU_SIZES: [u32; 3] = [1, 10, 100];

pub fn measure(root: &Path, quick: bool, table: &mut Table) -> Result<()> {
    let home = target_dir(root).join("criterion");
    let started = SystemTime::now();
    let mut command = Command::new(env!("CARGO"));
    command.args(["bench", "-p", "orderflow-domain", "--bench", "batch"]);
    if quick {
        command.args(["--", "--quick"]);
    }
    let status = command.current_dir(root).env("CRITERION_HOME", &home).status().context("running cargo bench")?;
    ensure!(status.success(), "cargo bench -p orderflow-domain --bench batch failed");
    for (group, what) in CPU_GROUPS {
        let mut micros = Vec::new();
        for size in CPU_SIZES {
            let path = home.join(group).join(size.to_string()).join("new/estimates.json");
            let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).is_ok_and(|modified| modified >= started);
            ensure!(fresh, "criterion wrote no estimate for {group}/{size} in this run ({})", path.display());
            let estimates: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            let nanos = estimates["median"]["point_estimate"].as_f64().context("no median in estimates.json")?;
            micros.push(nanos / 1000.0);
        }
        let (one, hundred) = (micros[0], micros[2]);
        let per_message = (hundred - one) / 99.0;
        let per_invocation = one - per_message;
        table.row(
            format!("CPU, {what}: batch of 1 / 10 / 100"),
            format!("{:.1} / {:.1} / {:.1} us", micros[0], micros[1], micros[2]),
            "",
            Verdict::Info,
        );
        table.row(
            format!("CPU per message, {what}"),
            format!("{per_message:.2} us"),
            "<= 10 us",
            Verdict::target(per_message <= CPU_PER_MESSAGE_TARGET_US),
        );
        // Below the noise of the slope, the difference can come out negative.
        let invocation = if per_invocation < 0.0 {
            format!("~0 us (t(1) - slope = {per_invocation:.2})")
        } else {
            format!("{per_invocation:.2} us")
        };
        table.row(
            format!("CPU per invocation, {what}"),
            invocation,
            "<= 100 us",
            Verdict::target(per_invocation <= CPU_PER_INVOCATION_TARGET_US),
        );
    }
    Ok(())
}
