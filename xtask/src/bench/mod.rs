//! `cargo xtask bench`: the benchmarks of the DESIGN targets, measured side by side in one run and printed as one
//! table. Benchmarks, not tests: nothing here runs in `cargo xtask test`.
//!
//! - Size: `cargo xtask package --arm64` (the architecture `infra/functions.yaml` deploys), then the size of each
//!   `target/lambda/<function>/bootstrap.zip`.
//! - CPU: the criterion bench `cargo bench -p orderflow-domain --bench batch` (`crates/domain/benches/batch.rs`):
//!   `SqsBatchProcessor::process` on batches of 1, 10 and 100 `OrderPlaced` records read with the real registry.
//!   Per message = the slope (t(100) - t(1)) / 99; per invocation = t(1) - one message. Medians of criterion.
//! - Init: process start -> first `GET /2018-06-01/runtime/invocation/next` of the release binaries of inventory
//!   and orders-api and of a bare lambda_runtime hello world (`crates/local-cloud/examples/hello_lambda.rs`), in
//!   turn (the order rotates every round), against a minimal Runtime API stub here that timestamps the first
//!   request. Every process gets the function's environment from `infra/functions.yaml` (resolved against a
//!   deployed stateful stack), Lambda's variables and credentials, and `AWS_ENDPOINT_URL` pointing at a listener
//!   of the bench; 100 ms after the first poll (left unanswered) the bench asserts that nothing connected to that
//!   listener and that the process has no socket other than its connection to the Runtime API.
//! - Memory: the release inventory binary, run by `local_lambda::runtime_api::FunctionPool` (one
//!   instance) with its environment from the template, is invoked with SQS batches (the template's batch size) of
//!   distinct `OrderPlaced` events that each reserve two SKUs: the hot path, one consistent `BatchGetItem` and one
//!   `TransactWriteItems`. Its `AWS_ENDPOINT_URL` is a DynamoDB stub of the bench that keeps the stock and the
//!   reservations, checks every transaction is one reservation and counts the requests, so the run measures the
//!   function at its own pace (~700 messages/s), not an emulator's. VmHWM and VmRSS are read from
//!   `/proc/<pid>/status` after every tenth of the messages; the reservations, the outbox writes and the reserved
//!   units are checked at the end. A second run of the same messages through a fresh instance passes one trace id
//!   for every invocation instead of a new one each: lambda_runtime sets it as `_X_AMZN_TRACE_ID` with `setenv`,
//!   and glibc keeps every value ever set, so the difference between the two runs is the runtime's, not ours.
//!
//! moto is started (project helpers) only to deploy `infra/stateful.yaml` under a fresh stage, so that every
//! process runs with the environment `infra/functions.yaml` gives it.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, FromArgMatches, ValueEnum};
use local_lambda::aws::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, sdk_config};
use local_lambda::deploy::deploy_stack;
use local_lambda::iac::{FunctionSpec, Resolver, load_functions};
use local_lambda::runtime_api::{FunctionPool, InvocationOutcome, PoolConfig, RuntimeApiServer};
use orderflow_local_cloud::cloud::{FUNCTIONS, stateful_stack_name};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_local_cloud::tools::Tools;
use serde_json::{Value, json};

use crate::{package, project_root};

/// DESIGN targets.
const ZIP_TARGET_BYTES: u64 = 2_500_000;
const CPU_PER_MESSAGE_TARGET_US: f64 = 10.0;
const CPU_PER_INVOCATION_TARGET_US: f64 = 100.0;
const INIT_RATIO_TARGET: f64 = 1.3;
const PEAK_RSS_TARGET_BYTES: u64 = 12_000_000;
/// RSS growth taken for noise, not growth: 16 pages (a bare hello world drifts by 50-70 kB over 9k invocations).
const GROWTH_NOISE_KB: i64 = 64;

