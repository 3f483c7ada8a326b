//! Reads the functions, their event sources and their environment from a SAM template, the same
//! file `sam deploy` uses on AWS.
//!
//! Only what the local runner needs is modelled. Values may use the CloudFormation intrinsics the
//! template is written with (`Fn::ImportValue` of a `!Sub` string, `!Sub` with `${Param}`,
//! `!Ref Param`, plain literals); they are resolved against a [`Resolver`] holding the exports of
//! the deployed stateful stack and the template parameters. Anything the runner cannot resolve is
//! an error naming the function and the property, never a silent default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml_ng::Value as Yaml;

/// Lambda's default function timeout when neither the function nor `Globals` sets one.
const DEFAULT_TIMEOUT_SECONDS: u64 = 3;
/// Lambda's default memory size.
const DEFAULT_MEMORY_MB: u32 = 128;
/// Pollers Lambda starts for an SQS event source before it scales; the local default when the
/// template sets no `ScalingConfig.MaximumConcurrency`.
const DEFAULT_SQS_CONCURRENCY: u32 = 5;
/// Lambda's default retry count for asynchronous invocations.
const DEFAULT_ASYNC_RETRIES: u32 = 2;

/// One `AWS::Serverless::Function` of the template, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    /// Logical id in the template, e.g. `InventoryFunction`.
    pub logical_id: String,
    /// Binary (and crate) name: the directory name of `CodeUri`, e.g. `inventory` for
    /// `../target/lambda/inventory/bootstrap.zip`.
    pub name: String,
    /// The name Lambda knows the function by: `FunctionName` when set, else [`Self::name`].
    pub function_name: String,
    /// `Timeout` of the function, else of `Globals.Function`.
    pub timeout: Duration,
    /// `MemorySize` of the function, else of `Globals.Function`.
    pub memory_mb: u32,
    /// `Environment.Variables` of `Globals.Function` overlaid with the function's own.
    pub environment: BTreeMap<String, String>,
    /// SQS event sources.
    pub sqs: Vec<SqsSource>,
    /// DynamoDB stream event sources.
    pub streams: Vec<StreamSource>,
    /// EventBridge rules targeting the function (asynchronous invocation).
    pub rules: Vec<RuleSource>,
    /// Schedules invoking the function (asynchronous invocation).
    pub schedules: Vec<ScheduleSource>,
    /// `EventInvokeConfig`: retries and on-failure destination of asynchronous invocations.
    pub async_config: Option<AsyncInvokeConfig>,
    /// HTTP API (payload format 2.0) routes.
    pub http_routes: Vec<HttpRoute>,
}

/// An SQS event source mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct SqsSource {
    /// Key of the event under `Events`, e.g. `Queue`.
    pub event_id: String,
    /// ARN of the queue.
    pub queue_arn: String,
    /// `BatchSize` (default 10).
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds` (default 0).
    pub batching_window: Duration,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `ScalingConfig.MaximumConcurrency`: concurrent pollers (default 5, Lambda's initial count).
    pub max_concurrency: u32,
}

/// Where a stream event source starts reading a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Only records written after the runner started.
    Latest,
}

/// A DynamoDB stream event source mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSource {
    /// Key of the event under `Events`.
    pub event_id: String,
    /// ARN of the table's stream.
    pub stream_arn: String,
    /// `StartingPosition`.
    pub starting_position: StartingPosition,
    /// `BatchSize` (default 100).
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds` (default 0).
    pub batching_window: Duration,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `MaximumRetryAttempts`; `None` means retry until the record expires (Lambda's `-1`, its default).
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds`: older records go to the on-failure destination unprocessed; `None` means no
    /// age limit (Lambda's `-1`, its default: the stream's 24 h retention bounds the retries).
    pub max_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `DestinationConfig.OnFailure.Destination` (an SQS queue ARN).
    pub on_failure_destination_arn: Option<String>,
    /// `FilterCriteria.Filters[].Pattern`, parsed; a record is processed when any matches.
    pub filter_patterns: Vec<serde_json::Value>,
}

/// An EventBridge rule that invokes the function asynchronously.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSource {
    /// Key of the event under `Events`.
    pub event_id: String,
    /// `EventBusName` (default `default`).
    pub bus_name: String,
    /// `Pattern`, as the JSON EventBridge takes.
    pub pattern: serde_json::Value,
}

/// Which EventBridge service fires a schedule: it decides the event the function gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// `Type: Schedule`: an EventBridge rule with a `ScheduleExpression` (event source `aws.events`).
    Rule,
    /// `Type: ScheduleV2`: an EventBridge Scheduler schedule (event source `aws.scheduler`).
    Scheduler {
        /// `GroupName` (default `default`), part of the schedule's ARN.
        group: String,
    },
}

/// A schedule that invokes the function asynchronously.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSource {
    /// Key of the event under `Events`.
    pub event_id: String,
    /// The rule's or schedule's `Name`, else `<function logical id><event id>` (SAM's logical id of the rule;
    /// CloudFormation adds a random suffix to the physical name, which cannot be known locally).
    pub name: String,
    /// Rule or Scheduler schedule.
    pub kind: ScheduleKind,
    /// The expression as written, e.g. `rate(5 minutes)`.
    pub expression: String,
    /// `Enabled` / `State`: a disabled schedule is declared but never fires.
    pub enabled: bool,
    /// The period of the `rate()` expression.
    pub interval: Duration,
}

/// `EventInvokeConfig` of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct AsyncInvokeConfig {
    /// `MaximumRetryAttempts` (0..=2, default 2).
    pub max_retry_attempts: u32,
    /// `DestinationConfig.OnFailure.Destination` (an SQS queue ARN).
    pub on_failure_destination_arn: Option<String>,
}

/// An HTTP API route (`Type: HttpApi`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// Key of the event under `Events`.
    pub event_id: String,
    /// Upper-case method, or `ANY`.
    pub method: String,
    /// Path template, e.g. `/orders/{id}`; `$default` matches every request.
    pub path: String,
    /// Who may call it.
    pub auth: RouteAuth,
}

/// The authorization of an HTTP API route: the route's `Auth`, else its API's `DefaultAuthorizer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAuth {
    /// Anybody (no authorizer, or `Authorizer: NONE`).
    Open,
    /// A valid token of the JWT authorizer `authorizer` with one of `scopes` (none: any valid token).
    Jwt { authorizer: String, scopes: Vec<String> },
}

/// The JWT authorizers of one `AWS::Serverless::HttpApi` (by name, with their default scopes) and its default.
#[derive(Clone, Debug, Default)]
struct ApiAuth {
    default_authorizer: Option<String>,
    authorizers: BTreeMap<String, Vec<String>>,
}

impl HttpRoute {
    /// The API Gateway route key, e.g. `GET /orders/{id}` (or `$default`).
    pub fn route_key(&self) -> String {
        if self.path == "$default" { self.path.clone() } else { format!("{} {}", self.method, self.path) }
    }
}

/// Resolves CloudFormation intrinsic values: exports of deployed stacks (`Fn::ImportValue`) and
/// parameters (`!Ref`, `${Name}` in `!Sub`).
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    exports: BTreeMap<String, String>,
    parameters: BTreeMap<String, String>,
}

