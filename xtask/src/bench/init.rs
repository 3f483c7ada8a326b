//! Init time: process start -> first `GET /2018-06-01/runtime/invocation/next` of the release binaries of
//! inventory and orders-api and of a bare lambda_runtime hello world (`crates/local-cloud/examples/hello_lambda.rs`),
//! in turn (the order rotates every round), against [`RuntimeApiStub`], which timestamps the first request and
//! leaves it unanswered. Every process gets the function's environment from `infra/functions.yaml` (resolved
//! against the deployed stateful stack), Lambda's variables and credentials, and `AWS_ENDPOINT_URL` pointing at
//! [`Sentinel`]; 100 ms after the first poll the bench asserts that nothing connected to the sentinel and that the
//! process has no socket other than its connection to the Runtime API. The figure is the ratio of the medians to
//! the hello world's.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use local_lambda::aws::REGION;
use local_lambda::iac::FunctionSpec;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::setup::{Binaries, Stack};
use super::stubs::{RuntimeApiStub, Sentinel};
use super::{Table, Verdict};

/// The functions timed at init against the hello world.
pub const INIT_FUNCTIONS: [&str; 2] = ["inventory", "orders-api"];
/// The example binary of the bare lambda_runtime hello world.
pub const HELLO: &str = "hello_lambda";

/// The DESIGN target: a function's init against the hello world's.
const INIT_RATIO_TARGET: f64 = 1.3;
/// How long a process may take to reach its first poll.
const INIT_DEADLINE: Duration = Duration::from_secs(10);
/// How long the first poll is left unanswered before the process's connections are checked.
const INIT_HOLD: Duration = Duration::from_millis(100);

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
fn lambda_env(name: &str, memory_mb: u32, runtime_api: SocketAddr, task_root: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
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

pub async fn measure(binaries: &Binaries, stack: &Stack, runs: usize, table: &mut Table) -> Result<()> {
    let mut stub = RuntimeApiStub::start()?;
    let sentinel = Sentinel::start()?;
    let sdk_env = stack.sdk_env(&sentinel.url()?);
    let subject = |label: &str, binary: PathBuf, spec: Option<&FunctionSpec>| {
        let task_root = binary.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut env = spec.map(|s| s.environment.clone()).unwrap_or_default();
        let (name, memory) = spec.map_or(("hello".to_owned(), 128), |s| (s.function_name.clone(), s.memory_mb));
        env.extend(lambda_env(&name, memory, stub.addr(), &task_root));
        env.extend(sdk_env.clone());
        InitSubject { label: label.to_owned(), binary, env, millis: Vec::new(), network: Vec::new() }
    };
    let mut subjects = vec![subject("hello world (bare lambda_runtime)", binaries.hello.clone(), None)];
    for function in INIT_FUNCTIONS {
        subjects.push(subject(function, binaries.function(function), Some(stack.function(function)?)));
    }
    // One run of each first, not counted: the binaries in the page cache.
    for subject in &subjects {
        init_run(subject, &mut stub, &sentinel).await?;
    }
    for round in 0..runs {
        let count = subjects.len();
        for i in 0..count {
            let subject = &mut subjects[(round + i) % count];
            let (millis, network) = init_run(subject, &mut stub, &sentinel).await?;
            subject.millis.push(millis);
            subject.network.extend(network);
        }
    }
    report(&subjects, runs, table);
    Ok(())
}

fn report(subjects: &[InitSubject], runs: usize, table: &mut Table) {
    let (hello, hello_min) = (median(&subjects[0].millis), min(&subjects[0].millis));
    for subject in subjects {
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
    for subject in subjects {
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
}

/// Starts the binary, waits for its first poll, checks its connections, stops it. Returns the time from start to
/// the first poll in ms and the network activity other than the Runtime API.
async fn init_run(subject: &InitSubject, stub: &mut RuntimeApiStub, sentinel: &Sentinel) -> Result<(f64, Vec<String>)> {
    stub.forget_polls();
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
    let result = observe_init(subject, stub, sentinel, &mut child, started).await;
    // Killed and reaped; it may have exited already.
    let _ = child.kill().await;
    match result {
        Ok(observed) => Ok(observed),
        Err(err) => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            Err(err.context(format!("{} at init; its stderr: {}", subject.label, stderr.trim())))
        }
    }
}

async fn observe_init(
    subject: &InitSubject,
    stub: &mut RuntimeApiStub,
    sentinel: &Sentinel,
    child: &mut Child,
    started: Instant,
) -> Result<(f64, Vec<String>)> {
    let poll = stub.next_poll(INIT_DEADLINE).await.context("no poll of the Runtime API")?;
    let millis = poll.at.duration_since(started).as_secs_f64() * 1000.0;
    ensure!(poll.is_next_invocation(), "the first request of {} is {:?}", subject.label, poll.request);
    // The measurement itself, not a wait for readiness: what the process connects to while it waits for an event.
    tokio::time::sleep(INIT_HOLD).await;
    if let Some(status) = child.try_wait()? {
        bail!("exited while waiting for its first event: {status}");
    }
    let pid = child.id().context("the process is gone")?;
    let mut network = foreign_sockets(pid, stub.addr())?;
    let connections = sentinel.connections()?;
    if connections > 0 {
        network.push(format!("{connections} connection(s) to AWS_ENDPOINT_URL"));
    }
    Ok((millis, network))
}

/// The network sockets of process `pid` other than its TCP connections to `runtime_api`, described.
fn foreign_sockets(pid: u32, runtime_api: SocketAddr) -> Result<Vec<String>> {
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
    let unix: HashSet<&str> = unix.lines().skip(1).filter_map(|line| line.split_whitespace().nth(6)).collect();
    let runtime_api = runtime_api.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_read_as_socket_addresses() {
        assert_eq!(proc_address("0100007F:1F90"), "127.0.0.1:8080");
        assert_eq!(proc_address("00000000000000000000000001000000:0050"), "[00000000000000000000000001000000]:80");
        assert_eq!(proc_address("garbage"), "garbage");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_socket_of_this_process_to_a_listener_is_found_and_the_runtime_api_one_is_not() {
        let api = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let other = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let _to_api = std::net::TcpStream::connect(api.local_addr().unwrap()).unwrap();
        let _to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();

        let found = foreign_sockets(std::process::id(), api.local_addr().unwrap()).unwrap();
        let to_other = format!("-> {}", other.local_addr().unwrap());
        assert!(found.iter().any(|socket| socket.ends_with(&to_other)), "{found:?}");
        assert!(!found.iter().any(|socket| socket.ends_with(&format!("-> {}", api.local_addr().unwrap()))));
    }
}
