//! The retry backoff of the SQS consumer runtime against a real emulator: the moto server of the local cloud
//! (started here, or the one `AWS_ENDPOINT_URL` names), with the queue of `tests/fixtures/backoff-queue.yaml`
//! deployed through CloudFormation. A message is received the way Lambda's event source mapping receives it, fails
//! through [`SqsRetryBackoff::process`] (what `run_sqs_consumer` runs for every batch), and must then stay invisible
//! for its backoff, well past the queue's own 1 s visibility timeout; one its handler asked to wait for longer
//! (an open circuit's `retry_in`) stays invisible for that wait instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_aws::SqsRetryBackoff;
use orderflow_local_cloud::emulator::Emulator;
use orderflow_toolkit::{HandlerError, MemoryDeadLetters, SqsBatchProcessor};
use serde_json::json;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn receive(client: &aws_sdk_sqs::Client, queue_url: &str) -> Option<Message> {
    let output = client
        .receive_message()
        .queue_url(queue_url)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .max_number_of_messages(1)
        .wait_time_seconds(0)
        .send()
        .await
        .expect("receive");
    output.messages.unwrap_or_default().into_iter().next()
}

fn receive_count(message: &Message) -> u32 {
    message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .expect("ApproximateReceiveCount")
}

/// The SQS record Lambda would hand the function for `message`.
fn record(message_id: &str, receipt_handle: &str, receive_count: u32, arn: &str) -> serde_json::Value {
    json!({"messageId": message_id, "receiptHandle": receipt_handle, "body": "{}",
           "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
           "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"})
}

/// Deploys the fixture queue under a fresh stage: its URL and ARN.
async fn deploy_queue(config: &aws_config::SdkConfig) -> (String, String) {
    let stage = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backoff-queue.yaml");
    let outputs = deploy_stack(
        &aws_sdk_cloudformation::Client::new(config),
        &format!("orderflow-{stage}-backoff"),
        &template,
        &[("Stage", stage.as_str())],
    )
    .await
    .expect("fixture deploys");
    (outputs.get("QueueUrl").expect("QueueUrl").to_owned(), outputs.get("QueueArn").expect("QueueArn").to_owned())
}

/// Waits until the message is visible again, at most `deadline` after `since`.
async fn until_visible(client: &aws_sdk_sqs::Client, queue_url: &str, since: Instant, deadline: Duration) -> Message {
    loop {
        if let Some(message) = receive(client, queue_url).await {
            return message;
        }
        assert!(since.elapsed() < deadline, "not visible again after {deadline:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failed_message_stays_invisible_for_its_backoff_then_comes_back() {
    let emulator = Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
    let config = sdk_config(emulator.endpoint());
    let (queue_url, queue_arn) = deploy_queue(&config).await;
    let (queue_url, queue_arn) = (queue_url.as_str(), queue_arn.as_str());
    let client = aws_sdk_sqs::Client::new(&config);
    client.send_message().queue_url(queue_url).message_body("{}").send().await.expect("send");

    // The first delivery is left to the queue's own 1 s timeout (a consumer that crashed): it comes back at once.
    let first = receive(&client, queue_url).await.expect("first delivery");
    assert_eq!(receive_count(&first), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let second = receive(&client, queue_url).await.expect("second delivery, after the queue's visibility timeout");
    assert_eq!(receive_count(&second), 2);
    let message_id = second.message_id().expect("message id");

    // The second delivery fails through the consumer's batch path. Next to it, records whose visibility cannot be
    // changed (an unknown queue, an invalid receipt handle): logged, and the batch is still answered.
    let event = serde_json::from_value(json!({"Records": [
        record(message_id, second.receipt_handle().expect("receipt handle"), 2, queue_arn),
        record("ghost", "no-handle", 1, "arn:aws:sqs:us-east-1:123456789012:no-such-queue"),
        record("stale", "not-a-receipt-handle", 1, queue_arn),
    ]}))
    .expect("SQS event");
    let backoff = SqsRetryBackoff::new(client.clone());
    let processor = SqsBatchProcessor::new(MemoryDeadLetters::default());
    let response = backoff
        .process(&processor, event, |_| async { Err(HandlerError::transient("dependency down")) })
        .await
        .expect("the batch is answered");
    let failed_at = Instant::now();
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, [message_id, "ghost", "stale"]);
    let policy = backoff.policy();
    let expected = policy.visibility_timeout(2, 0.0);
    assert_eq!(expected, Duration::from_secs(4), "base 2 s doubled for the second delivery");
    assert_eq!(policy.shortest_visibility_timeout(2), expected, "80% of 4 s, rounded up to whole seconds");

    // Not visible again after the queue's own timeout, nor well after it...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(receive(&client, queue_url).await.is_none(), "visible again before its backoff elapsed");
    // ...but once its backoff has elapsed.
    let third = until_visible(&client, queue_url, failed_at, expected + Duration::from_secs(5)).await;
    let waited = failed_at.elapsed();
    eprintln!("visible again after {waited:?} (backoff {expected:?})");
    assert!(waited >= expected - Duration::from_millis(500), "visible again after {waited:?}, backoff {expected:?}");
    assert_eq!(third.message_id(), Some(message_id));
    assert_eq!(receive_count(&third), 3);
}

#[tokio::test]
async fn a_message_refused_by_an_open_circuit_waits_out_its_retry_in_not_just_its_backoff() {
    let emulator = Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
    let config = sdk_config(emulator.endpoint());
    let (queue_url, queue_arn) = deploy_queue(&config).await;
    let client = aws_sdk_sqs::Client::new(&config);
    client.send_message().queue_url(&queue_url).message_body("{}").send().await.expect("send");
    let first = receive(&client, &queue_url).await.expect("first delivery");
    let message_id = first.message_id().expect("message id");

    let retry_in = Duration::from_secs(5);
    let event = serde_json::from_value(json!({"Records": [
        record(message_id, first.receipt_handle().expect("receipt handle"), 1, &queue_arn),
    ]}))
    .expect("SQS event");
    let backoff = SqsRetryBackoff::new(client.clone()).with_jitter_seed(1);
    let backoff_alone = backoff.policy().visibility_timeout(1, 0.0);
    assert_eq!(backoff_alone, Duration::from_secs(2));
    let processor = SqsBatchProcessor::new(MemoryDeadLetters::default());
    backoff
        .process(&processor, event, |_| async move { Err(HandlerError::transient_after("circuit open", retry_in)) })
        .await
        .expect("the batch is answered");
    let failed_at = Instant::now();

    // Past the queue's timeout and the 2 s backoff, it still waits for the circuit...
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(receive(&client, &queue_url).await.is_none(), "visible again before the circuit's retry_in");
    // ...and comes back after retry_in plus at most 20% (6 s), rounded up.
    let second = until_visible(&client, &queue_url, failed_at, Duration::from_secs(6 + 5)).await;
    let waited = failed_at.elapsed();
    eprintln!("visible again after {waited:?} (retry_in {retry_in:?})");
    assert!(waited >= retry_in - Duration::from_millis(500), "visible again after {waited:?}");
    assert_eq!(second.message_id(), Some(message_id));
}
