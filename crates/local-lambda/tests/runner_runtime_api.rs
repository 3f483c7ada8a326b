//! The local Runtime API and function pools, driving the real probe function (lambda_runtime 1.5)
//! without any emulator.

mod runner_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use local_lambda::runtime_api::{FunctionPool, InvocationOutcome, PoolConfig, RuntimeApiServer};
use runner_support::{Scratch, log_with, probe_binary, process_alive};
use serde_json::{Value, json};

fn pool_config(scratch: &Scratch, timeout: Duration, max_instances: usize) -> PoolConfig {
    PoolConfig {
        name: "probe".into(),
        function_name: "orderflow-test-probe".into(),
        binary: probe_binary(),
        timeout,
        memory_mb: 256,
        environment: BTreeMap::from([
            ("PROBE_FROM_TEMPLATE".to_owned(), "template".to_owned()),
            ("PROBE_OVERRIDDEN".to_owned(), "template".to_owned()),
        ]),
        extra_env: BTreeMap::from([("PROBE_OVERRIDDEN".to_owned(), "caller".to_owned())]),
        max_instances,
        warm_instances: 1,
        log_dir: scratch.path.clone(),
        pass_through_logs: false,
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
        fixed_trace_id: None,
        proxy: None,
    }
}

fn success(outcome: &InvocationOutcome) -> &Value {
    match outcome {
        InvocationOutcome::Success(value) => value,
        other => panic!("expected success, got {other:?}"),
    }
}

