//! An HTTP server playing API Gateway HTTP API (payload format 2.0) in front of the functions
//! that have `HttpApi` events: it matches the request against the routes, invokes the function
//! with the `ApiGatewayV2httpRequest` event, and turns the response back into HTTP.
//!
//! A route with an authorizer is served only to a request whose token the JWT authorizer accepts
//! ([`crate::authorizer`]): 401 or 403 otherwise, the function not invoked.
//!
//! As API Gateway does: an unknown route is `404 {"message":"Not Found"}`, a function error or
//! an invalid response is `500 {"message":"Internal Server Error"}`, a response without
//! `statusCode` is sent as `200 application/json` with the response as body.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::authorizer::{JwtConfig, Rejection};
use crate::iac::{HttpRoute, RouteAuth};
use crate::runtime_api::{FunctionPool, InvocationOutcome};
use crate::sources::{DeliveredRecord, Delivery, DeliveryOutcome, SourceRef};

/// API Gateway's payload limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// A route served by a function.
#[derive(Clone)]
pub struct GatewayRoute {
    /// The route.
    pub route: HttpRoute,
    /// The function (binary) name.
    pub function: String,
    /// Its pool.
    pub pool: Arc<FunctionPool>,
}

/// Identity of the emulated API.
#[derive(Clone, Debug)]
pub struct GatewayIdentity {
    /// `requestContext.accountId`.
    pub account_id: String,
    /// `requestContext.apiId`.
    pub api_id: String,
}

impl Default for GatewayIdentity {
    fn default() -> Self {
        Self { account_id: "123456789012".to_owned(), api_id: "local".to_owned() }
    }
}

struct GatewayState {
    routes: Vec<GatewayRoute>,
    identity: GatewayIdentity,
    jwt: Option<JwtConfig>,
    deliveries: broadcast::Sender<Delivery>,
}

/// A running HTTP API.
pub struct HttpGateway {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpGateway {
    /// Listens on `addr` and serves `routes`, and the runner's own endpoints in `control` (e.g.
    /// `/_local/faults`) before them; `jwt` verifies the tokens of routes with an authorizer. Two routes with the
    /// same key are an error, and so is a route with an authorizer when there is no `jwt` (it would be open).
    pub async fn start(
        addr: SocketAddr,
        routes: Vec<GatewayRoute>,
        identity: GatewayIdentity,
        jwt: Option<JwtConfig>,
        deliveries: broadcast::Sender<Delivery>,
        control: Router,
    ) -> Result<Self> {
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[i + 1..].iter().find(|b| b.route.route_key() == a.route.route_key()) {
                bail!("route {} is served by both {} and {}", a.route.route_key(), a.function, b.function);
            }
            if let (RouteAuth::Jwt { authorizer, .. }, None) = (&a.route.auth, &jwt) {
                bail!(
                    "route {} needs the JWT authorizer {authorizer}, and no issuer is configured",
                    a.route.route_key()
                );
            }
        }
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP API to {addr}"))?;
        let addr = listener.local_addr().context("HTTP API address")?;
        let state = Arc::new(GatewayState { routes, identity, jwt, deliveries });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(state);
        let app = control.merge(app);
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(err) = axum::serve(listener, service).await {
                tracing::error!(error = %err, "HTTP API stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for HttpGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, [("content-type", "application/json")], json!({ "message": text }).to_string()).into_response()
}

/// Matches a path against a route template; returns the path parameters and a specificity
/// score (literal segments count more than parameters; a greedy `{proxy+}` least).
fn match_path(template: &str, path: &str) -> Option<(Map<String, Value>, usize)> {
    let template: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut params = Map::new();
    let mut score = 0;
    for (i, part) in template.iter().enumerate() {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            if i >= segments.len() || segments[i..].iter().all(|s| s.is_empty()) {
                return None;
            }
            let rest: Vec<String> = segments[i..].iter().map(|s| decode(s)).collect();
            params.insert(name.to_owned(), json!(rest.join("/")));
            return Some((params, score));
        }
        let segment = segments.get(i)?;
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if segment.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), json!(decode(segment)));
            score += 1;
        } else if part == segment {
            score += 2;
        } else {
            return None;
        }
    }
    (segments.len() == template.len()).then_some((params, score))
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// The best route for a request: exact method over `ANY`, more literal segments first, and
/// `$default` last.
fn find_route<'a>(
    routes: &'a [GatewayRoute],
    method: &Method,
    path: &str,
) -> Option<(&'a GatewayRoute, Map<String, Value>)> {
    // (route, path parameters, (path specificity, method specificity))
    type Candidate<'r> = (&'r GatewayRoute, Map<String, Value>, (usize, usize));
    let mut best: Option<Candidate<'a>> = None;
    for candidate in routes {
        let route = &candidate.route;
        let method_rank = if route.method == method.as_str() {
            1
        } else if route.method == "ANY" {
            0
        } else {
            continue;
        };
        let (params, score) = if route.path == "$default" {
            (Map::new(), 0)
        } else {
            match match_path(&route.path, path) {
                Some((params, score)) => (params, score + 1),
                None => continue,
            }
        };
        let rank = (score, method_rank);
        if best.as_ref().is_none_or(|(_, _, r)| rank > *r) {
            best = Some((candidate, params, rank));
        }
    }
    best.map(|(route, params, _)| (route, params))
}

