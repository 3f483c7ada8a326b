//! The fault proxy: stands on the wire between every function instance and its upstreams (the AWS endpoint, and
//! every HTTP service a function reaches through an environment variable and that is registered by name) and
//! applies the [`FaultController`]'s rules to each call.
//!
//! Every instance gets listeners of its own on `127.0.0.1:<port the kernel picks>`, and the variable that names an
//! upstream (`AWS_ENDPOINT_URL`, ...) is pointed at them in that instance's environment, so the proxy knows which
//! function and which instance makes each call without anything in the function's code: a `crash_after_write`
//! fault kills exactly the instance whose write succeeded, before it sees the answer. An AWS call's target is the
//! signing name in its SigV4 credential scope and its operation the `X-Amz-Target` (or the query protocol's
//! `Action`). A connection reset is a close with SO_LINGER 0, which the client sees as `ECONNRESET`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::faults::{AWS_TARGETS, Call, FaultController, FaultKind, Target};

/// What an upstream named by an environment variable speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// An AWS API endpoint: the target of each call is its service.
    Aws,
    /// A plain HTTP service registered under this name: fault rules target it as `"target": "<name>"`, and every
    /// call has `METHOD /path` as its operation.
    Http(String),
}

/// An environment variable whose URL the proxy stands in front of, in every function that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedVariable {
    pub name: String,
    pub kind: UpstreamKind,
}

impl ProxiedVariable {
    pub fn new(name: impl Into<String>, kind: UpstreamKind) -> Self {
        Self { name: name.into(), kind }
    }
}

/// The proxy of a runner: its rules and the variables it proxies.
#[derive(Debug)]
pub struct FaultProxy {
    controller: Arc<FaultController>,
    variables: Vec<ProxiedVariable>,
    client: reqwest::Client,
}

/// The listeners of one instance; dropping it closes them.
pub struct InstanceProxy {
    /// The instance's variables, pointed at its listeners.
    pub env: Vec<(String, String)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for InstanceProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One listener's view: which function and instance it serves and where its calls go.
struct Route {
    controller: Arc<FaultController>,
    client: reqwest::Client,
    function: String,
    /// The target of every call to an HTTP upstream; `None` for the AWS endpoint, whose calls name their service.
    http_target: Option<Target>,
    upstream: String,
    crash: Arc<Notify>,
}

impl FaultProxy {
    /// A proxy for `variables`, its rules' draws seeded with `fault_seed`. Fails when an HTTP upstream's name is
    /// empty, taken twice, or an AWS service's (a rule could not tell them apart).
    pub fn new(fault_seed: u64, variables: Vec<ProxiedVariable>) -> Result<Arc<Self>> {
        let mut http_targets = BTreeSet::new();
        for variable in &variables {
            let UpstreamKind::Http(name) = &variable.kind else { continue };
            if name.is_empty() || AWS_TARGETS.contains(&name.as_str()) || !http_targets.insert(name.clone()) {
                bail!(
                    "the HTTP upstream of {} cannot be named {name:?}: names are not empty, unique and none of {}",
                    variable.name,
                    AWS_TARGETS.join(", ")
                );
            }
        }
        let controller = FaultController::new(fault_seed, http_targets);
        // No connection pool: a pooled connection outlives the instance that opened it and would carry the next
        // instance's calls under the wrong name; each call is a loopback connect anyway.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .context("building the fault proxy's HTTP client")?;
        Ok(Arc::new(Self { controller, variables, client }))
    }

    pub fn controller(&self) -> &Arc<FaultController> {
        &self.controller
    }

