//! The Lambda Runtime API, served locally, and pools of function instances driven through it.
//!
//! One [`RuntimeApiServer`] (one listener on `127.0.0.1:<ephemeral>`) serves every instance of
//! every function: an instance is started with
//! `AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:<port>/<function>/<instance>` and the runtime client
//! (`lambda_runtime_api_client` 1.1) keeps that base path in front of
//! `/2018-06-01/runtime/...`. The `http://` scheme is required: `http::Uri` rejects
//! `host:port/path` without one, and the runtime would panic at start.
//!
//! A [`FunctionPool`] runs up to N processes of one function binary and hands each invocation to
//! an idle one, with Lambda's semantics: one invocation per instance at a time, a deadline of the
//! function's timeout after which the instance is killed, a crash or init failure reported as a
//! function error, and a fresh instance for the next invocation.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::proxy::{FaultProxy, InstanceProxy};

/// Lambda's limit on the init phase of an on-demand function.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lambda's payload limit for synchronous invocations, with room for the envelope.
const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (the guarded maps
/// stay consistent: every critical section is a single insert, remove or take).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn epoch_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// An invocation handed to an instance by its `GET .../invocation/next`.
struct Dispatch {
    request_id: String,
    payload: Bytes,
    deadline_ms: u128,
    function_arn: String,
    trace_id: String,
}

/// What an instance told the Runtime API.
#[derive(Debug)]
enum ApiEvent {
    /// It asked for the next invocation (so it is initialised and idle).
    Polled,
    Response {
        request_id: String,
        body: Bytes,
    },
    Error {
        request_id: String,
        error: ErrorBody,
    },
    InitError(ErrorBody),
}

/// The body of `.../error` and `.../init/error`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(rename = "errorMessage", default)]
    error_message: Option<String>,
}

/// The server side of one instance.
struct Endpoint {
    next: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    events: mpsc::UnboundedSender<ApiEvent>,
}

/// Instances by `<function>/<instance>`.
#[derive(Default)]
struct Routes {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Routes {
    fn get(&self, function: &str, instance: &str) -> Option<Arc<Endpoint>> {
        lock(&self.endpoints).get(&format!("{function}/{instance}")).cloned()
    }
}

/// The local Lambda Runtime API: one listener for every instance of every function.
pub struct RuntimeApiServer {
    addr: SocketAddr,
    routes: Arc<Routes>,
    task: JoinHandle<()>,
}

impl RuntimeApiServer {
    /// Listens on `127.0.0.1:<ephemeral>`.
    pub async fn start() -> Result<Self> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the Runtime API listener")?;
        let addr = listener.local_addr().context("Runtime API listener address")?;
        let routes = Arc::new(Routes::default());
        let prefix = "/{function}/{instance}/2018-06-01/runtime";
        let app = Router::new()
            .route(&format!("{prefix}/invocation/next"), get(next_invocation))
            .route(&format!("{prefix}/invocation/{{request_id}}/response"), post(invocation_response))
            .route(&format!("{prefix}/invocation/{{request_id}}/error"), post(invocation_error))
            .route(&format!("{prefix}/init/error"), post(init_error))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(routes.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "Runtime API server stopped");
            }
        });
        Ok(Self { addr, routes, task })
    }

    /// The address instances reach the API at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving. Stop the pools first: their instances exit when the API goes away.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for RuntimeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next_invocation(
    State(routes): State<Arc<Routes>>,
    UrlPath((function, instance)): UrlPath<(String, String)>,
) -> Response {
    let Some(endpoint) = routes.get(&function, &instance) else {
        return (StatusCode::NOT_FOUND, "unknown instance").into_response();
    };
    let _ = endpoint.events.send(ApiEvent::Polled);
    let dispatch = endpoint.next.lock().await.recv().await;
    let Some(dispatch) = dispatch else {
        // The pool dropped the instance: it is being stopped.
        return (StatusCode::GONE, "instance stopped").into_response();
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &dispatch.request_id);
    set("lambda-runtime-deadline-ms", &dispatch.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &dispatch.function_arn);
    set("lambda-runtime-trace-id", &dispatch.trace_id);
    (StatusCode::OK, headers, dispatch.payload).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({"status": "OK"}))).into_response()
}

fn forward(routes: &Routes, function: &str, instance: &str, event: ApiEvent) -> Response {
    match routes.get(function, instance) {
        Some(endpoint) if endpoint.events.send(event).is_ok() => accepted(),
        _ => (StatusCode::NOT_FOUND, "unknown instance").into_response(),
    }
}

