//! The local runner: plays Lambda for the functions of the SAM template against the emulator.
//!
//! [`Runner::start`] reads the functions and their event sources from the template, starts a
//! [`FunctionPool`] of the real binary per function behind one [`RuntimeApiServer`], starts every
//! event source (SQS, DynamoDB stream, EventBridge rule, schedule) and, when asked, the HTTP API. Every
//! invocation by a source is published as a [`Delivery`] (see [`Runner::subscribe`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_sqs::config::ProvideCredentials;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::authorizer::JwtConfig;
use crate::faults::FaultController;
use crate::http_gateway::{GatewayIdentity, GatewayRoute, HttpGateway};
use crate::iac::{self, FunctionSpec, Resolver};
use crate::proxy::{FaultProxy, ProxiedVariable, UpstreamKind};
use crate::runtime_api::{FunctionPool, PoolConfig, RuntimeApiServer};
use crate::sources::chaos::ChaosState;
use crate::sources::stream::StreamClients;
use crate::sources::{self, Shutdown, ShutdownTrigger, SourceContext, SourceTiming};

pub use crate::sources::chaos::{Chaos, ChaosStats};
pub use crate::sources::{DeliveredRecord, Delivery, DeliveryOutcome, SourceRef};

/// What the runner runs and against what.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The SAM template, e.g. `template.yaml`.
    pub template_path: PathBuf,
    /// Exports of the deployed stateful stack and the template parameters.
    pub resolver: Resolver,
    /// Where the function binaries are, named after the function (e.g. `target/debug`).
    pub binaries_dir: PathBuf,
    /// SDK configuration reaching the emulator (endpoint, region, credentials); the functions
    /// get the same region and credentials.
    pub sdk_config: SdkConfig,
    /// The emulator endpoint, given to the functions as `AWS_ENDPOINT_URL`.
    pub endpoint_url: String,
    /// Directory of the functions' log files (`<function>.log`).
    pub log_dir: PathBuf,
    /// Address of the HTTP API; `None` serves no HTTP API.
    pub http_addr: Option<SocketAddr>,
    /// What the HTTP API's JWT authorizer trusts; needed when a route has an authorizer.
    pub jwt: Option<JwtConfig>,
    /// The HTTP API's OpenAPI document (JSON), served at `/_local/openapi.json`.
    pub openapi: Option<String>,
    /// Run only these functions (binary names); `None` runs every function of the template.
    pub functions: Option<Vec<String>>,
    /// More environment for every function (over the template's).
    pub extra_env: BTreeMap<String, String>,
    /// Copy the functions' output to this process's stderr too.
    pub pass_through_logs: bool,
    /// Account id used in function ARNs and HTTP API events.
    pub account_id: String,
    /// Polling and retry timing of the sources.
    pub timing: SourceTiming,
    /// Instances serving the HTTP API of a function.
    pub http_concurrency: usize,
    /// Concurrent asynchronous invocations of a function.
    pub async_concurrency: usize,
    /// How long [`Runner::shutdown`] lets batches in flight finish before stopping them.
    pub shutdown_grace: Duration,
    /// Duplicated and shuffled SQS deliveries (chaos tests); `None` delivers as Lambda does.
    pub chaos: Option<Chaos>,
    /// Fires every schedule at this interval instead of its `rate()` (tests run minutes-long schedules each second).
    pub schedule_interval: Option<Duration>,
    /// The variables naming upstreams that the fault proxy stands in front of (`AWS_ENDPOINT_URL` by default); push
    /// one with [`UpstreamKind::Http`] to register an HTTP service under the name fault rules target it by.
    pub proxied_variables: Vec<ProxiedVariable>,
    /// Seeds the fault rules' draws.
    pub fault_seed: u64,
}

