//! `cargo xtask demo` and `cargo xtask up`/`down`: the local cloud with every function, for a scenario or for you.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use local_lambda::runner::{Delivery, DeliveryOutcome};
use orderflow_local_cloud::cloud::{CloudOptions, LocalCloud};
use orderflow_local_cloud::issuer::Subject;
use orderflow_local_cloud::scenario::{self, ScenarioTarget};
use tokio::sync::broadcast::error::RecvError;

use crate::project_root;

#[derive(Args)]
pub struct DemoArgs {
    /// Copy the functions' logs to stderr.
    #[arg(long)]
    logs: bool,
    /// Seconds to wait for every order to be final.
    #[arg(long, default_value_t = 90)]
    timeout: u64,
}

#[derive(Args)]
pub struct UpArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:9000")]
    http: SocketAddr,
    /// Port of the moto server (ignored when AWS_ENDPOINT_URL names another emulator).
    #[arg(long, default_value_t = 4566)]
    moto_port: u16,
    /// Copy the functions' logs to stderr.
    #[arg(long)]
    logs: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the tokio runtime")
}

pub fn demo(args: DemoArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut options = CloudOptions::isolated(project_root(), "demo");
        options.pass_through_logs = args.logs;
        eprintln!("starting the local cloud: emulator, stack {}, functions ...", options.stage);
        let cloud = LocalCloud::start(options).await?;
        eprintln!(
            "local cloud up: emulator {} ({}), HTTP API {}",
            cloud.endpoint(),
            cloud.emulator_kind(),
            cloud.http_base()?
        );
        let printer = tokio::spawn(print_flow(cloud.runner().subscribe()));
        let target = ScenarioTarget {
            http_base: cloud.http_base()?,
            issuer: cloud.issuer().clone(),
            eventbridge: aws_sdk_eventbridge::Client::new(cloud.sdk_config()),
            bus_name: cloud.output("EventBusName")?.to_owned(),
            sqs: aws_sdk_sqs::Client::new(cloud.sdk_config()),
            dead_letter_queues: cloud.dead_letter_queues(),
            timeout: Duration::from_secs(args.timeout),
        };
        let report = scenario::run(&target, |step| println!("== {step}")).await;
        printer.abort();
        let stopped = cloud.shutdown().await;
        let report = report?;
        stopped?;
        println!("\n{}", report.render());
        if !report.passed() {
            bail!("the demo's outcomes do not match the expected ones (see MISMATCH above)");
        }
        println!("demo passed: every order, stock level and dead letter as expected");
        Ok(())
    })
}

/// Prints a line per event delivered to a function: consumer, event type, order.
async fn print_flow(mut deliveries: tokio::sync::broadcast::Receiver<Delivery>) {
    loop {
        let delivery = match deliveries.recv().await {
            Ok(delivery) => delivery,
            Err(RecvError::Lagged(missed)) => {
                println!("   ... {missed} deliveries not shown");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let outcome = match &delivery.outcome {
            DeliveryOutcome::Succeeded => String::new(),
            DeliveryOutcome::PartiallyFailed { failed_ids } => {
                format!("  ({} failed, will be retried)", failed_ids.len())
            }
            DeliveryOutcome::Failed { error_type, .. } => format!("  (failed: {error_type})"),
            other => format!("  ({other:?})"),
        };
        for record in &delivery.records {
            let Some(detail_type) = &record.detail_type else { continue };
            let order = record.correlation_id.as_deref().unwrap_or("-");
            println!("   {:<14} <- {detail_type:<26} order {order}{outcome}", delivery.function);
        }
    }
}

fn pid_file() -> std::path::PathBuf {
    project_root().join(".local/up.pid")
}

pub fn up(args: UpArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut options = CloudOptions::isolated(project_root(), "local");
        options.stage = "local".into();
        options.http_addr = Some(args.http);
        options.moto_port = args.moto_port;
        options.pass_through_logs = args.logs;
        let cloud = LocalCloud::start(options).await?;
        std::fs::write(pid_file(), std::process::id().to_string()).context("writing .local/up.pid")?;
        println!("orderflow local cloud (stage {}) is up; Ctrl-C or `cargo xtask down` stops it", cloud.stage());
        println!("  AWS endpoint   {} ({})", cloud.endpoint(), cloud.emulator_kind());
        println!("  HTTP API       {}", cloud.http_base()?);
        println!(
            "  fault rules    {}/_local/faults (PUT, GET, DELETE; see README \"Faults on the wire\")",
            cloud.http_base()?
        );
        // Valid for the working day; `cargo xtask token` makes more.
        let day = Duration::from_secs(12 * 3600);
        println!("  customer token (sub c-1, 12 h)  {}", cloud.issuer().token(&Subject::Customer("c-1".into()), day)?);
        println!("  admin token (orderflow/admin, 12 h)  {}", cloud.issuer().token(&Subject::Operator, day)?);
        for (key, value) in cloud.outputs().outputs() {
            if key.ends_with("Name") || key.ends_with("Url") {
                println!("  {key:<22} {value}");
            }
        }
        let env_dir = write_env_files(&cloud)?;
        println!("  env files for `cargo lambda watch --env-file`: {}/<function>.env", env_dir.display());
        let printer = tokio::spawn(print_flow(cloud.runner().subscribe()));
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        println!("stopping ...");
        printer.abort();
        let _ = std::fs::remove_file(pid_file());
        cloud.shutdown().await
    })
}

/// Writes, per function, the environment the local cloud gives it, so `cargo lambda watch --env-file` runs the
/// function against this cloud exactly as the runner does.
fn write_env_files(cloud: &LocalCloud) -> Result<std::path::PathBuf> {
    let dir = project_root().join(".local/env");
    std::fs::create_dir_all(&dir).context("creating .local/env")?;
    for function in cloud.runner().functions() {
        let mut lines = vec![
            format!("AWS_ENDPOINT_URL={}", cloud.endpoint()),
            format!("AWS_REGION={}", local_lambda::aws::REGION),
            format!("AWS_ACCESS_KEY_ID={}", local_lambda::aws::ACCESS_KEY_ID),
            format!("AWS_SECRET_ACCESS_KEY={}", local_lambda::aws::SECRET_ACCESS_KEY),
        ];
        lines.extend(function.environment.iter().map(|(name, value)| format!("{name}={value}")));
        let path = dir.join(format!("{}.env", function.name));
        std::fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

pub fn down() -> Result<()> {
    let path = pid_file();
    let pid = match std::fs::read_to_string(&path) {
        Ok(pid) => pid.trim().to_owned(),
        Err(_) => {
            println!("no local cloud is up (no {})", path.display());
            return Ok(());
        }
    };
    let proc_dir = std::path::Path::new("/proc").join(&pid);
    if !proc_dir.exists() {
        let _ = std::fs::remove_file(&path);
        println!("no local cloud is up (process {pid} is gone)");
        return Ok(());
    }
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
    if !status.success() {
        bail!("could not signal process {pid}");
    }
    for _ in 0..100 {
        if !proc_dir.exists() {
            println!("local cloud stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("process {pid} did not stop within 10 s")
}
