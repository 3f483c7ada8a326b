//! Deploying CloudFormation templates through the CloudFormation API, the same way to AWS and to
//! the local emulators, and reading back what a stack exposes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackStatus};

use crate::aws::describe_sdk_error;

/// How long one create, update or delete may take before we give up waiting, unless the
/// environment variable [`STACK_TIMEOUT_ENV`] says otherwise.
const STACK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Seconds to wait for one stack operation instead of the default 15 minutes (emulators finish
/// in seconds; a CI run can use a short value so a stack an emulator left `*_IN_PROGRESS` fails
/// fast).
pub const STACK_TIMEOUT_ENV: &str = "LOCAL_LAMBDA_STACK_TIMEOUT_SECS";
/// First and longest pause between two DescribeStacks polls. Emulators finish in well under a
/// second, AWS in minutes; the interval grows from the first to the second.
const POLL_MIN: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(5);

/// The outputs and exports of a deployed stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs {
    stack_name: String,
    outputs: BTreeMap<String, String>,
    exports: BTreeMap<String, String>,
}

impl StackOutputs {
    /// Builds outputs by hand (for tests of code that consumes them).
    pub fn new(
        stack_name: impl Into<String>,
        outputs: BTreeMap<String, String>,
        exports: BTreeMap<String, String>,
    ) -> StackOutputs {
        StackOutputs { stack_name: stack_name.into(), outputs, exports }
    }

    /// The stack these outputs belong to.
    pub fn stack_name(&self) -> &str {
        &self.stack_name
    }

    /// The value of output `key`; the error names the key, the stack and the keys it has.
    pub fn get(&self, key: &str) -> Result<&str> {
        self.outputs.get(key).map(String::as_str).ok_or_else(|| {
            anyhow!("stack {} has no output {key:?} (its outputs: {})", self.stack_name, list_keys(&self.outputs))
        })
    }

    /// The value of the export `name` made by this stack; the error names the export and the
    /// stack.
    pub fn export(&self, name: &str) -> Result<&str> {
        self.exports.get(name).map(String::as_str).ok_or_else(|| {
            anyhow!("stack {} exports no {name:?} (its exports: {})", self.stack_name, list_keys(&self.exports))
        })
    }

    /// Every output, key -> value.
    pub fn outputs(&self) -> &BTreeMap<String, String> {
        &self.outputs
    }

    /// Every export of this stack, export name -> value.
    pub fn exports(&self) -> &BTreeMap<String, String> {
        &self.exports
    }
}

fn list_keys(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() { "none".to_string() } else { map.keys().cloned().collect::<Vec<_>>().join(", ") }
}

