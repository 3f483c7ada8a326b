//! A simulated payment provider over HTTP, for the local cloud: deterministic, in memory, and idempotent by
//! payment id. Faults are not its business: the local cloud injects them on the wire, in front of it.
//!
//! ```text
//! POST /v1/authorizations              {"payment_id", "order_id", "customer_id", "amount": "12.50"}
//!      -> 200 {"payment_id", "status": "authorized" | "declined" | "voided", "reason" (declined only)}
//!         declined when the amount exceeds the customer's limit; the same payment id with the same terms
//!         answers the stored status (no second authorization); with other terms -> 409
//! POST /v1/authorizations/{id}/void    -> 200 {"payment_id", "status": "voided", "voided_authorization"}
//!         idempotent; an unknown id is recorded as voided, so a later authorize of it authorizes nothing
//! GET  /v1/authorizations/{id}         -> 200 {"payment_id", "status", ..., "authorize_calls", "void_calls"}, 404
//! GET  /v1/stats                       -> 200 {"authorize_calls", "authorizations", "declines", "voids",
//!                                              "void_calls", "duplicate_calls"}
//! ```
//!
//! Errors are `{"error": "<code>", "message": "<what is wrong, naming the field>"}` with a 4xx status; request
//! bodies are limited to [`BODY_LIMIT_BYTES`].
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orderflow_domain::Decimal;
use orderflow_domain::payment::{PaymentDecision, decide};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

/// The largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// The most decimal places an amount may have (cents).
const AMOUNT_MAX_DECIMALS: u32 = 2;

/// Counts of the calls the provider received and the effects they had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Valid authorize requests, whatever their answer.
    pub authorize_calls: u64,
    /// Authorizations made: at most one per payment id.
    pub authorizations: u64,
    /// Authorizations declined: at most one per payment id.
    pub declines: u64,
    /// Payment ids voided: at most one per payment id (an authorization, a decline or an unknown id).
    pub voids: u64,
    /// Void requests, whatever their answer.
    pub void_calls: u64,
    /// Authorize requests repeating the terms of a known payment id, answered with its stored status.
    pub duplicate_calls: u64,
}

/// What a payment is charged for; a payment id is bound to one set of terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Terms {
    order_id: String,
    customer_id: String,
    amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Authorized,
    Declined {
        reason: String,
    },
    /// `voided_authorization`: an authorization existed when it was voided.
    Voided {
        voided_authorization: bool,
    },
}

impl Status {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Declined { .. } => "declined",
            Self::Voided { .. } => "voided",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Self::Declined { reason } => Some(reason),
            Self::Authorized | Self::Voided { .. } => None,
        }
    }
}

#[derive(Debug)]
struct Payment {
    /// `None` while only a void has been seen.
    terms: Option<Terms>,
    status: Status,
    authorize_calls: u64,
    void_calls: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    payments: HashMap<String, Payment>,
    stats: Stats,
}

/// The provider's state: the customer limit and every payment id it has seen.
#[derive(Debug)]
struct Provider {
    customer_limit: Decimal,
    ledger: Mutex<Ledger>,
}

impl Provider {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Every critical section leaves the ledger consistent, so a poisoned lock still holds a usable one.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorize(&self, payment_id: &str, terms: Terms) -> Result<Status, ApiError> {
        let mut ledger = self.lock();
        let ledger = &mut *ledger;
        ledger.stats.authorize_calls = ledger.stats.authorize_calls.saturating_add(1);
        let Some(payment) = ledger.payments.get_mut(payment_id) else {
            let status = match decide(terms.amount, self.customer_limit) {
                PaymentDecision::Authorized => {
                    ledger.stats.authorizations = ledger.stats.authorizations.saturating_add(1);
                    Status::Authorized
                }
                PaymentDecision::Declined { reason } => {
                    ledger.stats.declines = ledger.stats.declines.saturating_add(1);
                    Status::Declined { reason }
                }
            };
            let payment = Payment { terms: Some(terms), status: status.clone(), authorize_calls: 1, void_calls: 0 };
            ledger.payments.insert(payment_id.to_owned(), payment);
            return Ok(status);
        };
        payment.authorize_calls = payment.authorize_calls.saturating_add(1);
        match &payment.terms {
            Some(known) if *known == terms => {
                ledger.stats.duplicate_calls = ledger.stats.duplicate_calls.saturating_add(1);
            }
            Some(known) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "payment_id {payment_id} is already used for order {}, customer {}, amount {}",
                        known.order_id, known.customer_id, known.amount
                    ),
                ));
            }
            // Voided before it was authorized: bind the terms, authorize nothing.
            None => payment.terms = Some(terms),
        }
        Ok(payment.status.clone())
    }

    /// Voids the payment id; whether an authorization was voided (now or by an earlier void).
    fn void(&self, payment_id: &str) -> bool {
        let mut ledger = self.lock();
        let Ledger { payments, stats } = &mut *ledger;
        stats.void_calls = stats.void_calls.saturating_add(1);
        let Some(payment) = payments.get_mut(payment_id) else {
            // A tombstone: an authorize arriving after this void finds it and authorizes nothing.
            let status = Status::Voided { voided_authorization: false };
            payments.insert(payment_id.to_owned(), Payment { terms: None, status, authorize_calls: 0, void_calls: 1 });
            stats.voids = stats.voids.saturating_add(1);
            return false;
        };
        payment.void_calls = payment.void_calls.saturating_add(1);
        if let Status::Voided { voided_authorization } = payment.status {
            return voided_authorization;
        }
        let voided_authorization = payment.status == Status::Authorized;
        payment.status = Status::Voided { voided_authorization };
        stats.voids = stats.voids.saturating_add(1);
        voided_authorization
    }
}