/// How long a process may take to reach its first poll.
const INIT_DEADLINE: Duration = Duration::from_secs(10);
/// How long the first poll is left unanswered before the process's connections are checked.
const INIT_HOLD: Duration = Duration::from_millis(100);
/// The function whose memory is measured.
const MEMORY_FUNCTION: &str = "inventory";
/// The trace id of every invocation in the memory run that keeps it fixed.
const FIXED_TRACE_ID: &str = "Root=1-6744a000-000000000000000000000000;Parent=0000000000000000;Sampled=0";
/// The functions timed at init against the hello world.
const INIT_FUNCTIONS: [&str; 2] = ["inventory", "orders-api"];
const HELLO: &str = "hello_lambda";
const ACCOUNT_ID: &str = "123456789012";
/// Units of each SKU in stock for the memory run: more than it can reserve.
const SEED_UNITS: u64 = 1_000_000_000;

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
        sizes(root, table)?;
    }
    if wants(Part::Cpu) {
        step("CPU: cargo bench -p orderflow-domain --bench batch");
        cpu(root, args.quick, table)?;
    }
    if !wants(Part::Init) && !wants(Part::Memory) {
        return Ok(());
    }
    step("release build of the measured binaries");
    let binaries = build_release(root)?;
    step("moto with infra/stateful.yaml under a fresh stage");
    let runtime = tokio::runtime::Runtime::new()?;
    let tools = Tools::ensure(root)?;
    let moto = runtime.block_on(Emulator::start_moto(&tools, 0))?;
    let result = (|| {
        let stack = runtime.block_on(deploy(root, moto.endpoint()))?;
        if wants(Part::Init) {
            step(&format!("init: {init_runs} runs of each binary"));
            init(&binaries, &stack, init_runs, table)?;
        }
        if wants(Part::Memory) {
            step(&format!("memory: {messages} messages through {MEMORY_FUNCTION}"));
            runtime.block_on(memory(root, &binaries, &stack, messages, &args.memory_env, table))?;
        }
        Ok(())
    })();
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

// ------------------------------------------------------------------------------------------------ size

fn sizes(root: &Path, table: &mut Table) -> Result<()> {
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

// ------------------------------------------------------------------------------------------------ CPU

const CPU_GROUPS: [(&str, &str); 2] =
    [("process", "SqsBatchProcessor::process"), ("invocation", "payload JSON -> process -> response JSON")];
const CPU_SIZES: [u32; 3] = [1, 10, 100];

fn cpu(root: &Path, quick: bool, table: &mut Table) -> Result<()> {
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

// ------------------------------------------------------------------------------------------------ setup

/// The release binaries by name.
struct Binaries {
    dir: PathBuf,
    hello: PathBuf,
}

impl Binaries {
    fn function(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn build_release(root: &Path) -> Result<Binaries> {
    let mut args = vec!["build", "--release"];
    // MEMORY_FUNCTION is one of them.
    for function in INIT_FUNCTIONS {
        args.extend(["-p", function]);
    }
    cargo(root, &args)?;
    cargo(root, &["build", "--release", "-p", "orderflow-local-cloud", "--example", HELLO])?;
    let dir = target_dir(root).join("release");
    Ok(Binaries { hello: dir.join("examples").join(HELLO), dir })
}

/// The stateful stack deployed into the emulator, and the functions of the template resolved against it.
struct Stack {
    stage: String,
    functions: Vec<FunctionSpec>,
}

impl Stack {
    fn function(&self, name: &str) -> Result<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name).with_context(|| format!("no function {name} in the template"))
    }

    /// What the local runner gives every function besides the template's environment.
    fn sdk_env(&self, endpoint: &str) -> BTreeMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

async fn deploy(root: &Path, endpoint: &str) -> Result<Stack> {
    let stage = format!("bench{:08x}", RandomState::new().build_hasher().finish() as u32);
    let cloudformation = aws_sdk_cloudformation::Client::new(&sdk_config(endpoint));
    let outputs = deploy_stack(
        &cloudformation,
        &stateful_stack_name(&stage),
        &root.join("infra/stateful.yaml"),
        &[("Stage", &stage)],
    )
    .await?;
    let resolver = Resolver::new().with_parameter("Stage", &stage).with_exports(outputs.exports().clone());
    let functions = load_functions(&root.join("infra/functions.yaml"), &resolver)?;
    Ok(Stack { stage, functions })
}

// ------------------------------------------------------------------------------------------------ init

/// A minimal Runtime API: accepts connections and timestamps the end of each request's head.
struct RuntimeApiStub {
    port: u16,
    polls: mpsc::Receiver<Poll>,
}

struct Poll {
    at: Instant,
    request_line: String,
    /// Kept open (and unanswered) until the run is over.
    _stream: TcpStream,
}

impl RuntimeApiStub {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the Runtime API stub")?;
        let port = listener.local_addr()?.port();
        let (tx, polls) = mpsc::channel();
        // Blocks in accept until the process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Ok(request_line) = read_head(&stream) else { continue };
                let poll = Poll { at: Instant::now(), request_line, _stream: stream };
                if tx.send(poll).is_err() {
                    break;
                }
            }
        });
        Ok(Self { port, polls })
    }
}

