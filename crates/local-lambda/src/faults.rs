//! Fault rules of the runner: which calls of which functions fail, how, how often and for how long.
//!
//! The rules are applied on the wire by [`crate::proxy`], which stands between every function instance and the AWS
//! endpoint (and every HTTP upstream registered with the runner by name, [`crate::proxy::UpstreamKind::Http`]). They
//! are set while the runner runs through its control endpoint, [`FaultController::router`]:
//!
//! ```text
//! PUT    /_local/faults  {"rules": [{"target": "dynamodb", "operation": "TransactWriteItems", "functions": ["inventory"],
//!                                    "fault": "throttle", "rate": 0.5, "for_seconds": 30}]}   -> 204 (replaces the rules)
//! GET    /_local/faults  -> 200 {"rules": [...], "fired": {"dynamodb/throttle": 12}}
//! DELETE /_local/faults  -> 204 (no faults)
//! ```
//!
//! Targets: `dynamodb`, `sqs`, `events` (the AWS services, by signing name), and the name of each registered HTTP
//! upstream; any other target is refused naming the field. Faults: `throttle` (the service's throttling error with its status: DynamoDB's 400
//! ProvisionedThroughputExceededException, SQS's and EventBridge's 400 ThrottlingException, 429 for an HTTP
//! upstream), `unavailable` (503), `internal_error` (500), `reset` (the connection is reset, no response), `latency`
//! (`latency_ms` before the call goes on), and `crash_after_write` (the call goes through and succeeds, then the
//! instance that made it is killed before it sees the answer: the write happened, the invocation never returns).
//! A rule without `operation` applies to every operation of its target (`crash_after_write`: to its writes); without
//! `functions` to every function; without `for_seconds` until the rules are replaced. `fired` counts every fault
//! injected since the runner started. A rule hits exactly its `rate` of the matching calls, evenly spread from a
//! starting point drawn from a generator seeded at start: a seed repeats a run's choices as far as the order of
//! calls repeats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The longest a timed rule may last (a day).
const MAX_FOR_SECONDS: f64 = 86_400.0;
/// The longest injected latency (Lambda's longest timeout).
const MAX_LATENCY_MS: u64 = 900_000;

/// What a rule's calls go to: an AWS service, or an HTTP upstream by the name it is registered under. In JSON, the
/// service's signing name or the upstream's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Target {
    Dynamodb,
    Sqs,
    Events,
    /// An HTTP upstream (every call's operation is `METHOD /path`).
    Http(String),
}

/// The AWS services a rule can target, by signing name.
pub const AWS_TARGETS: [&str; 3] = ["dynamodb", "sqs", "events"];

impl Target {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Dynamodb => "dynamodb",
            Self::Sqs => "sqs",
            Self::Events => "events",
            Self::Http(name) => name,
        }
    }

    /// The target of an AWS service by its SigV4 signing name.
    pub fn of_aws_service(service: &str) -> Option<Self> {
        match service {
            "dynamodb" => Some(Self::Dynamodb),
            "sqs" => Some(Self::Sqs),
            "events" => Some(Self::Events),
            _ => None,
        }
    }

    /// Whether the operation changes state, for `crash_after_write` rules that name no operation.
    fn is_write(&self, operation: &str) -> bool {
        match self {
            Self::Dynamodb => {
                matches!(operation, "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem")
            }
            Self::Sqs => operation.starts_with("SendMessage") || operation.starts_with("DeleteMessage"),
            Self::Events => operation == "PutEvents",
            // Every method but the safe ones (RFC 9110 9.2.1).
            Self::Http(_) => !matches!(operation.split(' ').next(), Some("GET" | "HEAD" | "OPTIONS")),
        }
    }
}

impl From<String> for Target {
    fn from(name: String) -> Self {
        Self::of_aws_service(&name).unwrap_or(Self::Http(name))
    }
}

impl From<Target> for String {
    fn from(target: Target) -> Self {
        match target {
            Target::Http(name) => name,
            aws => aws.as_str().to_owned(),
        }
    }
}