/// An error answer: `{"error": code, "message": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

/// The body of an authorize request as sent; the amount is a decimal string.
#[derive(Debug, Deserialize)]
struct AuthorizeRequest {
    payment_id: String,
    order_id: String,
    customer_id: String,
    amount: String,
}

fn non_empty(field: &str, value: String) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    Ok(value)
}

fn parse_amount(text: &str) -> Result<Decimal, ApiError> {
    let amount: Decimal =
        text.parse().map_err(|_| ApiError::invalid(format!("amount: {text:?} is not a decimal number")))?;
    if amount <= Decimal::ZERO {
        return Err(ApiError::invalid(format!("amount: {text} must be positive")));
    }
    if amount.normalize().scale() > AMOUNT_MAX_DECIMALS {
        return Err(ApiError::invalid(format!("amount: {text} has more than {AMOUNT_MAX_DECIMALS} decimal places")));
    }
    Ok(amount)
}

/// Parses a JSON body; the message names the field that is missing or wrong.
fn parse_authorize(body: Result<Bytes, BytesRejection>) -> Result<(String, Terms), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds {BODY_LIMIT_BYTES} bytes"),
            )
        } else {
            ApiError::invalid(format!("the request body cannot be read: {rejection}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json("the request body is empty: expected a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let request: AuthorizeRequest = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // A missing field is reported at its parent (`.`); serde's message names it.
        ApiError::invalid_json(if path == "." { inner.to_string() } else { format!("{path}: {inner}") })
    })?;
    deserializer.end().map_err(|err| ApiError::invalid_json(format!("after the JSON object: {err}")))?;
    let terms = Terms {
        order_id: non_empty("order_id", request.order_id)?,
        customer_id: non_empty("customer_id", request.customer_id)?,
        amount: parse_amount(&request.amount)?,
    };
    Ok((non_empty("payment_id", request.payment_id)?, terms))
}

async fn authorize(
    State(provider): State<Arc<Provider>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (payment_id, terms) = parse_authorize(body)?;
    let status = provider.authorize(&payment_id, terms)?;
    let mut answer = json!({"payment_id": payment_id, "status": status.as_str()});
    if let Some(reason) = status.reason() {
        answer["reason"] = json!(reason);
    }
    Ok(Json(answer))
}

async fn void(State(provider): State<Arc<Provider>>, Path(payment_id): Path<String>) -> Json<serde_json::Value> {
    let voided_authorization = provider.void(&payment_id);
    Json(json!({"payment_id": payment_id, "status": "voided", "voided_authorization": voided_authorization}))
}

async fn payment(
    State(provider): State<Arc<Provider>>,
    Path(payment_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ledger = provider.lock();
    let payment = ledger.payments.get(&payment_id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("payment_id {payment_id} is not known"))
    })?;
    let mut answer = json!({"payment_id": payment_id, "status": payment.status.as_str(),
                            "authorize_calls": payment.authorize_calls, "void_calls": payment.void_calls});
    if let Some(terms) = &payment.terms {
        answer["order_id"] = json!(terms.order_id);
        answer["customer_id"] = json!(terms.customer_id);
        answer["amount"] = json!(terms.amount.to_string());
    }
    if let Some(reason) = payment.status.reason() {
        answer["reason"] = json!(reason);
    }
    if let Status::Voided { voided_authorization } = payment.status {
        answer["voided_authorization"] = json!(voided_authorization);
    }
    Ok(Json(answer))
}