impl Resolver {
    /// An empty resolver: template parameter defaults still apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a parameter (overrides the template's `Default`), e.g. `Stage` = `dev`. Pseudo
    /// parameters such as `AWS::Region` are set the same way.
    pub fn with_parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.insert(name.into(), value.into());
        self
    }

    /// Adds one CloudFormation export.
    pub fn with_export(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.exports.insert(name.into(), value.into());
        self
    }

    /// Adds CloudFormation exports.
    pub fn with_exports(mut self, exports: impl IntoIterator<Item = (String, String)>) -> Self {
        self.exports.extend(exports);
        self
    }

    /// Adds every export of the (emulated) account, read with `ListExports`.
    pub async fn load_exports(mut self, cloudformation: &aws_sdk_cloudformation::Client) -> Result<Self> {
        let mut token = None;
        loop {
            let page = cloudformation.list_exports().set_next_token(token).send().await.context("ListExports")?;
            for export in page.exports() {
                if let (Some(name), Some(value)) = (export.name(), export.value()) {
                    self.exports.insert(name.to_owned(), value.to_owned());
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(self);
            }
        }
    }

    /// The exports known to this resolver.
    pub fn exports(&self) -> &BTreeMap<String, String> {
        &self.exports
    }

    /// The parameters set on this resolver (template defaults not included).
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }
}

/// Reads and resolves the functions of a SAM template file.
pub fn load_functions(path: &Path, resolver: &Resolver) -> Result<Vec<FunctionSpec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_functions(&text, resolver).with_context(|| format!("in {}", path.display()))
}

/// Parses and resolves the functions of a SAM template given as text.
pub fn parse_functions(template: &str, resolver: &Resolver) -> Result<Vec<FunctionSpec>> {
    let doc: Yaml = serde_yaml_ng::from_str(template).context("the template is not valid YAML")?;
    let mut ctx = Scope::new(&doc, resolver)?;
    ctx.apis = http_apis(&ctx, &doc)?;
    let ctx = ctx;
    let globals = doc.get("Globals").and_then(|g| g.get("Function"));
    let resources =
        doc.get("Resources").and_then(Yaml::as_mapping).ok_or_else(|| anyhow!("the template has no Resources"))?;

    let mut functions = Vec::new();
    for (key, resource) in resources {
        let logical_id = key.as_str().ok_or_else(|| anyhow!("a resource id is not a string"))?;
        if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let props = resource.get("Properties").unwrap_or(&Yaml::Null);
        let function =
            parse_function(&ctx, logical_id, props, globals).with_context(|| format!("function {logical_id}"))?;
        functions.push(function);
    }
    Ok(functions)
}

/// Parameters (resolver values over template defaults) plus the exports.
struct Scope<'a> {
    parameters: BTreeMap<String, String>,
    resolver: &'a Resolver,
    /// The `Auth` of each HTTP API resource, by logical id.
    apis: BTreeMap<String, ApiAuth>,
}

impl<'a> Scope<'a> {
    fn new(doc: &Yaml, resolver: &'a Resolver) -> Result<Self> {
        let mut parameters = BTreeMap::new();
        if let Some(declared) = doc.get("Parameters").and_then(Yaml::as_mapping) {
            for (name, decl) in declared {
                let (Some(name), Some(default)) = (name.as_str(), decl.get("Default")) else {
                    continue;
                };
                parameters
                    .insert(name.to_owned(), scalar_string(default).context(format!("default of parameter {name}"))?);
            }
        }
        parameters.extend(resolver.parameters.clone());
        Ok(Self { parameters, resolver, apis: BTreeMap::new() })
    }

    /// Resolves a value to a string, `property` naming it in errors.
    fn string(&self, value: &Yaml, property: &str) -> Result<String> {
        self.resolve(value).with_context(|| format!("property {property}"))
    }

    fn resolve(&self, value: &Yaml) -> Result<String> {
        match value {
            Yaml::Tagged(tagged) => {
                let tag = &tagged.tag;
                if *tag == "Sub" {
                    self.sub(&tagged.value)
                } else if *tag == "Ref" {
                    self.reference(&tagged.value)
                } else if *tag == "ImportValue" {
                    self.import(&tagged.value)
                } else {
                    bail!("the intrinsic {tag} is not supported by the local runner")
                }
            }
            Yaml::Mapping(map) if map.len() == 1 => {
                let (key, inner) = map.iter().next().ok_or_else(|| anyhow!("empty mapping"))?;
                match key.as_str() {
                    Some("Fn::Sub") => self.sub(inner),
                    Some("Ref") => self.reference(inner),
                    Some("Fn::ImportValue") => self.import(inner),
                    Some(other) => bail!("the intrinsic {other} is not supported by the local runner"),
                    None => bail!("expected a string, found a mapping"),
                }
            }
            other => scalar_string(other),
        }
    }

    fn import(&self, name: &Yaml) -> Result<String> {
        let name = self.resolve(name).context("Fn::ImportValue")?;
        self.resolver
            .exports
            .get(&name)
            .cloned()
            .ok_or_else(|| anyhow!("Fn::ImportValue: no export named {name:?} (is the stateful stack deployed?)"))
    }