/// How a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Throttle,
    Unavailable,
    InternalError,
    Reset,
    Latency,
    CrashAfterWrite,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Unavailable => "unavailable",
            Self::InternalError => "internal_error",
            Self::Reset => "reset",
            Self::Latency => "latency",
            Self::CrashAfterWrite => "crash_after_write",
        }
    }
}

/// One fault rule, as the control endpoint takes and shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    pub fault: FaultKind,
    pub rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// The body of `PUT /_local/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRules {
    pub rules: Vec<FaultRule>,
}

/// A rule that breaks the contract, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

impl FaultRules {
    /// Parses and checks a `PUT /_local/faults` body; `http_targets` are the names of the registered HTTP upstreams.
    pub fn parse(body: &[u8], http_targets: &BTreeSet<String>) -> Result<Self, RuleError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        let rules: Self = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            RuleError { field: if path == "." { "body".to_owned() } else { path }, message: err.inner().to_string() }
        })?;
        for (i, rule) in rules.rules.iter().enumerate() {
            rule.check(http_targets)
                .map_err(|(field, message)| RuleError { field: format!("rules[{i}].{field}"), message })?;
        }
        Ok(rules)
    }
}

impl FaultRule {
    fn check(&self, http_targets: &BTreeSet<String>) -> Result<(), (&'static str, String)> {
        if let Target::Http(name) = &self.target
            && !http_targets.contains(name)
        {
            let known: Vec<&str> = AWS_TARGETS.into_iter().chain(http_targets.iter().map(String::as_str)).collect();
            return Err(("target", format!("unknown target {name:?}, expected one of {}", known.join(", "))));
        }
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(("rate", format!("must be between 0 and 1, got {}", self.rate)));
        }
        if let Some(seconds) = self.for_seconds
            && !(seconds > 0.0 && seconds <= MAX_FOR_SECONDS)
        {
            return Err(("for_seconds", format!("must be more than 0 and at most {MAX_FOR_SECONDS}, got {seconds}")));
        }
        match (self.fault, self.latency_ms) {
            (FaultKind::Latency, None) => return Err(("latency_ms", "a latency rule needs latency_ms".to_owned())),
            (FaultKind::Latency, Some(ms)) if ms > MAX_LATENCY_MS => {
                return Err(("latency_ms", format!("must be at most {MAX_LATENCY_MS}, got {ms}")));
            }
            (FaultKind::Latency, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(("latency_ms", "only a latency rule takes latency_ms".to_owned())),
        }
        if self.operation.as_deref().is_some_and(|op| op.trim().is_empty()) {
            return Err(("operation", "must not be empty (leave it out for every operation)".to_owned()));
        }
        if self.functions.as_ref().is_some_and(|functions| functions.iter().any(|f| f.trim().is_empty())) {
            return Err(("functions", "names must not be empty".to_owned()));
        }
        Ok(())
    }

    fn matches(&self, call: &Call<'_>) -> bool {
        &self.target == call.target
            && match &self.operation {
                Some(operation) => operation == call.operation,
                None => self.fault != FaultKind::CrashAfterWrite || call.target.is_write(call.operation),
            }
            && self.functions.as_ref().is_none_or(|functions| functions.iter().any(|f| f == call.function))
    }
}

/// One call on the wire, as the proxy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub target: &'a Target,
    /// e.g. `TransactWriteItems`, or `POST /v1/authorizations` for an HTTP upstream.
    pub operation: &'a str,
    /// The function (binary) name of the instance making it.
    pub function: &'a str,
}

/// What to do to one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Wait this long first.
    pub latency: Duration,
    /// Then fail it this way instead of forwarding it (throttle, unavailable, internal_error, reset) or forward it
    /// and crash the caller after a successful answer (crash_after_write).
    pub fault: Option<FaultKind>,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    until: Option<Instant>,
    /// Grows by `rate` with every matching call; the rule fires each time it reaches 1. So a rule hits exactly
    /// its share of the calls, spread evenly, and a test that makes `1 / rate` calls sees it fire: random draws
    /// would leave a rare target unhit now and then, and such a test could flake.
    credit: f64,
}

