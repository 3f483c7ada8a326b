//! CPU of the SQS batch path: `SqsBatchProcessor::process` with an in-memory handler doing the real per-record
//! work (the bus event read with the domain's registry, the `OrderPlaced` envelope decoded), for batches of 1, 10
//! and 100 records. `cargo xtask bench` runs it and derives the cost per message (the slope between 1 and 100
//! records) and per invocation (the time of 1 record minus one message).
//!
//! Two groups:
//! - `process`: the processor alone, given the `SqsEvent` (the brief of the DESIGN target).
//! - `invocation`: what the function does with the Lambda payload: the JSON of the SQS event decoded, processed,
//!   the partial batch response encoded.
//!
//! Run it alone with `cargo bench -p orderflow-domain --bench batch`.

use std::hint::black_box;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use orderflow_domain::events::{OrderPlaced, registry};
use orderflow_toolkit::{HandlerError, MemoryDeadLetters, Registry, SqsBatchProcessor, SqsRecord};
use serde_json::{Value, json};

/// Records in flight per batch, as the inventory function runs its batches.
const CONCURRENCY: usize = 4;
const BATCH_SIZES: [usize; 3] = [1, 10, 100];

/// An SQS record as Lambda delivers it, carrying an `OrderPlaced` bus event (the shape of
/// `events/inventory/order-placed.json`), distinct per index.
fn sqs_record(i: usize) -> Value {
    let detail = json!({
        "id": format!("0b7f9c4e-7d4a-4f7e-9a3c-{i:012}"),
        "type": "OrderPlaced",
        "version": 1,
        "occurred_at": "2026-11-24T10:00:00Z",
        "correlation_id": format!("5f0c7c9e-2b8a-4c1e-9d51-{i:012}"),
        "causation_id": null,
        "data": {
            "order_id": format!("5f0c7c9e-2b8a-4c1e-9d51-{i:012}"),
            "customer_id": format!("c-{}", i % 7),
            "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}, {"sku": "SKU-1", "quantity": 1}],
        },
    });
    let body = json!({
        "version": "0",
        "id": format!("6a1e2d3c-1111-4b2a-9c8d-{i:012}"),
        "detail-type": "OrderPlaced",
        "source": "orderflow.orders",
        "account": "000000000000",
        "time": "2026-11-24T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    });
    json!({
        "messageId": format!("1f8b2c3d-0001-4a5b-8c6d-{i:012}"),
        "receiptHandle": "AQEBd12aedf23732929b7512ef6bb761b1c35705c3dac19222dad51d62b0abcfa620",
        "body": body.to_string(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795946400000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795946400012",
        },
        "messageAttributes": {},
        "md5OfBody": "3884519dbad032268ffdb494a94ae244",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:orderflow-dev-InventoryQueue",
        "awsRegion": "us-east-1",
    })
}

/// The Lambda payload of a batch of `size` records.
fn payload(size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({ "Records": (0..size).map(sqs_record).collect::<Vec<_>>() })).expect("payload")
}

/// The real per-record work of a consumer before its storage: the bus event read and the envelope decoded.
async fn handle(registry: &Registry, record: SqsRecord) -> Result<(), HandlerError> {
    let raw = registry.read_bus_event(&record.body).map_err(HandlerError::permanent)?;
    let placed = raw.decode::<OrderPlaced>().map_err(HandlerError::permanent)?;
    black_box(placed);
    Ok(())
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let registry = registry();
    let processor = SqsBatchProcessor::new(MemoryDeadLetters::default()).with_concurrency(CONCURRENCY);
    let handler = |record| handle(&registry, record);

    // Every record must be handled successfully, or the bench measures the poison path.
    for size in BATCH_SIZES {
        let event: SqsEvent = serde_json::from_slice(&payload(size)).expect("SQS event");
        let response = runtime.block_on(processor.process(event, handler)).expect("batch");
        assert!(response.batch_item_failures.is_empty(), "the bench records must all succeed");
    }

    let mut group = c.benchmark_group("process");
    for size in BATCH_SIZES {
        let event: SqsEvent = serde_json::from_slice(&payload(size)).expect("SQS event");
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(size.to_string(), |b| {
            b.iter_batched(
                || event.clone(),
                |event| runtime.block_on(processor.process(event, handler)).expect("batch"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("invocation");
    for size in BATCH_SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(size.to_string(), |b| {
            b.iter(|| {
                let event: SqsEvent = serde_json::from_slice(black_box(&payload)).expect("SQS event");
                let response = runtime.block_on(processor.process(event, handler)).expect("batch");
                serde_json::to_vec(&response).expect("response")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