/// Reads an HTTP request head, returning its first line.
fn read_head(stream: &TcpStream) -> std::io::Result<String> {
    stream.set_read_timeout(Some(INIT_DEADLINE))?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            return Ok(first.trim_end().to_owned());
        }
    }
}

/// The endpoint the processes' AWS clients are given: nothing may connect to it before the first event.
struct Sentinel {
    listener: TcpListener,
}

impl Sentinel {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the sentinel listener")?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    fn url(&self) -> Result<String> {
        Ok(format!("http://{}", self.listener.local_addr()?))
    }

    /// Connections made to it since the last call.
    fn connections(&self) -> Result<usize> {
        let mut count = 0;
        loop {
            match self.listener.accept() {
                Ok(_) => count += 1,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(count),
                Err(err) => return Err(err).context("accepting on the sentinel listener"),
            }
        }
    }
}

/// One binary timed at init.
struct InitSubject {
    label: String,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    millis: Vec<f64>,
    /// Connections to the sentinel and sockets other than the Runtime API connection, over every run.
    network: Vec<String>,
}

/// Lambda's own variables (as `FunctionPool` sets them), for a function named `name`.
fn lambda_env(name: &str, memory_mb: u32, runtime_api: &str, task_root: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/24/[$LATEST]00000000000000000000000000000001".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Ok(path) = std::env::var("PATH") {
        env.insert("PATH".to_owned(), path);
    }
    env
}

fn init(binaries: &Binaries, stack: &Stack, runs: usize, table: &mut Table) -> Result<()> {
    let stub = RuntimeApiStub::start()?;
    let sentinel = Sentinel::start()?;
    let runtime_api = format!("127.0.0.1:{}", stub.port);
    let sdk_env = stack.sdk_env(&sentinel.url()?);
    let subject = |label: &str, binary: PathBuf, spec: Option<&FunctionSpec>| {
        let task_root = binary.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut env = spec.map(|s| s.environment.clone()).unwrap_or_default();
        let (name, memory) = spec.map_or(("hello".to_owned(), 128), |s| (s.function_name.clone(), s.memory_mb));
        env.extend(lambda_env(&name, memory, &runtime_api, &task_root));
        env.extend(sdk_env.clone());
        InitSubject { label: label.to_owned(), binary, env, millis: Vec::new(), network: Vec::new() }
    };
    let mut subjects = vec![subject("hello world (bare lambda_runtime)", binaries.hello.clone(), None)];
    for function in INIT_FUNCTIONS {
        subjects.push(subject(function, binaries.function(function), Some(stack.function(function)?)));
    }
    // One run of each first, not counted: the binaries in the page cache.
    for subject in &subjects {
        init_run(subject, &stub, &sentinel)?;
    }
    for round in 0..runs {
        let count = subjects.len();
        for i in 0..count {
            let subject = &mut subjects[(round + i) % count];
            let (millis, network) = init_run(subject, &stub, &sentinel)?;
            subject.millis.push(millis);
            subject.network.extend(network);
        }
    }
    let (hello, hello_min) = (median(&subjects[0].millis), min(&subjects[0].millis));
    for subject in &subjects {
        let (median, min, max) = (median(&subject.millis), min(&subject.millis), max(&subject.millis));
        table.row(
            format!("init, {} (median of {runs}; min-max)", subject.label),
            format!("{median:.2} ms ({min:.2}-{max:.2})"),
            "",
            Verdict::Info,
        );
    }
    for subject in &subjects[1..] {
        // The medians decide; the minima, least disturbed by other load on the machine, are shown beside them.
        let ratio = median(&subject.millis) / hello;
        table.row(
            format!("init ratio {} / hello world (medians)", subject.label),
            format!(
                "{ratio:.2}x ({:+.2} ms); minima {:.2}x",
                median(&subject.millis) - hello,
                min(&subject.millis) / hello_min
            ),
            "<= 1.3x",
            Verdict::target(ratio <= INIT_RATIO_TARGET),
        );
    }
    for subject in &subjects {
        let figure = if subject.network.is_empty() {
            "none".to_owned()
        } else {
            let mut seen = subject.network.clone();
            seen.sort();
            seen.dedup();
            format!("{}: {}", subject.network.len(), seen.join("; "))
        };
        table.row(
            format!("connections before the first event, {}", subject.label),
            figure,
            "none",
            Verdict::target(subject.network.is_empty()),
        );
    }
    Ok(())
}

