//! The AWS-API emulator processes of the local cloud: moto server (the default) and LocalStack
//! community in host mode, or an emulator somebody else runs.
//!
//! A started emulator runs in its own process group (LocalStack spawns java and node children),
//! writes its log to `.local/logs/<name>-<port>.log`, listens on 127.0.0.1 only, and is stopped
//! when the [`Emulator`] is dropped.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use local_lambda::aws::{describe_sdk_error, sdk_config};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::tools::{MOTO_SERVE, Tools, crate_file, display_command, tail};

/// How long moto may take to answer (it usually does in ~0.4 s).
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long LocalStack may take to report its services and start DynamoDB Local.
const LOCALSTACK_START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long [`Emulator::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of the emulator's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// The services LocalStack must report usable before it counts as ready: everything the
/// orderflow stacks and the local runner touch.
pub const LOCALSTACK_SERVICES: &[&str] =
    &["cloudformation", "cloudwatch", "dynamodb", "dynamodbstreams", "events", "iam", "logs", "sqs", "sts"];

/// Which emulator an [`Emulator`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulatorKind {
    /// moto server, started by us.
    Moto,
    /// LocalStack in host mode, started by us.
    LocalStack,
    /// An emulator somebody else runs (e.g. `AWS_ENDPOINT_URL`, a LocalStack container); never
    /// stopped by us.
    External,
}

impl fmt::Display for EmulatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmulatorKind::Moto => "moto",
            EmulatorKind::LocalStack => "LocalStack",
            EmulatorKind::External => "external emulator",
        })
    }
}

/// A running AWS-API emulator and its endpoint (`http://127.0.0.1:PORT`, one port for every
/// service). Stops the process it started when dropped.
#[derive(Debug)]
pub struct Emulator {
    kind: EmulatorKind,
    endpoint: String,
    process: Option<Process>,
    http: reqwest::Client,
}

/// The process group leader we spawned. Its PID is also the group's id, and it stays reserved
/// (so `killpg` cannot hit a stranger) until we reap the leader.
#[derive(Debug)]
struct Process {
    child: Child,
    log: PathBuf,
}

impl Emulator {
    /// Starts moto server on 127.0.0.1 and waits until `GET /moto-api/` answers.
    ///
    /// Port 0 lets moto bind a port the kernel picks and report it back (`serve.py --port-file`), so no other
    /// process can take the port between its choice and the bind; any other port is used as given.
    ///
    /// moto runs through this crate's `python/moto/serve.py` ([`MOTO_SERVE`]), which makes its DynamoDB transactions all-or-nothing for
    /// streams too (moto 5.2.5 streams the writes of a cancelled transaction and then loses its open shard
    /// iterators; see that file).
    pub async fn start_moto(tools: &Tools, port: u16) -> Result<Emulator> {
        let mut cmd = Command::new(tools.python());
        cmd.arg(crate_file(MOTO_SERVE)).args(["-H", "127.0.0.1"]);
        let started = Instant::now();
        let deadline = started + MOTO_START_TIMEOUT;
        let mut emulator = if port == 0 {
            let run_dir = tools.local_dir().join("run");
            fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
            let port_file = run_dir.join(format!("moto-{}.port", uuid::Uuid::new_v4().simple()));
            cmd.arg("--port-file").arg(&port_file);
            let mut emulator = Self::spawn(EmulatorKind::Moto, &tools.local_dir(), "moto", None, cmd)?;
            let port = loop {
                emulator.ensure_running("moto")?;
                if let Some(port) = fs::read_to_string(&port_file).ok().and_then(|text| text.trim().parse().ok()) {
                    break port;
                }
                emulator.check_deadline("moto", deadline)?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let _ = fs::remove_file(&port_file);
            emulator.bound_to("moto", port)?;
            emulator
        } else {
            cmd.args(["-p", &port.to_string()]);
            Self::spawn(EmulatorKind::Moto, &tools.local_dir(), "moto", Some(port), cmd)?
        };
        let url = format!("{}/moto-api/", emulator.endpoint);
        loop {
            emulator.ensure_running("moto")?;
            if let Ok(resp) = emulator.http.get(&url).send().await
                && resp.status().is_success()
            {
                tracing::debug!(endpoint = emulator.endpoint, elapsed = ?started.elapsed(), "moto ready");
                return Ok(emulator);
            }
            emulator.check_deadline("moto", deadline)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts LocalStack community in host mode, as `python -m localstack.runtime.main` from the
    /// venv of [`Tools::ensure_localstack`], with `GATEWAY_LISTEN` and `LOCALSTACK_HOST` at
    /// 127.0.0.1:PORT, the hypercorn gateway (the default one hangs on SIGTERM), path-style SQS
    /// queue URLs, no analytics events, and no DNS server (it would bind 0.0.0.0:53).
    ///
    /// Ready means `GET /_localstack/health` reports every service in [`LOCALSTACK_SERVICES`]
    /// usable and DynamoDB answers `ListTables` (the first DynamoDB call starts DynamoDB Local).
    ///
    /// LocalStack cannot report a port the kernel picked, so port 0 takes a free one below the ephemeral range and,
    /// should another process bind it first (LocalStack then exits while starting), tries another, three times.
    pub async fn start_localstack(tools: &Tools, port: u16) -> Result<Emulator> {
        if port != 0 {
            return Self::start_localstack_on(tools, port).await;
        }
        let mut attempt = 1;
        loop {
            match Self::start_localstack_on(tools, free_port()?).await {
                Err(err) if attempt < 3 => {
                    tracing::warn!(attempt, error = %format!("{err:#}"), "LocalStack did not start, trying another port");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_localstack_on(tools: &Tools, port: u16) -> Result<Emulator> {
        let localstack = tools
            .localstack()
            .context("LocalStack is not installed: get the tools with Tools::ensure_localstack, not Tools::ensure")?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(localstack.python());
        cmd.args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", &listen)
            .env("LOCALSTACK_HOST", &listen)
            .env("GATEWAY_SERVER", "hypercorn")
            .env("SQS_ENDPOINT_STRATEGY", "path")
            .env("DISABLE_EVENTS", "1")
            .env("DNS_ADDRESS", "0");
        let started = Instant::now();
        let mut emulator = Self::spawn(EmulatorKind::LocalStack, &tools.local_dir(), "localstack", Some(port), cmd)?;
        let deadline = Instant::now() + LOCALSTACK_START_TIMEOUT;
        let url = format!("{}/_localstack/health", emulator.endpoint);
        loop {
            emulator.ensure_running("LocalStack")?;
            if let Ok(resp) = emulator.http.get(&url).send().await
                && resp.status().is_success()
                && let Ok(health) = resp.json::<serde_json::Value>().await
                && unusable_services(&health).is_empty()
            {
                tracing::debug!(port, elapsed = ?started.elapsed(), "LocalStack reports its services usable");
                break;
            }
            emulator.check_deadline("LocalStack", deadline)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // DynamoDB Local (java) starts on the first DynamoDB request and takes seconds; do it
        // now so the first table of a deploy does not pay for it.
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config(&emulator.endpoint));
        loop {
            emulator.ensure_running("LocalStack")?;
            match dynamodb.list_tables().send().await {
                Ok(_) => {
                    tracing::debug!(port, elapsed = ?started.elapsed(), "LocalStack DynamoDB ready");
                    return Ok(emulator);
                }
                Err(err) => {
                    if Instant::now() > deadline {
                        return Err(emulator.fail(&format!(
                            "LocalStack's DynamoDB did not answer within {LOCALSTACK_START_TIMEOUT:?}: {}",
                            describe_sdk_error(&err)
                        )));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An emulator somebody else runs at `url` (e.g. the value of `AWS_ENDPOINT_URL`). Dropping
    /// it leaves the emulator alone.
    pub fn external(url: impl Into<String>) -> Emulator {
        Emulator {
            kind: EmulatorKind::External,
            endpoint: url.into().trim_end_matches('/').to_string(),
            process: None,
            http: http_client(),
        }
    }

    /// [`Emulator::external`] at `AWS_ENDPOINT_URL`, when that is set and not empty.
    pub fn from_env() -> Option<Emulator> {
        std::env::var("AWS_ENDPOINT_URL").ok().filter(|url| !url.trim().is_empty()).map(Emulator::external)
    }

    /// The emulator `AWS_ENDPOINT_URL` names, else a moto server of its own (installing the project's tools
    /// under `project_root` when needed) on a free port.
    pub async fn from_env_or_moto(project_root: &Path) -> Result<Emulator> {
        match Self::from_env() {
            Some(external) => Ok(external),
            None => Self::start_moto(&Tools::ensure(project_root)?, 0).await,
        }
    }

    /// The endpoint URL every AWS client uses, e.g. `http://127.0.0.1:4566` (no trailing slash).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Which emulator this is.
    pub fn kind(&self) -> EmulatorKind {
        self.kind
    }

    /// The log file of an emulator we started.
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.log.as_path())
    }

    /// The process id of an emulator we started (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// Empties the emulator: every queue, table, stack, bus... is gone afterwards.
    ///
    /// moto: `POST /moto-api/reset`. LocalStack: `POST /_localstack/state/reset`, which
    /// LocalStack community 2026.3.0 does not have (404), so for it this fails with an error
    /// saying reset is not supported. An external emulator is recognised by the endpoints it
    /// answers.
    pub async fn reset(&self) -> Result<()> {
        let kind = match self.kind {
            EmulatorKind::External => self.detect().await?,
            kind => kind,
        };
        let path = match kind {
            EmulatorKind::Moto => "/moto-api/reset",
            _ => "/_localstack/state/reset",
        };
        let url = format!("{}{path}", self.endpoint);
        let resp = self
            .http
            .post(&url)
            .send()
            .await
            .with_context(|| format!("resetting {kind} at {}: POST {path}", self.endpoint))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND && kind == EmulatorKind::LocalStack {
            // LocalStack community (host mode or container) has no state reset endpoint.
            bail!(
                "reset is not supported by LocalStack at {} (POST {path} answered {status}); \
                 delete the stacks or restart LocalStack instead",
                self.endpoint
            );
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!("resetting {kind} at {} failed: POST {path} answered {status}: {}", self.endpoint, tail(&body, 5));
        }
        Ok(())
    }

    /// Which emulator answers at an external endpoint.
    async fn detect(&self) -> Result<EmulatorKind> {
        for (path, kind) in [("/moto-api/", EmulatorKind::Moto), ("/_localstack/health", EmulatorKind::LocalStack)] {
            let url = format!("{}{path}", self.endpoint);
            if let Ok(resp) = self.http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(kind);
            }
        }
        bail!(
            "the emulator at {} is neither moto (GET /moto-api/) nor LocalStack \
             (GET /_localstack/health), so it cannot be reset",
            self.endpoint
        )
    }

    /// Stops an emulator we started: SIGTERM to its process group, up to ~5 s for the leader
    /// to exit, then SIGKILL (a big moto can stop answering SIGTERM) to the group and to every
    /// descendant still alive. LocalStack starts DynamoDB Local (java) and Kinesis (node) in
    /// sessions of their own, out of reach of the group signal; it stops them itself on SIGTERM,
    /// and they are killed by pid when it did not. Does nothing for an external emulator or when
    /// already stopped.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(process.child.id()).context("pid out of range")?);
        let descendants = descendants(pid.as_raw());
        signal_group(pid, Signal::SIGTERM)?;
        let deadline = Instant::now() + STOP_GRACE;
        while !has_exited(pid)? && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader is running or a zombie, so the group id is still ours: kill the rest.
        signal_group(pid, Signal::SIGKILL)?;
        for proc in &descendants {
            proc.kill_if_same();
        }
        process.child.wait().with_context(|| format!("waiting for {} (pid {pid}) to exit", self.kind))?;
        Ok(())
    }

    /// Spawns `cmd` in its own process group, in `local_dir` (`.local`), with stdout and stderr to
    /// `local_dir/logs/<name>-<port>.log`. Without a port (the process reports the one it bound) the log is named
    /// by a random id until [`Emulator::bound_to`] names it by the port.
    fn spawn(
        kind: EmulatorKind,
        local_dir: &Path,
        name: &str,
        port: Option<u16>,
        mut cmd: Command,
    ) -> Result<Emulator> {
        if let Some(port) = port {
            // Another server on the port would answer our readiness probe in our emulator's stead.
            TcpListener::bind(("127.0.0.1", port))
                .with_context(|| format!("cannot start {kind}: port 127.0.0.1:{port} is in use"))?;
        }
        let logs = local_dir.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let log = match port {
            Some(port) => logs.join(format!("{name}-{port}.log")),
            None => logs.join(format!("{name}-starting-{}.log", uuid::Uuid::new_v4().simple())),
        };
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).current_dir(local_dir).process_group(0);
        let child = cmd.spawn().with_context(|| format!("could not start {kind}: `{}`", display_command(&cmd)))?;
        Ok(Emulator {
            kind,
            endpoint: port.map(|port| format!("http://127.0.0.1:{port}")).unwrap_or_default(),
            process: Some(Process { child, log }),
            http: http_client(),
        })
    }

    /// Records the port the process reported it listens on, and names its log by it.
    fn bound_to(&mut self, name: &str, port: u16) -> Result<()> {
        self.endpoint = format!("http://127.0.0.1:{port}");
        if let Some(process) = &mut self.process {
            let named = process.log.with_file_name(format!("{name}-{port}.log"));
            // The process keeps writing to the renamed file through its open descriptor.
            fs::rename(&process.log, &named).with_context(|| format!("renaming {}", process.log.display()))?;
            process.log = named;
        }
        Ok(())
    }

    /// Fails (with the log tail) when the process we started has exited.
    fn ensure_running(&mut self, what: &str) -> Result<()> {
        let Some(process) = &self.process else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(process.child.id()).context("pid out of range")?);
        if has_exited(pid)? {
            return Err(self.fail(&format!("{what} exited while starting")));
        }
        Ok(())
    }

    fn check_deadline(&mut self, what: &str, deadline: Instant) -> Result<()> {
        if Instant::now() > deadline {
            return Err(self.fail(&format!("{what} did not become ready at {}", self.endpoint)));
        }
        Ok(())
    }

    /// Stops the process and builds an error with `message` and the tail of its log.
    fn fail(&mut self, message: &str) -> anyhow::Error {
        let log = self.process.as_ref().map(|p| p.log.clone());
        let stopped = self.stop();
        let mut text = message.to_string();
        if let Some(log) = log {
            let content = fs::read_to_string(&log).unwrap_or_default();
            text.push_str(&format!("; last lines of {}:\n{}", log.display(), tail(&content, LOG_TAIL_LINES)));
        }
        if let Err(err) = stopped {
            text.push_str(&format!("\n(stopping it failed too: {err:#})"));
        }
        anyhow!(text)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("stopping {} at {}: {err:#}", self.kind, self.endpoint);
        }
    }
}

/// Names of the services in [`LOCALSTACK_SERVICES`] that LocalStack's health report does not
/// show as usable (`available`, `running` or `initialized`).
fn unusable_services(health: &serde_json::Value) -> Vec<&'static str> {
    LOCALSTACK_SERVICES
        .iter()
        .copied()
        .filter(|service| {
            let state = health.get("services").and_then(|s| s.get(*service)).and_then(|s| s.as_str());
            !matches!(state, Some("available" | "running" | "initialized"))
        })
        .collect()
}

/// Sends `signal` to the process group `pgid`; a group that is already gone is fine.
fn signal_group(pgid: Pid, signal: Signal) -> Result<()> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        // A zombie leader with no other members can give EPERM on some kernels; nothing to kill.
        Err(Errno::EPERM) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("sending {signal} to process group {pgid}")),
    }
}

/// A process seen in `/proc`, identified by pid and start time (so a recycled pid is never
/// mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcId {
    pid: i32,
    start_time: u64,
}

impl ProcId {
    /// SIGKILL, if the pid still belongs to the same process.
    fn kill_if_same(&self) {
        if proc_stat(self.pid).is_some_and(|(_, start_time)| start_time == self.start_time) {
            // ESRCH: it exited meanwhile, which is what we want.
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// `(parent pid, start time)` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything, even ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, starttime field 22.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Every living descendant of `root` (children, grandchildren, ...), whatever their group or
/// session.
fn descendants(root: i32) -> Vec<ProcId> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let procs: Vec<(i32, i32, u64)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|(ppid, start)| (pid, ppid, start)))
        .collect();
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, start_time) in &procs {
            if ppid == parent && pid != root && !found.iter().any(|p: &ProcId| p.pid == pid) {
                found.push(ProcId { pid, start_time });
                parents.push(pid);
            }
        }
    }
    found
}

