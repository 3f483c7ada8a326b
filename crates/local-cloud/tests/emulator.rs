//! Integration tests of the emulator and deployment layer against real emulators.
//!
//! The default run needs only moto (installed into `.local/venv` on first use). The LocalStack
//! test runs when `ORDERFLOW_LOCALSTACK=1`; it installs LocalStack host mode itself.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use local_lambda::aws::sdk_config;
use local_lambda::deploy::{delete_stack, deploy_stack};
use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use orderflow_local_cloud::emulator::{Emulator, EmulatorKind};
use orderflow_local_cloud::tools::Tools;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Whether any process of the group `pgid` is still alive.
fn group_alive(pgid: u32) -> bool {
    let pgid = Pid::from_raw(i32::try_from(pgid).expect("pid fits i32"));
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Pids of every descendant of `root`, from the parent pids in `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().copied().filter(|&pid| parent_of(pid) == Some(parent)));
        i += 1;
    }
    found.split_off(1)
}

async fn start_moto() -> Emulator {
    let tools = Tools::ensure(&project_root()).expect("tools install");
    Emulator::start_moto(&tools, 0).await.expect("moto starts")
}

#[tokio::test]
async fn moto_starts_answers_resets_and_stops() {
    let tools = Tools::ensure(&project_root()).expect("tools install");
    let started = Instant::now();
    let mut moto = Emulator::start_moto(&tools, 0).await.expect("moto starts on a port the kernel picks");
    eprintln!("moto ready in {:?}", started.elapsed());
    assert_eq!(moto.kind(), EmulatorKind::Moto);
    let port: u16 = moto.endpoint().strip_prefix("http://127.0.0.1:").and_then(|p| p.parse().ok()).expect("port");
    assert_ne!(port, 0);
    let log = moto.log_path().expect("log path").to_path_buf();
    assert!(log.ends_with(format!(".local/logs/moto-{port}.log")), "{}", log.display());

    let sqs = aws_sdk_sqs::Client::new(&sdk_config(moto.endpoint()));
    sqs.create_queue().queue_name("answers").send().await.expect("create queue");
    let listed = sqs.list_queues().send().await.expect("list queues");
    assert_eq!(listed.queue_urls().len(), 1, "{listed:?}");

    moto.reset().await.expect("reset");
    let listed = sqs.list_queues().send().await.expect("list queues after reset");
    assert!(listed.queue_urls().is_empty(), "reset left {listed:?}");

    let pid = moto.pid().expect("we started it");
    moto.stop().expect("stop");
    assert!(!group_alive(pid), "moto's process group {pid} survived stop");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} still taken");
    // Stopping twice is harmless.
    moto.stop().expect("second stop");
}

#[tokio::test]
async fn dropping_a_started_emulator_stops_it() {
    let moto = start_moto().await;
    let pid = moto.pid().expect("we started it");
    drop(moto);
    assert!(!group_alive(pid), "moto's process group {pid} survived drop");
}

#[tokio::test]
async fn external_emulator_is_reset_but_never_stopped() {
    let moto = start_moto().await;
    let mut external = Emulator::external(format!("{}/", moto.endpoint()));
    assert_eq!(external.kind(), EmulatorKind::External);
    assert_eq!(external.endpoint(), moto.endpoint(), "trailing slash dropped");
    assert_eq!(external.pid(), None);

    let sqs = aws_sdk_sqs::Client::new(&sdk_config(external.endpoint()));
    sqs.create_queue().queue_name("external").send().await.expect("create queue");
    external.reset().await.expect("reset detects moto");
    let listed = sqs.list_queues().send().await.expect("list queues");
    assert!(listed.queue_urls().is_empty(), "reset left {listed:?}");

    external.stop().expect("stop is a no-op");
    drop(external);
    sqs.list_queues().send().await.expect("moto still answers after the external handle is gone");
}

#[tokio::test]
async fn starting_on_a_taken_port_fails_naming_the_port() {
    let tools = Tools::ensure(&project_root()).expect("tools install");
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = Emulator::start_moto(&tools, port).await.expect_err("port is taken");
    assert!(format!("{err:#}").contains(&port.to_string()), "{err:#}");
}

/// Deploys the queue + DLQ fixture and checks what the stack exposes and what it created.
async fn deploy_fixture_and_read_it_back(endpoint: &str, stage: &str) {
    let config = sdk_config(endpoint);
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let stack = format!("orderflow-{stage}-fixture");
    let template = fixture("queue-with-dlq.yaml");

    let started = Instant::now();
    let outputs = deploy_stack(&cfn, &stack, &template, &[("Stage", stage)]).await.expect("deploy");
    eprintln!("{stack} deployed in {:?}", started.elapsed());
    assert_eq!(outputs.stack_name(), stack);
    assert_eq!(outputs.get("QueueName").expect("QueueName"), format!("orderflow-{stage}-fixture"));
    let queue_url = outputs.get("QueueUrl").expect("QueueUrl").to_string();
    assert!(queue_url.ends_with(&format!("/orderflow-{stage}-fixture")), "{queue_url}");
    let dlq_arn = outputs.get("DlqArn").expect("DlqArn").to_string();
    assert!(dlq_arn.ends_with(&format!(":orderflow-{stage}-fixture-dlq")), "{dlq_arn}");
    assert_eq!(
        outputs.export(&format!("orderflow-{stage}-FixtureQueueName")).expect("export"),
        format!("orderflow-{stage}-fixture")
    );
    assert_eq!(outputs.export(&format!("orderflow-{stage}-FixtureDlqArn")).expect("export"), dlq_arn);
    assert_eq!(outputs.exports().len(), 2, "{:?}", outputs.exports());
    let missing = outputs.get("NoSuchOutput").expect_err("missing output").to_string();
    assert!(missing.contains("NoSuchOutput") && missing.contains(&stack), "{missing}");

    // The queue really redrives to the DLQ.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .expect("queue attributes");
    let redrive = attrs.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy)).expect("redrive");
    let redrive: serde_json::Value = serde_json::from_str(redrive).expect("redrive policy is JSON");
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "2");

    // Deploying the same template again is an update with nothing to do.
    let again = deploy_stack(&cfn, &stack, &template, &[("Stage", stage)]).await.expect("redeploy");
    assert_eq!(again, outputs);

    delete_stack(&cfn, &stack).await.expect("delete");
    let queues = sqs.list_queues().queue_name_prefix(format!("orderflow-{stage}-")).send().await.expect("list");
    assert!(queues.queue_urls().is_empty(), "delete left {:?}", queues.queue_urls());
    delete_stack(&cfn, &stack).await.expect("deleting a missing stack is fine");
}

#[tokio::test]
async fn fixture_stack_deploys_into_moto_with_outputs_and_exports() {
    let moto = start_moto().await;
    deploy_fixture_and_read_it_back(moto.endpoint(), "moto").await;
}

/// Deploys the broken fixture twice and returns the error text. moto creates resources inside
/// CreateStack and answers with the resource's error; AWS and LocalStack fail asynchronously
/// and the reason comes from the stack events. The second deploy meets the failed stack and must
/// fail for the template's reason again, not because a failed stack cannot be updated.
async fn deploy_broken_fixture(endpoint: &str) -> String {
    let cfn = aws_sdk_cloudformation::Client::new(&sdk_config(endpoint));
    let mut text = String::new();
    for attempt in ["first", "second"] {
        let err = deploy_stack(&cfn, "orderflow-broken", &fixture("broken.yaml"), &[])
            .await
            .expect_err("the broken fixture cannot deploy");
        text = format!("{err:#}");
        assert!(text.contains("orderflow-broken"), "{attempt} deploy names the stack: {text}");
        assert!(text.contains(".fifo"), "{attempt} deploy gives the reason: {text}");
    }
    delete_stack(&cfn, "orderflow-broken").await.expect("a failed stack can be deleted");
    text
}

#[tokio::test]
async fn failed_deploy_into_moto_gives_the_reason() {
    let moto = start_moto().await;
    deploy_broken_fixture(moto.endpoint()).await;
}

/// LocalStack host mode, end to end: install, start, deploy the fixture, a DynamoDB table with
/// a stream that delivers a write, reset, stop. Runs when `ORDERFLOW_LOCALSTACK=1`.
#[tokio::test]
async fn fixture_stack_deploys_into_localstack_host_mode() {
    if std::env::var("ORDERFLOW_LOCALSTACK").as_deref() != Ok("1") {
        eprintln!("skipped: set ORDERFLOW_LOCALSTACK=1 to run against LocalStack host mode");
        return;
    }
    let started = Instant::now();
    let tools = Tools::ensure_localstack(&project_root()).expect("LocalStack tools install");
    eprintln!("LocalStack tools ready in {:?}", started.elapsed());
    // A fixed port when asked for (e.g. 4566 to inspect it by hand), else any free one.
    let port = match std::env::var("ORDERFLOW_LOCALSTACK_PORT") {
        Ok(port) => port.parse().expect("ORDERFLOW_LOCALSTACK_PORT is a port number"),
        Err(_) => 0,
    };
    let started = Instant::now();
    let mut localstack = Emulator::start_localstack(&tools, port).await.expect("LocalStack starts");
    eprintln!("LocalStack ready in {:?}", started.elapsed());
    assert_eq!(localstack.kind(), EmulatorKind::LocalStack);

    deploy_fixture_and_read_it_back(localstack.endpoint(), "localstack").await;
    let failed = deploy_broken_fixture(localstack.endpoint()).await;
    assert!(failed.contains("Broken (AWS::SQS::Queue)"), "names the failed resource: {failed}");
    eprintln!("the broken fixture failed with: {failed}");

    let config = sdk_config(localstack.endpoint());
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let key = |name: &str, key_type| {
        KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().expect("key")
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    let started = Instant::now();
    let table = dynamodb
        .create_table()
        .table_name("orderflow-localstack-outbox")
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .expect("stream spec"),
        )
        .send()
        .await
        .expect("create table with a stream");
    let stream_arn =
        table.table_description().and_then(|t| t.latest_stream_arn()).expect("the table has a stream").to_string();
    eprintln!("table with stream created in {:?}", started.elapsed());
    // Streams lose records written right after the table turns ACTIVE (see deploy_stack).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    dynamodb
        .put_item()
        .table_name("orderflow-localstack-outbox")
        .item("pk", AttributeValue::S("order-1".into()))
        .item("sk", AttributeValue::S("event-1".into()))
        .send()
        .await
        .expect("put item");

    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let described = streams.describe_stream().stream_arn(&stream_arn).send().await.expect("describe stream");
    let shard = described
        .stream_description()
        .and_then(|d| d.shards().first())
        .and_then(|s| s.shard_id())
        .expect("a shard")
        .to_string();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream_arn)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("shard iterator");
    let mut iterator = iterator.shard_iterator().map(str::to_string);
    let mut records = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while records.is_empty() && Instant::now() < deadline {
        let page = streams.get_records().set_shard_iterator(iterator.take()).send().await.expect("get records");
        records.extend(page.records().iter().cloned());
        iterator = page.next_shard_iterator().map(str::to_string);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(records.len(), 1, "the write reached the stream: {records:?}");

    match localstack.reset().await {
        Ok(()) => {
            let tables = dynamodb.list_tables().send().await.expect("list tables");
            assert!(tables.table_names().is_empty(), "reset left {:?}", tables.table_names());
        }
        Err(err) => {
            let text = format!("{err:#}");
            assert!(text.contains("reset is not supported"), "{text}");
            eprintln!("LocalStack reset: {text}");
        }
    }

    let pid = localstack.pid().expect("we started it");
    let children = descendants(pid);
    assert!(!children.is_empty(), "LocalStack runs DynamoDB Local and Kinesis as child processes");
    let started = Instant::now();
    localstack.stop().expect("stop");
    eprintln!("LocalStack stopped in {:?}", started.elapsed());
    assert!(!group_alive(pid), "LocalStack's process group {pid} survived stop");
    // A zombie waiting for init to reap it counts as gone.
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while children.iter().any(running) && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let survivors: Vec<_> = children.iter().filter(|pid| running(pid)).collect();
    assert!(survivors.is_empty(), "LocalStack's children {survivors:?} survived stop");
}