    fn reference(&self, name: &Yaml) -> Result<String> {
        let name = name.as_str().ok_or_else(|| anyhow!("Ref takes a name"))?;
        self.parameters
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("Ref {name}: not a parameter (references to resources cannot be resolved locally)"))
    }

    /// `!Sub "text ${Name}"` or `!Sub ["text ${Name}", {Name: value}]`.
    fn sub(&self, value: &Yaml) -> Result<String> {
        let (template, vars) = match value {
            Yaml::String(s) => (s.as_str(), BTreeMap::new()),
            Yaml::Sequence(items) if items.len() == 2 => {
                let template = items[0].as_str().ok_or_else(|| anyhow!("Fn::Sub: the first item must be a string"))?;
                let mut vars = BTreeMap::new();
                if let Some(map) = items[1].as_mapping() {
                    for (k, v) in map {
                        let k = k.as_str().ok_or_else(|| anyhow!("Fn::Sub: variable names are strings"))?;
                        vars.insert(k.to_owned(), self.resolve(v).with_context(|| format!("Fn::Sub variable {k}"))?);
                    }
                }
                (template, vars)
            }
            _ => bail!("Fn::Sub takes a string or [string, variables]"),
        };
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            // `${!Literal}` is CloudFormation's escape for a literal `${Literal}`.
            if let Some(literal) = after.strip_prefix('!') {
                out.push_str("${");
                rest = literal;
                continue;
            }
            let end = after.find('}').ok_or_else(|| anyhow!("Fn::Sub: unclosed ${{ in {template:?}"))?;
            let name = &after[..end];
            let value = vars
                .get(name)
                .or_else(|| self.parameters.get(name))
                .ok_or_else(|| anyhow!("Fn::Sub: ${{{name}}} is not a parameter or variable (resource attributes cannot be resolved locally)"))?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn u64(&self, value: &Yaml, property: &str) -> Result<u64> {
        let text = self.string(value, property)?;
        text.parse().with_context(|| format!("property {property}: {text:?} is not a non-negative integer"))
    }

    fn i64(&self, value: &Yaml, property: &str) -> Result<i64> {
        let text = self.string(value, property)?;
        text.parse().with_context(|| format!("property {property}: {text:?} is not an integer"))
    }

    fn u32(&self, value: &Yaml, property: &str) -> Result<u32> {
        let n = self.u64(value, property)?;
        u32::try_from(n).with_context(|| format!("property {property}: {n} is too large"))
    }

    fn bool(&self, value: &Yaml, property: &str) -> Result<bool> {
        match self.string(value, property)?.as_str() {
            "true" | "True" => Ok(true),
            "false" | "False" => Ok(false),
            other => bail!("property {property}: {other:?} is not a boolean"),
        }
    }

    /// Converts a YAML value (e.g. an EventBridge pattern) to JSON, resolving intrinsics in it.
    fn json(&self, value: &Yaml, property: &str) -> Result<serde_json::Value> {
        Ok(match value {
            Yaml::Null => serde_json::Value::Null,
            Yaml::Bool(b) => serde_json::Value::Bool(*b),
            Yaml::Number(n) => serde_json::to_value(n).with_context(|| format!("property {property}"))?,
            Yaml::String(s) => serde_json::Value::String(s.clone()),
            Yaml::Sequence(items) => {
                serde_json::Value::Array(items.iter().map(|item| self.json(item, property)).collect::<Result<_>>()?)
            }
            Yaml::Mapping(map) => {
                let intrinsic = map.len() == 1
                    && map.keys().next().and_then(Yaml::as_str).is_some_and(|k| k == "Ref" || k.starts_with("Fn::"));
                if intrinsic {
                    serde_json::Value::String(self.string(value, property)?)
                } else {
                    let mut out = serde_json::Map::new();
                    for (k, v) in map {
                        let k = k.as_str().ok_or_else(|| anyhow!("property {property}: keys must be strings"))?;
                        out.insert(k.to_owned(), self.json(v, &format!("{property}.{k}"))?);
                    }
                    serde_json::Value::Object(out)
                }
            }
            Yaml::Tagged(_) => serde_json::Value::String(self.string(value, property)?),
        })
    }
}

/// A plain scalar as CloudFormation sees it (numbers and booleans become strings).
fn scalar_string(value: &Yaml) -> Result<String> {
    match value {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Null => bail!("expected a value, found null"),
        Yaml::Sequence(_) => bail!("expected a string, found a list"),
        Yaml::Mapping(_) => bail!("expected a string, found a mapping"),
        Yaml::Tagged(t) => bail!("the intrinsic {} is not supported here", t.tag),
    }
}

/// A property of the function, falling back to `Globals.Function`.
fn property<'y>(props: &'y Yaml, globals: Option<&'y Yaml>, name: &str) -> Option<&'y Yaml> {
    props.get(name).or_else(|| globals.and_then(|g| g.get(name)))
}

fn parse_function(ctx: &Scope<'_>, logical_id: &str, props: &Yaml, globals: Option<&Yaml>) -> Result<FunctionSpec> {
    let code_uri = props
        .get("CodeUri")
        .ok_or_else(|| anyhow!("property CodeUri is missing"))
        .and_then(|v| ctx.string(v, "CodeUri"))?;
    let name = binary_name(&code_uri).with_context(|| format!("property CodeUri {code_uri:?}"))?;
    let function_name = match props.get("FunctionName") {
        Some(v) => ctx.string(v, "FunctionName")?,
        None => name.clone(),
    };
    let timeout = match property(props, globals, "Timeout") {
        Some(v) => Duration::from_secs(ctx.u64(v, "Timeout")?),
        None => Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
    };
    let memory_mb = match property(props, globals, "MemorySize") {
        Some(v) => ctx.u32(v, "MemorySize")?,
        None => DEFAULT_MEMORY_MB,
    };

    // SAM merges the Globals variables with the function's own, the function winning.
    let mut environment = BTreeMap::new();
    for source in [globals, Some(props)].into_iter().flatten() {
        let vars = source.get("Environment").and_then(|e| e.get("Variables"));
        if let Some(vars) = vars.and_then(Yaml::as_mapping) {
            for (k, v) in vars {
                let k = k.as_str().ok_or_else(|| anyhow!("environment variable names are strings"))?;
                let value = ctx.string(v, &format!("Environment.Variables.{k}"))?;
                environment.insert(k.to_owned(), value);
            }
        }
    }

    let mut function = FunctionSpec {
        logical_id: logical_id.to_owned(),
        name,
        function_name,
        timeout,
        memory_mb,
        environment,
        sqs: Vec::new(),
        streams: Vec::new(),
        rules: Vec::new(),
        schedules: Vec::new(),
        async_config: None,
        http_routes: Vec::new(),
    };

    if let Some(events) = props.get("Events").and_then(Yaml::as_mapping) {
        for (key, event) in events {
            let event_id = key.as_str().ok_or_else(|| anyhow!("event ids are strings"))?;
            parse_event(ctx, &mut function, event_id, event).with_context(|| format!("event {event_id}"))?;
        }
    }

    let invoke_config = property(props, globals, "EventInvokeConfig");
    if let Some(config) = invoke_config {
        function.async_config = Some(parse_invoke_config(ctx, config).context("property EventInvokeConfig")?);
    } else if !function.rules.is_empty() || !function.schedules.is_empty() {
        function.async_config =
            Some(AsyncInvokeConfig { max_retry_attempts: DEFAULT_ASYNC_RETRIES, on_failure_destination_arn: None });
    }
    Ok(function)
}