async fn stats(State(provider): State<Arc<Provider>>) -> Json<Stats> {
    Json(provider.lock().stats)
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The provider's HTTP API, declining amounts above `customer_limit`, with empty state.
pub fn router(customer_limit: Decimal) -> Router {
    let provider = Arc::new(Provider { customer_limit, ledger: Mutex::default() });
    Router::new()
        .route("/v1/authorizations", post(authorize))
        .route("/v1/authorizations/{payment_id}", get(payment))
        .route("/v1/authorizations/{payment_id}/void", post(void))
        .route("/v1/stats", get(stats))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(provider)
}

/// Serves the provider on `listener` until `shutdown` completes (in-flight requests are finished first).
pub async fn serve(
    listener: TcpListener,
    customer_limit: Decimal,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(customer_limit)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use orderflow_domain::payment::default_customer_limit;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use super::*;

    async fn call(app: &Router, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(body.into()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON body: {bytes:?}")))
    }

    async fn authorize(app: &Router, body: Value) -> (StatusCode, Value) {
        call(app, "POST", "/v1/authorizations", body.to_string()).await
    }

    fn terms(payment_id: &str, amount: &str) -> Value {
        json!({"payment_id": payment_id, "order_id": "o-1", "customer_id": "c-1", "amount": amount})
    }

    async fn stats(app: &Router) -> Stats {
        serde_json::from_value(call(app, "GET", "/v1/stats", Body::empty()).await.1).unwrap()
    }

    #[tokio::test]
    async fn an_amount_within_the_limit_is_authorized_and_one_above_is_declined_with_the_reason() {
        let app = router(default_customer_limit());

        let (status, authorized) = authorize(&app, terms("pay-1", "10000.00")).await;
        let (_, declined) = authorize(&app, terms("pay-2", "10000.01")).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(authorized, json!({"payment_id": "pay-1", "status": "authorized"}));
        assert_eq!(
            declined,
            json!({"payment_id": "pay-2", "status": "declined",
                   "reason": "amount 10000.01 exceeds the customer's limit 10000.00"})
        );
        assert_eq!(stats(&app).await, Stats { authorize_calls: 2, authorizations: 1, declines: 1, ..Stats::default() });
    }

    #[tokio::test]
    async fn the_customer_limit_is_the_configured_one() {
        let app = router("5.00".parse().unwrap());

        let (_, declined) = authorize(&app, terms("pay-1", "5.01")).await;

        assert_eq!(declined["reason"], "amount 5.01 exceeds the customer's limit 5.00");
    }

    #[tokio::test]
    async fn the_same_payment_id_and_terms_answer_the_stored_decision_without_authorizing_twice() {
        let app = router(default_customer_limit());
        authorize(&app, terms("pay-1", "12.50")).await;

        let (status, again) = authorize(&app, terms("pay-1", "12.500")).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["status"], "authorized");
        let stats = stats(&app).await;
        assert_eq!((stats.authorize_calls, stats.authorizations, stats.duplicate_calls), (2, 1, 1));
        let (_, payment) = call(&app, "GET", "/v1/authorizations/pay-1", Body::empty()).await;
        assert_eq!(payment["authorize_calls"], 2);
        assert_eq!(payment["amount"], "12.50");
    }

    #[tokio::test]
    async fn a_known_payment_id_with_other_terms_is_a_conflict() {
        let app = router(default_customer_limit());
        authorize(&app, terms("pay-1", "12.50")).await;

        let (status, error) = authorize(&app, terms("pay-1", "13.00")).await;

        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error["error"], "conflict");
        assert_eq!(error["message"], "payment_id pay-1 is already used for order o-1, customer c-1, amount 12.50");
        assert_eq!(stats(&app).await.authorizations, 1);
    }

    #[tokio::test]
    async fn voiding_an_authorization_is_idempotent_and_counted_once() {
        let app = router(default_customer_limit());
        authorize(&app, terms("pay-1", "12.50")).await;

        let (status, first) = call(&app, "POST", "/v1/authorizations/pay-1/void", Body::empty()).await;
        let (_, second) = call(&app, "POST", "/v1/authorizations/pay-1/void", Body::empty()).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(first, json!({"payment_id": "pay-1", "status": "voided", "voided_authorization": true}));
        assert_eq!(second, first);
        let stats = stats(&app).await;
        assert_eq!((stats.voids, stats.void_calls), (1, 2));
        let (_, again) = authorize(&app, terms("pay-1", "12.50")).await;
        assert_eq!(again["status"], "voided", "a voided authorization stays voided");
    }

    #[tokio::test]
    async fn a_void_before_the_authorize_leaves_a_tombstone_so_the_late_authorize_authorizes_nothing() {
        let app = router(default_customer_limit());

        let (status, voided) = call(&app, "POST", "/v1/authorizations/pay-1/void", Body::empty()).await;
        let (late_status, late) = authorize(&app, terms("pay-1", "12.50")).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(voided, json!({"payment_id": "pay-1", "status": "voided", "voided_authorization": false}));
        assert_eq!(late_status, StatusCode::OK);
        assert_eq!(late, json!({"payment_id": "pay-1", "status": "voided"}));
        let stats = stats(&app).await;
        assert_eq!((stats.authorizations, stats.declines, stats.voids), (0, 0, 1));
        let (conflict, _) = authorize(&app, terms("pay-1", "99.00")).await;
        assert_eq!(conflict, StatusCode::CONFLICT, "the late authorize bound the terms");
    }

    #[tokio::test]
    async fn an_unknown_payment_id_is_not_found_and_a_known_one_shows_its_status() {
        let app = router(default_customer_limit());
        authorize(&app, terms("pay-2", "20000.00")).await;

        let (missing, error) = call(&app, "GET", "/v1/authorizations/pay-1", Body::empty()).await;
        let (found, payment) = call(&app, "GET", "/v1/authorizations/pay-2", Body::empty()).await;

        assert_eq!(missing, StatusCode::NOT_FOUND);
        assert_eq!(error, json!({"error": "not_found", "message": "payment_id pay-1 is not known"}));
        assert_eq!(found, StatusCode::OK);
        assert_eq!(payment["status"], "declined");
        assert_eq!(payment["order_id"], "o-1");
        assert_eq!(payment["void_calls"], 0);
    }

    #[tokio::test]
    async fn bad_requests_are_400s_naming_the_field() {
        let app = router(default_customer_limit());
        let cases = [
            ("{\"payment_id\": \"p\", \"order_id\": \"o\", \"customer_id\": \"c\"}", "missing field `amount`"),
            (
                "{\"payment_id\": \"p\", \"order_id\": \"o\", \"customer_id\": \"c\", \"amount\": 12.5}",
                "amount: invalid type",
            ),
            (
                "{\"payment_id\": \"p\", \"order_id\": \"o\", \"customer_id\": \"c\", \"amount\": \"x\"}",
                "amount: \"x\" is not a decimal number",
            ),
            (
                "{\"payment_id\": \"p\", \"order_id\": \"o\", \"customer_id\": \"c\", \"amount\": \"0\"}",
                "amount: 0 must be positive",
            ),
            (
                "{\"payment_id\": \"p\", \"order_id\": \"o\", \"customer_id\": \"c\", \"amount\": \"1.001\"}",
                "amount: 1.001 has more than 2 decimal places",
            ),
            (
                "{\"payment_id\": \"\", \"order_id\": \"o\", \"customer_id\": \"c\", \"amount\": \"1\"}",
                "payment_id: must not be empty",
            ),
            (
                "{\"payment_id\": \"p\", \"order_id\": 7, \"customer_id\": \"c\", \"amount\": \"1\"}",
                "order_id: invalid type",
            ),
            ("{\"payment_id\": \"p\"", "EOF while parsing"),
            ("", "the request body is empty"),
        ];
        for (body, expected) in cases {
            let (status, error) = call(&app, "POST", "/v1/authorizations", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(expected), "{body}: {message}");
        }
        assert_eq!(stats(&app).await.authorize_calls, 0, "refused requests are not authorize calls");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413() {
        let app = router(default_customer_limit());
        let big = json!({"payment_id": "p", "order_id": "x".repeat(BODY_LIMIT_BYTES), "customer_id": "c",
                         "amount": "1.00"});

        let (status, error) = authorize(&app, big).await;

        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error["message"], "the request body exceeds 16384 bytes");
    }

    #[tokio::test]
    async fn the_server_answers_over_tcp_and_stops_on_its_shutdown_signal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, default_customer_limit(), async {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();

        stop.send(()).unwrap();

        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("\"authorize_calls\":0"), "{answer}");
        server.await.unwrap().unwrap();
    }
}