/// Starts the binary, waits for its first poll, checks its connections, stops it. Returns the time from start to
/// the first poll in ms and the network activity other than the Runtime API.
fn init_run(subject: &InitSubject, stub: &RuntimeApiStub, sentinel: &Sentinel) -> Result<(f64, Vec<String>)> {
    while stub.polls.try_recv().is_ok() {}
    sentinel.connections()?;
    let mut command = Command::new(&subject.binary);
    command
        .env_clear()
        .envs(&subject.env)
        .current_dir(subject.binary.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", subject.binary.display()))?;
    let result = observe_init(subject, stub, sentinel, &mut child, started);
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|err| {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        err.context(format!("{} at init; its stderr: {}", subject.label, stderr.trim()))
    })
}

fn observe_init(
    subject: &InitSubject,
    stub: &RuntimeApiStub,
    sentinel: &Sentinel,
    child: &mut Child,
    started: Instant,
) -> Result<(f64, Vec<String>)> {
    let poll = stub.polls.recv_timeout(INIT_DEADLINE).context("no poll of the Runtime API")?;
    let millis = poll.at.duration_since(started).as_secs_f64() * 1000.0;
    ensure!(
        poll.request_line.starts_with("GET /2018-06-01/runtime/invocation/next "),
        "the first request of {} is {:?}",
        subject.label,
        poll.request_line
    );
    std::thread::sleep(INIT_HOLD);
    if let Some(status) = child.try_wait()? {
        bail!("exited while waiting for its first event: {status}");
    }
    let mut network = foreign_sockets(child.id(), stub.port)?;
    let connections = sentinel.connections()?;
    if connections > 0 {
        network.push(format!("{connections} connection(s) to AWS_ENDPOINT_URL"));
    }
    Ok((millis, network))
}

/// The network sockets of process `pid` other than its TCP connections to 127.0.0.1:`api_port`, described.
fn foreign_sockets(pid: u32, api_port: u16) -> Result<Vec<String>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).context("reading the process's descriptors")? {
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.push(inode.to_owned());
        }
    }
    // inode -> (protocol, local, remote)
    let mut sockets = BTreeMap::new();
    for protocol in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 {
                sockets.insert(fields[9].to_owned(), (protocol, fields[1].to_owned(), fields[2].to_owned()));
            }
        }
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    let unix: std::collections::HashSet<&str> =
        unix.lines().skip(1).filter_map(|line| line.split_whitespace().nth(6)).collect();
    let runtime_api = format!("127.0.0.1:{api_port}");
    Ok(inodes
        .into_iter()
        .filter_map(|inode| match sockets.get(&inode) {
            Some(("tcp", _, remote)) if proc_address(remote) == runtime_api => None,
            Some((protocol, local, remote)) => {
                Some(format!("{protocol} {} -> {}", proc_address(local), proc_address(remote)))
            }
            // Local IPC, not a network connection (tokio's signal driver holds a unix socket pair).
            None if unix.contains(inode.as_str()) => None,
            None => Some(format!("socket {inode} of another family")),
        })
        .collect())
}