#[derive(Debug)]
struct Inner {
    rules: Vec<ActiveRule>,
    fired: BTreeMap<String, u64>,
    rng: u64,
}

/// The fault rules in force and what they injected; shared by the proxy and the control endpoint.
#[derive(Debug)]
pub struct FaultController {
    inner: Mutex<Inner>,
    /// The names of the HTTP upstreams rules may target (none is an AWS service's: [`crate::proxy::FaultProxy::new`]).
    http_targets: BTreeSet<String>,
}

impl FaultController {
    /// No rules; draws from a generator seeded with `seed`.
    pub(crate) fn new(seed: u64, http_targets: BTreeSet<String>) -> Arc<Self> {
        // xorshift's state must not be zero.
        let rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        let inner = Inner { rules: Vec::new(), fired: BTreeMap::new(), rng: rng.max(1) };
        Arc::new(Self { inner: Mutex::new(inner), http_targets })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the rules and counts whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the rules; timed rules start now.
    pub fn set(&self, rules: FaultRules) {
        let now = Instant::now();
        let mut inner = self.lock();
        let rng = &mut inner.rng;
        let rules = rules
            .rules
            .into_iter()
            .map(|rule| {
                let until = rule.for_seconds.map(|seconds| now + Duration::from_secs_f64(seconds));
                // A seeded starting point, so which calls are hit depends on the seed.
                let credit = next_unit(rng);
                ActiveRule { rule, until, credit }
            })
            .collect();
        inner.rules = rules;
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Faults injected so far, by `<target>/<fault>`.
    pub fn fired(&self) -> BTreeMap<String, u64> {
        self.lock().fired.clone()
    }

    /// The rules in force now (expired timed rules are gone), with the seconds each has left.
    pub fn rules(&self) -> Vec<(FaultRule, Option<f64>)> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.rules.retain(|active| active.until.is_none_or(|until| until > now));
        inner.rules.iter().map(|active| (active.rule.clone(), active.until.map(|u| (u - now).as_secs_f64()))).collect()
    }

    /// Decides the fate of one call: every matching rule in force draws against its rate; latencies add up and the
    /// first failing fault wins.
    pub fn decide(&self, call: &Call<'_>) -> Verdict {
        let now = Instant::now();
        let mut inner = self.lock();
        let Inner { rules, fired, .. } = &mut *inner;
        let mut verdict = Verdict::default();
        for active in rules.iter_mut().filter(|active| active.until.is_none_or(|until| until > now)) {
            if !active.rule.matches(call) {
                continue;
            }
            active.credit += active.rule.rate;
            if active.credit < 1.0 {
                continue;
            }
            active.credit -= 1.0;
            let rule = &active.rule;
            match rule.fault {
                FaultKind::Latency => {
                    verdict.latency += Duration::from_millis(rule.latency_ms.unwrap_or_default());
                }
                fault if verdict.fault.is_none() => verdict.fault = Some(fault),
                _ => continue,
            }
            *fired.entry(format!("{}/{}", call.target.as_str(), rule.fault.as_str())).or_default() += 1;
        }
        verdict
    }

    /// `/_local/faults`: PUT replaces the rules, GET shows them with the counts, DELETE removes them.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_local/faults", put(put_rules).get(get_rules).delete(delete_rules))
            .with_state(self.clone())
    }
}

/// A uniform number in [0, 1) from a xorshift64* generator.
fn next_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

async fn put_rules(State(controller): State<Arc<FaultController>>, body: Bytes) -> Response {
    match FaultRules::parse(&body, &controller.http_targets) {
        Ok(rules) => {
            tracing::info!(rules = rules.rules.len(), "fault rules replaced");
            controller.set(rules);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_fault_rule", "message": err.to_string(), "field": err.field})),
        )
            .into_response(),
    }
}