/// Whether our child `pid` has exited, without reaping it (WNOWAIT keeps its pid, and so the
/// group id, reserved until [`Child::wait`]).
fn has_exited(pid: Pid) -> Result<bool> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => Ok(false),
        Ok(_) => Ok(true),
        // Already reaped.
        Err(Errno::ECHILD) => Ok(true),
        Err(err) => Err(err).with_context(|| format!("checking on process {pid}")),
    }
}

/// The HTTP client for readiness probes and resets. Built without a proxy (the emulators are
/// on loopback), with a short timeout so a hung emulator cannot hang us.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A TCP port on 127.0.0.1 that is free right now, for an emulator that cannot bind port 0 and report it.
///
/// It is taken below the kernel's ephemeral range (`ip_local_port_range`), where the OS never
/// puts the local end of an outgoing connection, so the busy connections of other tests cannot
/// grab it before the emulator binds it; and it is never the same port twice in one process, so
/// parallel tests do not collide.
fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Well above the fixed ports people give servers (4566, 8000, 9000, ...).
    let low = 20000u16;
    let high = ephemeral_start.max(low + 1000);
    let span = u128::from(high - low);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        // uuid v4 is our source of randomness; the starting point only needs to differ per call.
        let offset = u16::try_from(uuid::Uuid::new_v4().as_u128() % span).unwrap_or(0);
        let port = low + offset;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    bail!("found no free port on 127.0.0.1 between {low} and {high}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_report_with_all_services_usable_is_ready() {
        let mut services = serde_json::Map::new();
        for service in LOCALSTACK_SERVICES {
            services.insert((*service).into(), "available".into());
        }
        services.insert("dynamodb".into(), "running".into());
        let health = serde_json::json!({ "services": services });
        assert!(unusable_services(&health).is_empty());
    }

    #[test]
    fn health_report_names_services_not_usable() {
        let health = serde_json::json!({ "services": { "sqs": "running", "dynamodb": "error" } });
        let missing = unusable_services(&health);
        assert!(missing.contains(&"dynamodb"));
        assert!(missing.contains(&"events"));
        assert!(!missing.contains(&"sqs"));
    }

    #[test]
    fn descendants_include_grandchildren() {
        let mut child = Command::new("sh").args(["-c", "sleep 30 & wait"]).spawn().expect("spawn sh");
        let root = i32::try_from(child.id()).expect("pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = descendants(root);
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            found = descendants(root);
        }
        assert_eq!(found.len(), 1, "sh has one child, sleep: {found:?}");
        found[0].kill_if_same();
        child.wait().expect("sh exits once sleep is killed");
    }

    /// A process tree that ignores SIGTERM, with a grandchild in a session of its own (as
    /// LocalStack's java): stop falls back to SIGKILL after the grace period and kills both.
    #[test]
    fn stop_kills_what_ignores_sigterm_and_children_in_their_own_session() {
        let local = std::env::temp_dir().join(format!("orderflow-emulator-test-{}", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; setsid sleep 61 & sleep 60; wait"]);
        let port = free_port().expect("free port");
        let mut emulator = Emulator::spawn(EmulatorKind::Moto, &local, "stubborn", Some(port), cmd).expect("spawn");
        let pid = i32::try_from(emulator.pid().expect("pid")).expect("pid fits");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut children = descendants(pid);
        while children.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            children = descendants(pid);
        }
        assert_eq!(children.len(), 2, "sh runs two sleeps: {children:?}");

        let started = Instant::now();
        emulator.stop().expect("stop");
        let took = started.elapsed();
        assert!(took >= STOP_GRACE, "waited for SIGTERM first: {took:?}");
        assert!(took < STOP_GRACE + Duration::from_secs(3), "then killed at once: {took:?}");
        // SIGKILL is delivered at once, but the orphan is reaped by init when init gets to it.
        let alive = |child: &ProcId| {
            fs::read_to_string(format!("/proc/{}/stat", child.pid)).is_ok_and(|stat| {
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z'));
                state == Some(false) && proc_stat(child.pid).is_some_and(|(_, start)| start == child.start_time)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while children.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survivors: Vec<_> = children.iter().filter(|c| alive(c)).collect();
        assert!(survivors.is_empty(), "{survivors:?} survived stop");
        while killpg(Pid::from_raw(pid), None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(killpg(Pid::from_raw(pid), None), Err(Errno::ESRCH), "the group is gone");
        assert!(local.join(format!("logs/stubborn-{port}.log")).exists());
        fs::remove_dir_all(&local).expect("cleanup");
    }

    #[test]
    fn free_port_can_be_bound_and_is_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("free port")).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        TcpListener::bind(("127.0.0.1", ports[0])).expect("port is free");
    }
}