/// `0100007F:1F90` (an IPv4 address of /proc/net/tcp, host byte order) as `127.0.0.1:8080`; IPv6 stays hex.
fn proc_address(hex: &str) -> String {
    let Some((ip, port)) = hex.split_once(':') else { return hex.to_owned() };
    let port = u16::from_str_radix(port, 16).map_or_else(|_| port.to_owned(), |p| p.to_string());
    match (ip.len(), u32::from_str_radix(ip, 16)) {
        (8, Ok(ip)) => format!("{}:{port}", Ipv4Addr::from(ip.to_le_bytes())),
        _ => format!("[{ip}]:{port}"),
    }
}

// ------------------------------------------------------------------------------------------------ memory

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

/// What the DynamoDB stub saw and holds.
#[derive(Default)]
struct DynamoState {
    batch_gets: u64,
    transactions: u64,
    /// Reservation items written, by partition key.
    reservations: std::collections::HashSet<String>,
    outbox_puts: u64,
    /// (available, reserved) by SKU; a SKU is stocked with [`SEED_UNITS`] when first read.
    stock: BTreeMap<String, (u64, u64)>,
    /// Requests it does not serve, or writes that break a condition; the run fails when there is one.
    unexpected: Vec<String>,
}

/// A DynamoDB endpoint (the JSON 1.0 protocol over HTTP/1.1) for the inventory's reservation path, served on
/// threads of this process: `BatchGetItem` of stock and reservation keys answered from its state, and
/// `TransactWriteItems` of stock updates, a reservation put and an outbox put applied to it, with the
/// conditions the function sets (`available >= :q`, a reservation not existing yet) checked.
struct DynamoStub {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<DynamoState>>,
}

impl DynamoStub {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the DynamoDB stub")?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = std::sync::Arc::new(std::sync::Mutex::new(DynamoState::default()));
        let shared = state.clone();
        // Blocks in accept until the process exits; one thread per connection of the function's HTTP client.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_dynamo(stream, &state);
                });
            }
        });
        Ok(Self { url, state })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DynamoState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serves the requests of one keep-alive connection until the client closes it.
fn serve_dynamo(stream: TcpStream, state: &std::sync::Mutex<DynamoState>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut length, mut target) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse()?,
                    "x-amz-target" => target = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        let answer = {
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match target.as_str() {
                "DynamoDB_20120810.BatchGetItem" => Some(batch_get(&mut state, &request)),
                "DynamoDB_20120810.TransactWriteItems" => transact(&mut state, &request),
                other => {
                    state.unexpected.push(format!("{} {other:?}", request_line.trim_end()));
                    None
                }
            }
        };
        let (status, body) = match answer {
            Some(body) => ("200 OK", body.to_string()),
            None => (
                "400 Bad Request",
                json!({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": "not served by the bench"})
                    .to_string(),
            ),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: bench\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        std::io::Write::write_all(&mut writer, response.as_bytes())?;
    }
}

fn attribute<'a>(item: &'a Value, name: &str, kind: &str) -> &'a str {
    item[name][kind].as_str().unwrap_or_default()
}

/// The stock item of `sku` at 1.00, encoded by the Inventory table's owner in DynamoDB's JSON (strings and
/// numbers are all a stock item has); `None` when the units do not fit the item's counters.
fn stock_item(sku: &str, available: u64, reserved: u64) -> Option<Value> {
    let stock = orderflow_domain::inventory::Stock {
        sku: sku.to_owned(),
        available: available.try_into().ok()?,
        reserved: reserved.try_into().ok()?,
        shipped: 0,
        price: orderflow_domain::Decimal::new(100, 2),
    };
    let item = orderflow_inventory_store::item::stock_item(&stock);
    let wire = |value: &aws_sdk_dynamodb::types::AttributeValue| match (value.as_s(), value.as_n()) {
        (Ok(text), _) => json!({ "S": text }),
        (_, Ok(number)) => json!({ "N": number }),
        _ => Value::Null,
    };
    Some(item.iter().map(|(name, value)| (name.clone(), wire(value))).collect())
}

