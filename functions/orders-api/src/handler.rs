//! The orders HTTP API (API Gateway HTTP API, payload v2):
//!
//! ```text
//! POST /orders          {"lines": [{"sku", "quantity"}]}, header Idempotency-Key (optional)
//!                       -> 202 {"order_id", "status"}; the order's first event, OrderPlaced v2 (in the
//!                       STORE_CURRENCY), in the event store
//! GET  /orders/{id}     -> 200 {"order_id", "customer_id", "status", "lines", "total", "history": [{"type", "at"}],
//!                       "version", "placed_at"}: the order's view (the read model), which follows its events by
//!                       the projection's lag; 404 until the projection has seen it
//! GET  /orders?status=&limit=&cursor=
//!                       -> 200 {"orders": [<view>...], "next_cursor"}: the caller's orders, newest first, at most
//!                       `limit` (1..=100, 20 by default), in one status if `status` is given; `next_cursor` (null
//!                       on the last page) is the `cursor` of the next page
//! GET  /orders/{id}/events -> 200 {"events": [<envelope>...]}: the order's events in order, from the event store
//! POST /orders/{id}/cancel -> 202 {"order_id", "status": "CANCELLED"}: `OrderCancelled` (reason `customer`)
//!                       appended, and every service compensates (stock released, payment voided, shipment
//!                       cancelled); 409 `not_cancellable` once the order is final (SHIPPED, REJECTED, CANCELLED)
//! PUT  /inventory/{sku} {"available", "price"} -> 200 {"sku", "available", "reserved", "shipped", "price"}
//! GET  /inventory/{sku} -> 200 {"sku", "available", "reserved", "shipped", "price"}
//! GET  /analytics/sales?sku=&from=&to=
//!                       -> 200 {"windows": [{"sku", "start", "end", "units", "revenue"}...]}: the closed sales
//!                       windows of `sku` starting in [from, to) (RFC 3339, at most 31 days), with their
//!                       corrections applied; a window is served once it closed
//! ```
//!
//! An `Idempotency-Key` is remembered for [`IDEMPOTENCY_KEY_EXPIRES_AFTER`] (24 h): its record (the toolkit's) is
//! written in the same transaction as the order, so a retry with the same key and body answers with the order the
//! first request placed and its status now, and writes nothing.
//!
//! Who a request acts for is its [`Principal`]: the subject of the token API Gateway's JWT authorizer verified
//! (`requestContext.authorizer.jwt.claims.sub`), an operator when the token holds [`ADMIN_SCOPE`]. A customer is
//! their `sub` everywhere: an order belongs to the customer who placed it, and anybody but its owner and operators
//! gets 404 for it (not 403: order ids do not leak); `PUT /inventory` and `GET /analytics/sales` are for
//! operators (403). An `Idempotency-Key` is the caller's own: the same key of two callers is two keys.
//!
//! Errors are `{"error": "<code>", "message": "<what is wrong, naming the field>"}`: 400 `invalid_json` or
//! `validation_failed` (or `invalid_request`, a request the tables refuse as invalid), 401 `unauthorized`, 403
//! `forbidden`, 404 `not_found`, 405 `method_not_allowed`, 413 `payload_too_large` (a body over
//! [`MAX_BODY_BYTES`]), 422 `idempotency_key_reused`, 503 `service_unavailable` (the tables refused for now;
//! retry) and 500 `internal_error` (details only in the logs).

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use lambda_http::http::header::{ALLOW, CONTENT_TYPE, LOCATION};
use lambda_http::http::{HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use orderflow_analytics_store::{PublishedWindow, WindowStore};
use orderflow_domain::Decimal;
use orderflow_domain::analytics::SalesQuery;
use orderflow_domain::events::OrderPlaced;
use orderflow_domain::inventory::{Restock, validate_sku};
use orderflow_domain::order::{OrderEvent, OrderStatus, PlaceOrder, SagaInput, ValidationError, validate_customer_id};
use orderflow_inventory_store::StockStore;
use orderflow_order_views::{Cursor, ListQuery, MAX_PAGE, OrderView, ViewStore};
use orderflow_orders_store::saga::{self, Applied, ApplyError};
use orderflow_orders_store::{EventLog, OrderStore, Placement, StoreError, placement_record};
use orderflow_toolkit::idempotency::IdempotencyError;
use orderflow_toolkit::{Envelope, RawEnvelope};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

/// The request header that makes `POST /orders` safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// How long an idempotency key answers repeats of its request.
pub const IDEMPOTENCY_KEY_EXPIRES_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// The scope of operators' tokens: restock and price SKUs, read the sales windows, read any order.
pub const ADMIN_SCOPE: &str = "orderflow/admin";
/// How many orders a page of `GET /orders` holds when the request names no `limit`.
pub const DEFAULT_PAGE: u16 = 20;

/// Why a request failed; each variant is one status and error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Validation(ValidationError),
    /// No verified token reached the function (API Gateway's authorizer refuses such requests first).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: Method, path: String, allowed: &'static str },
    #[error("order {order_id} is {status}: it can no longer be cancelled")]
    NotCancellable { order_id: String, status: &'static str },
    #[error("Idempotency-Key {key:?} was already used with a different request body")]
    IdempotencyKeyReused { key: String },
    #[error("body: the request body is {bytes} bytes, at most {MAX_BODY_BYTES} are accepted")]
    PayloadTooLarge { bytes: usize },
    /// A table refused the request as invalid (`ValidationException`): retrying it cannot succeed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The tables refused for now (a transient failure: throttling, network); details are logged, not returned.
    #[error("{0}")]
    Unavailable(String),
    /// A bug, an invalid request to a table, or corrupt data; details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::Validation(_) | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotCancellable { .. } => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Validation(_) => "validation_failed",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NotCancellable { .. } => "not_cancellable",
            Self::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The message the client sees: server-side details stay in the logs.
    fn public_message(&self) -> String {
        match self {
            Self::Unavailable(_) => "the service is busy, retry later".into(),
            Self::InvalidRequest(_) => "the request cannot be stored as it is (too large or malformed)".into(),
            Self::Internal(_) => "internal server error".into(),
            other => other.to_string(),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut response =
            json_response(self.status(), &json!({"error": self.code(), "message": self.public_message()}));
        if let Self::MethodNotAllowed { allowed, .. } = &self {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }
}

fn validation(field: &str, message: &str) -> ApiError {
    ApiError::Validation(ValidationError { field: field.into(), message: message.into() })
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(reason) => Self::Internal(format!("orders store conflict: {reason}")),
            StoreError::Table(err) => err.into(),
        }
    }
}

/// The idempotency record of a request could not be built: a bug (requests and order ids serialize to JSON).
impl From<IdempotencyError<Infallible>> for ApiError {
    fn from(err: IdempotencyError<Infallible>) -> Self {
        Self::Internal(err.to_string())
    }
}

/// A table's failure, by its class: a transient one is a 503 the client may retry, a request the table refuses as
/// invalid a 400 (never retried), a corrupt item or another permanent failure a 500.
impl From<orderflow_aws::StoreError> for ApiError {
    fn from(err: orderflow_aws::StoreError) -> Self {
        match err {
            orderflow_aws::StoreError::Transient(message) => Self::Unavailable(message),
            orderflow_aws::StoreError::Permanent(message) if message.contains("Validation") => {
                Self::InvalidRequest(message)
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Who a request acts for: the subject of its verified token, and whether the token holds [`ADMIN_SCOPE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub admin: bool,
}

impl Principal {
    /// The principal of the token API Gateway's authorizer verified. A request without one is refused: the API
    /// never runs open by a misconfigured route.
    pub fn of(request: &Request) -> Result<Self, ApiError> {
        let jwt = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()),
            _ => None,
        };
        let jwt = jwt.ok_or_else(|| ApiError::Unauthorized("the request carries no verified token".into()))?;
        let id = jwt.claims.get("sub").cloned().unwrap_or_default();
        validate_customer_id(&id).map_err(|err| ApiError::Unauthorized(format!("the token's sub {}", err.message)))?;
        let scopes = jwt.claims.get("scope").map(String::as_str).unwrap_or_default();
        let admin = scopes.split_whitespace().any(|scope| scope == ADMIN_SCOPE);
        Ok(Self { id, admin })
    }

    /// May this principal see and cancel an order of `owner`?
    fn may_see(&self, owner: &str) -> bool {
        self.admin || self.id == owner
    }

    fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin { Ok(()) } else { Err(ApiError::Forbidden(format!("{what} needs the scope {ADMIN_SCOPE}"))) }
    }
}

/// The routes of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    PlaceOrder,
    ListOrders,
    GetOrder(String),
    GetOrderEvents(String),
    CancelOrder(String),
    PutStock(String),
    GetStock(String),
    GetSales,
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8();
            decoded.map(|segment| segment.into_owned()).map_err(|_| validation("path", "is not valid UTF-8"))
        })
        .collect::<Result<Vec<String>, ApiError>>()?;
    let not_allowed = |allowed| ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned(), allowed };
    match segments.as_slice() {
        [orders] if orders == "orders" => match *method {
            Method::POST => Ok(Route::PlaceOrder),
            Method::GET => Ok(Route::ListOrders),
            _ => Err(not_allowed("GET, POST")),
        },
        [orders, id] if orders == "orders" => match *method {
            Method::GET => Ok(Route::GetOrder(order_id(id)?)),
            _ => Err(not_allowed("GET")),
        },
        [orders, id, events] if orders == "orders" && events == "events" => match *method {
            Method::GET => Ok(Route::GetOrderEvents(order_id(id)?)),
            _ => Err(not_allowed("GET")),
        },
        [orders, id, cancel] if orders == "orders" && cancel == "cancel" => match *method {
            Method::POST => Ok(Route::CancelOrder(order_id(id)?)),
            _ => Err(not_allowed("POST")),
        },
        [inventory, sku] if inventory == "inventory" => match *method {
            Method::GET => Ok(Route::GetStock(sku.clone())),
            Method::PUT => Ok(Route::PutStock(sku.clone())),
            _ => Err(not_allowed("GET, PUT")),
        },
        [analytics, sales] if analytics == "analytics" && sales == "sales" => match *method {
            Method::GET => Ok(Route::GetSales),
            _ => Err(not_allowed("GET")),
        },
        _ => Err(ApiError::NotFound(format!("no route for {method} {path}"))),
    }
}

/// The longest order id of a path: ours are UUIDs, orders of the legacy system `legacy-<uuid>`.
const MAX_ORDER_ID_BYTES: usize = 64;

/// An order id of a path. Anything that cannot be an order id names no order: 404, as an unknown one, and the
/// tables never see it.
fn order_id(segment: &str) -> Result<String, ApiError> {
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'-';
    if segment.is_empty() || segment.len() > MAX_ORDER_ID_BYTES || !segment.as_bytes().iter().all(allowed) {
        return Err(ApiError::NotFound(format!("order {segment:?} not found")));
    }
    Ok(segment.to_owned())
}

/// The request path without the stage prefix a named (non-`$default`) stage adds.
fn request_path(request: &Request) -> String {
    let path = request.raw_http_path();
    let path = if path.is_empty() { request.uri().path() } else { path };
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    match stage.filter(|stage| stage != "$default") {
        Some(stage) => match path.strip_prefix(&format!("/{stage}")) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
            _ => path.to_owned(),
        },
        None => path.to_owned(),
    }
}

/// A JSON response; a body that does not serialize (a bug) is logged and answered as a 500.
fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, json) = match serde_json::to_string(body) {
        Ok(json) => (status, json),
        Err(err) => {
            tracing::error!(error = %err, "the response body does not serialize to JSON");
            let internal = json!({"error": "internal_error", "message": "internal server error"});
            (StatusCode::INTERNAL_SERVER_ERROR, internal.to_string())
        }
    };
    let mut response = Response::new(Body::Text(json));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Parses a JSON body; the message names the field (`lines[0].quantity: invalid type ...`) and the position.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("the request body is empty: expected a JSON object".into()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path == "?" {
            ApiError::InvalidJson(inner.to_string())
        } else {
            ApiError::InvalidJson(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| ApiError::InvalidJson(err.to_string()))?;
    Ok(value)
}

/// The answer to `POST /orders`, with the order's public status ([`OrderStatus::public`]).
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    order_id: &'a str,
    status: OrderStatus,
}

/// The answer to `GET /orders`: a page of the caller's orders and the cursor of the next.
#[derive(Debug, Serialize)]
struct OrderList {
    orders: Vec<OrderView>,
    next_cursor: Option<String>,
}

/// The answer to `GET /orders/{id}/events`: the order's envelopes in version order.
#[derive(Debug, Serialize)]
struct OrderEvents {
    events: Vec<RawEnvelope>,
}

/// One closed window of `GET /analytics/sales`.
#[derive(Debug, Serialize)]
struct SalesWindow {
    sku: String,
    #[serde(with = "time::serde::rfc3339")]
    start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    end: OffsetDateTime,
    units: i64,
    revenue: Decimal,
}

impl From<PublishedWindow> for SalesWindow {
    fn from(window: PublishedWindow) -> Self {
        Self {
            sku: window.sku,
            start: window.window_start,
            end: window.window_end,
            units: window.totals.units,
            revenue: window.totals.revenue,
        }
    }
}

/// The answer to `GET /analytics/sales`.
#[derive(Debug, Serialize)]
struct SalesWindows {
    windows: Vec<SalesWindow>,
}

/// The page of the caller's orders a `GET /orders` asks for.
fn list_query(request: &Request, caller: &Principal) -> Result<ListQuery, ApiError> {
    let params = request.query_string_parameters();
    let customer_id = caller.id.clone();
    let status = params
        .first("status")
        .map(|status| {
            OrderStatus::PUBLIC.into_iter().find(|known| known.as_str() == status).ok_or_else(|| {
                validation("status", "must be one of PENDING, RESERVED, CONFIRMED, SHIPPED, REJECTED, CANCELLED")
            })
        })
        .transpose()?;
    let limit = match params.first("limit") {
        None => DEFAULT_PAGE,
        Some(limit) => limit
            .parse::<u16>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| validation("limit", "must be a whole number from 1 to 100"))?,
    };
    let after = params
        .first("cursor")
        .map(|cursor| Cursor::decode(cursor).map_err(|err| validation("cursor", &err.to_string())))
        .transpose()?;
    Ok(ListQuery { customer_id, status, limit, after })
}

/// The API over its ports: the event store of orders, their read models, the stock, and the closed sales windows.
#[derive(Debug, Clone)]
pub struct Api<O, V, S, A> {
    orders: O,
    views: V,
    stock: S,
    sales: A,
    /// The ISO 4217 code of the currency the catalogue prices in: every order placed here is in it.
    currency: String,
}

impl<O: OrderStore + EventLog, V: ViewStore, S: StockStore, A: WindowStore> Api<O, V, S, A> {
    pub fn new(orders: O, views: V, stock: S, sales: A, currency: impl Into<String>) -> Self {
        Self { orders, views, stock, sales, currency: currency.into() }
    }

    /// Answers one request. Never fails: every error is an HTTP response (and 5xx details are logged).
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let method = request.method().clone();
        let path = request_path(&request);
        let request_id = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
            _ => None,
        };
        let result = match (Principal::of(&request), route(&method, &path)) {
            (Err(err), _) | (_, Err(err)) => Err(err),
            _ if request.body().len() > MAX_BODY_BYTES => {
                Err(ApiError::PayloadTooLarge { bytes: request.body().len() })
            }
            (Ok(caller), Ok(route)) => self.dispatch(route, &caller, &request).await,
        };
        let response = result.unwrap_or_else(|err| {
            if err.status().is_server_error() {
                tracing::error!(request_id, %method, path, code = err.code(), error = %err, "request failed");
            } else {
                tracing::info!(request_id, %method, path, code = err.code(), error = %err, "request refused");
            }
            err.into_response()
        });
        tracing::info!(request_id, %method, path, status = response.status().as_u16(), "request");
        response
    }

    async fn dispatch(&self, route: Route, caller: &Principal, request: &Request) -> Result<Response<Body>, ApiError> {
        match route {
            Route::PlaceOrder => self.place_order(caller, request).await,
            Route::ListOrders => self.list_orders(caller, request).await,
            Route::GetOrder(id) => self.get_order(caller, &id).await,
            Route::GetOrderEvents(id) => self.get_order_events(caller, &id).await,
            Route::CancelOrder(id) => self.cancel_order(caller, &id).await,
            Route::PutStock(sku) => {
                caller.require_admin("PUT /inventory/{sku}")?;
                self.put_stock(&sku, request.body()).await
            }
            Route::GetStock(sku) => self.get_stock(&sku).await,
            Route::GetSales => {
                caller.require_admin("GET /analytics/sales")?;
                self.get_sales(request).await
            }
        }
    }

    async fn get_sales(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let params = request.query_string_parameters();
        let query = SalesQuery::parse(params.first("sku"), params.first("from"), params.first("to"))
            .map_err(ApiError::Validation)?;
        let windows = self.sales.closed_windows(&query.sku, query.from, query.to).await?;
        let windows = windows.into_iter().map(SalesWindow::from).collect();
        Ok(json_response(StatusCode::OK, &SalesWindows { windows }))
    }

    async fn place_order(&self, caller: &Principal, request: &Request) -> Result<Response<Body>, ApiError> {
        let place: PlaceOrder = parse_json(request.body())?;
        place.validate().map_err(ApiError::Validation)?;
        let order_id = Uuid::new_v4().to_string();
        let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
            None => None,
            Some(value) => {
                let key = value.to_str().ok().map(str::trim).filter(|key| {
                    !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
                });
                Some(key.ok_or_else(|| {
                    validation("Idempotency-Key", "must be 1 to 255 visible ASCII characters without spaces")
                })?)
            }
        };
        // Bound to the parsed request, so formatting and field order do not matter.
        let idempotency = key
            .map(|key| {
                let now = SystemTime::now();
                placement_record(&caller.id, key, &place, &order_id, now, IDEMPOTENCY_KEY_EXPIRES_AFTER)
            })
            .transpose()?;

        let customer_id = caller.id.clone();
        let placed = Envelope::new(
            order_id.clone(),
            OrderPlaced {
                order_id: order_id.clone(),
                customer_id: customer_id.clone(),
                lines: place.lines.clone(),
                currency: self.currency.clone(),
            },
        );

        let (order_id, status) = match self.orders.place(&placed, idempotency.as_ref()).await? {
            Placement::Placed => {
                tracing::info!(order_id, customer_id, "order placed");
                (order_id, OrderStatus::Pending)
            }
            Placement::Existing { order_id } => {
                // The same request again: answer as the first time, with the order's status as it is now.
                let status = self.orders.get(&order_id).await?.map_or(OrderStatus::Pending, |order| order.status);
                tracing::info!(order_id, "idempotent replay of a placed order");
                (order_id, status)
            }
            Placement::KeyReused { .. } => {
                return Err(ApiError::IdempotencyKeyReused { key: key.unwrap_or_default().to_owned() });
            }
        };
        let mut response =
            json_response(StatusCode::ACCEPTED, &Accepted { order_id: &order_id, status: status.public() });
        // A replayed order id comes from the table: refuse one that is not a header value rather than panic.
        let location = HeaderValue::from_str(&format!("/orders/{order_id}"))
            .map_err(|e| ApiError::Internal(format!("order id {order_id:?} is not a header value: {e}")))?;
        response.headers_mut().insert(LOCATION, location);
        Ok(response)
    }

    async fn get_order(&self, caller: &Principal, order_id: &str) -> Result<Response<Body>, ApiError> {
        match self.views.get(order_id).await? {
            Some(view) if caller.may_see(&view.customer_id) => Ok(json_response(StatusCode::OK, &view)),
            _ => Err(ApiError::NotFound(format!("order {order_id:?} not found"))),
        }
    }

    async fn list_orders(&self, caller: &Principal, request: &Request) -> Result<Response<Body>, ApiError> {
        let page = self.views.list(&list_query(request, caller)?).await?;
        let next_cursor = page.next.as_ref().map(Cursor::encode);
        Ok(json_response(StatusCode::OK, &OrderList { orders: page.views, next_cursor }))
    }

    async fn get_order_events(&self, caller: &Principal, order_id: &str) -> Result<Response<Body>, ApiError> {
        let events = self.orders.events(order_id).await?;
        let owner = match events.first() {
            Some(OrderEvent::Placed(placed)) => Some(placed.data.customer_id.as_str()),
            _ => None,
        };
        if !owner.is_some_and(|owner| caller.may_see(owner)) {
            return Err(ApiError::NotFound(format!("order {order_id:?} not found")));
        }
        Ok(json_response(StatusCode::OK, &OrderEvents { events: events.iter().map(OrderEvent::raw).collect() }))
    }

    /// The saga's own step ([`saga::apply`]): the order is cancelled only if no other writer made it final first,
    /// so a cancel racing the shipment has one winner. Its owner is read first: an order's owner never changes, so
    /// that read cannot race the step.
    async fn cancel_order(&self, caller: &Principal, order_id: &str) -> Result<Response<Body>, ApiError> {
        let owned = self.orders.get(order_id).await?.is_some_and(|order| caller.may_see(&order.customer_id));
        if !owned {
            return Err(ApiError::NotFound(format!("order {order_id:?} not found")));
        }
        let input = SagaInput::CancelRequested { order_id: order_id.to_owned(), now: OffsetDateTime::now_utc() };
        match saga::apply(&self.orders, &input).await {
            Ok(Applied::Advanced { status, .. }) => {
                tracing::info!(order_id, "order cancelled by its customer");
                Ok(json_response(StatusCode::ACCEPTED, &json!({"order_id": order_id, "status": status})))
            }
            Ok(Applied::Ignored { status: None, .. }) => {
                Err(ApiError::NotFound(format!("order {order_id:?} not found")))
            }
            Ok(Applied::Ignored { reason, status: Some(status) }) => {
                tracing::info!(order_id, reason, "cancel refused");
                Err(ApiError::NotCancellable { order_id: order_id.to_owned(), status: status.public().as_str() })
            }
            Err(ApplyError::Store(err)) => Err(err.into()),
            Err(err @ ApplyError::Contended { .. }) => Err(ApiError::Unavailable(err.to_string())),
            Err(err @ (ApplyError::NotYet(_) | ApplyError::Refused(_))) => {
                Err(ApiError::Internal(format!("a customer's cancel is never deferred or refused: {err}")))
            }
        }
    }

    async fn put_stock(&self, sku: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
        check_sku(sku)?;
        let restock: Restock = parse_json(body)?;
        restock.validate().map_err(ApiError::Validation)?;
        let stock = self.stock.restock(sku, &restock).await?;
        tracing::info!(sku, available = stock.available, price = %stock.price, "restocked");
        Ok(json_response(StatusCode::OK, &stock))
    }

    async fn get_stock(&self, sku: &str) -> Result<Response<Body>, ApiError> {
        check_sku(sku)?;
        match self.stock.get(sku).await? {
            Some(stock) => Ok(json_response(StatusCode::OK, &stock)),
            None => Err(ApiError::NotFound(format!("sku {sku:?} not found"))),
        }
    }
}

fn check_sku(sku: &str) -> Result<(), ApiError> {
    validate_sku(sku).map_err(ApiError::Validation)
}

#[cfg(test)]
mod tests {
    use orderflow_analytics_store::MemoryAnalytics;
    use orderflow_domain::analytics::SalesTotals;
    use orderflow_domain::events::{
        CANCELLED_BY_CUSTOMER, InventoryReleaseRequested, OrderCancelled, OrderConfirmed, OrderShipped,
        PaymentRequested,
    };
    use orderflow_domain::events::{OrderLine, SalesWindowClosed};
    use orderflow_domain::inventory::Stock;
    use orderflow_domain::order::Order;
    use orderflow_domain::order::{Deadlines, OrderEvent};
    use orderflow_order_views::InMemoryViews;
    use orderflow_orders_store::InMemoryOrders;
    use orderflow_test_support::Samples;
    use serde_json::Value;
    use time::format_description::well_known::Rfc3339;
    use time::macros::datetime;

    use super::*;
    use orderflow_inventory_store::MemoryInventory;

    const SAMPLES: Samples = Samples::of("orders-api");
    const PLACE_ORDER: &str = "place-order.json";
    const PLACE_ORDER_INVALID: &str = "place-order-invalid.json";
    const GET_ORDER: &str = "get-order.json";
    const PUT_INVENTORY: &str = "put-inventory.json";
    const GET_INVENTORY: &str = "get-inventory.json";
    const UNKNOWN_ROUTE: &str = "unknown-route.json";
    /// c-1's SHIPPED orders, two at a time.
    const LIST_ORDERS: &str = "list-orders.json";
    const GET_ORDER_EVENTS: &str = "get-order-events.json";
    const CANCEL_ORDER: &str = "cancel-order.json";
    /// SKU-1's closed windows from 10:00 to 11:00 on 2026-11-24.
    const GET_SALES: &str = "get-sales.json";
    /// The order get-order.json asks for.
    const SAMPLE_ORDER: &str = "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c13";

    struct World {
        orders: InMemoryOrders,
        views: InMemoryViews,
        stock: MemoryInventory,
        sales: MemoryAnalytics,
        api: Api<InMemoryOrders, InMemoryViews, MemoryInventory, MemoryAnalytics>,
    }

    impl World {
        fn new() -> Self {
            let orders = InMemoryOrders::new(Deadlines::from_seconds(60).unwrap());
            let (views, stock, sales) =
                (InMemoryViews::default(), MemoryInventory::default(), MemoryAnalytics::default());
            let api = Api::new(orders.clone(), views.clone(), stock.clone(), sales.clone(), "EUR");
            Self { api, orders, views, stock, sales }
        }

        /// Appends `events` to the order `order_id` as the saga would, and projects it as the stream would.
        async fn append(&self, order_id: &str, events: &[OrderEvent]) -> Order {
            let current = self.orders.get(order_id).await.unwrap();
            let order = self.orders.append(current.as_ref(), events).await.unwrap();
            self.project(order_id).await;
            order
        }

        /// What the order-views function does when the order's events reach it.
        async fn project(&self, order_id: &str) {
            orderflow_order_views::project(&self.orders, &self.views, order_id).await.unwrap();
        }

        /// Places an order of `customer_id` at `at` and projects it.
        async fn place_at(&self, order_id: &str, customer_id: &str, at: time::OffsetDateTime) {
            let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
            let mut placed = Envelope::new(
                order_id,
                OrderPlaced {
                    currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                    order_id: order_id.into(),
                    customer_id: customer_id.into(),
                    lines,
                },
            );
            placed.occurred_at = at;
            self.orders.place(&placed, None).await.unwrap();
            self.project(order_id).await;
        }

        /// `POST` of `path` without a body.
        async fn post(&self, path: &str) -> (StatusCode, Value) {
            self.call_at(GET_ORDER, "POST", path).await
        }

        /// `GET` of `path_and_query` by the sample's customer, `c-1`.
        async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
            self.get_as(path_and_query, Caller::Customer("c-1")).await
        }

        /// `GET` of `path_and_query` by `caller` (the get-order sample with another path, query and token).
        async fn get_as(&self, path_and_query: &str, caller: Caller) -> (StatusCode, Value) {
            let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
            let mut event: Value = acting_as(SAMPLES.event(GET_ORDER), caller);
            event["rawPath"] = json!(path);
            event["rawQueryString"] = json!(query);
            event["requestContext"]["http"]["path"] = json!(path);
            let mut params = serde_json::Map::new();
            for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                params.insert(name.to_owned(), json!(value));
            }
            event["queryStringParameters"] = Value::Object(params);
            self.send(event).await
        }

        async fn call(&self, sample: &str) -> (StatusCode, Value) {
            self.send(SAMPLES.event(sample)).await
        }

        async fn send(&self, event: Value) -> (StatusCode, Value) {
            let request = lambda_http::request::from_str(&event.to_string()).expect("an HTTP API v2 event");
            let response = self.api.handle(request).await;
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let body = serde_json::from_slice(response.body()).expect("the response body is JSON");
            (response.status(), body)
        }

        /// A sample with its body and/or Idempotency-Key replaced.
        async fn call_with(&self, sample: &str, body: Option<&str>, key: Option<&str>) -> (StatusCode, Value) {
            let mut event: Value = SAMPLES.event(sample);
            if let Some(body) = body {
                event["body"] = json!(body);
            }
            match key {
                Some(key) => event["headers"]["idempotency-key"] = json!(key),
                None => {
                    event["headers"].as_object_mut().unwrap().remove("idempotency-key");
                }
            }
            self.send(event).await
        }

        /// A sample with another method and path.
        async fn call_at(&self, sample: &str, method: &str, path: &str) -> (StatusCode, Value) {
            self.call_as(sample, method, path, Caller::Customer("c-1")).await
        }

        /// A sample with another method, path and caller.
        async fn call_as(&self, sample: &str, method: &str, path: &str, caller: Caller) -> (StatusCode, Value) {
            let mut event: Value = acting_as(SAMPLES.event(sample), caller);
            event["rawPath"] = json!(path);
            event["requestContext"]["http"]["method"] = json!(method);
            event["requestContext"]["http"]["path"] = json!(path);
            self.send(event).await
        }
    }

    /// Whose verified token a request carries.
    #[derive(Clone, Copy)]
    enum Caller {
        Customer(&'static str),
        Operator,
        /// None: the authorizer did not run (a route left open by mistake).
        Nobody,
    }

    /// `event` as a request of `caller`: the claims API Gateway's JWT authorizer passes.
    fn acting_as(mut event: Value, caller: Caller) -> Value {
        let (sub, scope) = match caller {
            Caller::Customer(sub) => (sub, "aws.cognito.signin.user.admin"),
            Caller::Operator => ("6q9r2s3t4u5v6w7x8y9z0a1b2c", ADMIN_SCOPE),
            Caller::Nobody => {
                event["requestContext"].as_object_mut().unwrap().remove("authorizer");
                return event;
            }
        };
        let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
        claims["sub"] = json!(sub);
        claims["scope"] = json!(scope);
        event
    }

    fn body_of(sample: &str) -> String {
        let event: Value = SAMPLES.event(sample);
        event["body"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn placing_an_order_writes_the_pending_order_and_order_placed_in_one_transaction() {
        let world = World::new();

        let (status, body) = world.call(PLACE_ORDER).await;

        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["status"], "PENDING");
        let order_id = body["order_id"].as_str().unwrap();
        Uuid::parse_str(order_id).expect("order ids are UUIDs");
        assert_eq!(world.orders.writes(), 1, "the event and the key commit together");
        let order = world.orders.get(order_id).await.unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.lines, vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }]);
        let outbox = world.orders.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!((outbox[0].source.as_str(), outbox[0].detail_type.as_str()), ("orderflow.orders", "OrderPlaced"));
        assert_eq!(outbox[0].partition, order_id);
        assert_eq!(order.version, 1, "the order is its one event");
        let detail: Value = serde_json::from_str(&outbox[0].detail).unwrap();
        assert_eq!(detail["version"], 2);
        assert_eq!(detail["correlation_id"], order_id);
        assert_eq!(
            detail["data"],
            json!({"order_id": order_id, "customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 2}],
                   "currency": "EUR"}),
            "in the store's currency"
        );
        assert_eq!(serde_json::to_value(&order.history[0]).unwrap()["at"], detail["occurred_at"]);
        let placed_at = time::OffsetDateTime::parse(detail["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(order.deadline_at, Some(Deadlines::from_seconds(60).unwrap().due(placed_at)), "PENDING a minute");
    }

    #[tokio::test]
    async fn the_same_idempotency_key_and_body_return_the_same_order_and_write_nothing() {
        let world = World::new();
        let (_, first) = world.call(PLACE_ORDER).await;
        // The same body, formatted differently and with the fields in another order.
        let same = r#"{ "lines": [ {"quantity": 2, "sku": "SKU-1"} ] }"#;

        let (status, again) = world.call_with(PLACE_ORDER, Some(same), Some("checkout-7f3a9c2e")).await;

        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(again["order_id"], first["order_id"]);
        assert_eq!(world.orders.writes(), 1);
        assert_eq!(world.orders.outbox().len(), 1, "OrderPlaced is emitted once");
    }

    #[tokio::test]
    async fn a_replay_points_to_the_first_order() {
        let world = World::new();
        let request = || lambda_http::request::from_str(&SAMPLES.event::<Value>(PLACE_ORDER).to_string()).unwrap();
        let first = world.api.handle(request()).await;
        let again = world.api.handle(request()).await;
        let order_id = world.orders.orders()[0].order_id.clone();
        assert_eq!(first.headers()[LOCATION], format!("/orders/{order_id}"));
        assert_eq!(again.headers()[LOCATION], first.headers()[LOCATION]);
    }

    #[test]
    fn a_body_that_does_not_serialize_is_answered_as_a_generic_500() {
        let not_json = std::collections::HashMap::from([((1, 2), "a map with non-string keys")]);
        let response = json_response(StatusCode::OK, &not_json);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body, json!({"error": "internal_error", "message": "internal server error"}));
    }

    #[tokio::test]
    async fn a_replay_reports_the_status_the_order_has_now() {
        let world = World::new();
        let (_, first) = world.call(PLACE_ORDER).await;
        let order = world.append(first["order_id"].as_str().unwrap(), &[payment_requested(&first)]).await;

        let (status, again) = world.call(PLACE_ORDER).await;

        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(again, json!({"order_id": order.order_id, "status": "RESERVED"}));
    }

    #[tokio::test]
    async fn an_order_releasing_its_stock_reads_and_replays_as_reserved() {
        let world = World::new();
        let (_, first) = world.call(PLACE_ORDER).await;
        let order_id = first["order_id"].as_str().unwrap();
        let release = InventoryReleaseRequested { order_id: order_id.into(), reason: "declined".into() };
        let order = world
            .append(
                order_id,
                &[payment_requested(&first), OrderEvent::ReleaseRequested(Envelope::new(order_id, release))],
            )
            .await;
        assert_eq!(order.status, OrderStatus::Releasing);

        let (_, again) = world.call(PLACE_ORDER).await;
        let (_, read) = world.call_at(GET_ORDER, "GET", &format!("/orders/{}", order.order_id)).await;

        assert_eq!(again, json!({"order_id": order.order_id, "status": "RESERVED"}));
        assert_eq!(read["status"], "RESERVED", "{read}");
    }

    #[tokio::test]
    async fn the_same_idempotency_key_with_another_body_is_refused_with_422() {
        let world = World::new();
        world.call(PLACE_ORDER).await;
        let other = r#"{"lines": [{"sku": "SKU-1", "quantity": 3}]}"#;

        let (status, body) = world.call_with(PLACE_ORDER, Some(other), Some("checkout-7f3a9c2e")).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"], "idempotency_key_reused");
        assert!(body["message"].as_str().unwrap().contains("checkout-7f3a9c2e"), "{body}");
        assert_eq!(world.orders.writes(), 1);
    }

    #[tokio::test]
    async fn without_an_idempotency_key_every_post_places_a_new_order() {
        let world = World::new();
        let (_, first) = world.call_with(PLACE_ORDER, None, None).await;
        let (_, second) = world.call_with(PLACE_ORDER, None, None).await;
        assert_ne!(first["order_id"], second["order_id"]);
        assert_eq!(world.orders.outbox().len(), 2);
    }

    #[tokio::test]
    async fn an_invalid_order_is_refused_naming_the_field_and_nothing_is_written() {
        let world = World::new();

        let (status, body) = world.call(PLACE_ORDER_INVALID).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "validation_failed", "message": "lines[1].quantity: must be between 1 and 10000"})
        );
        assert_eq!(world.orders.writes(), 0);
    }

    #[tokio::test]
    async fn bad_json_is_refused_with_the_field_and_position_from_the_parser() {
        let world = World::new();
        let cases = [
            ("", "the request body is empty: expected a JSON object"),
            ("{", "EOF while parsing an object at line 1 column 1"),
            ("{}", "missing field `lines` at line 1 column 2"),
            (r#"{"lines": [{"sku": "S", "quantity": "2"}]}"#, "lines[0].quantity: invalid type"),
            (r#"{"lines": [], "coupon": "X"}"#, "coupon: unknown field `coupon`"),
            (r#"{"lines": []} trailing"#, "trailing characters at line 1 column 15"),
        ];
        for (request, expected) in cases {
            let (status, body) = world.call_with(PLACE_ORDER, Some(request), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
            assert_eq!(body["error"], "invalid_json", "{request}");
            let message = body["message"].as_str().unwrap();
            assert!(message.starts_with(expected), "{request}: {message}");
        }
        assert_eq!(world.orders.writes(), 0);
    }

    #[tokio::test]
    async fn an_empty_idempotency_key_is_refused_naming_the_header() {
        let world = World::new();
        let (status, body) = world.call_with(PLACE_ORDER, Some(&body_of(PLACE_ORDER)), Some(" ")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().starts_with("Idempotency-Key: "), "{body}");
    }

    #[tokio::test]
    async fn an_order_reads_with_its_status_total_and_history() {
        let world = World::new();
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
        let mut placed = Envelope::new(
            SAMPLE_ORDER,
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: SAMPLE_ORDER.into(),
                customer_id: "c-1".into(),
                lines,
            },
        );
        placed.occurred_at = time::macros::datetime!(2026-11-24 10:00 UTC);
        world.orders.place(&placed, None).await.unwrap();
        let (status, _) = world.call(GET_ORDER).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "not yet projected");
        world.project(SAMPLE_ORDER).await;
        let (_, pending) = world.call(GET_ORDER).await;
        assert_eq!(pending["total"], Value::Null, "unknown until priced");
        let mut requested = payment_requested(&json!({"order_id": SAMPLE_ORDER}));
        if let OrderEvent::PaymentRequested(envelope) = &mut requested {
            envelope.occurred_at = time::macros::datetime!(2026-11-24 10:00:01 UTC);
        }
        world.append(SAMPLE_ORDER, &[requested]).await;

        let (status, body) = world.call(GET_ORDER).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({
                "order_id": SAMPLE_ORDER, "customer_id": "c-1", "status": "RESERVED",
                "lines": [{"sku": "SKU-1", "quantity": 2}], "currency": "USD", "total": "25.00",
                "history": [{"type": "OrderPlaced", "at": "2026-11-24T10:00:00Z"},
                            {"type": "PaymentRequested", "at": "2026-11-24T10:00:01Z"}],
                "version": 2, "placed_at": "2026-11-24T10:00:00Z"
            })
        );
    }

    /// The saga's payment request of 25.00 for the order a `POST /orders` answered with `placed`.
    fn payment_requested(placed: &Value) -> OrderEvent {
        let order_id = placed["order_id"].as_str().unwrap();
        let request =
            PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount: "25.00".parse().unwrap() };
        OrderEvent::PaymentRequested(Envelope::new(order_id, request))
    }

    #[tokio::test]
    async fn an_unknown_order_is_a_404_in_json() {
        let (status, body) = World::new().call(GET_ORDER).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");
        assert_eq!(body["message"], format!("order \"{SAMPLE_ORDER}\" not found"));
    }

    #[tokio::test]
    async fn restocking_sets_available_and_price_and_keeps_the_units_held_by_orders() {
        let world = World::new();
        let (status, body) = world.call(PUT_INVENTORY).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"sku": "SKU-1", "available": 10, "reserved": 0, "shipped": 0, "price": "12.50"}));

        let price = "12.50".parse().unwrap();
        world.stock.insert_stock(Stock { sku: "SKU-1".into(), available: 1, reserved: 4, shipped: 2, price });
        let (_, body) = world.call_with(PUT_INVENTORY, Some(r#"{"available": 7, "price": "9.99"}"#), None).await;
        assert_eq!(body, json!({"sku": "SKU-1", "available": 7, "reserved": 4, "shipped": 2, "price": "9.99"}));

        let (status, body) = world.call(GET_INVENTORY).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"sku": "SKU-1", "available": 7, "reserved": 4, "shipped": 2, "price": "9.99"}));
    }

    #[tokio::test]
    async fn a_bad_restock_is_refused_naming_the_field() {
        let world = World::new();
        let cases = [
            (r#"{"available": 10, "price": "12.505"}"#, "validation_failed", "price: must be a positive decimal"),
            (r#"{"available": 10, "price": "0"}"#, "validation_failed", "price: must be a positive decimal"),
            (r#"{"available": 10, "price": 12.5}"#, "invalid_json", "price: invalid type: floating point"),
            (r#"{"available": -1, "price": "1.00"}"#, "invalid_json", "available: invalid value: integer `-1`"),
            (r#"{"price": "1.00"}"#, "invalid_json", "missing field `available`"),
        ];
        for (request, code, expected) in cases {
            let (status, body) = world.call_with(PUT_INVENTORY, Some(request), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
            assert_eq!(body["error"], code, "{request}");
            assert!(body["message"].as_str().unwrap().starts_with(expected), "{request}: {body}");
        }
        assert_eq!(world.call(GET_INVENTORY).await.0, StatusCode::NOT_FOUND, "nothing was written");
    }

    #[tokio::test]
    async fn an_unknown_sku_is_a_404() {
        let (status, body) = World::new().call(GET_INVENTORY).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"error": "not_found", "message": "sku \"SKU-1\" not found"}));
    }

    #[tokio::test]
    async fn an_unknown_route_is_a_404_and_a_wrong_method_a_405() {
        let world = World::new();
        let (status, body) = world.call(UNKNOWN_ROUTE).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"error": "not_found", "message": "no route for GET /customers/c-1"}));

        let (status, body) = world.call_at(GET_ORDER, "DELETE", "/orders/o-1").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"], "method_not_allowed");
        let (status, _) = world.call_at(GET_ORDER, "DELETE", "/orders").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = world.call_at(GET_ORDER, "POST", "/orders/o-1/events").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = world.call_at(GET_ORDER, "GET", "/orders/o-1/lines").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_405_names_the_allowed_methods() {
        let world = World::new();
        let mut event: Value = SAMPLES.event(GET_INVENTORY);
        event["requestContext"]["http"]["method"] = json!("POST");
        let response = world.api.handle(lambda_http::request::from_str(&event.to_string()).unwrap()).await;
        assert_eq!(response.headers()[ALLOW], "GET, PUT");
    }

    #[tokio::test]
    async fn path_segments_are_percent_decoded_and_a_named_stage_is_stripped() {
        let world = World::new();
        world.call_with(PUT_INVENTORY, None, None).await;
        let (status, _) = world.call_at(GET_INVENTORY, "GET", "/inventory/SKU%2D1").await;
        assert_eq!(status, StatusCode::OK);

        let mut event: Value = SAMPLES.event(GET_INVENTORY);
        event["rawPath"] = json!("/dev/inventory/SKU-1");
        event["requestContext"]["stage"] = json!("dev");
        let (status, body) = world.send(event).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn a_store_failure_is_a_generic_5xx_whose_details_stay_in_the_logs() {
        let world = World::new();
        world.orders.fail_next(StoreError::Table(orderflow_aws::StoreError::Corrupt(
            "item attribute order: is missing".into(),
        )));
        let (status, body) = world.get(&format!("/orders/{SAMPLE_ORDER}/events")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({"error": "internal_error", "message": "internal server error"}));

        world.orders.fail_next(StoreError::Table(orderflow_aws::StoreError::Transient(
            "ProvisionedThroughputExceededException: slow down".into(),
        )));
        let (status, body) = world.call(PLACE_ORDER).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"error": "service_unavailable", "message": "the service is busy, retry later"}));
        assert_eq!(world.orders.writes(), 0);
    }

    #[tokio::test]
    async fn a_request_the_table_calls_invalid_is_a_400_never_retried_not_a_503() {
        let world = World::new();
        let invalid = orderflow_aws::StoreError::Permanent("ValidationException: one or more parameters".into());
        world.orders.fail_next(StoreError::Table(invalid));
        let (status, body) = world.get(&format!("/orders/{SAMPLE_ORDER}/events")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_request", "{body}");
    }

    #[tokio::test]
    async fn a_request_without_a_verified_token_is_a_401_and_reads_nothing() {
        let world = World::new();
        world.place_at(SAMPLE_ORDER, "c-1", time::macros::datetime!(2026-12-03 10:00 UTC)).await;
        for (method, path) in [("GET", format!("/orders/{SAMPLE_ORDER}")), ("POST", "/orders".to_owned())] {
            let (status, body) = world.call_as(GET_ORDER, method, &path, Caller::Nobody).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["error"], "unauthorized");
        }
    }

    #[tokio::test]
    async fn another_customers_order_is_a_404_on_every_route_and_an_operator_sees_it() {
        let world = World::new();
        world.place_at(SAMPLE_ORDER, "c-1", time::macros::datetime!(2026-12-03 10:00 UTC)).await;
        for (method, path) in [
            ("GET", format!("/orders/{SAMPLE_ORDER}")),
            ("GET", format!("/orders/{SAMPLE_ORDER}/events")),
            ("POST", format!("/orders/{SAMPLE_ORDER}/cancel")),
        ] {
            let (status, body) = world.call_as(GET_ORDER, method, &path, Caller::Customer("c-2")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
            assert_eq!(body["error"], "not_found");
        }
        let (status, list) = world.get_as("/orders", Caller::Customer("c-2")).await;
        assert_eq!((status, list["orders"].clone()), (StatusCode::OK, json!([])), "c-2 lists only their own");
        assert_eq!(world.orders.get(SAMPLE_ORDER).await.unwrap().unwrap().status, OrderStatus::Pending);

        let (status, view) = world.get_as(&format!("/orders/{SAMPLE_ORDER}"), Caller::Operator).await;
        assert_eq!((status, view["customer_id"].as_str()), (StatusCode::OK, Some("c-1")));
    }

    #[tokio::test]
    async fn a_customer_on_an_operator_route_is_a_403_and_writes_nothing() {
        let world = World::new();
        let (status, body) = world.call_as(PUT_INVENTORY, "PUT", "/inventory/SKU-1", Caller::Customer("c-1")).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{body}");
        assert_eq!(world.call(GET_INVENTORY).await.0, StatusCode::NOT_FOUND, "nothing was written");
        let (status, _) = world.get_as("/analytics/sales?sku=SKU-1", Caller::Customer("c-1")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_customer_is_the_token_subject_and_idempotency_keys_are_each_callers_own() {
        let world = World::new();
        let (_, mine) = world.call(PLACE_ORDER).await;
        let order_id = mine["order_id"].as_str().unwrap();
        assert_eq!(world.orders.get(order_id).await.unwrap().unwrap().customer_id, "c-1");

        // c-2 sends the same key and body: a new order of c-2's, not c-1's replayed.
        let theirs = world.send(acting_as(SAMPLES.event(PLACE_ORDER), Caller::Customer("c-2"))).await.1;
        let their_id = theirs["order_id"].as_str().unwrap();
        assert_ne!(their_id, order_id);
        assert_eq!(world.orders.get(their_id).await.unwrap().unwrap().customer_id, "c-2");

        let named = r#"{"customer_id": "c-9", "lines": [{"sku": "SKU-1", "quantity": 1}]}"#;
        let (status, body) = world.call_with(PLACE_ORDER, Some(named), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a body cannot name the customer: {body}");
        assert!(body["message"].as_str().unwrap().contains("customer_id"), "{body}");
    }

    #[tokio::test]
    async fn each_bound_of_a_request_is_its_4xx_naming_the_field() {
        let world = World::new();
        let line = r#"{"sku": "SKU-1", "quantity": 1}"#;
        let too_many_lines = format!(r#"{{"lines": [{}]}}"#, vec![line; 51].join(","));
        let long_sku = format!(r#"{{"lines": [{{"sku": "{}", "quantity": 1}}]}}"#, "S".repeat(129));
        for (body, field) in [
            (too_many_lines.as_str(), "lines"),
            (r#"{"lines": [{"sku": "SKU-1", "quantity": 10001}]}"#, "lines[0].quantity"),
            (r#"{"lines": [{"sku": "SKU 1", "quantity": 1}]}"#, "lines[0].sku"),
            (long_sku.as_str(), "lines[0].sku"),
        ] {
            let (status, response) = world.call_with(PLACE_ORDER, Some(body), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {response}");
            assert!(response["message"].as_str().unwrap().starts_with(field), "{field}: {response}");
        }
        let huge = format!(r#"{{"lines": [{line}], "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let (status, response) = world.call_with(PLACE_ORDER, Some(&huge), None).await;
        assert_eq!((status, response["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
        assert!(response["message"].as_str().unwrap().starts_with("body"), "{response}");
        let long_key = "k".repeat(256);
        let one_line = format!(r#"{{"lines": [{line}]}}"#);
        let (status, response) = world.call_with(PLACE_ORDER, Some(&one_line), Some(&long_key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(response["message"].as_str().unwrap().starts_with("Idempotency-Key"), "{response}");

        for price in ["0.00", "1000000.01", "1.001"] {
            let body = format!(r#"{{"available": 1, "price": "{price}"}}"#);
            let mut event = acting_as(SAMPLES.event(PUT_INVENTORY), Caller::Operator);
            event["body"] = json!(body);
            let (status, response) = world.send(event).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{price}: {response}");
            assert!(response["message"].as_str().unwrap().starts_with("price"), "{price}: {response}");
        }
        let long_sku_path = format!("/inventory/{}", "S".repeat(129));
        for path in [long_sku_path.as_str(), "/inventory/SKU%201", "/inventory/%FF"] {
            let (status, response) = world.call_at(GET_INVENTORY, "GET", path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {response}");
            let field = if path.ends_with("%FF") { "path" } else { "sku" };
            assert!(response["message"].as_str().unwrap().starts_with(field), "{path}: {response}");
        }
        for malformed in ["/orders/not%20an%20order", "/orders/%C3%A9t%C3%A9"] {
            let (status, _) = world.get(malformed).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{malformed}: a malformed order id names no order");
        }
        let (status, _) = world.get(&format!("/orders/{}", "a".repeat(65))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_customers_orders_list_newest_first_page_by_page_and_by_status() {
        let world = World::new();
        let at = time::macros::datetime!(2026-12-03 10:00 UTC);
        for i in 0..5 {
            world.place_at(&format!("o-{i}"), "c-1", at + time::Duration::minutes(i)).await;
        }
        world.place_at("o-other", "c-2", at).await;
        let cancelled = OrderCancelled { order_id: "o-3".into(), customer_id: "c-1".into(), reason: "customer".into() };
        world.append("o-3", &[OrderEvent::Cancelled(Envelope::new("o-3", cancelled))]).await;

        let (status, first) = world.get("/orders?limit=2").await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(ids(&first), ["o-4", "o-3"]);
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let (_, second) = world.get(&format!("/orders?limit=2&cursor={cursor}")).await;
        assert_eq!(ids(&second), ["o-2", "o-1"]);
        let cursor = second["next_cursor"].as_str().unwrap();
        let (_, last) = world.get(&format!("/orders?limit=2&cursor={cursor}")).await;
        assert_eq!((ids(&last), &last["next_cursor"]), (vec!["o-0".to_owned()], &Value::Null));

        let (_, pending) = world.get("/orders?status=PENDING").await;
        assert_eq!(ids(&pending), ["o-4", "o-2", "o-1", "o-0"]);
        let (_, cancelled) = world.get("/orders?status=CANCELLED").await;
        assert_eq!(ids(&cancelled), ["o-3"]);
        assert_eq!(cancelled["orders"][0]["history"][1]["type"], "OrderCancelled");
    }

    fn ids(page: &Value) -> Vec<String> {
        page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test]
    async fn a_bad_list_query_is_a_400_naming_the_parameter() {
        let world = World::new();
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=ten", "limit"),
            ("status=RELEASING", "status"),
            ("status=shipped", "status"),
            ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ] {
            let (status, body) = world.get(&format!("/orders?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"], "validation_failed", "{query}");
            assert!(body["message"].as_str().unwrap().starts_with(field), "{query}: {body}");
        }
    }

    #[tokio::test]
    async fn an_orders_events_are_its_envelopes_in_order_and_an_unknown_order_has_none() {
        let world = World::new();
        world
            .place_at("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", "c-1", time::macros::datetime!(2026-12-03 10:00 UTC))
            .await;
        let requested = payment_requested(&json!({"order_id": "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14"}));
        world.append("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", std::slice::from_ref(&requested)).await;

        let (status, body) = world.get("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14/events").await;

        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().unwrap();
        let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["OrderPlaced", "PaymentRequested"]);
        assert_eq!(events[1]["id"], requested.id().to_string());
        assert_eq!(events[1]["data"]["amount"], "25.00");
        let (status, body) = world.get("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7cff/events").await;
        assert_eq!((status, &body["error"]), (StatusCode::NOT_FOUND, &json!("not_found")));
    }

    #[tokio::test]
    async fn a_customer_cancels_an_order_before_it_ships_and_it_ends_cancelled_for_reason_customer() {
        let world = World::new();
        world
            .place_at("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", "c-1", time::macros::datetime!(2026-12-03 10:00 UTC))
            .await;
        world
            .append(
                "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14",
                &[payment_requested(&json!({"order_id": "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14"}))],
            )
            .await;

        let (status, body) = world.post("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14/cancel").await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body, json!({"order_id": "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", "status": "CANCELLED"}));
        let events = world.orders.events("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14").await.unwrap();
        let Some(OrderEvent::Cancelled(cancelled)) = events.last() else { panic!("{events:?}") };
        assert_eq!(cancelled.data.reason, CANCELLED_BY_CUSTOMER);
        assert_eq!(events.len(), 3, "appended after the order's two events");
        let (status, again) = world.post("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14/cancel").await;
        assert_eq!((status, &again["error"]), (StatusCode::CONFLICT, &json!("not_cancellable")), "once final");
        assert_eq!(
            again["message"],
            "order 5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14 is CANCELLED: it can no longer be cancelled"
        );
    }

    #[tokio::test]
    async fn a_shipped_order_cannot_be_cancelled_and_an_unknown_one_is_a_404() {
        let world = World::new();
        world
            .place_at("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", "c-1", time::macros::datetime!(2026-12-03 10:00 UTC))
            .await;
        let confirmed = OrderConfirmed {
            order_id: "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14".into(),
            customer_id: "c-1".into(),
            total: "25.00".parse().unwrap(),
        };
        let shipped = OrderShipped {
            order_id: "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14".into(),
            customer_id: "c-1".into(),
            shipment_id: "s-1".into(),
            lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }],
        };
        let requested = payment_requested(&json!({"order_id": "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14"}));
        let (confirmed, shipped) = (
            Envelope::new("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", confirmed),
            Envelope::new("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14", shipped),
        );
        world
            .append(
                "5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14",
                &[requested, OrderEvent::Confirmed(confirmed), OrderEvent::Shipped(shipped)],
            )
            .await;

        let (status, body) = world.post("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14/cancel").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            body["message"],
            "order 5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14 is SHIPPED: it can no longer be cancelled"
        );
        assert_eq!(
            world.orders.events("5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14").await.unwrap().len(),
            4,
            "nothing appended"
        );

        let (status, body) = world.post("/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7cff/cancel").await;
        assert_eq!((status, &body["error"]), (StatusCode::NOT_FOUND, &json!("not_found")));
        let (status, _) = world.call_at(GET_ORDER, "GET", "/orders/5d8c2a1e-7b4f-4c3a-9e21-0f6b8d4a7c14/cancel").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn the_sample_requests_of_the_order_routes_answer_as_documented() {
        let world = World::new();
        world.place_at(SAMPLE_ORDER, "c-1", time::macros::datetime!(2026-12-03 10:00 UTC)).await;

        let (status, list) = world.call(LIST_ORDERS).await;
        assert_eq!((status, list), (StatusCode::OK, json!({"orders": [], "next_cursor": null})), "none SHIPPED yet");
        let (status, events) = world.call(GET_ORDER_EVENTS).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(events["events"][0]["data"]["order_id"], SAMPLE_ORDER);
        let (status, cancelled) = world.call(CANCEL_ORDER).await;
        assert_eq!(
            (status, cancelled),
            (StatusCode::ACCEPTED, json!({"order_id": SAMPLE_ORDER, "status": "CANCELLED"}))
        );
    }

    /// Publishes a closed window of `sku` at `start` as sales-windows does.
    async fn close_window(world: &World, sku: &str, start: OffsetDateTime, units: i64, revenue: &str) {
        let window = PublishedWindow {
            sku: sku.into(),
            window_start: start,
            window_end: start + time::Duration::minutes(1),
            totals: SalesTotals { units, revenue: revenue.parse().unwrap() },
            revision: 0,
        };
        let closed = SalesWindowClosed {
            sku: sku.into(),
            window_start: start,
            window_end: window.window_end,
            units,
            revenue: window.totals.revenue,
        };
        let event = orderflow_toolkit::OutboxRecord::new(&Envelope::new("test", closed));
        assert!(world.sales.publish(&window, None, &event).await.unwrap());
    }

    #[tokio::test]
    async fn the_closed_sales_windows_of_a_sku_in_a_range_are_served_in_order() {
        let world = World::new();
        close_window(&world, "SKU-1", datetime!(2026-11-24 10:01 UTC), 1, "12.50").await;
        close_window(&world, "SKU-1", datetime!(2026-11-24 10:00 UTC), 3, "37.50").await;
        close_window(&world, "SKU-1", datetime!(2026-11-24 11:00 UTC), 9, "1.00").await;
        close_window(&world, "SKU-2", datetime!(2026-11-24 10:00 UTC), 9, "1.00").await;

        let (status, body) = world.call(GET_SALES).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"windows": [
                {"sku": "SKU-1", "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T10:01:00Z", "units": 3, "revenue": "37.50"},
                {"sku": "SKU-1", "start": "2026-11-24T10:01:00Z", "end": "2026-11-24T10:02:00Z", "units": 1, "revenue": "12.50"},
            ]})
        );
    }

    #[tokio::test]
    async fn a_bad_sales_query_is_a_400_naming_the_parameter() {
        let world = World::new();
        for (query, field) in [
            ("from=2026-11-24T10:00:00Z&to=2026-11-24T11:00:00Z", "sku"),
            ("sku=SKU-1&from=today&to=2026-11-24T11:00:00Z", "from"),
            ("sku=SKU-1&from=2026-11-24T10:00:00Z&to=2026-12-31T11:00:00Z", "to"),
        ] {
            let (status, body) = world.get_as(&format!("/analytics/sales?{query}"), Caller::Operator).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(body["error"], "validation_failed");
            assert!(body["message"].as_str().unwrap().starts_with(field), "{query}: {body}");
        }
    }
}
