//! Memory: the release inventory binary, run by `local_lambda::runtime_api::FunctionPool` (one instance) with its
//! environment from the template, is invoked with SQS batches (the template's batch size) of distinct
//! `OrderPlaced` events that each reserve two SKUs: the hot path, one consistent `BatchGetItem` and one
//! `TransactWriteItems`. Its `AWS_ENDPOINT_URL` is [`DynamoStub`], which keeps the stock and the reservations,
//! checks every transaction is one reservation and counts the requests, so the run measures the function at its
//! own pace (~700 messages/s), not an emulator's. VmHWM and VmRSS are read from `/proc/<pid>/status` after every
//! tenth of the messages; the reservations, the outbox writes and the reserved units are checked at the end.
//!
//! A second run of the same messages through a fresh instance passes one trace id for every invocation instead of
//! a new one each: lambda_runtime sets it as `_X_AMZN_TRACE_ID` with `setenv`, and glibc keeps every value ever
//! set, so the difference between the two runs is the runtime's, not ours.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use local_lambda::aws::REGION;
use local_lambda::runtime_api::{FunctionPool, InvocationOutcome, PoolConfig, RuntimeApiServer};
use serde_json::{Value, json};

use super::setup::{Binaries, Stack};
use super::stubs::DynamoStub;
use super::{Table, Verdict, thousands};

/// The function whose memory is measured.
pub const MEMORY_FUNCTION: &str = "inventory";

/// The DESIGN target.
const PEAK_RSS_TARGET_BYTES: u64 = 12_000_000;
/// RSS growth taken for noise, not growth: 16 pages (a bare hello world drifts by 50-70 kB over 9k invocations).
const GROWTH_NOISE_KB: i64 = 64;
/// The trace id of every invocation in the memory run that keeps it fixed.
const FIXED_TRACE_ID: &str = "Root=1-6744a000-000000000000000000000000;Parent=0000000000000000;Sampled=0";
const ACCOUNT_ID: &str = "123456789012";

/// Memory of the process after some messages, in kB.
struct Sample {
    messages: usize,
    hwm_kb: u64,
    rss_kb: u64,
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("{field}: {line:?}"))
}

fn sample(pid: u32, messages: usize) -> Result<Sample> {
    Ok(Sample { messages, hwm_kb: proc_status_kb(pid, "VmHWM")?, rss_kb: proc_status_kb(pid, "VmRSS")? })
}

/// What one memory run saw: samples, RSS after init, records reported failed, the time taken, and the stub's
/// verdict and request counts.
struct MemoryRun {
    samples: Vec<Sample>,
    init_kb: u64,
    failed: usize,
    elapsed: Duration,
    effects_as_expected: bool,
    batch_gets: u64,
    transactions: u64,
}

/// Two runs of the same messages through fresh instances: one with a new trace id per invocation, as Lambda
/// passes them, and one with a single trace id, which separates lambda_runtime's `_X_AMZN_TRACE_ID` (every
/// value ever set stays in glibc's environment) from the function's own memory.
pub async fn measure(
    root: &Path,
    binaries: &Binaries,
    stack: &Stack,
    messages: usize,
    more_env: &[(String, String)],
    table: &mut Table,
) -> Result<()> {
    let as_lambda = memory_run(root, binaries, stack, messages, more_env, None).await?;
    let one_trace_id = memory_run(root, binaries, stack, messages, more_env, Some(FIXED_TRACE_ID)).await?;
    table.row(
        format!("RSS after init, {MEMORY_FUNCTION}"),
        format!("{:.2} MB", mb(as_lambda.init_kb)),
        "",
        Verdict::Info,
    );
    report_memory(table, &as_lambda.samples);
    let (first, last) = (&one_trace_id.samples[0], &one_trace_id.samples[one_trace_id.samples.len() - 1]);
    table.row(
        format!(
            "the same with one trace id for every invocation: VmRSS {} -> {}",
            thousands(first.messages),
            thousands(last.messages)
        ),
        format!(
            "{:.2} -> {:.2} MB ({:+} kB)",
            mb(first.rss_kb),
            mb(last.rss_kb),
            last.rss_kb as i64 - first.rss_kb as i64
        ),
        "",
        Verdict::Info,
    );
    let failed = as_lambda.failed + one_trace_id.failed;
    let effects = as_lambda.effects_as_expected && one_trace_id.effects_as_expected;
    table.row(
        format!("{MEMORY_FUNCTION}: records failed / reservations and stock as expected"),
        format!("{failed} / {}", if effects { "yes" } else { "NO" }),
        "0 / yes",
        Verdict::target(failed == 0 && effects),
    );
    let per_message = |count: u64| count as f64 / messages as f64;
    table.row(
        "DynamoDB requests per message: BatchGetItem + TransactWriteItems",
        format!("{:.2} + {:.2}", per_message(as_lambda.batch_gets), per_message(as_lambda.transactions)),
        "1 write",
        Verdict::target(as_lambda.transactions == messages as u64),
    );
    table.row(
        "messages per second through the function (not a target)",
        format!("{:.0}", messages as f64 / as_lambda.elapsed.as_secs_f64()),
        "",
        Verdict::Info,
    );
    Ok(())
}