/// `../target/lambda/inventory/bootstrap.zip` and `../target/lambda/inventory/` -> `inventory`;
/// a crate directory (`../functions/inventory`, the cargo-lambda SAM build) -> `inventory`.
fn binary_name(code_uri: &str) -> Result<String> {
    let path = Path::new(code_uri);
    let last = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("cannot take a binary name from it"))?;
    let name = if last == "bootstrap" || last.contains('.') {
        path.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("cannot take a binary name from it"))?
    } else {
        last
    };
    Ok(name.to_owned())
}

fn parse_event(ctx: &Scope<'_>, function: &mut FunctionSpec, event_id: &str, event: &Yaml) -> Result<()> {
    let kind = event.get("Type").and_then(Yaml::as_str).ok_or_else(|| anyhow!("property Type is missing"))?;
    let props = event.get("Properties").unwrap_or(&Yaml::Null);
    let enabled = match props.get("Enabled") {
        Some(v) => ctx.bool(v, "Enabled")?,
        None => true,
    };
    // A disabled schedule stays declared (it never fires); any other disabled source is left out.
    if !enabled && !matches!(kind, "Schedule" | "ScheduleV2") {
        return Ok(());
    }
    let get = |name: &str| props.get(name);
    let required = |name: &str| get(name).ok_or_else(|| anyhow!("property {name} is missing"));
    let report_failures = |ctx: &Scope<'_>| -> Result<bool> {
        let Some(types) = get("FunctionResponseTypes") else {
            return Ok(false);
        };
        let types = types.as_sequence().ok_or_else(|| anyhow!("property FunctionResponseTypes must be a list"))?;
        let mut report = false;
        for t in types {
            match ctx.string(t, "FunctionResponseTypes")?.as_str() {
                "ReportBatchItemFailures" => report = true,
                other => bail!("property FunctionResponseTypes: unknown type {other:?}"),
            }
        }
        Ok(report)
    };
    let window = |ctx: &Scope<'_>| -> Result<Duration> {
        Ok(match get("MaximumBatchingWindowInSeconds") {
            Some(v) => Duration::from_secs(ctx.u64(v, "MaximumBatchingWindowInSeconds")?),
            None => Duration::ZERO,
        })
    };

    match kind {
        "SQS" => {
            if get("FilterCriteria").is_some() {
                bail!("FilterCriteria on an SQS event source is not supported by the local runner");
            }
            let batch_size = match get("BatchSize") {
                Some(v) => ctx.u32(v, "BatchSize")?,
                None => 10,
            };
            if batch_size == 0 {
                bail!("property BatchSize must be at least 1");
            }
            let max_concurrency = match get("ScalingConfig").and_then(|s| s.get("MaximumConcurrency")) {
                Some(v) => ctx.u32(v, "ScalingConfig.MaximumConcurrency")?.max(1),
                None => DEFAULT_SQS_CONCURRENCY,
            };
            function.sqs.push(SqsSource {
                event_id: event_id.to_owned(),
                queue_arn: ctx.string(required("Queue")?, "Queue")?,
                batch_size,
                batching_window: window(ctx)?,
                report_batch_item_failures: report_failures(ctx)?,
                max_concurrency,
            });
        }
        "DynamoDB" => {
            for unsupported in ["TumblingWindowInSeconds", "StartingPositionTimestamp"] {
                if get(unsupported).is_some() {
                    bail!("property {unsupported} is not supported by the local runner");
                }
            }
            if let Some(v) = get("ParallelizationFactor")
                && ctx.u32(v, "ParallelizationFactor")? > 1
            {
                bail!("property ParallelizationFactor > 1 is not supported by the local runner");
            }
            let starting_position = match ctx.string(required("StartingPosition")?, "StartingPosition")?.as_str() {
                "TRIM_HORIZON" => StartingPosition::TrimHorizon,
                "LATEST" => StartingPosition::Latest,
                other => bail!("property StartingPosition: {other:?} is not TRIM_HORIZON or LATEST"),
            };
            let batch_size = match get("BatchSize") {
                Some(v) => ctx.u32(v, "BatchSize")?,
                None => 100,
            };
            if batch_size == 0 {
                bail!("property BatchSize must be at least 1");
            }
            let max_retry_attempts = match get("MaximumRetryAttempts") {
                Some(v) => match ctx.i64(v, "MaximumRetryAttempts")? {
                    -1 => None,
                    n @ 0..=10_000 => Some(u32::try_from(n).context("property MaximumRetryAttempts")?),
                    n => bail!("property MaximumRetryAttempts: {n} is not -1 (retry forever) or 0..=10000"),
                },
                None => None,
            };
            let max_record_age = match get("MaximumRecordAgeInSeconds") {
                Some(v) => match ctx.i64(v, "MaximumRecordAgeInSeconds")? {
                    -1 => None,
                    n @ 60..=604_800 => {
                        Some(Duration::from_secs(u64::try_from(n).context("property MaximumRecordAgeInSeconds")?))
                    }
                    n => bail!("property MaximumRecordAgeInSeconds: {n} is not -1 (no limit) or 60..=604800"),
                },
                None => None,
            };
            let bisect_on_error = match get("BisectBatchOnFunctionError") {
                Some(v) => ctx.bool(v, "BisectBatchOnFunctionError")?,
                None => false,
            };
            let on_failure_destination_arn =
                match get("DestinationConfig").and_then(|d| d.get("OnFailure")).and_then(|d| d.get("Destination")) {
                    Some(v) => Some(sqs_destination(ctx, v, "DestinationConfig.OnFailure.Destination")?),
                    None => None,
                };
            let mut filter_patterns = Vec::new();
            if let Some(filters) = get("FilterCriteria").and_then(|f| f.get("Filters")) {
                let filters =
                    filters.as_sequence().ok_or_else(|| anyhow!("property FilterCriteria.Filters must be a list"))?;
                for filter in filters {
                    let pattern = filter
                        .get("Pattern")
                        .ok_or_else(|| anyhow!("property FilterCriteria.Filters[].Pattern is missing"))?;
                    let text = ctx.string(pattern, "FilterCriteria.Filters[].Pattern")?;
                    let pattern: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("property FilterCriteria.Filters[].Pattern {text:?} is not JSON"))?;
                    crate::pattern::validate(&pattern)
                        .with_context(|| format!("property FilterCriteria.Filters[].Pattern {text}"))?;
                    filter_patterns.push(pattern);
                }
            }
            function.streams.push(StreamSource {
                event_id: event_id.to_owned(),
                stream_arn: ctx.string(required("Stream")?, "Stream")?,
                starting_position,
                batch_size,
                batching_window: window(ctx)?,
                report_batch_item_failures: report_failures(ctx)?,
                max_retry_attempts,
                max_record_age,
                bisect_on_error,
                on_failure_destination_arn,
                filter_patterns,
            });
        }
        "EventBridgeRule" | "CloudWatchEvent" => {
            for unsupported in ["Input", "InputPath", "InputTransformer"] {
                if get(unsupported).is_some() {
                    bail!("property {unsupported} is not supported by the local runner");
                }
            }
            let bus_name = match get("EventBusName") {
                Some(v) => ctx.string(v, "EventBusName")?,
                None => "default".to_owned(),
            };
            let pattern = ctx.json(required("Pattern")?, "Pattern")?;
            if !pattern.is_object() {
                bail!("property Pattern must be a mapping");
            }
            function.rules.push(RuleSource { event_id: event_id.to_owned(), bus_name, pattern });
        }
        "Schedule" | "ScheduleV2" => {
            for unsupported in ["Input", "StartDate", "EndDate"] {
                if get(unsupported).is_some() {
                    bail!("property {unsupported} is not supported by the local runner");
                }
            }
            let (expression_property, kind) = if kind == "Schedule" {
                ("Schedule", ScheduleKind::Rule)
            } else {
                let group = match get("GroupName") {
                    Some(v) => ctx.string(v, "GroupName")?,
                    None => "default".to_owned(),
                };
                ("ScheduleExpression", ScheduleKind::Scheduler { group })
            };
            let expression = ctx.string(required(expression_property)?, expression_property)?;
            let interval = rate_interval(&expression).with_context(|| format!("property {expression_property}"))?;
            let state_enabled = match get("State") {
                Some(v) => match ctx.string(v, "State")?.as_str() {
                    "ENABLED" => true,
                    "DISABLED" => false,
                    other => bail!("property State: {other:?} is not ENABLED or DISABLED"),
                },
                None => true,
            };
            let name = match get("Name") {
                Some(v) => ctx.string(v, "Name")?,
                None => format!("{}{event_id}", function.logical_id),
            };
            function.schedules.push(ScheduleSource {
                event_id: event_id.to_owned(),
                name,
                kind,
                expression,
                enabled: enabled && state_enabled,
                interval,
            });
        }
        "HttpApi" => {
            let path = match get("Path") {
                Some(v) => ctx.string(v, "Path")?,
                None => "$default".to_owned(),
            };
            let method = match get("Method") {
                Some(v) => ctx.string(v, "Method")?.to_ascii_uppercase(),
                None => "ANY".to_owned(),
            };
            if path != "$default" && !path.starts_with('/') {
                bail!("property Path {path:?} must start with /");
            }
            let auth = route_auth(ctx, get("ApiId"), get("Auth")).context("property Auth")?;
            function.http_routes.push(HttpRoute { event_id: event_id.to_owned(), method, path, auth });
        }
        other => bail!("event type {other} is not supported by the local runner"),
    }
    Ok(())
}