async fn handle(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((route, path_parameters)) = find_route(&state.routes, &parts.method, &path) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    // API Gateway serves only its own domain, so a function never sees a Host that is not a URL's host; lambda_http
    // unwraps the URL it builds of it (1.3: a panic, a 500). Refused here as any HTTP server refuses one.
    let host = parts.headers.get("host").and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    if url::Url::parse(&format!("http://{host}/")).is_err() {
        return message(StatusCode::BAD_REQUEST, "Bad Request");
    }
    let authorizer = match (&route.route.auth, &state.jwt) {
        (RouteAuth::Open, _) => None,
        (RouteAuth::Jwt { scopes, .. }, Some(jwt)) => {
            let header = parts.headers.get("authorization").and_then(|value| value.to_str().ok());
            match jwt.authorize(header, scopes) {
                Ok(context) => Some(context),
                Err(rejection) => {
                    tracing::info!(route = %route.route.route_key(), reason = %rejection, "request refused by the authorizer");
                    return match rejection {
                        Rejection::Unauthorized(_) => message(StatusCode::UNAUTHORIZED, "Unauthorized"),
                        Rejection::Forbidden(_) => message(StatusCode::FORBIDDEN, "Forbidden"),
                    };
                }
            }
        }
        // Refused at start; never open by accident.
        (RouteAuth::Jwt { .. }, None) => return message(StatusCode::UNAUTHORIZED, "Unauthorized"),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
    };
    let mut event = request_event(
        &state.identity,
        &route.route,
        &parts.method,
        &parts.uri,
        &parts.headers,
        path_parameters,
        &body,
        peer,
    );
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    let request_id = event["requestContext"]["requestId"].as_str().unwrap_or_default().to_owned();
    let invocation = match route.pool.invoke(event).await {
        Ok(invocation) => invocation,
        Err(err) => {
            tracing::error!(function = %route.function, error = %format!("{err:#}"), "invoke failed");
            return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let (response, outcome) = match &invocation.outcome {
        InvocationOutcome::Success(value) => match http_response(value) {
            Ok(response) => (response, DeliveryOutcome::Succeeded),
            Err(err) => {
                tracing::warn!(function = %route.function, error = %format!("{err:#}"), "invalid function response");
                (
                    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    DeliveryOutcome::Failed {
                        error_type: "Runner.InvalidHttpResponse".to_owned(),
                        error_message: format!("{err:#}"),
                    },
                )
            }
        },
        failed => (message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"), DeliveryOutcome::of(failed)),
    };
    let _ = state.deliveries.send(Delivery {
        function: route.function.clone(),
        source: SourceRef::Http { route_key: route.route.route_key() },
        request_id: invocation.request_id,
        records: vec![DeliveredRecord { id: request_id, detail_type: None, correlation_id: None }],
        attempt: 1,
        outcome,
    });
    response
}

/// Body types API Gateway passes as text; others are base64-encoded.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return true };
    let content_type = content_type.to_ascii_lowercase();
    content_type.starts_with("text/")
        || ["json", "xml", "javascript", "x-www-form-urlencoded", "graphql", "yaml"]
            .iter()
            .any(|t| content_type.contains(t))
}

/// The `ApiGatewayV2httpRequest` event (payload format 2.0).
#[allow(clippy::too_many_arguments)]
fn request_event(
    identity: &GatewayIdentity,
    route: &HttpRoute,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    path_parameters: Map<String, Value>,
    body: &Bytes,
    peer: SocketAddr,
) -> Value {
    let mut header_map: Map<String, Value> = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned));
            continue;
        }
        // Repeated headers are joined with commas, as API Gateway does.
        match header_map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                header_map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    // API Gateway sets these itself, whatever the client sent: the scheme and port it was reached on, the peer.
    header_map.insert("x-forwarded-proto".into(), Value::String("http".into()));
    header_map.insert("x-forwarded-for".into(), Value::String(peer.ip().to_string()));
    let port = headers.get("host").and_then(|v| v.to_str().ok()).and_then(|host| host.rsplit_once(':'));
    if let Some((_, port)) = port.filter(|(_, port)| port.parse::<u16>().is_ok()) {
        header_map.insert("x-forwarded-port".into(), Value::String(port.to_owned()));
    }
    let raw_query = uri.query().unwrap_or_default();
    let mut query: Map<String, Value> = Map::new();
    for (key, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match query.get_mut(key.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query.insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let domain = header("host").unwrap_or("localhost").to_owned();
    let now = time::OffsetDateTime::now_utc();
    let time_format =
        time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    let (body, is_base64) = if body.is_empty() {
        (Value::Null, false)
    } else if is_text(header("content-type")) {
        match std::str::from_utf8(body) {
            Ok(text) => (Value::String(text.to_owned()), false),
            Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
        }
    } else {
        (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true)
    };

    let mut event = json!({
        "version": "2.0",
        "routeKey": route.route_key(),
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": identity.account_id,
            "apiId": identity.api_id,
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or_default(),
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": header("user-agent").unwrap_or_default(),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route.route_key(),
            "stage": "$default",
            "time": now.format(&time_format).unwrap_or_default(),
            "timeEpoch": now.unix_timestamp_nanos() / 1_000_000,
        },
        "isBase64Encoded": is_base64,
    });
    if let Some(object) = event.as_object_mut() {
        // API Gateway leaves these out when empty.
        if !cookies.is_empty() {
            object.insert("cookies".into(), json!(cookies));
        }
        if !query.is_empty() {
            object.insert("queryStringParameters".into(), Value::Object(query));
        }
        if !path_parameters.is_empty() {
            object.insert("pathParameters".into(), Value::Object(path_parameters));
        }
        if !body.is_null() {
            object.insert("body".into(), body);
        }
    }
    event
}

