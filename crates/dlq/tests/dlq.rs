//! The DLQ operations and the `orderflow-dlq` binary against a real emulator: a moto server of the test's own
//! (started with the local cloud's helpers), or the emulator `AWS_ENDPOINT_URL` names. The queues come from the
//! CloudFormation fixture `tests/fixtures/queues.yaml` (a consumer queue with a RedrivePolicy to its DLQ, a Lambda
//! on-failure destination, a queue that is no DLQ), deployed into a stage of each test's own.
//!
//! Dead letters are sent the way orderflow's functions send them (`orderflow_aws::SqsDeadLetters`), or moved there
//! by SQS itself after `maxReceiveCount` receives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use local_lambda::aws::sdk_config;
use local_lambda::deploy::{delete_stack, deploy_stack};
use orderflow_aws::SqsDeadLetters;
use orderflow_dlq::{
    CLASS_ATTRIBUTE, DeadLetterQueues, Depth, QueueRef, REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE, Selection, render,
};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_toolkit::{DeadLetter, DeadLetterSink};

const BIN: &str = env!("CARGO_BIN_EXE_orderflow-dlq");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An emulator with the fixture deployed in stage `orderflow-<stage>-`.
struct Fixture {
    emulator: Emulator,
    stack: String,
    prefix: String,
    sqs: Client,
    dlqs: DeadLetterQueues,
    /// The consumer queue, whose RedrivePolicy names `dlq`.
    queue: QueueRef,
    dlq: QueueRef,
    /// A Lambda on-failure destination: a DLQ by name only.
    notifications_dlq: QueueRef,
}

impl Fixture {
    async fn start(test: &str) -> Fixture {
        let emulator =
            Emulator::from_env_or_moto(&workspace_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
        // Unique per test and per run, so a shared emulator is fine too.
        let stage = format!("dlq-{test}-{}", std::process::id());
        let config = sdk_config(emulator.endpoint());
        let cfn = aws_sdk_cloudformation::Client::new(&config);
        let stack = format!("orderflow-{stage}-fixture");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queues.yaml");
        let outputs = deploy_stack(&cfn, &stack, &template, &[("Stage", &stage)]).await.expect("fixture deploys");
        let queue = |output: &str| QueueRef::from_url(outputs.get(output).expect("output")).expect("queue URL");
        let sqs = Client::new(&config);
        Fixture {
            prefix: format!("orderflow-{stage}-"),
            dlqs: DeadLetterQueues::new(sqs.clone()),
            queue: queue("OrdersQueueUrl"),
            dlq: queue("OrdersDlqUrl"),
            notifications_dlq: queue("NotificationsDlqUrl"),
            sqs,
            stack,
            emulator,
        }
    }

    /// Deletes the fixture's stack (the queues of a shared emulator); a moto of our own just stops.
    async fn finish(self) {
        if self.emulator.pid().is_none() {
            let cfn = aws_sdk_cloudformation::Client::new(&sdk_config(self.emulator.endpoint()));
            delete_stack(&cfn, &self.stack).await.expect("fixture stack deleted");
        }
    }

    /// Dead-letters a message the way a consumer does: original body and attributes, our reason attributes.
    async fn dead_letter(&self, source_id: &str, body: &str, reason: &str, attributes: &[(&str, &str)]) {
        let letter = DeadLetter {
            message_id: source_id.to_owned(),
            body: body.to_owned(),
            reason: reason.to_owned(),
            error_class: "Permanent".to_owned(),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        SqsDeadLetters::new(self.sqs.clone(), &self.dlq.url).send(letter).await.expect("dead letter sent");
    }

    /// A message SQS itself moves to the DLQ: sent to the consumer queue with a Number attribute, received
    /// `maxReceiveCount` (2) times without being deleted. Returns its message id.
    async fn exhaust_receives(&self, body: &str) -> String {
        let number = MessageAttributeValue::builder().data_type("Number").string_value("7").build().expect("type");
        let sent = self
            .sqs
            .send_message()
            .queue_url(&self.queue.url)
            .message_body(body)
            .message_attributes("attempt", number)
            .send()
            .await
            .expect("sent");
        for _ in 0..2 {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue.url)
                .visibility_timeout(0)
                .send()
                .await
                .expect("receive");
            assert_eq!(received.messages().len(), 1, "the consumer receives it and fails");
        }
        // The receive after maxReceiveCount moves it to the DLQ.
        let received = self.sqs.receive_message().queue_url(&self.queue.url).send().await.expect("receive");
        assert!(received.messages().is_empty(), "moved to the DLQ: {received:?}");
        sent.message_id().expect("message id").to_owned()
    }

    /// A Lambda async-invoke failure record, as the notifications function's on-failure destination gets it.
    async fn async_invoke_failure(&self, error_message: &str) {
        let record = serde_json::json!({
            "version": "1.0",
            "timestamp": "2026-01-05T10:00:00.000Z",
            "requestContext": {
                "requestId": "c9a7e1b2-0000-4000-8000-000000000001",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:orderflow-dev-notifications:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": {"detail-type": "OrderShipped", "source": "orderflow.saga", "detail": {"id": "e-1"}},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "HandlerError", "errorMessage": error_message}
        });
        self.sqs
            .send_message()
            .queue_url(&self.notifications_dlq.url)
            .message_body(record.to_string())
            .send()
            .await
            .expect("failure record sent");
    }

    /// Every message of `queue` (received and deleted), with all attributes.
    async fn drain(&self, queue: &QueueRef) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            if out.messages().is_empty() {
                return all;
            }
            for message in out.messages() {
                let handle = message.receipt_handle().expect("handle");
                self.sqs.delete_message().queue_url(&queue.url).receipt_handle(handle).send().await.expect("delete");
            }
            all.extend(out.messages().iter().cloned());
        }
    }