async fn memory_run(
    root: &Path,
    binaries: &Binaries,
    stack: &Stack,
    messages: usize,
    more_env: &[(String, String)],
    fixed_trace_id: Option<&str>,
) -> Result<MemoryRun> {
    let spec = stack.function(MEMORY_FUNCTION)?;
    let source = spec.sqs.first().with_context(|| format!("{MEMORY_FUNCTION} has no SQS event source"))?;
    let batch_size = source.batch_size as usize;
    let dynamo = DynamoStub::start().await?;
    let server = RuntimeApiServer::start().await?;
    let config = PoolConfig {
        name: spec.name.clone(),
        function_name: spec.function_name.clone(),
        binary: binaries.function(MEMORY_FUNCTION),
        timeout: spec.timeout,
        memory_mb: spec.memory_mb,
        environment: spec.environment.clone(),
        extra_env: stack.sdk_env(&dynamo.url()).into_iter().chain(more_env.iter().cloned()).collect(),
        max_instances: 1,
        warm_instances: 1,
        log_dir: root.join(".local/logs").join(&stack.stage),
        pass_through_logs: false,
        region: REGION.to_owned(),
        account_id: ACCOUNT_ID.to_owned(),
        fixed_trace_id: fixed_trace_id.map(str::to_owned),
        // Straight to the stub: the memory run measures the function, not the proxy.
        proxy: None,
    };
    let pool = FunctionPool::start(&server, config).await?;
    let result = drive(&pool, stack, &source.queue_arn, batch_size, messages).await;
    pool.shutdown().await;
    server.shutdown();
    let (samples, init_kb, failed, elapsed) = result?;

    let state = dynamo.state();
    ensure!(state.unexpected.is_empty(), "the DynamoDB stub saw what it does not serve: {:?}", state.unexpected);
    // Every message reserves 1 unit of an even SKU and 2 of an odd one.
    let expected_units = messages.div_ceil(batch_size) as u64;
    let reserved = state.stock.get("SKU-B0").map_or(0, |&(_, reserved)| reserved);
    let effects_as_expected =
        state.reservations.len() == messages && state.outbox_puts == messages as u64 && reserved == expected_units;
    Ok(MemoryRun {
        samples,
        init_kb,
        failed,
        elapsed,
        effects_as_expected,
        batch_gets: state.batch_gets,
        transactions: state.transactions,
    })
}

fn success(outcome: InvocationOutcome) -> Result<Value> {
    match outcome {
        InvocationOutcome::Success(value) => Ok(value),
        InvocationOutcome::FunctionError { error_type, error_message } => bail!("{error_type}: {error_message}"),
    }
}

