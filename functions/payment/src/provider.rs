//! The payment provider port, and its adapter: the provider's HTTP API (`crates/payment-provider` simulates it
//! locally).
//!
//! - `POST {url}/v1/authorizations` `{"payment_id", "order_id", "customer_id", "amount"}` -> `{"status":
//!   "authorized" | "declined" | "voided", "reason"}`; idempotent by payment id.
//! - `POST {url}/v1/authorizations/{payment_id}/void` -> `{"status": "voided", "voided_authorization"}`;
//!   idempotent, and a void of an unknown payment id stops its later authorization.
//!
//! A call that gets no answer within the timeout, fails to connect, or is answered 5xx or 429 is
//! [`ProviderUnavailable`] (retrying may succeed); any other 4xx, or a 2xx whose body is not the answer, is
//! [`ProviderRefused`] with the provider's message (retrying the same request cannot succeed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use orderflow_aws::dynamo::describe;
use orderflow_domain::Decimal;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

/// One charge as the provider receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Decimal,
    /// Stable per order: the provider's idempotency key, so a charge retried after a lost answer is made once.
    pub payment_id: String,
}

/// The provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Authorized,
    Declined {
        reason: String,
    },
    /// The payment was voided before it was authorized (its order was cancelled): nothing was charged.
    Voided,
}

/// The provider's answer to a void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidOutcome {
    /// An authorization was voided (by this call or an earlier one).
    AuthorizationVoided,
    /// There was no authorization; the provider keeps the void, so a later charge of the payment charges nothing.
    NothingAuthorized,
}

/// The provider did not answer; trying again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// The provider refused the request; sending it again cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider refused the request: {0}")]
pub struct ProviderRefused(pub String);

/// Why a provider call has no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Unavailable(#[from] ProviderUnavailable),
    #[error(transparent)]
    Refused(#[from] ProviderRefused),
}

/// A payment provider.
pub trait PaymentProvider: Send + Sync {
    fn authorize(&self, charge: &Charge) -> impl Future<Output = Result<ChargeOutcome, ProviderError>> + Send;
    fn void(&self, payment_id: &str) -> impl Future<Output = Result<VoidOutcome, ProviderError>> + Send;
}

/// The largest answer body read; the provider's answers are a few hundred bytes.
const ANSWER_LIMIT_BYTES: usize = 64 * 1024;
/// How long an idle pooled connection is kept for the next call.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
struct AuthorizeRequest<'a> {
    payment_id: &'a str,
    order_id: &'a str,
    customer_id: &'a str,
    amount: String,
}

#[derive(Debug, Deserialize)]
struct AuthorizeAnswer {
    status: String,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VoidAnswer {
    status: String,
    voided_authorization: bool,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    message: String,
}

/// The provider's HTTP API at a base URL, every call bounded by a timeout.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    base_url: Arc<str>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpProvider {
    /// A client of the API at `base_url` (`http://` or `https://`, optionally with a path prefix). An `https`
    /// URL trusts the system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` choose another store), read
    /// here, once; no connection is made before the first call. `Err`: why the URL cannot be used.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, String> {
        let uri: Uri = base_url.parse().map_err(|err| format!("not a URL: {err}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the scheme must be http or https".into()),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        if uri.query().is_some() {
            return Err("the URL must not have a query".into());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = if https {
            HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|err| format!("no root certificates to trust for https: {err}"))?
        } else {
            // Plain HTTP: no certificate is ever checked, so none is loaded.
            HttpsConnectorBuilder::new().with_tls_config(
                ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| format!("TLS configuration: {err}"))?
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            )
        };
        let connector = tls.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self { base_url: base_url.trim_end_matches('/').into(), timeout, client })
    }

    /// POSTs `body` to `path` and returns the 2xx answer's body; every other outcome is classed (module docs).
    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Bytes, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let request = Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| ProviderRefused(format!("cannot build a request to {url}: {err}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| ProviderUnavailable(format!("POST {url}: {}", describe(&err))))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), ANSWER_LIMIT_BYTES)
                .collect()
                .await
                .map_err(|err| ProviderUnavailable(format!("POST {url}: reading the answer: {err}")))?
                .to_bytes();
            Ok::<_, ProviderUnavailable>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange).await.map_err(|_| {
            ProviderUnavailable(format!("POST {url}: no answer within {} ms", self.timeout.as_millis()))
        })??;
        if status.is_success() {
            return Ok(body);
        }
        let message = match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(answer) => answer.message,
            Err(_) => String::from_utf8_lossy(&body).chars().take(200).collect(),
        };
        let failure = format!("POST {url}: HTTP {status}: {message}");
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(ProviderUnavailable(failure).into())
        } else {
            Err(ProviderRefused(failure).into())
        }
    }
}

fn parse_answer<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ProviderRefused> {
    serde_json::from_slice(body).map_err(|err| {
        ProviderRefused(format!("the {what} answer is not understood ({err}): {}", String::from_utf8_lossy(body)))
    })
}

