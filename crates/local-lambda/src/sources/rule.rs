//! EventBridge rules that invoke a function asynchronously.
//!
//! The emulators cannot target a Lambda function with a rule, so the runner does what Lambda's
//! asynchronous invocation does with its internal event queue: when it starts, it creates (or
//! updates) in the emulator an internal queue `local-async-<function name>` and, for each
//! `EventBridgeRule` event of the function, a rule `local-async-<function name>.<EventId>`
//! on the same bus with the SAME pattern, targeting that queue. These are the runner's emulation
//! of the "rule -> Lambda" target, not copies of the template's resources: on AWS, SAM creates
//! the rule with the function as its target and Lambda queues the events internally.
//!
//! The runner then receives from the internal queue and invokes the function with the event
//! (the message body is exactly the event Lambda would get), retrying a failed invocation up to
//! `EventInvokeConfig.MaximumRetryAttempts` times with the same request id, and finally sends
//! Lambda's asynchronous failure record to the on-failure SQS destination ([`AsyncInvoker`], which
//! the schedules invoke through too).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::{DeliveredRecord, Delivery, DeliveryOutcome, SourceContext, SourceRef, timestamp_now};
use crate::iac::{AsyncInvokeConfig, FunctionSpec};
use crate::runtime_api::InvocationOutcome;

/// Prefix of everything the runner creates to emulate rule -> function targets.
/// The internal queue is named after the function's Lambda name (e.g. `shop-<stage>-notifications`), so runners
/// of different stages sharing one emulator never consume each other's events; rules live on the stage's own bus,
/// so they are named after the binary, within EventBridge's 64 characters.
pub const INTERNAL_PREFIX: &str = "local-async-";
/// Id of the runner's target on its rules.
const TARGET_ID: &str = "local-lambda-async";
/// Lambda's limit of init time that an invocation may add to the function timeout.
const INIT_ALLOWANCE: Duration = Duration::from_secs(10);

/// Name of the internal queue of a function (its Lambda name, unique per stage).
pub fn internal_queue_name(function: &str) -> String {
    format!("{INTERNAL_PREFIX}{function}")
}

/// Name of the runner's rule for one `EventBridgeRule` event of a function. A `.` separates
/// the two parts because it cannot occur in a function name, so one function's prefix never
/// matches another's rules.
pub fn internal_rule_name(function: &str, event_id: &str) -> String {
    format!("{INTERNAL_PREFIX}{function}.{event_id}")
}

/// Where a function's asynchronous events are queued.
#[derive(Clone, Debug)]
pub struct InternalQueue {
    /// Queue URL.
    pub url: String,
    /// Queue ARN.
    pub arn: String,
}

/// Creates or updates the internal queue and rules of `function` (idempotent), and deletes the
/// runner's rules of that function that the template no longer has.
pub async fn ensure_internal_target(
    sqs: &aws_sdk_sqs::Client,
    events: &aws_sdk_eventbridge::Client,
    function: &FunctionSpec,
    config: &AsyncInvokeConfig,
    retry_delay: Duration,
) -> Result<InternalQueue> {
    let name = internal_queue_name(&function.function_name);
    // Long enough that a message is never redelivered while its retries are still running.
    let attempts = config.max_retry_attempts + 1;
    let visibility = (function.timeout + INIT_ALLOWANCE) * attempts + retry_delay * attempts + Duration::from_secs(30);
    let visibility = visibility.as_secs().min(43_200).to_string();

    let url = match sqs.get_queue_url().queue_name(&name).send().await {
        Ok(output) => output.queue_url.context("GetQueueUrl returned no URL")?,
        Err(_) => sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, &visibility)
            .send()
            .await
            .with_context(|| format!("creating the internal queue {name}"))?
            .queue_url
            .context("CreateQueue returned no URL")?,
    };
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of {name}"))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .with_context(|| format!("{name} has no QueueArn"))?;
    // EventBridge needs the queue's permission to deliver (emulators may not check; AWS does).
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::VisibilityTimeout, &visibility)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .with_context(|| format!("configuring the internal queue {name}"))?;

    let mut wanted_by_bus: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for rule in &function.rules {
        let rule_name = internal_rule_name(&function.name, &rule.event_id);
        if rule_name.len() > 64 {
            bail!(
                "the internal rule name {rule_name} is longer than EventBridge's 64 characters: shorten the event id"
            );
        }
        events
            .put_rule()
            .name(&rule_name)
            .event_bus_name(&rule.bus_name)
            .event_pattern(rule.pattern.to_string())
            .state(RuleState::Enabled)
            .description(format!(
                "local-lambda: emulates the Lambda target of {}.{} (async invoke)",
                function.logical_id, rule.event_id
            ))
            .send()
            .await
            .with_context(|| format!("PutRule {rule_name} on bus {}", rule.bus_name))?;
        let target = Target::builder().id(TARGET_ID).arn(&arn).build().context("building the rule target")?;
        let put = events
            .put_targets()
            .rule(&rule_name)
            .event_bus_name(&rule.bus_name)
            .targets(target)
            .send()
            .await
            .with_context(|| format!("PutTargets on {rule_name}"))?;
        if put.failed_entry_count() > 0 {
            bail!("PutTargets on {rule_name} failed: {:?}", put.failed_entries());
        }
        wanted_by_bus.entry(rule.bus_name.as_str()).or_default().insert(rule_name);
    }
    for (bus, wanted) in wanted_by_bus {
        remove_stale_rules(events, bus, &function.name, &wanted).await?;
    }
    Ok(InternalQueue { url, arn })
}