/// Creates stack `stack_name` from the template file, or updates it when it exists ("No updates
/// are to be performed" counts as success), waits until it is `CREATE_COMPLETE` or
/// `UPDATE_COMPLETE`, and returns its outputs and exports.
///
/// A stack left in `ROLLBACK_COMPLETE` by a failed create cannot be updated, so it is deleted and
/// created again. When the operation fails, the error lists each failed resource with
/// CloudFormation's reason (from DescribeStackEvents). The template goes in the request body;
/// IAM and macro (SAM) capabilities are granted.
///
/// DynamoDB streams on LocalStack lose the records written in the first ~0.5 s after a table
/// turns ACTIVE (which is when the stack completes): a test that writes to a stream-enabled
/// table right after deploying should wait a second first, or it will miss events.
pub async fn deploy_stack(
    client: &Client,
    stack_name: &str,
    template_path: &Path,
    parameters: &[(&str, &str)],
) -> Result<StackOutputs> {
    let template = std::fs::read_to_string(template_path)
        .with_context(|| format!("reading template {}", template_path.display()))?;
    let parameters: Vec<Parameter> = parameters
        .iter()
        .map(|(key, value)| Parameter::builder().parameter_key(*key).parameter_value(*value).build())
        .collect();
    let capabilities = [Capability::CapabilityIam, Capability::CapabilityNamedIam, Capability::CapabilityAutoExpand];
    let what = format!("deploying {} as stack {stack_name}", template_path.display());

    let mut existing = describe(client, stack_name).await.with_context(|| what.clone())?;
    if let Some(stack) = &existing
        && is_in_progress(stack_status(stack))
    {
        // Another deploy (or a delete) is under way: let it finish first.
        existing = wait_settled(client, stack_name).await.with_context(|| what.clone())?;
    }
    if let Some(stack) = &existing
        && matches!(
            stack_status(stack),
            StackStatus::RollbackComplete | StackStatus::RollbackFailed | StackStatus::CreateFailed
        )
    {
        let id = stack.stack_id().unwrap_or(stack_name).to_string();
        delete_by_id(client, stack_name, &id).await.with_context(|| what.clone())?;
        existing = None;
    }

    let stack_id = match existing {
        Some(stack) => {
            let id = stack.stack_id().unwrap_or(stack_name).to_string();
            let update = client
                .update_stack()
                .stack_name(stack_name)
                .template_body(&template)
                .set_parameters(Some(parameters))
                .set_capabilities(Some(capabilities.to_vec()))
                .send()
                .await;
            match update {
                Ok(_) => {
                    expect_success(client, stack_name, &id, "update").await.with_context(|| what.clone())?;
                }
                Err(err) if is_no_updates(&err) => {}
                Err(err) => {
                    let mut message = describe_sdk_error(&err);
                    // moto updates inside UpdateStack; on a resource's error it can leave the
                    // stack *_IN_PROGRESS for ever, which would stall the next deploy.
                    if let Ok(Some(stack)) = describe(client, stack_name).await
                        && is_in_progress(stack_status(&stack))
                    {
                        message.push_str(&format!(
                            " (the stack is left {}; delete it or reset the emulator)",
                            stack_status(&stack).as_str()
                        ));
                    }
                    return Err(anyhow!(message)).context(what);
                }
            }
            id
        }
        None => {
            let created = client
                .create_stack()
                .stack_name(stack_name)
                .template_body(&template)
                .set_parameters(Some(parameters))
                .set_capabilities(Some(capabilities.to_vec()))
                .send()
                .await;
            let created = match created {
                Ok(created) => created,
                Err(err) => {
                    let message = describe_sdk_error(&err);
                    // moto creates the resources inside CreateStack: when one fails it answers
                    // with that resource's error and leaves the stack CREATE_IN_PROGRESS for
                    // ever, which would stall the next deploy. AWS creates no stack on an error.
                    if let Ok(Some(stack)) = describe(client, stack_name).await
                        && stack_status(&stack) == &StackStatus::CreateInProgress
                        && let Some(id) = stack.stack_id()
                    {
                        let _ = delete_by_id(client, stack_name, id).await;
                    }
                    return Err(anyhow!(message)).context(what);
                }
            };
            let id = created.stack_id().unwrap_or(stack_name).to_string();
            expect_success(client, stack_name, &id, "create").await.with_context(|| what.clone())?;
            id
        }
    };
    read_outputs(client, stack_name, &stack_id).await
}

/// The outputs and exports of an existing stack, without deploying anything.
pub async fn stack_outputs(client: &Client, stack_name: &str) -> Result<StackOutputs> {
    let stack = describe(client, stack_name).await?.with_context(|| format!("stack {stack_name} does not exist"))?;
    let id = stack.stack_id().unwrap_or(stack_name).to_string();
    read_outputs(client, stack_name, &id).await
}

/// Deletes stack `stack_name` and waits until it is gone. A stack that does not exist is fine.
pub async fn delete_stack(client: &Client, stack_name: &str) -> Result<()> {
    let Some(stack) = describe(client, stack_name).await? else {
        return Ok(());
    };
    let id = stack.stack_id().unwrap_or(stack_name).to_string();
    delete_by_id(client, stack_name, &id).await
}