    /// Opens listeners for one instance of `function` for every proxied variable its `environment` sets, each
    /// forwarding to the variable's value. `crash` is notified to kill the instance.
    pub async fn open(
        &self,
        function: &str,
        environment: &BTreeMap<String, String>,
        crash: Arc<Notify>,
    ) -> Result<InstanceProxy> {
        let mut proxy = InstanceProxy { env: Vec::new(), tasks: Vec::new() };
        for variable in &self.variables {
            let Some(upstream) = environment.get(&variable.name).filter(|url| !url.is_empty()) else { continue };
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .with_context(|| format!("binding the fault proxy of {function} for {}", variable.name))?;
            let addr = listener.local_addr().context("fault proxy address")?;
            let route = Arc::new(Route {
                controller: self.controller.clone(),
                client: self.client.clone(),
                function: function.to_owned(),
                http_target: match &variable.kind {
                    UpstreamKind::Aws => None,
                    UpstreamKind::Http(name) => Some(Target::Http(name.clone())),
                },
                upstream: upstream.trim_end_matches('/').to_owned(),
                crash: crash.clone(),
            });
            proxy.tasks.push(tokio::spawn(serve(listener, route)));
            proxy.env.push((variable.name.clone(), format!("http://{addr}")));
        }
        Ok(proxy)
    }
}

async fn serve(listener: TcpListener, route: Arc<Route>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        // Every close of a proxied connection is then a reset: a `reset` fault drops the connection mid-call.
        if let Err(err) = stream.set_zero_linger() {
            tracing::debug!(error = %err, "could not set SO_LINGER on a proxied connection");
        }
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let route = route.clone();
                async move { route.handle(request).await }
            });
            // A call the proxy resets ends the connection with an error: expected, not worth a log line.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Why a call got no answer: the connection is reset.
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    #[error("connection reset by a fault rule")]
    Reset,
    #[error("the instance crashed after its write")]
    Crashed,
    #[error("upstream {0}")]
    Upstream(String),
}

impl Route {
    async fn handle(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, NoAnswer> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|err| NoAnswer::Upstream(format!("reading the request: {err}")))?;
        let body = body.to_bytes();
        let signed_target;
        let (target, operation) = match &self.http_target {
            Some(target) => (Some(target), format!("{} {}", parts.method, parts.uri.path())),
            None => {
                signed_target = aws_target(&parts.headers);
                (signed_target.as_ref(), aws_operation(&parts.headers, &body))
            }
        };
        let verdict = match target {
            Some(target) => self.controller.decide(&Call { target, operation: &operation, function: &self.function }),
            None => Default::default(),
        };
        if !verdict.latency.is_zero() {
            tokio::time::sleep(verdict.latency).await;
        }
        if let (Some(target), Some(fault)) = (target, verdict.fault) {
            tracing::debug!(
                function = self.function,
                target = target.as_str(),
                operation,
                fault = fault.as_str(),
                "fault"
            );
            match fault {
                FaultKind::Throttle | FaultKind::Unavailable | FaultKind::InternalError => {
                    return Ok(error_response(target, fault));
                }
                FaultKind::Reset => return Err(NoAnswer::Reset),
                FaultKind::Latency | FaultKind::CrashAfterWrite => {}
            }
        }
        let response = self.forward(&parts, body).await?;
        if verdict.fault == Some(FaultKind::CrashAfterWrite) && response.status().is_success() {
            self.crash.notify_one();
            return Err(NoAnswer::Crashed);
        }
        Ok(response)
    }

    async fn forward(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, NoAnswer> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self.client.request(parts.method.clone(), format!("{}{path}", self.upstream)).body(body);
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                request = request.header(name, value);
            }
        }
        let upstream = request.send().await.map_err(|err| NoAnswer::Upstream(err.to_string()))?;
        let status = upstream.status();
        let headers = upstream.headers().clone();
        let body = upstream.bytes().await.map_err(|err| NoAnswer::Upstream(err.to_string()))?;
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                response.headers_mut().append(name, value.clone());
            }
        }
        Ok(response)
    }
}

/// Headers that belong to one connection (or that the client sets again for the upstream).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te" | "upgrade"
    )
}

/// The target of an AWS call: the service of its SigV4 credential scope
/// (`Credential=AKID/20261201/us-east-1/dynamodb/aws4_request`).
fn aws_target(headers: &hyper::HeaderMap) -> Option<Target> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    Target::of_aws_service(credential.split('/').nth(3)?)
}

