//! The Lambda runtime of a function an EventBridge rule invokes directly (asynchronously), one event per invocation.
//!
//! The event is read through the registry into the function's event type, or the enum of its event types
//! ([`orderflow_toolkit::eventbridge`], [`EventSet`]), and handed to the handler; any failure fails the invocation
//! with `errorType` `HandlerError::Transient` (Lambda's retry may succeed) or `HandlerError::Permanent` (it reaches
//! the on-failure destination after the retries), and the reason as `errorMessage`. Nothing panics on a bad event.
//!
//! A function an EventBridge schedule invokes gets the schedule's event (no envelope: its detail is `{}`) through
//! [`run_scheduled_function`], with the same failure classes.

use std::future::Future;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use orderflow_toolkit::eventbridge::{ensure_registered, handle_bus_event};
use orderflow_toolkit::{EventSet, HandlerError, Registry};
use serde::Serialize;
use serde_json::Value;

/// The Lambda error of a failed invocation: `errorType` says whether a retry can help.
pub fn diagnostic(error: &HandlerError) -> Diagnostic {
    Diagnostic { error_type: error.error_type().into(), error_message: error.reason().into() }
}

/// One invocation: `event` read as an `E` and handled, the outcome as Lambda's result.
///
/// ```
/// use orderflow_aws::bus_function::handle_invocation;
/// use orderflow_toolkit::{Envelope, Event, HandlerError, Registry};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct Shipped { order_id: String }
/// impl Event for Shipped {
///     const TYPE: &'static str = "Shipped";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "demo";
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = Registry::new().register::<Shipped>();
/// let event = serde_json::json!({"id": "b1", "detail-type": "Shipped", "source": "demo", "detail": {
///     "id": "5a0b4b4e-53c8-4bd0-9e0b-7a1b5e4cd0a1", "type": "Shipped", "version": 1,
///     "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "o-1", "causation_id": null,
///     "data": {"order_id": "o-1"}}});
/// let store_down = |_: Envelope<Shipped>| async { Err::<(), _>(HandlerError::transient("store down")) };
/// let error = handle_invocation(&registry, event, store_down).await.unwrap_err();
/// assert_eq!((error.error_type.as_str(), error.error_message.as_str()), ("HandlerError::Transient", "store down"));
///
/// let error = handle_invocation(&registry, serde_json::json!([]), store_down).await.unwrap_err();
/// assert_eq!(error.error_type, "HandlerError::Permanent");
/// # })
/// ```
pub async fn handle_invocation<E, R, F, Fut>(registry: &Registry, event: Value, handler: F) -> Result<R, Diagnostic>
where
    E: EventSet,
    F: FnOnce(E) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    handle_bus_event(registry, event, handler).await.map_err(|error| diagnostic(&error))
}

/// Runs a function an EventBridge rule invokes: each event is read as an `E` with `registry` and handled by
/// `handler`, whose output is the invocation's response. It does not start when `registry` does not read every
/// type of `E` ([`ensure_registered`]). orderflow's one bus function also consumes its retry queue, so it runs
/// [`run_bus_function_with_retry_queue`](crate::run_bus_function_with_retry_queue); this is the runtime without one.
///
/// ```no_run
/// use orderflow_aws::run_bus_function;
/// use orderflow_toolkit::{Envelope, Event, HandlerError, Registry};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderShipped { order_id: String }
/// impl Event for OrderShipped {
///     const TYPE: &'static str = "OrderShipped";
///     const VERSION: u32 = 1;
///     const SOURCE: &'static str = "orderflow.shipping";
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), lambda_runtime::Error> {
///     orderflow_toolkit::logging::init();
///     let registry = Registry::new().register::<OrderShipped>();
///     run_bus_function(registry, |shipped: Envelope<OrderShipped>| async move {
///         Ok::<_, HandlerError>(format!("order {} has shipped", shipped.data.order_id))
///     })
///     .await
/// }
/// ```
pub async fn run_bus_function<E, R, F, Fut>(registry: Registry, handler: F) -> Result<(), lambda_runtime::Error>
where
    E: EventSet,
    R: Serialize,
    F: Fn(E) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    ensure_registered::<E>(&registry)?;
    let (registry, handler) = (&registry, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_invocation(registry, event.payload, handler).await
    }))
    .await
}

/// One invocation of a scheduled function: `payload` read as the schedule's EventBridge event and handled, the
/// outcome as Lambda's result. A payload that is not an EventBridge event is a permanent failure.
///
/// ```
/// use orderflow_aws::bus_function::handle_scheduled_invocation;
/// use orderflow_toolkit::HandlerError;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let tick = serde_json::json!({"version": "0", "id": "t-1", "detail-type": "Scheduled Event",
///     "source": "aws.events", "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "eu-west-1",
///     "resources": [], "detail": {}});
/// let sweep = |tick: aws_lambda_events::event::eventbridge::EventBridgeEvent| async move {
///     Ok::<_, HandlerError>(format!("swept at {}", tick.time.unwrap()))
/// };
/// assert_eq!(handle_scheduled_invocation(tick, sweep).await.unwrap(), "swept at 2026-01-01 00:00:00 UTC");
///
/// let error = handle_scheduled_invocation(serde_json::json!({"Records": []}), sweep).await.unwrap_err();
/// assert_eq!(error.error_type, "HandlerError::Permanent");
/// # })
/// ```
pub async fn handle_scheduled_invocation<R, F, Fut>(payload: Value, handler: F) -> Result<R, Diagnostic>
where
    F: FnOnce(EventBridgeEvent) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let event: EventBridgeEvent = serde_json::from_value(payload).map_err(|error| {
        diagnostic(&HandlerError::permanent(format!("the payload is not an EventBridge event: {error}")))
    })?;
    handler(event).await.map_err(|error| diagnostic(&error))
}

/// Runs a function an EventBridge schedule invokes: each tick is handed to `handler`, whose output is the
/// invocation's response.
pub async fn run_scheduled_function<R, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    R: Serialize,
    F: Fn(EventBridgeEvent) -> Fut,
    Fut: Future<Output = Result<R, HandlerError>>,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_scheduled_invocation(event.payload, handler).await
    }))
    .await
}
