//! `DynamoOrders` and the deadline index against a real emulator: the moto server of the local cloud (started
//! here, or the one `AWS_ENDPOINT_URL` names), with the Orders table of `infra/stateful.yaml` itself deployed
//! through CloudFormation, so the index these queries use is the one AWS gets.

use std::path::{Path, PathBuf};

use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_domain::events::{OrderCancelled, OrderLine, OrderPlaced};
use orderflow_domain::order::{Deadlines, Order, OrderStatus};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_orders_store::{DynamoOrders, OrderStore, deadline_shard};
use orderflow_toolkit::{Envelope, OutboxRecord};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const PLACED_AT: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct World {
    // Dropped last: stops the moto server this test started (an external emulator is left alone).
    _emulator: Emulator,
    store: DynamoOrders,
    client: aws_sdk_dynamodb::Client,
    orders_table: String,
}

impl World {
    async fn start() -> World {
        let emulator =
            Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
        let config = sdk_config(emulator.endpoint());
        let stage = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let outputs = deploy_stack(
            &aws_sdk_cloudformation::Client::new(&config),
            &format!("orderflow-{stage}-stateful"),
            &project_root().join("infra/stateful.yaml"),
            &[("Stage", stage.as_str())],
        )
        .await
        .expect("infra/stateful.yaml deploys");
        let client = aws_sdk_dynamodb::Client::new(&config);
        let orders_table = outputs.get("OrdersTableName").expect("OrdersTableName").to_owned();
        let outbox_table = outputs.get("OutboxTableName").expect("OutboxTableName").to_owned();
        World {
            store: DynamoOrders::new(client.clone(), &orders_table, outbox_table),
            client,
            orders_table,
            _emulator: emulator,
        }
    }

    /// Places an order `seconds_later` than [`PLACED_AT`]; its deadline is a minute after that.
    async fn place(&self, order_id: &str, seconds_later: i64) -> Order {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let deadlines = Deadlines::from_seconds(60).unwrap();
        let order = Order::placed(
            order_id.into(),
            "c-1".into(),
            lines.clone(),
            PLACED_AT + Duration::seconds(seconds_later),
            &deadlines,
        );
        let placed = OrderPlaced { order_id: order_id.into(), customer_id: "c-1".into(), lines };
        self.store.place(&order, &OutboxRecord::new(&Envelope::new(order_id, placed)), None).await.unwrap();
        order
    }

    /// The order item's deadline index keys, as stored.
    async fn index_keys(&self, order_id: &str) -> (Option<String>, Option<String>) {
        let item = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .key("pk", AttributeValue::S(format!("ORDER#{order_id}")))
            .key("sk", AttributeValue::S("ORDER".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .expect("the order item");
        let text = |name: &str| item.get(name).map(|v| v.as_s().or(v.as_n()).unwrap().to_owned());
        (text("deadline_shard"), text("deadline_at"))
    }
}

fn event(order_id: &str) -> OutboxRecord {
    let cancelled = OrderCancelled { order_id: order_id.into(), customer_id: "c-1".into(), reason: "deadline".into() };
    OutboxRecord::new(&Envelope::new(order_id, cancelled))
}

#[tokio::test]
async fn the_deadline_index_lists_open_overdue_orders_in_every_shard_and_drops_an_order_once_final() {
    let world = World::start().await;
    let ids: Vec<String> = (0..12).map(|i| format!("o-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        world.place(id, i64::try_from(i).unwrap()).await;
    }
    let not_yet = world.place("o-not-yet", 600).await;
    let shards: std::collections::BTreeSet<String> = ids.iter().map(|id| deadline_shard(id)).collect();
    assert!(shards.len() > 1, "the orders span several shards: {shards:?}");
    let deadline = not_yet.deadline_at.unwrap().unix_timestamp().to_string();
    assert_eq!(world.index_keys("o-not-yet").await, (Some(deadline_shard("o-not-yet")), Some(deadline)));

    let now = PLACED_AT + Duration::minutes(5);
    let mut overdue = world.store.overdue(now, 100).await.unwrap();
    overdue.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(overdue, expected, "every overdue order of every shard, and not the one due later");
    assert_eq!(world.store.overdue(now, 4).await.unwrap().len(), 4, "bounded by the limit");

    // A final order leaves the index; an order that moved on is indexed by its new deadline.
    let mut cancelled = world.store.get("o-0").await.unwrap().unwrap();
    cancelled.status = OrderStatus::Cancelled;
    cancelled.deadline_at = None;
    cancelled.version += 1;
    world.store.save(&cancelled, Some(1), &event("o-0")).await.unwrap();
    assert_eq!(world.index_keys("o-0").await, (None, None));
    let mut moved_on = world.store.get("o-1").await.unwrap().unwrap();
    moved_on.status = OrderStatus::Reserved;
    moved_on.deadline_at = Some(PLACED_AT + Duration::minutes(10));
    moved_on.version += 1;
    world.store.save(&moved_on, Some(1), &event("o-1")).await.unwrap();

    let overdue = world.store.overdue(now, 100).await.unwrap();
    assert!(!overdue.contains(&"o-0".to_owned()) && !overdue.contains(&"o-1".to_owned()), "{overdue:?}");
    assert_eq!(overdue.len(), ids.len() - 2);
}