impl RunnerConfig {
    /// A configuration with the defaults: no HTTP API, every function, logs not copied.
    pub fn new(
        template_path: impl Into<PathBuf>,
        resolver: Resolver,
        binaries_dir: impl Into<PathBuf>,
        sdk_config: SdkConfig,
        endpoint_url: impl Into<String>,
        log_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            template_path: template_path.into(),
            resolver,
            binaries_dir: binaries_dir.into(),
            sdk_config,
            endpoint_url: endpoint_url.into(),
            log_dir: log_dir.into(),
            http_addr: None,
            jwt: None,
            openapi: None,
            functions: None,
            extra_env: BTreeMap::new(),
            pass_through_logs: false,
            account_id: "123456789012".to_owned(),
            timing: SourceTiming::default(),
            http_concurrency: 4,
            async_concurrency: 2,
            shutdown_grace: Duration::from_secs(5),
            chaos: None,
            schedule_interval: None,
            proxied_variables: vec![ProxiedVariable::new("AWS_ENDPOINT_URL", UpstreamKind::Aws)],
            fault_seed: 0,
        }
    }
}

/// The running local Lambda.
pub struct Runner {
    functions: Vec<FunctionSpec>,
    server: RuntimeApiServer,
    pools: BTreeMap<String, Arc<FunctionPool>>,
    tasks: Vec<JoinHandle<()>>,
    trigger: ShutdownTrigger,
    deliveries: broadcast::Sender<Delivery>,
    gateway: Option<HttpGateway>,
    shutdown_grace: Duration,
    chaos: Option<Arc<ChaosState>>,
    proxy: Arc<FaultProxy>,
    stream_records_finished: Arc<AtomicU64>,
}

impl Runner {
    /// Reads the template, starts the functions, their event sources and the HTTP API.
    ///
    /// Fails with the path and the `cargo build -p <name>` to run when a function binary is
    /// missing, and when a source's queue, stream or destination does not exist in the
    /// emulator. On failure, whatever was started is stopped again.
    pub async fn start(config: RunnerConfig) -> Result<Runner> {
        let mut functions = iac::load_functions(&config.template_path, &config.resolver)?;
        if let Some(selected) = &config.functions {
            for name in selected {
                if !functions.iter().any(|f| &f.name == name) {
                    bail!("function {name} is not in {}", config.template_path.display());
                }
            }
            functions.retain(|f| selected.contains(&f.name));
        }
        for (i, function) in functions.iter().enumerate() {
            if let Some(other) = functions[i + 1..].iter().find(|f| f.name == function.name) {
                bail!(
                    "functions {} and {} have the same binary name {} (the directory of CodeUri)",
                    function.logical_id,
                    other.logical_id,
                    function.name
                );
            }
        }
        let missing: Vec<String> = functions
            .iter()
            .map(|f| (f, config.binaries_dir.join(&f.name)))
            .filter(|(_, path)| !path.is_file())
            .map(|(f, path)| format!("{} (build it with `cargo build -p {}`)", path.display(), f.name))
            .collect();
        if !missing.is_empty() {
            bail!("function binaries not found: {}", missing.join("; "));
        }

        let region =
            config.sdk_config.region().map(|r| r.as_ref().to_owned()).unwrap_or_else(|| "us-east-1".to_owned());
        let extra_env = function_env(&config, &region).await?;
        let (trigger, shutdown) = Shutdown::new();
        let (deliveries, _) = broadcast::channel(1024);
        let mut runner = Runner {
            functions: functions.clone(),
            server: RuntimeApiServer::start().await?,
            pools: BTreeMap::new(),
            tasks: Vec::new(),
            trigger,
            deliveries,
            gateway: None,
            shutdown_grace: config.shutdown_grace,
            chaos: config.chaos.clone().map(|chaos| Arc::new(ChaosState::new(chaos))),
            proxy: FaultProxy::new(config.fault_seed, config.proxied_variables.clone())?,
            stream_records_finished: Arc::default(),
        };
        match runner.start_all(&config, &functions, &region, extra_env, shutdown).await {
            Ok(()) => Ok(runner),
            Err(err) => {
                runner.stop().await;
                Err(err)
            }
        }
    }