async fn remove_stale_rules(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    function: &str,
    wanted: &BTreeSet<String>,
) -> Result<()> {
    let prefix = format!("{INTERNAL_PREFIX}{function}.");
    let listed = events
        .list_rules()
        .event_bus_name(bus)
        .name_prefix(&prefix)
        .send()
        .await
        .with_context(|| format!("ListRules {prefix}* on {bus}"))?;
    for rule in listed.rules() {
        let Some(name) = rule.name() else { continue };
        if !name.starts_with(&prefix) || wanted.contains(name) {
            continue;
        }
        events
            .remove_targets()
            .rule(name)
            .event_bus_name(bus)
            .ids(TARGET_ID)
            .send()
            .await
            .with_context(|| format!("RemoveTargets from the stale rule {name}"))?;
        events
            .delete_rule()
            .name(name)
            .event_bus_name(bus)
            .send()
            .await
            .with_context(|| format!("DeleteRule {name}"))?;
        tracing::info!(rule = name, bus, "removed a stale internal rule");
    }
    Ok(())
}

/// Starts the consumer of a function's internal queue.
pub fn spawn(
    ctx: &SourceContext,
    sqs: &aws_sdk_sqs::Client,
    function: &FunctionSpec,
    config: &AsyncInvokeConfig,
    queue: InternalQueue,
    destination_url: Option<String>,
    concurrency: usize,
) -> JoinHandle<()> {
    let source = SourceRef::Rule {
        bus: function
            .rules
            .iter()
            .map(|r| r.bus_name.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(","),
        event_ids: function.rules.iter().map(|r| r.event_id.clone()).collect(),
    };
    let consumer = Arc::new(Consumer {
        ctx: ctx.clone(),
        sqs: sqs.clone(),
        queue,
        invoker: AsyncInvoker::new(ctx, sqs, config, destination_url, source),
    });
    tokio::spawn(consumer.run(concurrency.max(1)))
}

/// How an asynchronous invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncOutcome {
    /// It succeeded, or its retries were exhausted and the failure record sent (or dropped without a
    /// destination): the event is done with.
    Settled,
    /// Shutdown came first: the event is neither done nor dead-lettered.
    Interrupted,
}

/// Lambda's asynchronous invocation of one event: retried `EventInvokeConfig.MaximumRetryAttempts` times with the
/// same request id, then Lambda's failure record to the on-failure destination. Every attempt is published as a
/// [`Delivery`] from `source`. Rules (through their internal queue) and schedules invoke through it.
#[derive(Clone)]
pub struct AsyncInvoker {
    ctx: SourceContext,
    sqs: aws_sdk_sqs::Client,
    config: AsyncInvokeConfig,
    destination_url: Option<String>,
    source: SourceRef,
}

impl AsyncInvoker {
    /// An invoker of `ctx`'s function; `destination_url` is the URL of `config`'s on-failure destination.
    pub fn new(
        ctx: &SourceContext,
        sqs: &aws_sdk_sqs::Client,
        config: &AsyncInvokeConfig,
        destination_url: Option<String>,
        source: SourceRef,
    ) -> Self {
        Self { ctx: ctx.clone(), sqs: sqs.clone(), config: config.clone(), destination_url, source }
    }

