//! The whole local cloud in one value: an emulator, the stateful stack deployed into it from `infra/`, and the
//! runner driving the real function binaries. What `cargo xtask demo`/`up` and the end-to-end tests start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use local_lambda::aws::sdk_config;
use local_lambda::deploy::{StackOutputs, deploy_stack};
use local_lambda::iac::Resolver;
use local_lambda::proxy::{ProxiedVariable, UpstreamKind};
use local_lambda::runner::{Chaos, Runner, RunnerConfig};

use crate::emulator::{Emulator, EmulatorKind};
use crate::issuer::LocalIssuer;
use crate::provider::PaymentProvider;
use crate::tools::Tools;

/// The Lambda functions, one crate (and binary) each under `functions/`.
pub const FUNCTIONS: [&str; 11] = [
    "orders-api",
    "outbox-relay",
    "order-views",
    "inventory",
    "payment",
    "order-saga",
    "order-deadlines",
    "shipping",
    "notifications",
    "analytics",
    "sales-windows",
];

/// The simulated payment provider's crate and binary: the local cloud runs it as a process. Also the name of its
/// upstream in fault rules (`"target": "payment-provider"`).
const PAYMENT_PROVIDER: &str = "payment-provider";

/// The visibility timeout the local stacks are deployed with (the template's default is 120 s): a record of a
/// crashed or timed-out invocation is received again after this. Longer than every consumer's timeout (10 s), so
/// a slow batch is never received again while its instance still works on it; a record that fails is redelivered
/// after the handler's backoff, not after this.
pub const LOCAL_VISIBILITY_TIMEOUT_SECONDS: u32 = 12;
/// Receives before SQS moves a message to its DLQ (the template's default).
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// How to start a [`LocalCloud`].
#[derive(Debug, Clone)]
pub struct CloudOptions {
    pub project_root: PathBuf,
    /// Names every resource (`orderflow-<stage>-...`): a fresh stage is a fresh, isolated system.
    pub stage: String,
    /// Serve the HTTP API here (port 0 picks a free one).
    pub http_addr: Option<SocketAddr>,
    /// An emulator to use instead of starting moto (e.g. `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The port of the moto server started when no endpoint is given (0 picks a free one).
    pub moto_port: u16,
    /// More environment for every function (e.g. fault injection).
    pub function_env: BTreeMap<String, String>,
    /// Copy the functions' logs to stderr.
    pub pass_through_logs: bool,
    /// Duplicated and shuffled SQS deliveries (chaos tests); `None` by default.
    pub chaos: Option<Chaos>,
    /// Receives before SQS moves a message to its DLQ ([`MAX_RECEIVE_COUNT`] by default).
    pub max_receive_count: u32,
    /// Seeds the fault rules' draws (see [`local_lambda::faults`]).
    pub fault_seed: u64,
    /// Fires every schedule of the template at this interval instead of its own (`None`: as declared).
    pub schedule_interval: Option<Duration>,
}

impl CloudOptions {
    /// A new stage with a random name, the HTTP API on a free port, and the emulator named by
    /// `AWS_ENDPOINT_URL` if set (else a moto server of its own).
    pub fn isolated(project_root: impl Into<PathBuf>, prefix: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            project_root: project_root.into(),
            stage: format!("{prefix}{}", &suffix[..8]),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            endpoint: std::env::var("AWS_ENDPOINT_URL").ok().filter(|url| !url.is_empty()),
            moto_port: 0,
            function_env: BTreeMap::new(),
            // Debugging a test: `ORDERFLOW_FUNCTION_LOGS=1` copies every function's log lines to stderr.
            pass_through_logs: std::env::var_os("ORDERFLOW_FUNCTION_LOGS").is_some_and(|v| v == "1"),
            chaos: None,
            max_receive_count: MAX_RECEIVE_COUNT,
            fault_seed: 0,
            schedule_interval: None,
        }
    }
}

/// A running local cloud. [`LocalCloud::shutdown`] stops the functions and the emulator it started.
pub struct LocalCloud {
    emulator: Emulator,
    /// The payment provider the payment function calls (through the fault proxy).
    provider: PaymentProvider,
    sdk_config: SdkConfig,
    outputs: StackOutputs,
    runner: Runner,
    stage: String,
    /// Where the function binaries and the operator commands were built.
    binaries_dir: PathBuf,
    /// Signs the tokens the HTTP API accepts.
    issuer: LocalIssuer,
}