/// The operation of an AWS call: `X-Amz-Target: DynamoDB_20120810.PutItem` (JSON protocols) or `Action=` of a
/// query-protocol form body.
fn aws_operation(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    form_urlencoded::parse(body)
        .find(|(key, _)| key == "Action")
        .map_or_else(|| "unknown".to_owned(), |(_, action)| action.into_owned())
}

/// The answer the service really gives for `fault`; an HTTP upstream gets `{"error", "message"}` with the status.
fn error_response(target: &Target, fault: FaultKind) -> Response<Full<Bytes>> {
    let (status, code, message) = match (target, fault) {
        (Target::Dynamodb, FaultKind::Throttle) => (
            StatusCode::BAD_REQUEST,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        (Target::Sqs | Target::Events, FaultKind::Throttle) => {
            (StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded")
        }
        (Target::Http(_), FaultKind::Throttle) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests"),
        (Target::Dynamodb, FaultKind::InternalError) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "Internal server error",
        ),
        (Target::Sqs, FaultKind::InternalError) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "The request processing has failed")
        }
        (Target::Events, FaultKind::InternalError) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalException", "Internal error")
        }
        (Target::Http(_), FaultKind::InternalError) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
        }
        (Target::Http(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "service unavailable"),
        (_, _) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Service Unavailable"),
    };
    let (content_type, body) = match target {
        Target::Http(_) => ("application/json", json!({"error": code, "message": message})),
        Target::Dynamodb | Target::Sqs => ("application/x-amz-json-1.0", json!({"__type": code, "message": message})),
        Target::Events => ("application/x-amz-json-1.1", json!({"__type": code, "message": message})),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap_or(HeaderValue::from_static("local")),
    );
    if *target == Target::Sqs {
        // SQS's JSON protocol also names the query-protocol code, which the SDK prefers.
        let query_error = format!("{code};{}", if status.is_client_error() { "Sender" } else { "Receiver" });
        if let Ok(value) = HeaderValue::from_str(&query_error) {
            headers.insert("x-amzn-query-error", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_calls_are_named_by_their_signing_service_and_target() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        headers.insert("x-amz-target", HeaderValue::from_static("DynamoDB_20120810.TransactWriteItems"));
        assert_eq!(aws_target(&headers), Some(Target::Dynamodb));
        assert_eq!(aws_operation(&headers, b""), "TransactWriteItems");
        headers.remove("x-amz-target");
        assert_eq!(aws_operation(&headers, b"Action=SendMessage&Version=2012-11-05"), "SendMessage");
        headers.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/cloudformation/aws4_request"),
        );
        assert_eq!(aws_target(&headers), None);
    }

    #[test]
    fn injected_errors_are_the_ones_the_services_send() {
        let throttled = error_response(&Target::Dynamodb, FaultKind::Throttle);
        assert_eq!(throttled.status(), StatusCode::BAD_REQUEST);
        let unavailable = error_response(&Target::Events, FaultKind::Unavailable);
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        let sqs = error_response(&Target::Sqs, FaultKind::Throttle);
        assert_eq!(sqs.headers()["x-amzn-query-error"], "ThrottlingException;Sender");
        assert_eq!(
            error_response(&Target::Http("provider".into()), FaultKind::Throttle).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn an_http_upstream_needs_a_name_of_its_own() {
        let http = |variable: &str, name: &str| ProxiedVariable::new(variable, UpstreamKind::Http(name.to_owned()));
        let aws = ProxiedVariable::new("AWS_ENDPOINT_URL", UpstreamKind::Aws);
        assert!(FaultProxy::new(0, vec![aws.clone(), http("PROVIDER_URL", "provider")]).is_ok());
        for bad in [
            vec![http("PROVIDER_URL", "")],
            vec![http("PROVIDER_URL", "sqs")],
            vec![http("PROVIDER_URL", "provider"), http("OTHER_URL", "provider")],
        ] {
            let err = FaultProxy::new(0, bad.clone()).err().map(|err| err.to_string()).unwrap_or_default();
            assert!(err.contains("PROVIDER_URL") || err.contains("OTHER_URL"), "{bad:?}: {err}");
        }
    }
}