    async fn start_all(
        &mut self,
        config: &RunnerConfig,
        functions: &[FunctionSpec],
        region: &str,
        extra_env: BTreeMap<String, String>,
        shutdown: Shutdown,
    ) -> Result<()> {
        let sqs = aws_sdk_sqs::Client::new(&config.sdk_config);
        let streams = aws_sdk_dynamodbstreams::Client::new(&config.sdk_config);
        let events = aws_sdk_eventbridge::Client::new(&config.sdk_config);
        let mut http_routes = Vec::new();

        for function in functions {
            let context = |what: &str| format!("function {} ({}): {what}", function.name, function.logical_id);
            // One instance per concurrent invocation any source can make.
            let max_instances = function.sqs.iter().map(|s| s.max_concurrency as usize).sum::<usize>()
                + function.streams.len()
                + function.schedules.len()
                + if function.rules.is_empty() { 0 } else { config.async_concurrency }
                + if function.http_routes.is_empty() { 0 } else { config.http_concurrency };
            let pool = FunctionPool::start(
                &self.server,
                PoolConfig {
                    name: function.name.clone(),
                    function_name: function.function_name.clone(),
                    binary: config.binaries_dir.join(&function.name),
                    timeout: function.timeout,
                    memory_mb: function.memory_mb,
                    environment: function.environment.clone(),
                    extra_env: extra_env.clone(),
                    max_instances: max_instances.max(1),
                    warm_instances: 1,
                    log_dir: config.log_dir.clone(),
                    pass_through_logs: config.pass_through_logs,
                    region: region.to_owned(),
                    account_id: config.account_id.clone(),
                    fixed_trace_id: None,
                    proxy: Some(self.proxy.clone()),
                },
            )
            .await
            .with_context(|| context("starting its instances"))?;
            let pool = Arc::new(pool);
            self.pools.insert(function.name.clone(), pool.clone());
            let ctx = SourceContext {
                function: function.name.clone(),
                pool: pool.clone(),
                deliveries: self.deliveries.clone(),
                shutdown: shutdown.clone(),
                timing: config.timing.clone(),
                region: region.to_owned(),
            };

            for source in &function.sqs {
                let url = sources::sqs::queue_url(&sqs, &source.queue_arn)
                    .await
                    .with_context(|| context(&format!("event {}", source.event_id)))?;
                self.tasks.extend(sources::sqs::spawn(&ctx, &sqs, source, &url, self.chaos.clone()));
            }
            for source in &function.streams {
                let destination_url =
                    match &source.on_failure_destination_arn {
                        Some(arn) => Some(sources::sqs::queue_url(&sqs, arn).await.with_context(|| {
                            context(&format!("on-failure destination of event {}", source.event_id))
                        })?),
                        None => None,
                    };
                let clients = StreamClients {
                    streams: streams.clone(),
                    sqs: sqs.clone(),
                    destination_url,
                    finished: self.stream_records_finished.clone(),
                };
                let task = sources::stream::spawn(&ctx, clients, source)
                    .await
                    .with_context(|| context(&format!("event {}", source.event_id)))?;
                self.tasks.push(task);
            }
            if let (false, Some(async_config)) = (function.rules.is_empty(), &function.async_config) {
                let queue = sources::rule::ensure_internal_target(
                    &sqs,
                    &events,
                    function,
                    async_config,
                    config.timing.async_retry_delay,
                )
                .await
                .with_context(|| context("setting up its EventBridge rules"))?;
                let destination_url = match &async_config.on_failure_destination_arn {
                    Some(arn) => Some(
                        sources::sqs::queue_url(&sqs, arn)
                            .await
                            .with_context(|| context("EventInvokeConfig on-failure destination"))?,
                    ),
                    None => None,
                };
                self.tasks.push(sources::rule::spawn(
                    &ctx,
                    &sqs,
                    function,
                    async_config,
                    queue,
                    destination_url,
                    config.async_concurrency,
                ));
            }
            if let Some(async_config) = &function.async_config {
                let schedules = sources::schedule::spawn(&ctx, &sqs, function, async_config, config.schedule_interval)
                    .await
                    .with_context(|| context("starting its schedules"))?;
                self.tasks.extend(schedules);
            }
            http_routes.extend(function.http_routes.iter().map(|route| GatewayRoute {
                route: route.clone(),
                function: function.name.clone(),
                pool: pool.clone(),
            }));
        }

        if let Some(addr) = config.http_addr
            && !http_routes.is_empty()
        {
            let identity = GatewayIdentity { account_id: config.account_id.clone(), ..GatewayIdentity::default() };
            let mut control = self.proxy.controller().router();
            if let Some(openapi) = config.openapi.clone() {
                let document = move || async move { ([("content-type", "application/json")], openapi) };
                control = control.route("/_local/openapi.json", axum::routing::get(document));
            }
            let jwt = config.jwt.clone();
            self.gateway =
                Some(HttpGateway::start(addr, http_routes, identity, jwt, self.deliveries.clone(), control).await?);
        }
        Ok(())
    }