/// Turns a function response (payload format 2.0) into HTTP.
fn http_response(value: &Value) -> Result<Response> {
    let Some(status) = value.get("statusCode") else {
        // No statusCode: API Gateway sends the response itself as a JSON body.
        return Ok((StatusCode::OK, [("content-type", "application/json")], value.to_string()).into_response());
    };
    let status = status
        .as_u64()
        .or_else(|| status.as_str().and_then(|s| s.parse().ok()))
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .with_context(|| format!("statusCode {status} is not an HTTP status"))?;
    let mut builder = Response::builder().status(status);
    let mut has_content_type = false;
    let mut add = |builder: axum::http::response::Builder, name: &str, value: &str| -> Result<_> {
        let name = HeaderName::try_from(name).with_context(|| format!("header name {name:?}"))?;
        has_content_type |= name == "content-type";
        let value = HeaderValue::try_from(value).with_context(|| format!("header {name} value {value:?}"))?;
        Ok(builder.header(name, value))
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(headers) = value.get("headers").and_then(Value::as_object) {
        for (name, v) in headers {
            builder = add(builder, name, &scalar(v))?;
        }
    }
    if let Some(headers) = value.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in headers {
            let already = value.get("headers").and_then(|h| h.get(name)).is_some();
            for v in values.as_array().into_iter().flatten() {
                if !already {
                    builder = add(builder, name, &scalar(v))?;
                }
            }
        }
    }
    for cookie in value.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        builder = add(builder, "set-cookie", &scalar(cookie))?;
    }
    if !has_content_type {
        builder = builder.header("content-type", "application/json");
    }
    let body = match value.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if value.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
            base64::engine::general_purpose::STANDARD.decode(text).context("body is not valid base64")?
        }
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    builder.body(Body::from(body)).context("building the response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> HttpRoute {
        HttpRoute { event_id: "E".into(), method: method.into(), path: path.into(), auth: RouteAuth::Open }
    }

    #[test]
    fn paths_match_templates_with_parameters() {
        let (params, _) = match_path("/orders/{id}", "/orders/o%2D1").unwrap();
        assert_eq!(params["id"], "o-1");
        assert!(match_path("/orders/{id}", "/orders").is_none());
        assert!(match_path("/orders/{id}", "/orders/1/x").is_none());
        assert!(match_path("/orders", "/orders/1").is_none());
        let (params, _) = match_path("/files/{proxy+}", "/files/a/b").unwrap();
        assert_eq!(params["proxy"], "a/b");
        assert!(match_path("/orders/{id}", "/orders/").is_none());
    }

    #[test]
    fn the_event_parses_as_an_api_gateway_v2_request() {
        let headers = HeaderMap::from_iter([
            (HeaderName::from_static("content-type"), HeaderValue::from_static("application/json")),
            (HeaderName::from_static("cookie"), HeaderValue::from_static("a=1; b=2")),
            (HeaderName::from_static("x-multi"), HeaderValue::from_static("1")),
        ]);
        let mut headers = headers;
        headers.append("x-multi", HeaderValue::from_static("2"));
        let uri: axum::http::Uri = "/orders/o-1?x=1&x=2&y=%20z".parse().unwrap();
        let mut params = Map::new();
        params.insert("id".into(), json!("o-1"));
        let event = request_event(
            &GatewayIdentity::default(),
            &route("GET", "/orders/{id}"),
            &Method::GET,
            &uri,
            &headers,
            params,
            &Bytes::from_static(b"{\"a\":1}"),
            "127.0.0.1:5555".parse().unwrap(),
        );
        assert_eq!(event["routeKey"], "GET /orders/{id}");
        assert_eq!(event["rawQueryString"], "x=1&x=2&y=%20z");
        assert_eq!(event["queryStringParameters"], json!({"x": "1,2", "y": " z"}));
        assert_eq!(event["headers"]["x-multi"], "1,2");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["body"], "{\"a\":1}");
        let parsed: aws_lambda_events::event::apigw::ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.path_parameters["id"], "o-1");
        assert_eq!(parsed.request_context.http.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(parsed.request_context.stage.as_deref(), Some("$default"));
    }

    #[tokio::test]
    async fn responses_become_http() {
        let response = http_response(&json!({
            "statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["s=1"], "body": "aGk=", "isBase64Encoded": true
        }))
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(response.headers()["set-cookie"], "s=1");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b"hi");

        let inferred = http_response(&json!({"ok": true})).unwrap();
        assert_eq!(inferred.status(), StatusCode::OK);
        let body = axum::body::to_bytes(inferred.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], br#"{"ok":true}"#);

        assert!(http_response(&json!({"statusCode": "nope"})).is_err());
    }
}