async fn invocation_response(
    State(routes): State<Arc<Routes>>,
    UrlPath((function, instance, request_id)): UrlPath<(String, String, String)>,
    body: Bytes,
) -> Response {
    forward(&routes, &function, &instance, ApiEvent::Response { request_id, body })
}

fn error_body(headers: &HeaderMap, body: &[u8]) -> ErrorBody {
    let mut error: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    if error.error_type.is_none() {
        error.error_type =
            headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    }
    if error.error_message.is_none() && !body.is_empty() {
        error.error_message = Some(String::from_utf8_lossy(body).into_owned());
    }
    error
}

async fn invocation_error(
    State(routes): State<Arc<Routes>>,
    UrlPath((function, instance, request_id)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = error_body(&headers, &body);
    forward(&routes, &function, &instance, ApiEvent::Error { request_id, error })
}

async fn init_error(
    State(routes): State<Arc<Routes>>,
    UrlPath((function, instance)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = error_body(&headers, &body);
    forward(&routes, &function, &instance, ApiEvent::InitError(error))
}

/// How to run one function's instances.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Short name: the binary name, used in the Runtime API path and the log file name.
    pub name: String,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    /// The function binary.
    pub binary: PathBuf,
    /// Deadline of one invocation; the instance is killed when it passes.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (not enforced).
    pub memory_mb: u32,
    /// The function's environment variables (from the template).
    pub environment: BTreeMap<String, String>,
    /// Variables the caller adds, e.g. `AWS_ENDPOINT_URL` and credentials; they override the
    /// function's own, and Lambda's reserved variables override both.
    pub extra_env: BTreeMap<String, String>,
    /// Most instances alive at once (= most concurrent invocations).
    pub max_instances: usize,
    /// Instances started by [`FunctionPool::start`] before the first invocation.
    pub warm_instances: usize,
    /// Directory of `<name>.log`, which receives every instance's stdout and stderr.
    pub log_dir: PathBuf,
    /// Also copy instance output to this process's stderr, prefixed with the function name.
    pub pass_through_logs: bool,
    /// `AWS_REGION` and the region of the function ARN.
    pub region: String,
    /// Account of the function ARN.
    pub account_id: String,
    /// The `Lambda-Runtime-Trace-Id` of every invocation; `None` gives each a new one, as Lambda does. A fixed one
    /// isolates what a new id per invocation costs (lambda_runtime sets it as `_X_AMZN_TRACE_ID` in the process
    /// environment, and glibc keeps every value ever set there).
    pub fixed_trace_id: Option<String>,
    /// The fault proxy every instance's upstream calls go through; `None` connects the instances directly.
    pub proxy: Option<Arc<FaultProxy>>,
}

/// What an invocation returned.
#[derive(Clone, Debug, PartialEq)]
pub enum InvocationOutcome {
    /// The function's response.
    Success(Value),
    /// A handler error, a crash, an init error or a timeout, as Lambda reports them.
    FunctionError {
        /// e.g. `Runtime.ExitError`, `Sandbox.Timedout`, or the handler's error type.
        error_type: String,
        /// Lambda's or the handler's message.
        error_message: String,
    },
}

impl InvocationOutcome {
    /// Whether the function returned a response.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success(_))
    }
}

/// One completed invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// Which instance ran it (instance numbers start at 1 and are never reused).
    pub instance: u64,
    /// Wall time from dispatch to outcome (including a cold start if there was one).
    pub duration: Duration,
    /// The outcome.
    pub outcome: InvocationOutcome,
}

/// Writes the instances' output (and Lambda's START/END/REPORT lines) to the function's log file.
#[derive(Clone)]
struct LogSink {
    lines: mpsc::UnboundedSender<String>,
}

impl LogSink {
    async fn open(dir: &Path, name: &str, pass_through: bool) -> Result<Self> {
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating log directory {}", dir.display()))?;
        let path = dir.join(format!("{name}.log"));
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let (lines, mut rx) = mpsc::unbounded_channel::<String>();
        let prefix = name.to_owned();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if pass_through {
                    eprintln!("{prefix} {line}");
                }
                let written = file.write_all(line.as_bytes()).await.and(file.write_all(b"\n").await);
                if written.is_err() {
                    break;
                }
            }
            let _ = file.flush().await;
        });
        Ok(Self { lines })
    }

    fn line(&self, line: String) {
        let _ = self.lines.send(line);
    }

    fn copy(&self, instance: u64, stream: impl AsyncRead + Unpin + Send + 'static) {
        let sink = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.line(format!("#{instance} {line}"));
            }
        });
    }
}

/// A running process of the pool, as the pool's shutdown sees it.
struct Process {
    pid: Option<u32>,
    kill: Arc<Notify>,
    supervisor: JoinHandle<()>,
}