    /// Invokes with `event` until it succeeds or its retries are exhausted.
    pub async fn invoke(&self, event: Value) -> AsyncOutcome {
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let record = DeliveredRecord::from_event(event_id, &event);
        // Retries of an asynchronous invocation keep its request id.
        let request_id = uuid::Uuid::new_v4().to_string();
        let max_attempts = self.config.max_retry_attempts + 1;
        let mut shutdown = self.ctx.shutdown.clone();
        let mut attempt = 1;
        loop {
            let invocation = match self.ctx.pool.invoke_with_request_id(request_id.clone(), event.clone()).await {
                Ok(invocation) => invocation,
                Err(err) => {
                    // The pool is shut down.
                    tracing::warn!(function = %self.ctx.function, error = %format!("{err:#}"), "invoke failed");
                    return AsyncOutcome::Interrupted;
                }
            };
            self.ctx.publish(Delivery {
                function: self.ctx.function.clone(),
                source: self.source.clone(),
                request_id: request_id.clone(),
                records: vec![record.clone()],
                attempt,
                outcome: DeliveryOutcome::of(&invocation.outcome),
            });
            let InvocationOutcome::FunctionError { error_type, error_message } = invocation.outcome else {
                return AsyncOutcome::Settled;
            };
            if attempt >= max_attempts {
                self.dead_letter(&request_id, &event, attempt, &error_type, &error_message, &record).await;
                return AsyncOutcome::Settled;
            }
            if !shutdown.sleep(self.ctx.timing.async_retry_delay).await {
                return AsyncOutcome::Interrupted;
            }
            attempt += 1;
        }
    }

    async fn dead_letter(
        &self,
        request_id: &str,
        event: &Value,
        attempts: u32,
        error_type: &str,
        error_message: &str,
        record: &DeliveredRecord,
    ) {
        let failure = json!({
            "version": "1.0",
            "timestamp": timestamp_now(),
            "requestContext": {
                "requestId": request_id,
                "functionArn": format!("{}:$LATEST", self.ctx.pool.function_arn()),
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {
                "errorType": error_type,
                "errorMessage": error_message,
            },
        });
        match &self.destination_url {
            Some(url) => {
                let sent = self.sqs.send_message().queue_url(url).message_body(failure.to_string()).send().await;
                if let Err(err) = sent {
                    tracing::error!(function = %self.ctx.function, error = %err, "sending the async failure record failed; the event is lost");
                }
            }
            None => {
                tracing::warn!(function = %self.ctx.function, "retries exhausted and no on-failure destination: the event is dropped, as on Lambda")
            }
        }
        self.ctx.publish(Delivery {
            function: self.ctx.function.clone(),
            source: self.source.clone(),
            request_id: request_id.to_owned(),
            records: vec![record.clone()],
            attempt: attempts,
            outcome: DeliveryOutcome::DeadLettered { destination_arn: self.config.on_failure_destination_arn.clone() },
        });
    }
}

struct Consumer {
    ctx: SourceContext,
    sqs: aws_sdk_sqs::Client,
    queue: InternalQueue,
    invoker: AsyncInvoker,
}

impl Consumer {
    async fn run(self: Arc<Self>, concurrency: usize) {
        let mut shutdown = self.ctx.shutdown.clone();
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        while !shutdown.is_requested() {
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = running.join_next() => {}
                    () = shutdown.requested() => break,
                }
                continue;
            }
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue.url)
                .max_number_of_messages(free.min(10) as i32)
                .wait_time_seconds(self.ctx.timing.sqs_wait.as_secs().min(20) as i32)
                .send();
            let received = tokio::select! {
                received = receive => received,
                // A long poll is dropped at shutdown, so the consumer stops at once rather than after its wait.
                () = shutdown.requested() => break,
            };
            let messages = match received {
                Ok(output) => output.messages.unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(function = %self.ctx.function, error = %err, "receiving async events failed");
                    shutdown.sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for message in messages {
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let consumer = self.clone();
                running.spawn(async move {
                    consumer.handle(message).await;
                    drop(permit);
                });
            }
        }
        // Events being retried finish their attempts; the runner bounds this wait.
        while running.join_next().await.is_some() {}
    }

    /// Invokes with one event until it is settled, then deletes it; an interrupted one comes back after its
    /// visibility timeout.
    async fn handle(&self, message: Message) {
        let body = message.body().unwrap_or_default();
        let event: Value = match serde_json::from_str(body) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(function = %self.ctx.function, error = %err, "an internal queue message is not JSON; dropped");
                self.delete(&message).await;
                return;
            }
        };
        if self.invoker.invoke(event).await == AsyncOutcome::Settled {
            self.delete(&message).await;
        }
    }

    async fn delete(&self, message: &Message) {
        let deleted = self
            .sqs
            .delete_message()
            .queue_url(&self.queue.url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await;
        if let Err(err) = deleted {
            tracing::warn!(function = %self.ctx.function, error = %err, "deleting an async event failed; it will be redelivered");
        }
    }
}