    /// Receives every [`Delivery`] from now on. A receiver that falls more than 1024 behind
    /// loses the oldest ones (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.deliveries.subscribe()
    }

    /// The stream records every stream source is done with so far (the function succeeded with them, or they went
    /// to the on-failure destination), not counting those its filter drops. A test that knows how many records a
    /// stream holds waits on this, not on a sleep, for the stream's hop to be over.
    pub fn stream_records_finished(&self) -> u64 {
        self.stream_records_finished.load(Ordering::Relaxed)
    }

    /// What the delivery chaos did so far, when it is on.
    pub fn chaos_stats(&self) -> Option<ChaosStats> {
        self.chaos.as_ref().map(|chaos| chaos.stats())
    }

    /// The fault rules every function's calls go through (also served at `/_local/faults` beside the HTTP API).
    pub fn faults(&self) -> &Arc<FaultController> {
        self.proxy.controller()
    }

    /// The address of the HTTP API, when one is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(HttpGateway::addr)
    }

    /// The address of the Runtime API the instances poll.
    pub fn runtime_api_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The functions being run.
    pub fn functions(&self) -> &[FunctionSpec] {
        &self.functions
    }

    /// The pool of a function (binary name), e.g. to invoke it directly with a sample event.
    pub fn pool(&self, function: &str) -> Option<&Arc<FunctionPool>> {
        self.pools.get(function)
    }

    /// Process ids of every function instance alive now.
    pub fn pids(&self) -> Vec<u32> {
        self.pools.values().flat_map(|p| p.pids()).collect()
    }

    /// Stops the pollers (letting batches in flight finish within the grace period), the HTTP
    /// API, then every function process, and waits until they have exited.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop().await;
        let left = self.pids();
        if left.is_empty() { Ok(()) } else { Err(anyhow!("function processes still running after shutdown: {left:?}")) }
    }

    async fn stop(&mut self) {
        self.trigger.trigger();
        if let Some(gateway) = &self.gateway {
            gateway.shutdown();
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        for pool in self.pools.values() {
            pool.shutdown().await;
        }
        self.server.shutdown();
    }
}

impl Drop for Runner {
    /// A runner dropped without [`Runner::shutdown`] stops its sources; dropping them drops the
    /// pools, which kill their processes.
    fn drop(&mut self) {
        self.trigger.trigger();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The environment every function gets from the runner: the emulator endpoint, the SDK's
/// region and credentials, then the caller's additions.
async fn function_env(config: &RunnerConfig, region: &str) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    env.insert("AWS_ENDPOINT_URL".to_owned(), config.endpoint_url.clone());
    env.insert("AWS_REGION".to_owned(), region.to_owned());
    let provider =
        config.sdk_config.credentials_provider().context("the SDK configuration has no credentials provider")?;
    let credentials = provider.provide_credentials().await.context("reading the SDK credentials for the functions")?;
    env.insert("AWS_ACCESS_KEY_ID".to_owned(), credentials.access_key_id().to_owned());
    env.insert("AWS_SECRET_ACCESS_KEY".to_owned(), credentials.secret_access_key().to_owned());
    if let Some(token) = credentials.session_token() {
        env.insert("AWS_SESSION_TOKEN".to_owned(), token.to_owned());
    }
    env.extend(config.extra_env.clone());
    Ok(env)
}