/// One instance, owned by whoever uses it (an invocation, or the idle list).
struct Instance {
    id: u64,
    key: String,
    dispatch: mpsc::Sender<Dispatch>,
    events: mpsc::UnboundedReceiver<ApiEvent>,
    /// `Some(description)` once the process has exited.
    exit: watch::Receiver<Option<String>>,
    kill: Arc<Notify>,
    routes: Arc<Routes>,
    /// Its listeners on the fault proxy, closed with it.
    _proxy: Option<InstanceProxy>,
}

impl Instance {
    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // An instance is only dropped when it is discarded: make sure its process is gone.
        self.kill.notify_one();
        lock(&self.routes.endpoints).remove(&self.key);
    }
}

/// How starting an instance ended.
enum Started {
    Ready(Instance),
    Failed { error_type: String, error_message: String },
}

/// Up to `max_instances` processes of one function binary, invoked through the Runtime API.
pub struct FunctionPool {
    config: PoolConfig,
    function_arn: String,
    runtime_api: SocketAddr,
    routes: Arc<Routes>,
    slots: Semaphore,
    idle: Mutex<Vec<Instance>>,
    processes: Mutex<HashMap<u64, Process>>,
    next_instance: AtomicU64,
    log: LogSink,
}

impl FunctionPool {
    /// Starts `config.warm_instances` instances and waits for their init. A binary that cannot
    /// be executed is an error; an instance whose init fails is logged and left to the next
    /// invocation, which reports it like Lambda does.
    pub async fn start(server: &RuntimeApiServer, config: PoolConfig) -> Result<Self> {
        if config.name.is_empty() || !config.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("function name {:?} must be ASCII letters, digits, - or _", config.name);
        }
        if !config.binary.is_file() {
            bail!("function binary {} does not exist", config.binary.display());
        }
        if config.max_instances == 0 {
            bail!("a pool needs at least one instance");
        }
        let log = LogSink::open(&config.log_dir, &config.name, config.pass_through_logs).await?;
        let function_arn =
            format!("arn:aws:lambda:{}:{}:function:{}", config.region, config.account_id, config.function_name);
        let pool = Self {
            function_arn,
            runtime_api: server.addr,
            routes: server.routes.clone(),
            slots: Semaphore::new(config.max_instances),
            idle: Mutex::new(Vec::new()),
            processes: Mutex::new(HashMap::new()),
            next_instance: AtomicU64::new(1),
            log,
            config,
        };
        for _ in 0..pool.config.warm_instances.min(pool.config.max_instances) {
            match pool.start_instance().await? {
                Started::Ready(instance) => lock(&pool.idle).push(instance),
                Started::Failed { error_type, error_message } => tracing::warn!(
                    function = %pool.config.name, %error_type, %error_message,
                    "a warm instance failed to initialise; the next invocation starts another"
                ),
            }
        }
        Ok(pool)
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// `arn:aws:lambda:<region>:<account>:function:<function_name>`.
    pub fn function_arn(&self) -> &str {
        &self.function_arn
    }

