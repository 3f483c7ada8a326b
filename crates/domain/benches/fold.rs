//! CPU of reading an order from the event store, without the Query round trip: each stored event's `detail` (the
//! envelope JSON, as the Orders table holds it) parsed, upcast through the registry, decoded, and the events folded
//! into the order (`Order::from_events`). This is what a snapshot would save, so it decides whether the event store
//! needs snapshots: the longest stream an order can have is its whole lifecycle (placed, payment requested,
//! confirmed, shipped: 4 events; the state machine has no loop, so no order's stream grows past 4).
//!
//! Run it with `cargo bench -p orderflow-domain --bench fold`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orderflow_domain::events::{OrderConfirmed, OrderLine, OrderPlaced, OrderShipped, PaymentRequested, registry};
use orderflow_domain::order::{Deadlines, Order, OrderEvent};
use orderflow_toolkit::{Envelope, RawEnvelope, Registry};

/// The `detail` attributes of an order's whole lifecycle, as the event store holds them.
fn lifecycle(lines: usize) -> Vec<String> {
    let order_id = "5f0c7c9e-2b8a-4c1e-9d51-1a2b3c4d5e01";
    let lines: Vec<OrderLine> = (0..lines).map(|i| OrderLine { sku: format!("SKU-{i}"), quantity: 2 }).collect();
    let placed = OrderPlaced {
        currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
        order_id: order_id.into(),
        customer_id: "c-1".into(),
        lines: lines.clone(),
    };
    let amount = "38.49".parse().unwrap();
    let requested = PaymentRequested { order_id: order_id.into(), customer_id: "c-1".into(), amount };
    let confirmed = OrderConfirmed { order_id: order_id.into(), customer_id: "c-1".into(), total: amount };
    let shipped =
        OrderShipped { order_id: order_id.into(), customer_id: "c-1".into(), shipment_id: "s-1".into(), lines };
    [
        OrderEvent::Placed(Envelope::new(order_id, placed)),
        OrderEvent::PaymentRequested(Envelope::new(order_id, requested)),
        OrderEvent::Confirmed(Envelope::new(order_id, confirmed)),
        OrderEvent::Shipped(Envelope::new(order_id, shipped)),
    ]
    .iter()
    .map(|event| serde_json::to_string(&event.raw()).unwrap())
    .collect()
}

/// What `DynamoOrders::get` does with the items of its Query.
fn read(details: &[String], registry: &Registry, deadlines: &Deadlines) -> Order {
    let events: Vec<OrderEvent> = details
        .iter()
        .map(|detail| {
            let raw: RawEnvelope = serde_json::from_str(detail).unwrap();
            OrderEvent::decode(&registry.upcast(raw).unwrap()).unwrap()
        })
        .collect();
    Order::from_events(&events, deadlines).unwrap().unwrap()
}

fn fold(c: &mut Criterion) {
    let (registry, deadlines) = (registry(), Deadlines::default());
    let mut group = c.benchmark_group("read_order");
    for lines in [1, 50] {
        let details = lifecycle(lines);
        assert_eq!(read(&details, &registry, &deadlines).version, 4);
        group.throughput(Throughput::Elements(details.len() as u64));
        group.bench_function(format!("4_events_{lines}_lines"), |b| {
            b.iter(|| read(black_box(&details), &registry, &deadlines))
        });
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