    async fn depth(&self, queue: &QueueRef) -> Depth {
        self.dlqs.depth(queue).await.expect("depth")
    }

    /// Runs the binary against this emulator with stdin closed (no terminal).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--endpoint-url")
            .arg(self.emulator.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .env("AWS_REGION", local_lambda::aws::REGION)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .output()
            .expect("orderflow-dlq runs")
    }
}

fn attribute_names(message: &Message) -> BTreeSet<String> {
    message.message_attributes().map(|a| a.keys().cloned().collect()).unwrap_or_default()
}

fn string_attribute<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value())
}

#[tokio::test]
async fn list_shows_each_dlq_with_its_depth_and_sources() {
    let fx = Fixture::start("list").await;
    fx.dead_letter("m-1", r#"{"type":"Teleported"}"#, "unknown event type \"Teleported\"", &[]).await;
    fx.dead_letter("m-2", "not json", "malformed body", &[]).await;
    fx.exhaust_receives(r#"{"type":"OrderPlaced"}"#).await;
    // One of the three in flight: somebody is looking at it.
    let held = fx.sqs.receive_message().queue_url(&fx.dlq.url).visibility_timeout(300).send().await.expect("receive");
    assert_eq!(held.messages().len(), 1);
    fx.async_invoke_failure("boom").await;

    let found = fx.dlqs.list(Some(&fx.prefix)).await.expect("list");
    let names: Vec<&str> = found.iter().map(|d| d.queue.name.as_str()).collect();
    assert_eq!(names, [fx.notifications_dlq.name.as_str(), fx.dlq.name.as_str()], "the Other queue is no DLQ");

    let notifications = &found[0];
    assert_eq!(notifications.depth, Depth { visible: 1, in_flight: 0 });
    assert!(notifications.sources.is_empty(), "found by its name: {notifications:?}");
    let orders = &found[1];
    assert_eq!(orders.depth, Depth { visible: 2, in_flight: 1 });
    assert_eq!(orders.depth.total(), 3);
    // (By name: CloudFormation gives the queue URLs of AWS, ListQueues those of the endpoint.)
    assert_eq!(orders.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [fx.queue.name.as_str()]);
    assert!(orders.arn.ends_with(&format!(":{}", fx.dlq.name)), "{}", orders.arn);

    // The binary prints the same as a table.
    let out = fx.run(&["list", "--prefix", &fx.prefix]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    eprintln!("{stdout}");
    let row = stdout.lines().find(|l| l.starts_with(&fx.dlq.name)).expect("a row for the DLQ");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, [fx.dlq.name.as_str(), "3", "2", "1", fx.queue.name.as_str()], "{row}");
    let row = stdout.lines().find(|l| l.starts_with(&fx.notifications_dlq.name)).expect("a row");
    assert!(row.contains("(found by name)"), "{row}");
    assert!(!stdout.contains("-Other"), "{stdout}");

    let none = fx.dlqs.list(Some("orderflow-no-such-stage-")).await.expect("list");
    assert!(none.is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn show_prints_the_failure_reasons() {
    let fx = Fixture::start("show").await;
    let body = r#"{"id":"e-1","type":"Teleported","version":1,"data":{"order_id":"o-1"}}"#;
    fx.dead_letter("src-1", body, "unknown event type \"Teleported\"", &[("trace-id", "t-1")]).await;
    let moved_id = fx.exhaust_receives("plain text body").await;
    fx.async_invoke_failure("Notifications table orderflow-dev-Notifications not found").await;

    let peek = fx.dlqs.show(&fx.dlq, 10).await.expect("show");
    assert!(peek.warnings.is_empty(), "{:?}", peek.warnings);
    assert_eq!(peek.messages.len(), 2);
    let ours = peek.messages.iter().find(|m| m.body == body).expect("the dead letter");
    assert_eq!(ours.failure.reason.as_deref(), Some("unknown event type \"Teleported\""));
    assert_eq!(ours.failure.class.as_deref(), Some("Permanent"));
    assert_eq!(ours.failure.source_message_id.as_deref(), Some("src-1"));
    assert_eq!(ours.receive_count, Some(1), "show's own receive");
    assert!(ours.sent_at.is_some());
    let by_sqs = peek.messages.iter().find(|m| m.message_id == moved_id).expect("the message SQS moved");
    assert_eq!(by_sqs.failure.reason, None);
    assert_eq!(by_sqs.receive_count, Some(3), "two receives in the source queue, one by show");

    let text = render::peek(&fx.dlq, None, &peek, false);
    eprintln!("{text}");
    for expected in [
        "reason:         unknown event type \"Teleported\"",
        "error class:    Permanent",
        "source message: src-1",
        "attributes:     trace-id = \"t-1\"",
        "      \"type\": \"Teleported\",",
        "    plain text body",
        "(not recorded: typically SQS moved it here after maxReceiveCount receives)",
        "attempt = \"7\" (Number)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // Looking changes nothing: both are visible again at once.
    assert_eq!(fx.depth(&fx.dlq).await, Depth { visible: 2, in_flight: 0 });
    let again = fx.dlqs.show(&fx.dlq, 1).await.expect("show one");
    assert_eq!(again.messages.len(), 1, "--max is respected");

    // A Lambda failure record: the reason is its responsePayload.errorMessage. Through the binary, by name.
    let out = fx.run(&["show", &fx.notifications_dlq.name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 message shown (depth 1: 1 visible, 0 in flight)"), "{stdout}");
    assert!(stdout.contains("reason:         Notifications table orderflow-dev-Notifications not found"), "{stdout}");
    assert!(stdout.contains("error class:    HandlerError"), "{stdout}");
    assert!(stdout.contains("RetriesExhausted after 3 attempts"), "{stdout}");
    fx.finish().await;
}

#[tokio::test]
async fn redrive_all_moves_every_message_back_without_our_error_attributes() {
    let fx = Fixture::start("all").await;
    let mut bodies = BTreeSet::new();
    for i in 0..12 {
        let body = format!(r#"{{"n":{i}}}"#);
        fx.dead_letter(&format!("src-{i}"), &body, "handler failed", &[("trace-id", &format!("t-{i}"))]).await;
        bodies.insert(body);
    }
    let moved_by_sqs = fx.exhaust_receives("by sqs").await;
    bodies.insert("by sqs".to_owned());

    let target = fx.dlqs.redrive_target(&fx.dlq).await.expect("the source queue, from the RedrivePolicy");
    assert!(target.is_same_queue(&fx.queue), "{target:?}");
    let report = fx.dlqs.redrive(&fx.dlq, &target, &Selection::All).await.expect("redrive");
    assert_eq!(report.moved.len(), 13, "{report:?}");
    assert!(report.is_complete() && report.warnings.is_empty(), "{report:?}");
    assert!(report.moved.contains(&moved_by_sqs));
    assert_eq!(render::redrive(&report), format!("moved 13 messages from {} to {}\n", fx.dlq.name, fx.queue.name));
    assert_eq!(fx.depth(&fx.dlq).await, Depth::default(), "the DLQ is empty");

    let back = fx.drain(&fx.queue).await;
    assert_eq!(back.iter().map(|m| m.body().unwrap_or_default().to_owned()).collect::<BTreeSet<_>>(), bodies);
    for message in &back {
        let names = attribute_names(message);
        assert!(!names.contains(REASON_ATTRIBUTE) && !names.contains(CLASS_ATTRIBUTE), "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("orderflow-error-")), "{names:?}");
        if message.body() == Some("by sqs") {
            let attempt = message.message_attributes().and_then(|a| a.get("attempt")).expect("attribute kept");
            assert_eq!((attempt.data_type(), attempt.string_value()), ("Number", Some("7")));
            assert_eq!(names, BTreeSet::from(["attempt".to_owned()]));
        } else {
            let n: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
            let n = n["n"].as_u64().unwrap();
            assert_eq!(string_attribute(message, "trace-id"), Some(format!("t-{n}").as_str()), "original kept");
            assert_eq!(string_attribute(message, SOURCE_MESSAGE_ATTRIBUTE), Some(format!("src-{n}").as_str()));
        }
    }
    fx.finish().await;
}

#[tokio::test]
async fn redrive_of_selected_message_ids_moves_only_those() {
    let fx = Fixture::start("one").await;
    for i in 0..3 {
        fx.dead_letter(&format!("src-{i}"), &format!("body {i}"), "handler failed", &[]).await;
    }
    let peek = fx.dlqs.show(&fx.dlq, 10).await.expect("show");
    let chosen = peek.messages.iter().find(|m| m.body == "body 1").expect("body 1").message_id.clone();

    // Through the binary: the source queue comes from the redrive relationship.
    let out = fx.run(&["redrive", &fx.dlq.url, "--message-id", &chosen]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout, format!("moved 1 message from {} to {}\n", fx.dlq.name, fx.queue.name));

    assert_eq!(fx.depth(&fx.dlq).await, Depth { visible: 2, in_flight: 0 }, "the others are visible again at once");
    let back = fx.drain(&fx.queue).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some("body 1"));
    let left: BTreeSet<String> = fx.drain(&fx.dlq).await.iter().map(|m| m.body().unwrap().to_owned()).collect();
    assert_eq!(left, BTreeSet::from(["body 0".to_owned(), "body 2".to_owned()]));

    // An id that is not there is reported and nothing moves; the exit code says so.
    fx.dead_letter("src-3", "body 3", "handler failed", &[]).await;
    let ids = Selection::Ids(BTreeSet::from(["no-such-id".to_owned()]));
    let report = fx.dlqs.redrive(&fx.dlq, &fx.queue, &ids).await.expect("redrive");
    assert!(report.moved.is_empty() && !report.is_complete(), "{report:?}");
    assert_eq!(report.not_found, ["no-such-id"]);
    let out = fx.run(&["redrive", &fx.dlq.name, "--to", &fx.queue.name, "--message-id", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not found in"), "{out:?}");
    assert_eq!(fx.depth(&fx.dlq).await, Depth { visible: 1, in_flight: 0 });
    fx.finish().await;
}

#[tokio::test]
async fn a_failed_send_leaves_the_message_in_the_dlq() {
    let fx = Fixture::start("fail").await;
    for i in 0..2 {
        fx.dead_letter(&format!("src-{i}"), &format!("body {i}"), "handler failed", &[]).await;
    }
    // A target that does not exist: every send fails.
    let account = fx.dlq.url.rsplit('/').nth(1).expect("account in the URL");
    let missing = QueueRef::from_url(&format!("{}/{account}/{}missing", fx.emulator.endpoint(), fx.prefix)).unwrap();
    let report = fx.dlqs.redrive(&fx.dlq, &missing, &Selection::All).await.expect("redrive runs");
    assert!(report.moved.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(report.failed.iter().all(|(_, reason)| reason.contains("SendMessage")), "{report:?}");
    let text = render::redrive(&report);
    assert!(text.starts_with("moved 0 messages") && text.contains("2 could not be sent and are still in"), "{text}");
    assert_eq!(fx.depth(&fx.dlq).await, Depth { visible: 2, in_flight: 0 }, "nothing lost, visible again at once");

    let same = fx.dlqs.redrive(&fx.dlq, &fx.dlq, &Selection::All).await;
    assert!(same.is_err(), "redriving a DLQ into itself is refused");
    // No source queue: the name-only DLQ needs --to.
    let out = fx.run(&["redrive", &fx.notifications_dlq.name, "--all"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no queue has") && stderr.contains("--to"), "{stderr}");
    fx.finish().await;
}

#[tokio::test]
async fn purge_asks_for_confirmation_unless_yes() {
    let fx = Fixture::start("purge").await;
    for i in 0..3 {
        fx.dead_letter(&format!("src-{i}"), &format!("body {i}"), "handler failed", &[]).await;
    }

    // No terminal (stdin is /dev/null) and no --yes: refused, nothing purged.
    let out = fx.run(&["purge", &fx.dlq.name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refusing to purge") && stderr.contains("--yes"), "{stderr}");
    assert_eq!(fx.depth(&fx.dlq).await, Depth { visible: 3, in_flight: 0 });

    let out = fx.run(&["purge", &fx.dlq.name, "--yes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with(&format!("purged {} (3 messages", fx.dlq.name)), "{stdout}");
    assert_eq!(fx.depth(&fx.dlq).await, Depth::default(), "purged");
    fx.finish().await;
}

#[tokio::test]
async fn unknown_queues_are_reported_by_name() {
    let fx = Fixture::start("unknown").await;
    let missing = format!("{}NoSuchDlq", fx.prefix);
    let err = fx.dlqs.resolve(&missing).await.expect_err("no such queue");
    assert_eq!(err.to_string(), format!("queue {missing} does not exist"));
    let out = fx.run(&["show", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("error: queue {missing} does not exist\n"));
    fx.finish().await;
}

#[test]
fn the_binary_has_help_and_rejects_bad_arguments_on_one_line() {
    let run = |args: &[&str]| Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("runs");

    let help = run(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["list", "show", "redrive", "purge", "--endpoint-url"] {
        assert!(text.contains(command), "--help names {command}: {text}");
    }
    for (command, option) in [("list", "--prefix"), ("show", "--full"), ("redrive", "--message-id"), ("purge", "--yes")]
    {
        let help = run(&[command, "--help"]);
        assert!(help.status.success(), "{help:?}");
        assert!(String::from_utf8_lossy(&help.stdout).contains(option), "{command} --help names {option}");
    }

    let bad: &[&[&str]] = &[&["list", "--bogus"], &["show", "q", "--max", "many"], &["redrive", "q"], &[]];
    let mut errors = BTreeMap::new();
    for args in bad {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        errors.insert(args.join(" "), stderr);
    }
    eprintln!("{errors:#?}");
    assert!(errors["list --bogus"].contains("'--bogus'"), "{errors:?}");
}