/// The `Auth` of every `AWS::Serverless::HttpApi`: its JWT authorizers (any other kind is refused: the local
/// gateway verifies JWTs only) and its default authorizer.
fn http_apis(ctx: &Scope<'_>, doc: &Yaml) -> Result<BTreeMap<String, ApiAuth>> {
    let mut apis = BTreeMap::new();
    let Some(resources) = doc.get("Resources").and_then(Yaml::as_mapping) else { return Ok(apis) };
    for (key, resource) in resources {
        if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::Serverless::HttpApi") {
            continue;
        }
        let Some(logical_id) = key.as_str() else { continue };
        let mut api = ApiAuth::default();
        if let Some(auth) = resource.get("Properties").and_then(|props| props.get("Auth")) {
            if let Some(default) = auth.get("DefaultAuthorizer") {
                api.default_authorizer = Some(ctx.string(default, "DefaultAuthorizer")?);
            }
            for (name, authorizer) in auth.get("Authorizers").and_then(Yaml::as_mapping).into_iter().flatten() {
                let name = name.as_str().ok_or_else(|| anyhow!("{logical_id}: an authorizer name is not a string"))?;
                let context = || format!("{logical_id}: authorizer {name}");
                if authorizer.get("JwtConfiguration").is_none() {
                    bail!("{}: only JWT authorizers (JwtConfiguration) are supported by the local gateway", context());
                }
                if let Some(source) = authorizer.get("IdentitySource") {
                    let source = ctx.string(source, "IdentitySource").with_context(context)?;
                    if source != "$request.header.Authorization" {
                        bail!(
                            "{}: IdentitySource {source:?} is not supported (only $request.header.Authorization)",
                            context()
                        );
                    }
                }
                let scopes = string_list(ctx, authorizer.get("AuthorizationScopes"), "AuthorizationScopes")
                    .with_context(context)?;
                api.authorizers.insert(name.to_owned(), scopes);
            }
        }
        if let Some(default) = &api.default_authorizer
            && !api.authorizers.contains_key(default)
        {
            bail!("{logical_id}: DefaultAuthorizer {default:?} is not one of its Authorizers");
        }
        apis.insert(logical_id.to_owned(), api);
    }
    Ok(apis)
}

/// A route's authorization: its `Auth.Authorizer` (`NONE`: open) or its API's default, with its
/// `Auth.AuthorizationScopes` or the authorizer's.
fn route_auth(ctx: &Scope<'_>, api_id: Option<&Yaml>, auth: Option<&Yaml>) -> Result<RouteAuth> {
    let api = match api_id {
        Some(Yaml::Tagged(tagged)) if tagged.tag == "Ref" => tagged.value.as_str(),
        Some(id) => id.get("Ref").and_then(Yaml::as_str),
        None => None,
    };
    let api = match api {
        Some(id) => Some(ctx.apis.get(id).ok_or_else(|| anyhow!("ApiId {id} is not an AWS::Serverless::HttpApi"))?),
        None => None,
    };
    let named = auth.and_then(|auth| auth.get("Authorizer")).map(|name| ctx.string(name, "Authorizer")).transpose()?;
    let Some(authorizer) = named.or_else(|| api.and_then(|api| api.default_authorizer.clone())) else {
        return Ok(RouteAuth::Open);
    };
    if authorizer == "NONE" {
        return Ok(RouteAuth::Open);
    }
    let defaults = api
        .and_then(|api| api.authorizers.get(&authorizer))
        .ok_or_else(|| anyhow!("authorizer {authorizer:?} is not declared by the route's API"))?;
    let scopes = match auth.and_then(|auth| auth.get("AuthorizationScopes")) {
        Some(scopes) => string_list(ctx, Some(scopes), "AuthorizationScopes")?,
        None => defaults.clone(),
    };
    Ok(RouteAuth::Jwt { authorizer, scopes })
}

