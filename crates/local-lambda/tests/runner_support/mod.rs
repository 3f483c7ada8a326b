//! Shared set-up of the runner tests: a moto server per test, the fixture stack deployed with
//! the CloudFormation API, the probe function binary, and helpers to wait for deliveries.
//!
//! moto is started by orderflow's launcher (`orderflow-local-cloud`, a dev-dependency of this crate: its venv, its
//! moto fixes); only the endpoint URL is taken from it. Every test gets a fresh emulator of its own, as the tests
//! run in parallel and assert on what the emulator holds (rules by prefix, queue contents).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::SdkConfig;
use local_lambda::iac::Resolver;
use local_lambda::runner::{Delivery, Runner, RunnerConfig};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_local_cloud::tools::Tools;
use tokio::sync::broadcast;

/// The crate directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workspace_dir() -> PathBuf {
    crate_dir().join("../..")
}

/// A moto server of its own for one test, stopped when dropped.
pub struct Moto {
    _emulator: Emulator,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let tools = Tools::ensure(&workspace_dir()).expect("project tools (.local/venv)");
        let emulator = Emulator::start_moto(&tools, 0).await.expect("moto starts");
        let endpoint = emulator.endpoint().to_owned();
        Moto { _emulator: emulator, endpoint }
    }

    pub fn sdk_config(&self) -> SdkConfig {
        local_lambda::aws::sdk_config(&self.endpoint)
    }
}

/// The probe function binary. `cargo test --test <one>` does not build examples, so it is
/// built (or found up to date) once per test process.
pub fn probe_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/debug/deps/<test binary> -> target/debug/examples/probe_function
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
            let probe = profile_dir.join("examples").join("probe_function");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "--example", "probe_function", "-p", "local-lambda"])
                .current_dir(crate_dir())
                .status()
                .expect("running cargo build --example probe_function");
            assert!(status.success(), "building the probe function failed");
            assert!(probe.is_file(), "{} not found after building it", probe.display());
            probe
        })
        .clone()
}

/// A scratch directory, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let path = std::env::temp_dir().join("local-lambda-tests").join(format!("{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("creating a scratch dir");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A binaries directory where each name is a link to the probe function.
pub fn probe_binaries(scratch: &Scratch, names: &[&str]) -> PathBuf {
    let probe = probe_binary();
    let dir = scratch.path.join("bin");
    std::fs::create_dir_all(&dir).expect("creating the binaries dir");
    for name in names {
        std::os::unix::fs::symlink(&probe, dir.join(name)).expect("linking the probe binary");
    }
    dir
}

/// Deploys `fixtures/runner-stateful.yaml` with the CloudFormation API and returns a resolver
/// with its exports and the stage.
pub async fn deploy_fixture(sdk: &SdkConfig, stage: &str) -> Resolver {
    let cloudformation = aws_sdk_cloudformation::Client::new(sdk);
    let template = crate_dir().join("tests/fixtures/runner-stateful.yaml");
    local_lambda::deploy::deploy_stack(&cloudformation, &format!("runner-{stage}"), &template, &[("Stage", stage)])
        .await
        .expect("deploying the runner fixture stack");
    Resolver::new().with_parameter("Stage", stage).load_exports(&cloudformation).await.expect("reading the exports")
}

/// Everything a runner test needs, torn down in the right order by [`Harness::stop`].
pub struct Harness {
    pub moto: Moto,
    pub scratch: Scratch,
    pub runner: Runner,
    pub deliveries: broadcast::Receiver<Delivery>,
    pub sdk: SdkConfig,
    pub resolver: Resolver,
}

/// Moto with the fixture deployed and no runner yet: a test that needs records in place before the event sources
/// start reading (so that batches do not depend on timing) writes them here, then [`Stage::run`]s.
pub struct Stage {
    pub moto: Moto,
    pub sdk: SdkConfig,
    pub resolver: Resolver,
}

impl Stage {
    /// Starts moto and deploys the fixture.
    pub async fn deploy() -> Stage {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config();
        let resolver = deploy_fixture(&sdk, "test").await;
        Stage { moto, sdk, resolver }
    }

    pub fn export(&self, name: &str) -> String {
        export(&self.resolver, name)
    }

    /// Runs `functions` of the fixture SAM template.
    pub async fn run(self, functions: &[&str], configure: impl FnOnce(&mut RunnerConfig)) -> Harness {
        let Stage { moto, sdk, resolver } = self;
        let scratch = Scratch::new("runner");
        let binaries = probe_binaries(&scratch, functions);
        let mut config = RunnerConfig::new(
            crate_dir().join("tests/fixtures/runner-functions.yaml"),
            resolver.clone(),
            binaries,
            sdk.clone(),
            moto.endpoint.clone(),
            scratch.path.join("logs"),
        );
        config.functions = Some(functions.iter().map(|f| f.to_string()).collect());
        config.pass_through_logs = std::env::var_os("RUNNER_TEST_LOGS").is_some();
        configure(&mut config);
        let runner = Runner::start(config).await.expect("starting the runner");
        let deliveries = runner.subscribe();
        Harness { moto, scratch, runner, deliveries, sdk, resolver }
    }
}

fn export(resolver: &Resolver, name: &str) -> String {
    resolver
        .exports()
        .get(&format!("runner-test-{name}"))
        .unwrap_or_else(|| panic!("export runner-test-{name}"))
        .clone()
}

impl Harness {
    /// Starts moto, deploys the fixture, and runs `functions` of the fixture SAM template.
    pub async fn start(functions: &[&str], configure: impl FnOnce(&mut RunnerConfig)) -> Harness {
        Stage::deploy().await.run(functions, configure).await
    }

    pub fn export(&self, name: &str) -> String {
        export(&self.resolver, name)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    /// Collects deliveries until `done` says the collection is complete, or panics after
    /// `timeout` with what was collected.
    pub async fn collect(&mut self, timeout: Duration, mut done: impl FnMut(&[Delivery]) -> bool) -> Vec<Delivery> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&seen) {
            match tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
                Ok(Ok(delivery)) => seen.push(delivery),
                Ok(Err(err)) => panic!("delivery channel: {err}; seen {seen:#?}"),
                Err(_) => panic!("timed out after {timeout:?}; seen {seen:#?}"),
            }
        }
        seen
    }

    /// Reads every message now in a queue (long-polling until `expected` are in or `timeout`).
    pub async fn drain_queue(&self, url: &str, expected: usize, timeout: Duration) -> Vec<String> {
        let sqs = self.sqs();
        let mut bodies = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while bodies.len() < expected && tokio::time::Instant::now() < deadline {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receiving");
            for m in out.messages() {
                bodies.push(m.body().unwrap_or_default().to_owned());
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("deleting");
            }
        }
        bodies
    }

    /// Shuts the runner down and checks that no function process is left.
    pub async fn stop(self) {
        let pids = self.runner.pids();
        assert!(!pids.is_empty(), "the runner should have instances running");
        self.runner.shutdown().await.expect("clean shutdown");
        for pid in pids {
            assert!(!process_alive(pid), "function process {pid} survived the shutdown");
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// The function log at `path` once it holds every one of `lines`: the pool writes its log from a task of its own
/// (and an instance's output arrives through a pipe), so a line appears shortly after the invocation returned.
pub async fn log_with(path: &Path, lines: &[String], timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if lines.iter().all(|line| log.contains(line.as_str())) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} lacks one of {lines:?} after {timeout:?}:\n{log}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