    /// Process ids of the instances alive now.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.processes).values().filter(|p| !p.supervisor.is_finished()).filter_map(|p| p.pid).collect()
    }

    /// Invokes the function with a new request id, waiting for an instance if all are busy.
    /// `Err` only when the pool is shut down or a process cannot be started; everything the
    /// function does wrong is an [`InvocationOutcome::FunctionError`].
    pub async fn invoke(&self, payload: Value) -> Result<Invocation> {
        self.invoke_with_request_id(uuid::Uuid::new_v4().to_string(), payload).await
    }

    /// Invokes with a given request id (asynchronous invocations keep theirs across retries).
    pub async fn invoke_with_request_id(&self, request_id: String, payload: Value) -> Result<Invocation> {
        let _slot = self.slots.acquire().await.map_err(|_| anyhow!("the pool of {} is shut down", self.config.name))?;
        let started_at = Instant::now();
        let idle = {
            let mut idle = lock(&self.idle);
            // Instances that died while idle are dropped here.
            idle.retain(|instance| !instance.exited());
            idle.pop()
        };
        let mut instance = match idle {
            Some(instance) => instance,
            None => match self.start_instance().await? {
                Started::Ready(instance) => instance,
                Started::Failed { error_type, error_message } => {
                    return Ok(Invocation {
                        request_id,
                        instance: 0,
                        duration: started_at.elapsed(),
                        outcome: InvocationOutcome::FunctionError { error_type, error_message },
                    });
                }
            },
        };

        let payload = Bytes::from(serde_json::to_vec(&payload).context("serialising the payload")?);
        self.log.line(format!("START RequestId: {request_id} Version: $LATEST"));
        let (outcome, keep) = self.run(&mut instance, &request_id, payload).await;
        let duration = started_at.elapsed();
        self.log.line(format!("END RequestId: {request_id}"));
        self.log.line(format!(
            "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tMemory Size: {} MB",
            duration.as_secs_f64() * 1000.0,
            self.config.memory_mb
        ));
        let id = instance.id;
        if keep && !instance.exited() {
            lock(&self.idle).push(instance);
        }
        Ok(Invocation { request_id, instance: id, duration, outcome })
    }

    /// Runs one invocation on `instance`; the bool says whether the instance may be reused.
    async fn run(&self, instance: &mut Instance, request_id: &str, payload: Bytes) -> (InvocationOutcome, bool) {
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let dispatch = Dispatch {
            request_id: request_id.to_owned(),
            payload,
            deadline_ms: epoch_millis() + timeout.as_millis(),
            function_arn: self.function_arn.clone(),
            trace_id: self.config.fixed_trace_id.clone().unwrap_or_else(trace_id),
        };
        if instance.dispatch.send(dispatch).await.is_err() {
            return (exit_error(request_id, "instance endpoint closed"), false);
        }
        loop {
            tokio::select! {
                event = instance.events.recv() => match event {
                    Some(ApiEvent::Response { request_id: id, body }) if id == request_id => {
                        let value = if body.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&body)
                                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
                        };
                        return (InvocationOutcome::Success(value), true);
                    }
                    Some(ApiEvent::Error { request_id: id, error }) if id == request_id => {
                        return (
                            InvocationOutcome::FunctionError {
                                error_type: error.error_type.unwrap_or_else(|| "Unhandled".to_owned()),
                                error_message: error.error_message.unwrap_or_default(),
                            },
                            true,
                        );
                    }
                    Some(ApiEvent::InitError(error)) => {
                        return (
                            InvocationOutcome::FunctionError {
                                error_type: error.error_type.unwrap_or_else(|| "Runtime.InitError".to_owned()),
                                error_message: error.error_message.unwrap_or_default(),
                            },
                            false,
                        );
                    }
                    // A poll, or a late answer to an earlier request id.
                    Some(_) => {}
                    None => return (exit_error(request_id, "instance endpoint closed"), false),
                },
                exit = instance.exit.wait_for(Option::is_some) => {
                    let status = exit.ok().and_then(|e| e.clone()).unwrap_or_else(|| "unknown".to_owned());
                    return (exit_error(request_id, &status), false);
                }
                () = tokio::time::sleep_until(deadline) => {
                    instance.kill.notify_one();
                    let message = format!(
                        "{} {request_id} Task timed out after {:.2} seconds",
                        time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                        timeout.as_secs_f64()
                    );
                    self.log.line(message.clone());
                    return (
                        InvocationOutcome::FunctionError { error_type: "Sandbox.Timedout".to_owned(), error_message: message },
                        false,
                    );
                }
            }
        }
    }

    /// Starts one process and waits until it polls for its first invocation.
    async fn start_instance(&self) -> Result<Started> {
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}/{id}", self.config.name);
        let (dispatch_tx, dispatch_rx) = mpsc::channel(1);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        lock(&self.routes.endpoints)
            .insert(key.clone(), Arc::new(Endpoint { next: tokio::sync::Mutex::new(dispatch_rx), events: events_tx }));

        let kill = Arc::new(Notify::new());
        let proxy = match &self.config.proxy {
            Some(proxy) => {
                let mut environment = self.config.environment.clone();
                environment.extend(self.config.extra_env.clone());
                match proxy.open(&self.config.name, &environment, kill.clone()).await {
                    Ok(listeners) => Some(listeners),
                    Err(err) => {
                        lock(&self.routes.endpoints).remove(&key);
                        return Err(err);
                    }
                }
            }
            None => None,
        };
        let mut command = tokio::process::Command::new(&self.config.binary);
        command
            .env_clear()
            .envs(&self.config.environment)
            .envs(&self.config.extra_env)
            .envs(proxy.iter().flat_map(|proxy| proxy.env.iter().cloned()))
            .envs(self.reserved_env(id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = self.config.binary.parent() {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                lock(&self.routes.endpoints).remove(&key);
                return Err(err).with_context(|| format!("starting {}", self.config.binary.display()));
            }
        };
        if let Some(stdout) = child.stdout.take() {
            self.log.copy(id, stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            self.log.copy(id, stderr);
        }
        let pid = child.id();
        let (exit_tx, exit_rx) = watch::channel(None);
        let supervisor = {
            let kill = kill.clone();
            let log = self.log.clone();
            tokio::spawn(async move {
                let status = tokio::select! {
                    status = child.wait() => status,
                    () = kill.notified() => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                let description = match status {
                    Ok(status) => status.to_string(),
                    Err(err) => format!("wait failed: {err}"),
                };
                log.line(format!("#{id} process exited: {description}"));
                let _ = exit_tx.send(Some(description));
            })
        };
        {
            let mut processes = lock(&self.processes);
            processes.retain(|_, p| !p.supervisor.is_finished());
            processes.insert(id, Process { pid, kill: kill.clone(), supervisor });
        }

        let mut instance = Instance {
            id,
            key,
            dispatch: dispatch_tx,
            events: events_rx,
            exit: exit_rx,
            kill,
            routes: self.routes.clone(),
            _proxy: proxy,
        };
        let init = async {
            loop {
                tokio::select! {
                    event = instance.events.recv() => match event {
                        Some(ApiEvent::Polled) => return None,
                        Some(ApiEvent::InitError(error)) => return Some((
                            error.error_type.unwrap_or_else(|| "Runtime.InitError".to_owned()),
                            error.error_message.unwrap_or_default(),
                        )),
                        Some(_) => {}
                        None => return Some(("Runtime.ExitError".to_owned(), "instance endpoint closed".to_owned())),
                    },
                    exit = instance.exit.wait_for(Option::is_some) => {
                        let status = exit.ok().and_then(|e| e.clone()).unwrap_or_default();
                        return Some((
                            "Runtime.ExitError".to_owned(),
                            format!("Error: Runtime exited during init: {status}"),
                        ));
                    }
                }
            }
        };
        let failure = match tokio::time::timeout(INIT_TIMEOUT, init).await {
            Ok(failure) => failure,
            Err(_) => Some((
                "Sandbox.Timedout".to_owned(),
                format!("INIT_REPORT Init Duration: {} ms Phase: init Status: timeout", INIT_TIMEOUT.as_millis()),
            )),
        };
        Ok(match failure {
            None => Started::Ready(instance),
            Some((error_type, error_message)) => {
                self.log.line(format!("#{id} init failed: {error_type}: {error_message}"));
                // Dropping the instance kills the process.
                Started::Failed { error_type, error_message }
            }
        })
    }

    /// Lambda's reserved variables; they win over the function's and the caller's.
    fn reserved_env(&self, instance: u64) -> Vec<(String, String)> {
        let c = &self.config;
        let date = time::OffsetDateTime::now_utc().date();
        let task_root = c.binary.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let mut env = vec![
            ("AWS_LAMBDA_FUNCTION_NAME", c.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_RUNTIME_API", format!("http://{}/{}/{instance}", self.runtime_api, c.name)),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", c.function_name)),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("{}/{:02}/{:02}/[$LATEST]{instance:032x}", date.year(), u8::from(date.month()), date.day()),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            ("AWS_REGION", c.region.clone()),
            ("AWS_DEFAULT_REGION", c.region.clone()),
            ("_HANDLER", "bootstrap".to_owned()),
            ("LAMBDA_TASK_ROOT", task_root),
            ("TZ", ":UTC".to_owned()),
            ("LANG", "en_US.UTF-8".to_owned()),
        ];
        // The host's PATH, so a function that runs a tool finds it as it would in the image.
        if let Ok(path) = std::env::var("PATH") {
            env.push(("PATH", path));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Stops accepting invocations and kills every instance, waiting until each process has
    /// exited. Invocations in flight end with a `Runtime.ExitError`.
    pub async fn shutdown(&self) {
        self.slots.close();
        let idle: Vec<Instance> = lock(&self.idle).drain(..).collect();
        drop(idle);
        let processes: Vec<Process> = lock(&self.processes).drain().map(|(_, p)| p).collect();
        for process in processes {
            process.kill.notify_one();
            let _ = process.supervisor.await;
        }
    }
}

impl Drop for FunctionPool {
    /// A pool dropped without [`FunctionPool::shutdown`] still kills its processes (without
    /// waiting for them to exit).
    fn drop(&mut self) {
        for process in lock(&self.processes).values() {
            process.kill.notify_one();
        }
    }
}

fn exit_error(request_id: &str, status: &str) -> InvocationOutcome {
    InvocationOutcome::FunctionError {
        error_type: "Runtime.ExitError".to_owned(),
        error_message: format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
    }
}

/// An X-Ray style trace header, as Lambda passes it.
fn trace_id() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{secs:08x}-{};Parent={};Sampled=0", &root[..24], &parent[..16])
}