impl PaymentProvider for HttpProvider {
    async fn authorize(&self, charge: &Charge) -> Result<ChargeOutcome, ProviderError> {
        let request = AuthorizeRequest {
            payment_id: &charge.payment_id,
            order_id: &charge.order_id,
            customer_id: &charge.customer_id,
            amount: charge.amount.to_string(),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|err| ProviderRefused(format!("cannot encode the authorize request: {err}")))?;
        let answer: AuthorizeAnswer = parse_answer("authorize", &self.post("/v1/authorizations", body).await?)?;
        match (answer.status.as_str(), answer.reason) {
            ("authorized", _) => Ok(ChargeOutcome::Authorized),
            ("declined", Some(reason)) => Ok(ChargeOutcome::Declined { reason }),
            ("voided", _) => Ok(ChargeOutcome::Voided),
            (status, _) => {
                Err(ProviderRefused(format!("unexpected authorize status {status:?} (a decline needs a reason)"))
                    .into())
            }
        }
    }

    async fn void(&self, payment_id: &str) -> Result<VoidOutcome, ProviderError> {
        let path = format!("/v1/authorizations/{payment_id}/void");
        let answer: VoidAnswer = parse_answer("void", &self.post(&path, Vec::new()).await?)?;
        match (answer.status.as_str(), answer.voided_authorization) {
            ("voided", true) => Ok(VoidOutcome::AuthorizationVoided),
            ("voided", false) => Ok(VoidOutcome::NothingAuthorized),
            (status, _) => Err(ProviderRefused(format!("unexpected void status {status:?}")).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use orderflow_domain::payment::default_customer_limit;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn charge(order_id: &str, amount: &str) -> Charge {
        Charge {
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            amount: amount.parse().unwrap(),
            payment_id: format!("pay-{order_id}"),
        }
    }

    fn client(url: &str, timeout: Duration) -> HttpProvider {
        HttpProvider::new(url, timeout).unwrap()
    }

    /// A server answering every connection with `answer` (a whole HTTP/1.1 response).
    async fn answering(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn against_the_simulated_provider_it_authorizes_declines_voids_and_times_out_as_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(payment_provider::serve(listener, default_customer_limit(), std::future::pending()));
        let provider = client(&url, Duration::from_secs(5));

        assert_eq!(provider.authorize(&charge("o-1", "38.49")).await, Ok(ChargeOutcome::Authorized));
        assert_eq!(provider.authorize(&charge("o-1", "38.49")).await, Ok(ChargeOutcome::Authorized), "idempotent");
        assert_eq!(
            provider.authorize(&charge("o-2", "10000.01")).await,
            Ok(ChargeOutcome::Declined { reason: "amount 10000.01 exceeds the customer's limit 10000.00".into() })
        );
        assert_eq!(provider.void("pay-o-1").await, Ok(VoidOutcome::AuthorizationVoided));
        assert_eq!(provider.void("pay-o-1").await, Ok(VoidOutcome::AuthorizationVoided), "idempotent");
        assert_eq!(provider.void("pay-o-3").await, Ok(VoidOutcome::NothingAuthorized));
        assert_eq!(provider.authorize(&charge("o-3", "1.00")).await, Ok(ChargeOutcome::Voided), "the tombstone holds");
        let conflict = provider.authorize(&charge("o-1", "99.00")).await.unwrap_err();
        assert!(
            matches!(&conflict, ProviderError::Refused(ProviderRefused(m)) if m.ends_with(
                "HTTP 409 Conflict: payment_id pay-o-1 is already used for order o-1, customer c-1, amount 38.49")),
            "{conflict}"
        );

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let timed_out = client(&silent_url, Duration::from_millis(200)).authorize(&charge("o-4", "1.00")).await;
        assert!(
            matches!(&timed_out, Err(ProviderError::Unavailable(ProviderUnavailable(m))) if m.ends_with("no answer within 200 ms")),
            "{timed_out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "bounded by the timeout: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_5xx_a_429_and_a_refused_connection_are_unavailable() {
        let unavailable = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let throttled = answering("HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n").await;
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        for url in [unavailable, throttled, closed] {
            let result = client(&url, Duration::from_secs(5)).void("pay-1").await;
            assert!(matches!(result, Err(ProviderError::Unavailable(_))), "{url}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_4xx_is_refused_with_the_providers_message_and_a_garbled_2xx_is_refused() {
        let bad_request = answering(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n\
             {\"error\": \"invalid_request\", \"message\": \"amount: must be >0\"}",
        )
        .await;
        let garbled = answering("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!").await;

        let refused = client(&bad_request, Duration::from_secs(5)).authorize(&charge("o-1", "1.00")).await;
        let unparsed = client(&garbled, Duration::from_secs(5)).authorize(&charge("o-1", "1.00")).await;

        let Err(ProviderError::Refused(ProviderRefused(message))) = refused else { panic!("{refused:?}") };
        assert!(message.ends_with("/v1/authorizations: HTTP 400 Bad Request: amount: must be >0"), "{message}");
        let Err(ProviderError::Refused(ProviderRefused(message))) = unparsed else { panic!("{unparsed:?}") };
        assert!(message.starts_with("the authorize answer is not understood"), "{message}");
    }

    #[test]
    fn an_unusable_url_is_refused_with_the_reason() {
        let refuse = |url| HttpProvider::new(url, Duration::from_secs(1)).unwrap_err();
        assert_eq!(refuse("ftp://provider"), "the scheme must be http or https");
        assert_eq!(refuse("/v1"), "the scheme must be http or https");
        assert_eq!(refuse("http://p/x?y=1"), "the URL must not have a query");
        assert!(refuse("http://a b").starts_with("not a URL"));
        assert!(HttpProvider::new("https://payments.example.invalid", Duration::from_secs(1)).is_ok());
    }
}