fn string_list(ctx: &Scope<'_>, value: Option<&Yaml>, property: &str) -> Result<Vec<String>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let items = value.as_sequence().ok_or_else(|| anyhow!("property {property} must be a list"))?;
    items.iter().map(|item| ctx.string(item, property)).collect()
}

/// The period of an EventBridge `rate(<value> <unit>)` expression. `cron()` and `at()` are refused: the local
/// runner fires fixed periods only.
fn rate_interval(expression: &str) -> Result<Duration> {
    let Some(rate) = expression.strip_prefix("rate(").and_then(|rest| rest.strip_suffix(')')) else {
        if expression.starts_with("cron(") || expression.starts_with("at(") {
            bail!("{expression:?}: cron() and at() schedules are not supported by the local runner (use rate())");
        }
        bail!("{expression:?} is not a rate(<value> <unit>) expression");
    };
    let mut words = rate.split(' ');
    let (Some(value), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        bail!("{expression:?} is not a rate(<value> <unit>) expression");
    };
    let value: u64 = value
        .parse()
        .ok()
        .filter(|value| *value > 0)
        .ok_or_else(|| anyhow!("{expression:?}: the value {value:?} is not a positive integer"))?;
    // EventBridge takes the singular unit for 1 only, the plural for anything else.
    let seconds_per_unit = match (unit, value == 1) {
        ("minute", true) | ("minutes", false) => 60,
        ("hour", true) | ("hours", false) => 3_600,
        ("day", true) | ("days", false) => 86_400,
        ("minute" | "hour" | "day", false) => bail!("{expression:?}: a value other than 1 takes the plural unit"),
        ("minutes" | "hours" | "days", true) => bail!("{expression:?}: the value 1 takes the singular unit"),
        _ => bail!("{expression:?}: the unit {unit:?} is not minute(s), hour(s) or day(s)"),
    };
    let seconds = value.checked_mul(seconds_per_unit).ok_or_else(|| anyhow!("{expression:?} is too long a period"))?;
    Ok(Duration::from_secs(seconds))
}

fn parse_invoke_config(ctx: &Scope<'_>, config: &Yaml) -> Result<AsyncInvokeConfig> {
    let max_retry_attempts = match config.get("MaximumRetryAttempts") {
        Some(v) => ctx.u32(v, "MaximumRetryAttempts")?,
        None => DEFAULT_ASYNC_RETRIES,
    };
    if max_retry_attempts > 2 {
        bail!("property MaximumRetryAttempts: {max_retry_attempts} is more than Lambda's 2");
    }
    let on_failure = config.get("DestinationConfig").and_then(|d| d.get("OnFailure"));
    let on_failure_destination_arn = match on_failure {
        Some(on_failure) => {
            if let Some(kind) = on_failure.get("Type") {
                let kind = ctx.string(kind, "DestinationConfig.OnFailure.Type")?;
                if kind != "SQS" {
                    bail!(
                        "property DestinationConfig.OnFailure.Type: {kind} destinations are not supported by the local runner (only SQS)"
                    );
                }
            }
            let destination = on_failure
                .get("Destination")
                .ok_or_else(|| anyhow!("property DestinationConfig.OnFailure.Destination is missing"))?;
            Some(sqs_destination(ctx, destination, "DestinationConfig.OnFailure.Destination")?)
        }
        None => None,
    };
    Ok(AsyncInvokeConfig { max_retry_attempts, on_failure_destination_arn })
}

fn sqs_destination(ctx: &Scope<'_>, value: &Yaml, property: &str) -> Result<String> {
    let arn = ctx.string(value, property)?;
    if !arn.starts_with("arn:") || arn.split(':').nth(2) != Some("sqs") {
        bail!("property {property}: {arn:?} is not an SQS queue ARN (the only destination the local runner supports)");
    }
    Ok(arn)
}

/// Parts of an ARN: `arn:partition:service:region:account:resource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    /// e.g. `sqs`.
    pub service: &'a str,
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// e.g. `123456789012`.
    pub account: &'a str,
    /// Everything after the account, e.g. the queue name.
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits an ARN.
    pub fn parse(arn: &'a str) -> Result<Self> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("{arn:?} is not an ARN");
        };
        Ok(Self { service, region, account, resource })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Parameters: { Stage: { Type: String, Default: dev } }
Globals:
  Function:
    Runtime: provided.al2023
    Handler: bootstrap
    MemorySize: 128
    Timeout: 10
    Environment:
      Variables:
        RUST_LOG: warn
Resources:
  HttpApi:
    Type: AWS::Serverless::HttpApi
  InventoryFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/inventory/bootstrap.zip
      FunctionName: !Sub "orderflow-${Stage}-inventory"
      Environment:
        Variables:
          INVENTORY_TABLE:
            Fn::ImportValue: !Sub "orderflow-${Stage}-InventoryTableName"
          RUST_LOG: info
          STAGE: !Ref Stage
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue:
              Fn::ImportValue: !Sub "orderflow-${Stage}-InventoryQueueArn"
            BatchSize: 10
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: { MaximumConcurrency: 2 }
  OutboxRelayFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/outbox-relay/bootstrap.zip
      Timeout: 30
      MemorySize: 256
      Events:
        Stream:
          Type: DynamoDB
          Properties:
            Stream: { "Fn::ImportValue": { "Fn::Sub": "orderflow-${Stage}-OutboxTableStreamArn" } }
            StartingPosition: TRIM_HORIZON
            BatchSize: 100
            FunctionResponseTypes: [ReportBatchItemFailures]
            MaximumRetryAttempts: 10
            BisectBatchOnFunctionError: true
            DestinationConfig:
              OnFailure:
                Destination: !ImportValue { "Fn::Sub": "orderflow-${Stage}-RelayDlqArn" }
            FilterCriteria:
              Filters:
                - Pattern: '{"eventName": ["INSERT"]}'
  NotificationsFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/notifications/
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination:
              Fn::ImportValue: !Sub "orderflow-${Stage}-NotificationsDlqArn"
      Events:
        Confirmed:
          Type: EventBridgeRule
          Properties:
            EventBusName:
              Fn::ImportValue: !Sub "orderflow-${Stage}-EventBusName"
            Pattern:
              detail-type: [OrderConfirmed, OrderShipped]
  OrdersApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../functions/orders-api
      Events:
        PlaceOrder:
          Type: HttpApi
          Properties: { Path: /orders, Method: post, ApiId: !Ref HttpApi }
        GetOrder:
          Type: HttpApi
          Properties: { Path: "/orders/{id}", Method: GET, ApiId: !Ref HttpApi }
