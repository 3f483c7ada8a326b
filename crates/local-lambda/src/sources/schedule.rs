//! Schedules that invoke a function: `Type: Schedule` (an EventBridge rule with a `rate()` expression) and
//! `Type: ScheduleV2` (an EventBridge Scheduler schedule).
//!
//! Neither emulator fires a schedule at a Lambda function, so the runner does: one task per enabled schedule waits
//! its interval (or the runner's override, so that tests see a minutes-long schedule every second), then invokes the
//! function with the event EventBridge sends for a scheduled rule, through the same asynchronous invocation as the
//! rules ([`AsyncInvoker`]: `EventInvokeConfig` retries, then the on-failure destination). Fires of one schedule
//! never overlap: a slow run, retries included, delays the next fire, and the fires it overran are skipped.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::rule::{AsyncInvoker, AsyncOutcome};
use super::{SourceContext, SourceRef};
use crate::iac::{AsyncInvokeConfig, FunctionSpec, ScheduleKind, ScheduleSource};

/// tokio's interval refuses a zero period; an override below this fires at this pace.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Starts one task per enabled schedule of `function`, each firing every `interval` when given, else at its own
/// rate. Fails when the on-failure destination of `config` does not exist.
pub async fn spawn(
    ctx: &SourceContext,
    sqs: &aws_sdk_sqs::Client,
    function: &FunctionSpec,
    config: &AsyncInvokeConfig,
    interval: Option<Duration>,
) -> Result<Vec<JoinHandle<()>>> {
    for disabled in function.schedules.iter().filter(|s| !s.enabled) {
        tracing::info!(function = %function.name, schedule = %disabled.name, "disabled schedule: it never fires");
    }
    let enabled: Vec<&ScheduleSource> = function.schedules.iter().filter(|s| s.enabled).collect();
    if enabled.is_empty() {
        return Ok(Vec::new());
    }
    let destination_url = match &config.on_failure_destination_arn {
        Some(arn) => Some(super::sqs::queue_url(sqs, arn).await.context("EventInvokeConfig on-failure destination")?),
        None => None,
    };
    let tasks = enabled
        .into_iter()
        .map(|schedule| {
            let source = SourceRef::Schedule { name: schedule.name.clone(), event_id: schedule.event_id.clone() };
            let firing = Firing {
                ctx: ctx.clone(),
                schedule: schedule.clone(),
                invoker: AsyncInvoker::new(ctx, sqs, config, destination_url.clone(), source),
                interval: interval.unwrap_or(schedule.interval).max(MIN_INTERVAL),
            };
            tokio::spawn(firing.run())
        })
        .collect();
    Ok(tasks)
}

struct Firing {
    ctx: SourceContext,
    schedule: ScheduleSource,
    invoker: AsyncInvoker,
    interval: Duration,
}

impl Firing {
    async fn run(self) {
        let mut shutdown = self.ctx.shutdown.clone();
        // Like EventBridge, the first fire comes one period after the schedule is created.
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.requested() => return,
            }
            let pool = self.ctx.pool.config();
            let event = scheduled_event(&self.schedule, &pool.region, &pool.account_id);
            if self.invoker.invoke(event).await == AsyncOutcome::Interrupted {
                return;
            }
        }
    }
}

/// The event EventBridge sends for one fire of `schedule`.
fn scheduled_event(schedule: &ScheduleSource, region: &str, account: &str) -> Value {
    let name = &schedule.name;
    let (source, resource, detail) = match &schedule.kind {
        ScheduleKind::Rule => ("aws.events", format!("arn:aws:events:{region}:{account}:rule/{name}"), json!({})),
        // Scheduler's default payload carries its (empty) detail as JSON text.
        ScheduleKind::Scheduler { group } => {
            ("aws.scheduler", format!("arn:aws:scheduler:{region}:{account}:schedule/{group}/{name}"), json!("{}"))
        }
    };
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": source,
        "account": account,
        "time": fire_time(),
        "region": region,
        "resources": [resource],
        "detail": detail,
    })
}

/// The current time as EventBridge writes an event's `time` (RFC 3339, whole seconds, `Z`).
fn fire_time() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> ScheduleSource {
        ScheduleSource {
            event_id: "Sweep".into(),
            name: "DeadlinesSweep".into(),
            kind,
            expression: "rate(1 minute)".into(),
            enabled: true,
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_rule_fire_is_eventbridges_scheduled_event() {
        let event = scheduled_event(&schedule(ScheduleKind::Rule), "eu-west-1", "123456789012");
        assert_eq!(event["version"], "0");
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert_eq!(event["account"], "123456789012");
        assert_eq!(event["region"], "eu-west-1");
        assert_eq!(event["resources"], json!(["arn:aws:events:eu-west-1:123456789012:rule/DeadlinesSweep"]));
        assert_eq!(event["detail"], json!({}));
        uuid::Uuid::parse_str(event["id"].as_str().unwrap()).unwrap();
        let parsed: aws_lambda_events::event::eventbridge::EventBridgeEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.source, "aws.events");
    }

    #[test]
    fn a_scheduler_fire_names_its_group_and_schedule() {
        let event = scheduled_event(&schedule(ScheduleKind::Scheduler { group: "ops".into() }), "us-east-1", "1");
        assert_eq!(event["source"], "aws.scheduler");
        assert_eq!(event["resources"], json!(["arn:aws:scheduler:us-east-1:1:schedule/ops/DeadlinesSweep"]));
        assert_eq!(event["detail"], "{}");
    }

    #[test]
    fn fire_times_are_rfc3339_in_whole_seconds() {
        let time = fire_time();
        let parsed = time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(parsed.nanosecond(), 0, "{time}");
        assert!(time.ends_with('Z') && time.len() == "2026-11-24T10:05:00Z".len(), "{time}");
    }
}