async fn delete_by_id(client: &Client, stack_name: &str, stack_id: &str) -> Result<()> {
    client
        .delete_stack()
        .stack_name(stack_id)
        .send()
        .await
        .map_err(|err| anyhow!(describe_sdk_error(&err)))
        .with_context(|| format!("deleting stack {stack_name}"))?;
    match wait_settled(client, stack_name).await? {
        None => Ok(()),
        Some(stack) if stack_status(&stack) == &StackStatus::DeleteComplete => Ok(()),
        // A new stack of the same name, created by someone else meanwhile.
        Some(stack) if stack.stack_id() != Some(stack_id) => Ok(()),
        Some(stack) => Err(failure(client, stack_id, &stack, "delete").await),
    }
}

/// DescribeStacks for one stack; `None` when it does not exist.
async fn describe(client: &Client, stack: &str) -> Result<Option<Stack>> {
    match client.describe_stacks().stack_name(stack).send().await {
        Ok(out) => Ok(out.stacks().first().cloned()),
        Err(err) if err.message().is_some_and(|m| m.contains("does not exist")) => Ok(None),
        Err(err) => Err(anyhow!(describe_sdk_error(&err))).with_context(|| format!("describing stack {stack}")),
    }
}

/// Waits until the stack's operation is over; returns the final state (`None`: it is gone).
///
/// Polls by stack *name*: by name a deleted stack is simply gone, while describing a deleted
/// stack by id makes moto evaluate its outputs, which re-creates its deleted resources.
async fn wait_settled(client: &Client, stack_name: &str) -> Result<Option<Stack>> {
    let timeout = stack_timeout();
    let started = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        let stack = describe(client, stack_name).await?;
        match &stack {
            Some(s) if is_in_progress(stack_status(s)) => {}
            _ => return Ok(stack),
        }
        if started.elapsed() > timeout {
            bail!(
                "stack {stack_name} still {} after {timeout:?}",
                stack.as_ref().map(|s| stack_status(s).as_str()).unwrap_or("?")
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(POLL_MAX);
    }
}

/// Waits for a create or update to finish and fails unless it ends `*_COMPLETE` (not a
/// rollback).
async fn expect_success(client: &Client, stack_name: &str, stack_id: &str, operation: &str) -> Result<()> {
    let stack = wait_settled(client, stack_name)
        .await?
        .with_context(|| format!("stack {stack_name} vanished during its {operation}"))?;
    match stack_status(&stack) {
        StackStatus::CreateComplete | StackStatus::UpdateComplete | StackStatus::ImportComplete => Ok(()),
        _ => Err(failure(client, stack_id, &stack, operation).await),
    }
}

/// The error for a failed operation: the stack's final status and reason, and every resource
/// that failed in this operation with CloudFormation's reason.
async fn failure(client: &Client, stack_id: &str, stack: &Stack, operation: &str) -> anyhow::Error {
    let name = stack.stack_name().unwrap_or(stack_id);
    let mut message = format!("the {operation} of stack {name} ended in {}", stack_status(stack).as_str());
    if let Some(reason) = stack.stack_status_reason().filter(|r| !r.is_empty()) {
        message.push_str(&format!(" ({reason})"));
    }
    match failed_resources(client, stack_id, name).await {
        Ok(failed) if failed.is_empty() => message.push_str("; no resource reported a failure"),
        Ok(failed) => {
            message.push_str("; failed resources:");
            for line in failed {
                message.push_str("\n  ");
                message.push_str(&line);
            }
        }
        Err(err) => message.push_str(&format!("; reading its events failed: {err:#}")),
    }
    anyhow!(message)
}

/// "Logical (Type): reason" for each resource that failed since the operation began. Events come
/// newest first; the operation began at the stack's own latest `*_IN_PROGRESS` event that
/// started it ("User Initiated"), or at the oldest event when there is none.
async fn failed_resources(client: &Client, stack_id: &str, stack_name: &str) -> Result<Vec<String>> {
    let mut failed = Vec::new();
    let mut next_token: Option<String> = None;
    'pages: loop {
        let page = client
            .describe_stack_events()
            .stack_name(stack_id)
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|err| anyhow!(describe_sdk_error(&err)))?;
        for event in page.stack_events() {
            let status = event.resource_status().map(|s| s.as_str()).unwrap_or("");
            let logical = event.logical_resource_id().unwrap_or("?");
            let is_stack = logical == stack_name || event.resource_type() == Some("AWS::CloudFormation::Stack");
            if is_stack
                && matches!(status, "CREATE_IN_PROGRESS" | "UPDATE_IN_PROGRESS" | "DELETE_IN_PROGRESS")
                && event.resource_status_reason() == Some("User Initiated")
            {
                break 'pages;
            }
            if status.ends_with("_FAILED") && !is_stack {
                failed.push(format!(
                    "{logical} ({}): {} {}",
                    event.resource_type().unwrap_or("?"),
                    status,
                    event.resource_status_reason().unwrap_or("no reason given")
                ));
            }
        }
        match page.next_token() {
            Some(token) => next_token = Some(token.to_string()),
            None => break,
        }
    }
    // Oldest first reads like the deployment happened.
    failed.reverse();
    Ok(failed)
}