"#;

    fn resolver(stage: &str) -> Resolver {
        let export = |name: &str, value: &str| (format!("orderflow-{stage}-{name}"), value.to_owned());
        Resolver::new().with_parameter("Stage", stage).with_exports([
            export("InventoryTableName", "inv-table"),
            export("InventoryQueueArn", "arn:aws:sqs:us-east-1:123456789012:inv"),
            export("OutboxTableStreamArn", "arn:aws:dynamodb:us-east-1:123456789012:table/outbox/stream/x"),
            export("RelayDlqArn", "arn:aws:sqs:us-east-1:123456789012:relay-dlq"),
            export("NotificationsDlqArn", "arn:aws:sqs:us-east-1:123456789012:notif-dlq"),
            export("EventBusName", "bus"),
        ])
    }

    #[test]
    fn parses_every_event_source_kind_and_resolves_imports() {
        let functions = parse_functions(TEMPLATE, &resolver("test")).unwrap();
        assert_eq!(functions.len(), 4);
        let inventory = &functions.iter().find(|f| f.name == "inventory").unwrap();
        assert_eq!(inventory.function_name, "orderflow-test-inventory");
        assert_eq!(inventory.timeout, Duration::from_secs(10));
        assert_eq!(inventory.environment["INVENTORY_TABLE"], "inv-table");
        assert_eq!(inventory.environment["RUST_LOG"], "info");
        assert_eq!(inventory.environment["STAGE"], "test");
        assert_eq!(
            inventory.sqs,
            vec![SqsSource {
                event_id: "Queue".into(),
                queue_arn: "arn:aws:sqs:us-east-1:123456789012:inv".into(),
                batch_size: 10,
                batching_window: Duration::from_secs(1),
                report_batch_item_failures: true,
                max_concurrency: 2,
            }]
        );

        let relay = functions.iter().find(|f| f.name == "outbox-relay").unwrap();
        assert_eq!((relay.timeout, relay.memory_mb), (Duration::from_secs(30), 256));
        assert_eq!(relay.environment["RUST_LOG"], "warn");
        let stream = &relay.streams[0];
        assert_eq!(stream.stream_arn, "arn:aws:dynamodb:us-east-1:123456789012:table/outbox/stream/x");
        assert_eq!(stream.starting_position, StartingPosition::TrimHorizon);
        assert_eq!(stream.max_retry_attempts, Some(10));
        assert!(stream.bisect_on_error && stream.report_batch_item_failures);
        assert_eq!(stream.on_failure_destination_arn.as_deref(), Some("arn:aws:sqs:us-east-1:123456789012:relay-dlq"));
        assert_eq!(stream.filter_patterns, vec![serde_json::json!({"eventName": ["INSERT"]})]);

        let notifications = functions.iter().find(|f| f.name == "notifications").unwrap();
        assert_eq!(notifications.rules[0].bus_name, "bus");
        assert_eq!(
            notifications.rules[0].pattern,
            serde_json::json!({"detail-type": ["OrderConfirmed", "OrderShipped"]})
        );
        assert_eq!(
            notifications.async_config,
            Some(AsyncInvokeConfig {
                max_retry_attempts: 1,
                on_failure_destination_arn: Some("arn:aws:sqs:us-east-1:123456789012:notif-dlq".into()),
            })
        );

        let api = functions.iter().find(|f| f.name == "orders-api").unwrap();
        let keys: Vec<_> = api.http_routes.iter().map(HttpRoute::route_key).collect();
        assert_eq!(keys, ["POST /orders", "GET /orders/{id}"]);
        assert!(api.http_routes.iter().all(|route| route.auth == RouteAuth::Open));
    }

    #[test]
    fn routes_take_their_api_default_authorizer_their_own_scopes_or_none() {
        let template = r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            IdentitySource: $request.header.Authorization
            JwtConfiguration: { issuer: https://issuer, audience: [client] }
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../functions/orders-api
      Events:
        Default:
          Type: HttpApi
          Properties: { Path: /a, Method: GET, ApiId: !Ref Api }
        Admin:
          Type: HttpApi
          Properties: { Path: /b, Method: GET, ApiId: !Ref Api, Auth: { AuthorizationScopes: [orderflow/admin] } }
        Open:
          Type: HttpApi
          Properties: { Path: /c, Method: GET, ApiId: !Ref Api, Auth: { Authorizer: NONE } }
"#;
        let functions = parse_functions(template, &Resolver::new()).unwrap();
        let auth: Vec<_> = functions[0].http_routes.iter().map(|route| route.auth.clone()).collect();
        let jwt = |scopes: &[&str]| RouteAuth::Jwt {
            authorizer: "Jwt".into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        };
        assert_eq!(auth, [jwt(&[]), jwt(&["orderflow/admin"]), RouteAuth::Open]);

        let lambda_authorizer =
            template.replace("JwtConfiguration: { issuer: https://issuer, audience: [client] }", "FunctionArn: arn");
        let err = parse_functions(&lambda_authorizer, &Resolver::new()).unwrap_err();
        assert!(format!("{err:#}").contains("only JWT authorizers"), "{err:#}");
    }

    #[test]
    fn a_missing_export_names_the_function_and_property() {
        let resolver = Resolver::new().with_export("orderflow-dev-InventoryTableName", "t");
        let err = format!("{:#}", parse_functions(TEMPLATE, &resolver).unwrap_err());
        assert!(err.contains("function InventoryFunction"), "{err}");
        assert!(err.contains("orderflow-dev-InventoryQueueArn"), "{err}");
    }

    #[test]
    fn unsupported_intrinsics_are_errors() {
        let template = r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/f/bootstrap.zip
      Environment: { Variables: { TABLE: !GetAtt Table.Arn } }
"#;
        let err = format!("{:#}", parse_functions(template, &Resolver::new()).unwrap_err());
        assert!(err.contains("function F") && err.contains("Environment.Variables.TABLE"), "{err}");
        assert!(err.contains("GetAtt"), "{err}");
    }

    #[test]
    fn sub_supports_variables_and_escapes() {
        let template = r#"
Parameters: { Stage: { Type: String, Default: dev } }
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/f/bootstrap
      Environment:
        Variables:
          A: !Sub ["${X}-${Stage}", { X: !Ref Stage }]
          B: !Sub "${!Literal}"
          C: 42
"#;
        let f = &parse_functions(template, &Resolver::new()).unwrap()[0];
        assert_eq!(f.name, "f");
        assert_eq!(f.timeout, Duration::from_secs(3));
        assert_eq!(f.environment["A"], "dev-dev");
        assert_eq!(f.environment["B"], "${Literal}");
        assert_eq!(f.environment["C"], "42");
    }

    #[test]
    fn unsupported_filter_patterns_and_event_types_are_errors() {
        let template = r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/f/bootstrap.zip
      Events:
        S:
          Type: DynamoDB
          Properties:
            Stream: arn:aws:dynamodb:us-east-1:1:table/t/stream/x
            StartingPosition: LATEST
            FilterCriteria: { Filters: [ { Pattern: '{"eventName": [{"prefix": "IN"}]}' } ] }
"#;
        let err = format!("{:#}", parse_functions(template, &Resolver::new()).unwrap_err());
        assert!(err.contains("event S") && err.contains("prefix"), "{err}");

        let template = template.replace("Type: DynamoDB", "Type: Kinesis");
        let err = format!("{:#}", parse_functions(&template, &Resolver::new()).unwrap_err());
        assert!(err.contains("Kinesis"), "{err}");
    }

    const SCHEDULED: &str = r#"
Resources:
  SweepFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/sweep/bootstrap.zip
      Events:
        Sweep:
          Type: Schedule
          Properties: { Schedule: rate(1 minute) }
        Hourly:
          Type: Schedule
          Properties: { Schedule: rate(2 hours), Name: hourly-sweep, Enabled: false }
        Daily:
          Type: ScheduleV2
          Properties: { ScheduleExpression: rate(1 day), GroupName: ops }
        Paused:
          Type: ScheduleV2
          Properties: { ScheduleExpression: rate(15 minutes), State: DISABLED }
"#;

    #[test]
    fn schedules_parse_their_rate_state_name_and_kind() {
        let function = &parse_functions(SCHEDULED, &Resolver::new()).unwrap()[0];
        let schedule = |event_id: &str| function.schedules.iter().find(|s| s.event_id == event_id).unwrap();
        assert_eq!(
            schedule("Sweep"),
            &ScheduleSource {
                event_id: "Sweep".into(),
                name: "SweepFunctionSweep".into(),
                kind: ScheduleKind::Rule,
                expression: "rate(1 minute)".into(),
                enabled: true,
                interval: Duration::from_secs(60),
            }
        );
        let hourly = schedule("Hourly");
        assert_eq!(
            (hourly.name.as_str(), hourly.enabled, hourly.interval),
            ("hourly-sweep", false, Duration::from_secs(7200))
        );
        let daily = schedule("Daily");
        assert_eq!(daily.kind, ScheduleKind::Scheduler { group: "ops".into() });
        assert_eq!((daily.enabled, daily.interval), (true, Duration::from_secs(86_400)));
        let paused = schedule("Paused");
        assert_eq!((paused.enabled, paused.interval), (false, Duration::from_secs(900)));
        // Schedules invoke asynchronously: Lambda's default retries apply without an EventInvokeConfig.
        assert_eq!(
            function.async_config,
            Some(AsyncInvokeConfig { max_retry_attempts: 2, on_failure_destination_arn: None })
        );
    }

    #[test]
    fn schedule_expressions_other_than_a_valid_rate_are_errors_naming_the_expression() {
        for (expression, expected) in [
            ("cron(0 12 * * ? *)", "cron() and at() schedules are not supported"),
            ("rate(1 minutes)", "the value 1 takes the singular unit"),
            ("rate(5 minute)", "takes the plural unit"),
            ("rate(0 minutes)", "is not a positive integer"),
            ("rate(-1 minutes)", "is not a positive integer"),
            ("rate(2 weeks)", "is not minute(s), hour(s) or day(s)"),
            ("rate(5  minutes)", "is not a rate(<value> <unit>) expression"),
            ("every 5 minutes", "is not a rate(<value> <unit>) expression"),
            ("rate(18446744073709551615 days)", "is too long a period"),
        ] {
            let template = SCHEDULED.replace("rate(1 minute)", expression);
            let err = format!("{:#}", parse_functions(&template, &Resolver::new()).unwrap_err());
            assert!(err.contains("event Sweep") && err.contains("property Schedule"), "{expression}: {err}");
            assert!(err.contains(expression) && err.contains(expected), "{expression}: {err}");
        }
        let with_input = SCHEDULED.replace("{ Schedule: rate(1 minute) }", "{ Schedule: rate(1 minute), Input: x }");
        let err = format!("{:#}", parse_functions(&with_input, &Resolver::new()).unwrap_err());
        assert!(err.contains("property Input is not supported"), "{err}");
    }

    #[test]
    fn stream_retry_and_age_limits_take_minus_one_as_unlimited() {
        let template = |retries: &str, age: &str| {
            format!(
                r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ../target/lambda/f/bootstrap.zip
      Events:
        S:
          Type: DynamoDB
          Properties:
            Stream: arn:aws:dynamodb:us-east-1:1:table/t/stream/x
            StartingPosition: TRIM_HORIZON
            MaximumRetryAttempts: {retries}
            MaximumRecordAgeInSeconds: {age}
"#
            )
        };
        let limits = |retries: &str, age: &str| {
            parse_functions(&template(retries, age), &Resolver::new())
                .map(|f| (f[0].streams[0].max_retry_attempts, f[0].streams[0].max_record_age))
        };
        assert_eq!(limits("-1", "-1").unwrap(), (None, None));
        assert_eq!(limits("10", "3600").unwrap(), (Some(10), Some(Duration::from_secs(3600))));
        assert_eq!(limits("0", "60").unwrap(), (Some(0), Some(Duration::from_secs(60))));
        for (retries, age, property) in [
            ("-2", "-1", "MaximumRetryAttempts"),
            ("10001", "-1", "MaximumRetryAttempts"),
            ("-1", "59", "MaximumRecordAgeInSeconds"),
            ("-1", "604801", "MaximumRecordAgeInSeconds"),
            ("-1", "soon", "MaximumRecordAgeInSeconds"),
        ] {
            let err = format!("{:#}", limits(retries, age).unwrap_err());
            assert!(err.contains(&format!("property {property}")), "{retries} {age}: {err}");
        }
        let defaults = template("-1", "-1")
            .replace("            MaximumRetryAttempts: -1\n", "")
            .replace("            MaximumRecordAgeInSeconds: -1\n", "");
        let stream = &parse_functions(&defaults, &Resolver::new()).unwrap()[0].streams[0];
        assert_eq!((stream.max_retry_attempts, stream.max_record_age), (None, None), "Lambda's defaults are -1");
    }

    #[test]
    fn arn_parts() {
        let arn = Arn::parse("arn:aws:sqs:us-east-1:123456789012:my-queue").unwrap();
        assert_eq!(
            (arn.service, arn.region, arn.account, arn.resource),
            ("sqs", "us-east-1", "123456789012", "my-queue")
        );
        assert!(Arn::parse("nope").is_err());
    }
}