async fn get_rules(State(controller): State<Arc<FaultController>>) -> Response {
    let rules: Vec<serde_json::Value> = controller
        .rules()
        .into_iter()
        .map(|(rule, left)| {
            let mut value = serde_json::to_value(rule).unwrap_or_default();
            if let Some(left) = left {
                value["seconds_left"] = json!(left);
            }
            value
        })
        .collect();
    axum::Json(json!({"rules": rules, "fired": controller.fired()})).into_response()
}

async fn delete_rules(State(controller): State<Arc<FaultController>>) -> Response {
    controller.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(target: &'a Target, operation: &'a str, function: &'a str) -> Call<'a> {
        Call { target, operation, function }
    }

    /// The HTTP upstream the tests register.
    const PROVIDER: &str = "provider";

    fn http_targets() -> BTreeSet<String> {
        BTreeSet::from([PROVIDER.to_owned()])
    }

    fn rules(json: serde_json::Value) -> Result<FaultRules, RuleError> {
        FaultRules::parse(json.to_string().as_bytes(), &http_targets())
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let cases = [
            (json!({"rules": [{"target": "s3", "fault": "throttle", "rate": 1}]}), "rules[0].target"),
            (json!({"rules": [{"target": "sqs", "fault": "melt", "rate": 1}]}), "rules[0].fault"),
            (json!({"rules": [{"target": "sqs", "fault": "throttle", "rate": 1.5}]}), "rules[0].rate"),
            (json!({"rules": [{"target": "sqs", "fault": "throttle"}]}), "rules[0]"),
            (json!({"rules": [{"target": "sqs", "fault": "latency", "rate": 1}]}), "rules[0].latency_ms"),
            (
                json!({"rules": [{"target": "sqs", "fault": "reset", "rate": 1, "latency_ms": 5}]}),
                "rules[0].latency_ms",
            ),
            (
                json!({"rules": [{"target": "sqs", "fault": "reset", "rate": 1, "for_seconds": 0}]}),
                "rules[0].for_seconds",
            ),
            (json!({"rules": [{"target": "sqs", "fault": "reset", "rate": 1, "operation": ""}]}), "rules[0].operation"),
            (json!({"rules": [{"target": "sqs", "fault": "reset", "rate": 1, "colour": "red"}]}), "rules[0]"),
            (json!({"faults": []}), "faults"),
            (json!([]), "body"),
        ];
        for (body, field) in cases {
            let err = rules(body.clone()).expect_err(&body.to_string());
            assert!(err.field.starts_with(field), "{body}: {err}");
        }
        assert!(FaultRules::parse(b"not json", &http_targets()).is_err());
    }

    #[test]
    fn a_rule_fires_only_for_its_target_operation_and_functions_and_is_counted() {
        let controller = FaultController::new(7, http_targets());
        controller.set(
            rules(json!({"rules": [{"target": "dynamodb", "operation": "TransactWriteItems",
                "functions": ["inventory"], "fault": "throttle", "rate": 1.0}]}))
            .unwrap(),
        );
        let hit = controller.decide(&call(&Target::Dynamodb, "TransactWriteItems", "inventory"));
        assert_eq!(hit.fault, Some(FaultKind::Throttle));
        for other in [
            call(&Target::Dynamodb, "GetItem", "inventory"),
            call(&Target::Dynamodb, "TransactWriteItems", "payment"),
            call(&Target::Sqs, "TransactWriteItems", "inventory"),
        ] {
            assert_eq!(controller.decide(&other), Verdict::default(), "{other:?}");
        }
        assert_eq!(controller.fired(), BTreeMap::from([("dynamodb/throttle".to_owned(), 1)]));
        controller.clear();
        assert_eq!(controller.decide(&call(&Target::Dynamodb, "TransactWriteItems", "inventory")), Verdict::default());
    }

    #[test]
    fn a_rate_fires_exactly_that_often_and_the_same_seed_repeats_the_choices() {
        let draws = |seed| {
            let controller = FaultController::new(seed, http_targets());
            controller.set(rules(json!({"rules": [{"target": "sqs", "fault": "reset", "rate": 0.05}]})).unwrap());
            (0..20_000).map(|_| controller.decide(&call(&Target::Sqs, "SendMessage", "f")).fault.is_some()).collect()
        };
        let first: Vec<bool> = draws(42);
        assert_eq!(first, draws(42));
        let fired = first.iter().filter(|&&f| f).count();
        assert!((999..=1001).contains(&fired), "{fired} of 20000 at 5%");
        assert!(first[..20].iter().any(|&f| f), "a 5% rule fires within its first 20 calls");
        assert_ne!(first, draws(43), "another seed hits other calls");
    }

    #[test]
    fn latencies_add_up_and_the_first_failure_wins() {
        let controller = FaultController::new(1, http_targets());
        controller.set(
            rules(json!({"rules": [
                {"target": "events", "fault": "latency", "rate": 1, "latency_ms": 30},
                {"target": "events", "fault": "unavailable", "rate": 1},
                {"target": "events", "fault": "reset", "rate": 1},
                {"target": "events", "fault": "latency", "rate": 1, "latency_ms": 20}]}))
            .unwrap(),
        );
        let verdict = controller.decide(&call(&Target::Events, "PutEvents", "outbox-relay"));
        assert_eq!(verdict, Verdict { latency: Duration::from_millis(50), fault: Some(FaultKind::Unavailable) });
        assert_eq!(controller.fired().get("events/reset"), None);
    }

    #[test]
    fn a_timed_rule_expires() {
        let controller = FaultController::new(1, http_targets());
        controller.set(
            rules(json!({"rules": [{"target": "sqs", "fault": "throttle", "rate": 1, "for_seconds": 0.05}]})).unwrap(),
        );
        assert!(controller.decide(&call(&Target::Sqs, "SendMessage", "f")).fault.is_some());
        assert_eq!(controller.rules().len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert!(controller.decide(&call(&Target::Sqs, "SendMessage", "f")).fault.is_none());
        assert!(controller.rules().is_empty());
    }

    #[test]
    fn crash_after_write_without_an_operation_applies_to_writes_only() {
        let controller = FaultController::new(1, http_targets());
        controller
            .set(rules(json!({"rules": [{"target": "dynamodb", "fault": "crash_after_write", "rate": 1}]})).unwrap());
        assert_eq!(
            controller.decide(&call(&Target::Dynamodb, "TransactWriteItems", "f")).fault,
            Some(FaultKind::CrashAfterWrite)
        );
        assert_eq!(controller.decide(&call(&Target::Dynamodb, "BatchGetItem", "f")).fault, None);
    }

    #[test]
    fn a_registered_http_upstream_is_a_target_by_its_name_and_an_unregistered_one_is_refused() {
        let parsed = rules(json!({"rules": [{"target": PROVIDER, "fault": "crash_after_write", "rate": 1}]})).unwrap();
        let provider = Target::Http(PROVIDER.to_owned());
        assert_eq!(parsed.rules[0].target, provider);
        assert_eq!(serde_json::to_value(&parsed.rules[0]).unwrap()["target"], PROVIDER);
        let controller = FaultController::new(1, http_targets());
        controller.set(parsed);
        assert_eq!(
            controller.decide(&call(&provider, "POST /v1/authorizations", "payment")).fault,
            Some(FaultKind::CrashAfterWrite)
        );
        assert_eq!(controller.decide(&call(&provider, "GET /v1/authorizations/p-1", "payment")).fault, None);
        assert_eq!(controller.fired(), BTreeMap::from([("provider/crash_after_write".to_owned(), 1)]));

        let err = rules(json!({"rules": [{"target": "mailer", "fault": "reset", "rate": 1}]})).unwrap_err();
        assert_eq!(err.field, "rules[0].target");
        assert!(err.message.contains("mailer") && err.message.contains(PROVIDER), "{err}");
    }
}