fn function_error(outcome: &InvocationOutcome) -> (&str, &str) {
    match outcome {
        InvocationOutcome::FunctionError { error_type, error_message } => (error_type, error_message),
        other => panic!("expected a function error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_api_round_trip_returns_responses_and_errors_with_lambdas_environment() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(5), 1)).await.unwrap();

    let payload = json!({"probe": {"action": "echo"}, "n": 1});
    let ok = pool.invoke(payload.clone()).await.unwrap();
    let response = success(&ok.outcome);
    assert_eq!(response["echo"], payload);
    let env = &response["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "orderflow-test-probe");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["PROBE_FROM_TEMPLATE"], "template");
    assert_eq!(env["PROBE_OVERRIDDEN"], "caller");
    let runtime_api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert_eq!(runtime_api, format!("http://{}/probe/{}", server.addr(), ok.instance));

    let failed = pool.invoke(json!({"probe": {"action": "fail", "message": "no stock"}})).await.unwrap();
    let (error_type, message) = function_error(&failed.outcome);
    assert_eq!(message, "no stock");
    assert!(!error_type.is_empty());
    assert_ne!(failed.request_id, ok.request_id);
    // A handler error keeps the instance.
    assert_eq!(failed.instance, ok.instance);

    let again = pool.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    assert!(again.outcome.is_success());
    assert_eq!(again.instance, ok.instance);

    // START/END/REPORT and the instance's output reach the log file.
    let expected = [
        format!("START RequestId: {}", ok.request_id),
        format!("REPORT RequestId: {}", failed.request_id),
        format!("probe: request {}", ok.request_id),
    ];
    log_with(&scratch.path.join("probe.log"), &expected, Duration::from_secs(10)).await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restarts_the_instance_and_the_next_invocation_works() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(5), 1)).await.unwrap();
    let first = pool.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    let first_pid = success(&first.outcome)["pid"].as_u64().unwrap() as u32;

    let crashed = pool.invoke(json!({"probe": {"action": "exit", "code": 7}})).await.unwrap();
    let (error_type, message) = function_error(&crashed.outcome);
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(message.contains("exit status: 7"), "{message}");
    assert!(message.contains(&crashed.request_id), "{message}");

    let next = pool.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    assert!(next.outcome.is_success(), "{next:?}");
    assert_ne!(next.instance, first.instance, "a fresh instance serves the next invocation");
    assert!(!process_alive(first_pid));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_instance_and_the_next_invocation_works() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(1), 1)).await.unwrap();
    let pid = pool.pids()[0];

    let started = Instant::now();
    let timed_out = pool.invoke(json!({"probe": {"action": "sleep", "ms": 30_000}})).await.unwrap();
    let elapsed = started.elapsed();
    let (error_type, message) = function_error(&timed_out.outcome);
    assert_eq!(error_type, "Sandbox.Timedout");
    assert!(message.contains("Task timed out after 1.00 seconds"), "{message}");
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3), "{elapsed:?}");

    let next = pool.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    assert!(next.outcome.is_success(), "{next:?}");
    assert_ne!(next.instance, timed_out.instance);
    // The killed process is reaped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!process_alive(pid));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_function_error_and_an_init_failure_is_reported_on_invoke() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(5), 1)).await.unwrap();
    let panicked = pool.invoke(json!({"probe": {"action": "panic"}})).await.unwrap();
    let (_, message) = function_error(&panicked.outcome);
    assert!(message.contains("probe panics as asked"), "{message}");
    pool.shutdown().await;

    let mut config = pool_config(&scratch, Duration::from_secs(5), 1);
    config.name = "broken".into();
    config.environment.insert("PROBE_EXIT_AT_INIT".into(), "3".into());
    let broken = FunctionPool::start(&server, config).await.unwrap();
    let failed = broken.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    let (error_type, message) = function_error(&failed.outcome);
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(message.contains("exit status: 3"), "{message}");
    broken.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_run_on_separate_instances_up_to_the_limit() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(5), 2)).await.unwrap();
    let sleep = json!({"probe": {"action": "sleep", "ms": 700}});
    let started = Instant::now();
    let (a, b, c) = tokio::join!(pool.invoke(sleep.clone()), pool.invoke(sleep.clone()), pool.invoke(sleep.clone()));
    let elapsed = started.elapsed();
    let instances: std::collections::BTreeSet<u64> =
        [&a, &b, &c].iter().map(|r| r.as_ref().unwrap().instance).collect();
    assert_eq!(instances.len(), 2, "two instances at most: {instances:?}");
    // Two run together, the third waits for one of them.
    assert!(elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_millis(2600), "{elapsed:?}");
    assert_eq!(pool.pids().len(), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_every_instance_including_busy_ones() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = std::sync::Arc::new(
        FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(30), 3)).await.unwrap(),
    );
    let busy = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(json!({"probe": {"action": "sleep", "ms": 20_000}})).await })
    };
    let idle = pool.invoke(json!({"probe": {"action": "echo"}})).await.unwrap();
    assert!(idle.outcome.is_success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids = pool.pids();
    assert_eq!(pids.len(), 2, "{pids:?}");

    let started = Instant::now();
    pool.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    for pid in &pids {
        assert!(!process_alive(*pid), "process {pid} survived the shutdown");
    }
    let interrupted = busy.await.unwrap().unwrap();
    assert_eq!(function_error(&interrupted.outcome).0, "Runtime.ExitError");
    assert!(pool.invoke(json!({})).await.is_err(), "a stopped pool refuses invocations");
    assert!(pool.pids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_dropped_without_shutdown_still_kills_its_processes() {
    let scratch = Scratch::new("rtapi");
    let server = RuntimeApiServer::start().await.unwrap();
    let pool = FunctionPool::start(&server, pool_config(&scratch, Duration::from_secs(5), 2)).await.unwrap();
    let (a, b) = tokio::join!(
        pool.invoke(json!({"probe": {"action": "sleep", "ms": 100}})),
        pool.invoke(json!({"probe": {"action": "sleep", "ms": 100}}))
    );
    assert_ne!(a.unwrap().instance, b.unwrap().instance);
    let pids = pool.pids();
    assert_eq!(pids.len(), 2);
    drop(pool);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} outlived its pool");
    }
}