/// Outputs from DescribeStacks and this stack's exports from ListExports.
async fn read_outputs(client: &Client, stack_name: &str, stack_id: &str) -> Result<StackOutputs> {
    let stack =
        describe(client, stack_name).await?.with_context(|| format!("stack {stack_name} vanished after deploying"))?;
    let stack_id = stack.stack_id().unwrap_or(stack_id);
    let outputs = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value().unwrap_or("").to_string())))
        .collect();
    let mut exports = BTreeMap::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = client
            .list_exports()
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|err| anyhow!(describe_sdk_error(&err)))
            .with_context(|| format!("listing the exports of stack {stack_name}"))?;
        for export in page.exports() {
            if export.exporting_stack_id() == Some(stack_id)
                && let (Some(name), Some(value)) = (export.name(), export.value())
            {
                exports.insert(name.to_string(), value.to_string());
            }
        }
        match page.next_token() {
            Some(token) => next_token = Some(token.to_string()),
            None => break,
        }
    }
    Ok(StackOutputs { stack_name: stack_name.to_string(), outputs, exports })
}

/// [`STACK_TIMEOUT`], or the seconds in [`STACK_TIMEOUT_ENV`].
fn stack_timeout() -> Duration {
    std::env::var(STACK_TIMEOUT_ENV)
        .ok()
        .and_then(|secs| secs.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(STACK_TIMEOUT)
}

fn stack_status(stack: &Stack) -> &StackStatus {
    stack.stack_status().unwrap_or(&StackStatus::CreateInProgress)
}

fn is_in_progress(status: &StackStatus) -> bool {
    status.as_str().ends_with("_IN_PROGRESS")
}

fn is_no_updates<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.message().is_some_and(|m| m.contains("No updates are to be performed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> StackOutputs {
        StackOutputs::new(
            "orderflow-test",
            BTreeMap::from([("QueueUrl".to_string(), "http://q".to_string())]),
            BTreeMap::new(),
        )
    }

    #[test]
    fn get_returns_an_output_value() {
        assert_eq!(outputs().get("QueueUrl").expect("present"), "http://q");
    }

    #[test]
    fn missing_output_error_names_the_key_and_the_stack() {
        let err = outputs().get("BusName").expect_err("missing").to_string();
        assert!(err.contains("BusName") && err.contains("orderflow-test"), "{err}");
        assert!(err.contains("QueueUrl"), "lists the outputs it has: {err}");
    }

    #[test]
    fn missing_export_error_names_the_export_and_the_stack() {
        let err = outputs().export("orderflow-test-Bus").expect_err("missing").to_string();
        assert!(err.contains("orderflow-test-Bus") && err.contains("orderflow-test"), "{err}");
    }
}