fn batch_get(state: &mut DynamoState, request: &Value) -> Value {
    use orderflow_inventory_store::item::{RESERVATION_SK, STOCK_PK_PREFIX, STOCK_SK, attr};
    state.batch_gets += 1;
    let mut responses = serde_json::Map::new();
    for (table, keys) in request["RequestItems"].as_object().into_iter().flatten() {
        let mut items = Vec::new();
        for key in keys["Keys"].as_array().into_iter().flatten() {
            let pk = attribute(key, "pk", "S");
            match attribute(key, attr::SORT_KEY, "S") {
                STOCK_SK => {
                    let sku = pk.trim_start_matches(STOCK_PK_PREFIX);
                    let (available, reserved) = *state.stock.entry(sku.to_owned()).or_insert((SEED_UNITS, 0));
                    match stock_item(sku, available, reserved) {
                        Some(item) => items.push(item),
                        None => state.unexpected.push(format!("stock of {sku} beyond an item's counters")),
                    }
                }
                RESERVATION_SK if state.reservations.contains(pk) => {
                    state.unexpected.push(format!("a second read of the reservation {pk}"));
                }
                RESERVATION_SK => {}
                other => state.unexpected.push(format!("BatchGetItem of a key with sk {other:?}")),
            }
        }
        responses.insert(table.clone(), Value::Array(items));
    }
    json!({ "Responses": responses, "UnprocessedKeys": {} })
}

/// Applies a reservation transaction; `None` (a 400) for anything else.
fn transact(state: &mut DynamoState, request: &Value) -> Option<Value> {
    use orderflow_inventory_store::ReservationStatus;
    use orderflow_inventory_store::item::{RESERVATION_SK, STOCK_PK_PREFIX, attr};
    state.transactions += 1;
    let items = request["TransactItems"].as_array().cloned().unwrap_or_default();
    let mut stock = Vec::new();
    let mut reservation = None;
    let mut outbox = 0;
    for item in &items {
        if let Some(update) = item.get("Update") {
            let sku = attribute(&update["Key"], "pk", "S").trim_start_matches(STOCK_PK_PREFIX).to_owned();
            let quantity: u64 = update["ExpressionAttributeValues"][":q"]["N"].as_str()?.parse().ok()?;
            if update["ConditionExpression"] != "available >= :q" {
                return None;
            }
            stock.push((sku, quantity));
        } else if let Some(put) = item.get("Put") {
            if attribute(&put["Item"], attr::SORT_KEY, "S") == RESERVATION_SK
                && attribute(&put["Item"], attr::STATUS, "S") == ReservationStatus::Reserved.as_str()
            {
                reservation = Some(attribute(&put["Item"], "pk", "S").to_owned());
            } else {
                outbox += 1;
            }
        }
    }
    let Some(reservation) = reservation else {
        state.unexpected.push(format!("a transaction without a reservation: {request}"));
        return None;
    };
    if stock.is_empty() || outbox != 1 || state.reservations.contains(&reservation) {
        state.unexpected.push(format!("a transaction that is not one reservation: {request}"));
        return None;
    }
    for (sku, quantity) in stock {
        let (available, reserved) = state.stock.entry(sku).or_insert((SEED_UNITS, 0));
        *available -= quantity;
        *reserved += quantity;
    }
    state.reservations.insert(reservation);
    state.outbox_puts += 1;
    Some(json!({}))
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
async fn memory(
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
    let dynamo = DynamoStub::start()?;
    let server = RuntimeApiServer::start().await?;
    let config = PoolConfig {
        name: spec.name.clone(),
        function_name: spec.function_name.clone(),
        binary: binaries.function(MEMORY_FUNCTION),
        timeout: spec.timeout,
        memory_mb: spec.memory_mb,
        environment: spec.environment.clone(),
        extra_env: stack.sdk_env(&dynamo.url).into_iter().chain(more_env.iter().cloned()).collect(),
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

fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

// ------------------------------------------------------------------------------------------------ table

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

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