/// Invokes the pool's one instance with `messages` messages in batches; returns the samples after every tenth,
/// the RSS after init, the records reported failed, and the time taken.
async fn drive(
    pool: &FunctionPool,
    stack: &Stack,
    queue_arn: &str,
    batch_size: usize,
    messages: usize,
) -> Result<(Vec<Sample>, u64, usize, Duration)> {
    let pids = pool.pids();
    let [pid] = pids[..] else { bail!("expected one instance of {MEMORY_FUNCTION}, found {pids:?}") };
    let init_kb = proc_status_kb(pid, "VmRSS")?;
    let checkpoint = messages / 10;
    let mut samples = Vec::new();
    let mut failed = 0;
    let mut sent = 0;
    let started = Instant::now();
    while sent < messages {
        let records: Vec<Value> =
            (sent..messages.min(sent + batch_size)).map(|n| sqs_record(stack, queue_arn, n, n - sent)).collect();
        let count = records.len();
        let response = success(pool.invoke(json!({ "Records": records })).await?.outcome)?;
        failed += response["batchItemFailures"].as_array().map_or(0, Vec::len);
        let before = sent;
        sent += count;
        if sent / checkpoint > before / checkpoint || sent == messages {
            ensure!(pool.pids() == [pid], "the instance of {MEMORY_FUNCTION} was replaced (crash or timeout)");
            samples.push(sample(pid, sent)?);
        }
    }
    Ok((samples, init_kb, failed, started.elapsed()))
}

/// Message `n`: an `OrderPlaced` bus event as SQS delivers it, reserving 1 unit of `SKU-B<2k>` and 2 of
/// `SKU-B<2k+1>` for its place `k` in the batch (no two records of a batch touch the same stock).
fn sqs_record(stack: &Stack, queue_arn: &str, n: usize, k: usize) -> Value {
    let order_id = format!("{}-order-{n:08}", stack.stage);
    let detail = json!({
        "id": format!("00000000-0000-4000-8000-{n:012}"),
        "type": "OrderPlaced",
        "version": 1,
        "occurred_at": "2026-11-24T10:00:00Z",
        "correlation_id": order_id,
        "causation_id": null,
        "data": {
            "order_id": order_id,
            "customer_id": format!("c-{}", n % 50),
            "lines": [{"sku": format!("SKU-B{}", 2 * k), "quantity": 1}, {"sku": format!("SKU-B{}", 2 * k + 1), "quantity": 2}],
        },
    });
    let body = json!({
        "version": "0",
        "id": format!("10000000-0000-4000-8000-{n:012}"),
        "detail-type": "OrderPlaced",
        "source": "orderflow.orders",
        "account": ACCOUNT_ID,
        "time": "2026-11-24T10:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": detail,
    });
    json!({
        "messageId": format!("20000000-0000-4000-8000-{n:012}"),
        "receiptHandle": format!("bench-{n}"),
        "body": body.to_string(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795946400000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795946400012",
        },
        "messageAttributes": {},
        "md5OfBody": "00000000000000000000000000000000",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    })
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn report_memory(table: &mut Table, samples: &[Sample]) {
    let first = &samples[0];
    let last = &samples[samples.len() - 1];
    for sample in [first, last] {
        table.row(
            format!("peak RSS (VmHWM) after {} messages", thousands(sample.messages)),
            format!("{:.2} MB (VmRSS {:.2} MB)", mb(sample.hwm_kb), mb(sample.rss_kb)),
            "<= 12 MB",
            Verdict::target(sample.hwm_kb * 1024 <= PEAK_RSS_TARGET_BYTES),
        );
    }
    let hwm_growth = last.hwm_kb as i64 - first.hwm_kb as i64;
    let rss_growth = last.rss_kb as i64 - first.rss_kb as i64;
    let per_message = rss_growth as f64 * 1024.0 / (last.messages - first.messages).max(1) as f64;
    table.row(
        format!("growth {} -> {} messages", thousands(first.messages), thousands(last.messages)),
        format!("VmHWM {hwm_growth:+} kB, VmRSS {rss_growth:+} kB ({per_message:.0} B/message)"),
        "none (<= 64 kB)",
        Verdict::target(hwm_growth <= GROWTH_NOISE_KB && rss_growth <= GROWTH_NOISE_KB),
    );
    let mut series = String::new();
    for sample in samples {
        let _ = write!(series, "{} ", sample.rss_kb);
    }
    table.row("VmRSS at every tenth of the messages (kB)", series.trim_end().to_owned(), "", Verdict::Info);
}