impl LocalCloud {
    /// Starts the emulator (or uses the given one), builds the functions, deploys `infra/stateful.yaml`, and
    /// starts the runner on `infra/functions.yaml`.
    pub async fn start(options: CloudOptions) -> Result<Self> {
        let root = options.project_root.canonicalize().context("project root")?;
        let emulator = match &options.endpoint {
            Some(url) => Emulator::external(url.clone()),
            None => Emulator::start_moto(&Tools::ensure(&root)?, options.moto_port).await?,
        };
        let binaries_dir = build_functions(&root)?;
        let sdk_config = sdk_config(emulator.endpoint());
        let cloudformation = aws_sdk_cloudformation::Client::new(&sdk_config);
        let visibility = LOCAL_VISIBILITY_TIMEOUT_SECONDS.to_string();
        let receives = options.max_receive_count.to_string();
        let outputs = deploy_stack(
            &cloudformation,
            &stateful_stack_name(&options.stage),
            &root.join("infra/stateful.yaml"),
            // ProtectData "false": a throw-away stage (deleted and re-created under its names; no alarm topic).
            &[
                ("Stage", &options.stage),
                ("VisibilityTimeoutSeconds", &visibility),
                ("MaxReceiveCount", &receives),
                ("ProtectData", "false"),
            ],
        )
        .await?;
        if emulator.kind() != EmulatorKind::Moto {
            // LocalStack's streams lose records written in the first ~0.5 s after a table turns ACTIVE.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let provider = PaymentProvider::start(&binaries_dir.join(PAYMENT_PROVIDER), None).await?;
        let resolver = Resolver::new()
            .with_parameter("Stage", &options.stage)
            .with_parameter("PaymentProviderUrl", provider.url())
            .with_exports(outputs.exports().clone());
        let log_dir = root.join(".local/logs").join(&options.stage);
        let mut config = RunnerConfig::new(
            root.join("infra/functions.yaml"),
            resolver,
            binaries_dir.clone(),
            sdk_config.clone(),
            emulator.endpoint(),
            log_dir,
        );
        config.http_addr = options.http_addr;
        let issuer = LocalIssuer::load_or_create(&root)?;
        config.jwt = Some(issuer.jwt_config());
        config.extra_env = options.function_env.clone();
        config.pass_through_logs = options.pass_through_logs;
        config.chaos = options.chaos.clone();
        config.fault_seed = options.fault_seed;
        config.schedule_interval = options.schedule_interval;
        // The HTTP API's OpenAPI document, served at /_local/openapi.json: a missing file is an error, never None.
        let openapi = root.join("functions/orders-api/openapi.json");
        config.openapi = Some(
            std::fs::read_to_string(&openapi)
                .with_context(|| format!("reading the HTTP API's OpenAPI document {}", openapi.display()))?,
        );
        config
            .proxied_variables
            .push(ProxiedVariable::new("PAYMENT_PROVIDER_URL", UpstreamKind::Http(PAYMENT_PROVIDER.to_owned())));
        let runner = Runner::start(config).await?;
        Ok(Self { emulator, provider, sdk_config, outputs, runner, stage: options.stage, binaries_dir, issuer })
    }

    /// An operator command built with the functions (`orderflow-views`), to run against this cloud.
    pub fn operator_command(&self, name: &str) -> Command {
        let mut command = Command::new(self.binaries_dir.join(name));
        command.env("AWS_ENDPOINT_URL", self.endpoint());
        command
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn endpoint(&self) -> &str {
        self.emulator.endpoint()
    }

    pub fn emulator_kind(&self) -> EmulatorKind {
        self.emulator.kind()
    }

    /// SDK configuration reaching the emulator.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// An output of the stateful stack, e.g. `InventoryDlqUrl`.
    pub fn output(&self, key: &str) -> Result<&str> {
        self.outputs.get(key)
    }

    pub fn outputs(&self) -> &StackOutputs {
        &self.outputs
    }

    /// The base URL of the HTTP API, e.g. `http://127.0.0.1:9000`.
    pub fn http_base(&self) -> Result<String> {
        let addr = self.runner.http_addr().context("the local cloud serves no HTTP API")?;
        Ok(format!("http://{addr}"))
    }

    /// The issuer whose tokens the HTTP API accepts.
    pub fn issuer(&self) -> &LocalIssuer {
        &self.issuer
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Every dead-letter queue of the stack: (output name, url).
    pub fn dead_letter_queues(&self) -> Vec<(String, String)> {
        self.outputs
            .outputs()
            .iter()
            .filter(|(key, _)| key.ends_with("DlqUrl"))
            .map(|(key, url)| (key.clone(), url.clone()))
            .collect()
    }

    /// Stops the functions, the payment provider, then the emulator if this cloud started it.
    pub async fn shutdown(self) -> Result<()> {
        let stopped = self.runner.shutdown().await;
        let provider_stopped = self.provider.stop().await;
        drop(self.emulator);
        stopped.and(provider_stopped)
    }

    /// The payment provider's counts (authorize calls, authorizations, declines, voids).
    pub async fn payment_provider_stats(&self) -> Result<serde_json::Value> {
        self.provider.stats().await
    }
}

/// The stack name of the stateful resources of a stage.
pub fn stateful_stack_name(stage: &str) -> String {
    format!("orderflow-{stage}-stateful")
}

/// The packages of the operator commands the tests run against the local cloud (`orderflow-views`,
/// `orderflow-replay`).
const OPERATOR_TOOLS: [&str; 2] = ["orderflow-order-views", "orderflow-replay"];

/// Builds every function binary, the payment provider and the operator commands (debug profile, shared with the
/// tests) and returns their directory.
pub fn build_functions(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.arg("build").arg("--quiet").current_dir(root);
    for package in FUNCTIONS.iter().chain([&PAYMENT_PROVIDER]).chain(&OPERATOR_TOOLS) {
        command.args(["--package", package]);
    }
    let status = command.status().context("running cargo build for the functions")?;
    if !status.success() {
        bail!("cargo build of the functions failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug"))
}
