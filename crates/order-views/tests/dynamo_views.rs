//! The DynamoDB adapter of the read models against moto (or the emulator `AWS_ENDPOINT_URL` names), in the tables
//! of `infra/stateful.yaml` deployed through CloudFormation: the version condition, the customer indexes newest
//! first with cursors, and a rebuild from the event store. `rebuild_of_10k_orders` is the by-hand measurement
//! README quotes (`cargo test -p orderflow-order-views --test dynamo_views -- --ignored --nocapture`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_domain::events::{OrderLine, OrderPlaced, PaymentRequested};
use orderflow_domain::order::{Deadlines, OrderEvent, OrderStatus};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_order_views::{DynamoViews, ListQuery, OrderView, Rebuilt, ViewStore, rebuild};
use orderflow_orders_store::{DynamoOrders, OrderStore};
use orderflow_toolkit::Envelope;
use time::OffsetDateTime;
use time::macros::datetime;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct World {
    // Dropped last: stops the moto server this test started (an external emulator is left alone).
    _emulator: Emulator,
    orders: DynamoOrders,
    views: DynamoViews,
}

impl World {
    async fn start() -> World {
        let emulator =
            Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
        let config = sdk_config(emulator.endpoint());
        let stage = format!("v{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let outputs = deploy_stack(
            &aws_sdk_cloudformation::Client::new(&config),
            &format!("orderflow-{stage}-stateful"),
            &project_root().join("infra/stateful.yaml"),
            &[("Stage", stage.as_str())],
        )
        .await
        .expect("infra/stateful.yaml deploys");
        let client = aws_sdk_dynamodb::Client::new(&config);
        let table = |name: &str| outputs.get(name).expect("a table output").to_owned();
        World {
            orders: DynamoOrders::new(client.clone(), table("OrdersTableName"), Deadlines::default()),
            views: DynamoViews::new(client, table("OrderViewsTableName")),
            _emulator: emulator,
        }
    }

    async fn place(&self, order_id: &str, customer_id: &str, at: OffsetDateTime) {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
        let mut placed = Envelope::new(
            order_id,
            OrderPlaced {
                currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
                order_id: order_id.into(),
                customer_id: customer_id.into(),
                lines,
            },
        );
        placed.occurred_at = at;
        self.orders.place(&placed, None).await.expect("place");
    }

    async fn view(&self, order_id: &str) -> OrderView {
        OrderView::of(&self.orders.get(order_id).await.unwrap().expect("in the event store"))
    }

    async fn page(&self, customer_id: &str, status: Option<OrderStatus>, after: Option<&OrderView>) -> Vec<String> {
        let after = after.map(orderflow_order_views::Cursor::after);
        let query = ListQuery { customer_id: customer_id.into(), status, limit: 2, after };
        let page = self.views.list(&query).await.expect("list");
        page.views.into_iter().map(|view| view.order_id).collect()
    }
}

#[tokio::test]
async fn a_view_is_replaced_only_by_a_later_version_and_lists_newest_first_from_a_cursor() {
    let world = World::start().await;
    let at = datetime!(2026-12-03 10:00 UTC);
    for (i, order_id) in ["o-1", "o-2", "o-3"].into_iter().enumerate() {
        world.place(order_id, "c-1", at + time::Duration::seconds(i as i64)).await;
        assert!(world.views.put(&world.view(order_id).await).await.unwrap());
    }
    world.place("o-x", "c-2", at).await;
    assert!(world.views.put(&world.view("o-x").await).await.unwrap());
    let placed = world.view("o-2").await;
    let order = world.orders.get("o-2").await.unwrap().unwrap();
    let request =
        PaymentRequested { order_id: "o-2".into(), customer_id: "c-1".into(), amount: "9.50".parse().unwrap() };
    let requested = OrderEvent::PaymentRequested(Envelope::new("o-2", request));
    world.orders.append(Some(&order), &[requested]).await.unwrap();
    let reserved = world.view("o-2").await;

    assert!(world.views.put(&reserved).await.unwrap());
    assert!(!world.views.put(&placed).await.unwrap(), "an older version is refused");
    assert!(world.views.put(&reserved).await.unwrap(), "the same version is written again (a rebuild)");
    assert_eq!(world.views.get("o-2").await.unwrap(), Some(reserved.clone()));
    assert_eq!(world.views.get("o-none").await.unwrap(), None);

    assert_eq!(world.page("c-1", None, None).await, ["o-3", "o-2"]);
    let o2 = world.views.get("o-2").await.unwrap().unwrap();
    assert_eq!(world.page("c-1", None, Some(&o2)).await, ["o-1"]);
    assert_eq!(world.page("c-1", Some(OrderStatus::Reserved), None).await, ["o-2"]);
    assert_eq!(world.page("c-1", Some(OrderStatus::Pending), None).await, ["o-3", "o-1"]);
    assert_eq!(world.page("c-2", None, None).await, ["o-x"]);

    world.views.remove("o-x").await.unwrap();
    assert_eq!(world.page("c-2", None, None).await, Vec::<String>::new());
    assert_eq!(
        rebuild(&world.orders, &world.views, &Deadlines::default()).await.unwrap(),
        Rebuilt { projected: 4, removed: 0 }
    );
    assert_eq!(world.page("c-2", None, None).await, ["o-x"], "rebuilt from the event store");
}

#[tokio::test]
#[ignore = "by hand: places 10,000 orders in the event store, then times their rebuild (README)"]
async fn rebuild_of_10k_orders() {
    const ORDERS: usize = 10_000;
    let world = World::start().await;
    let at = datetime!(2026-12-03 10:00 UTC);
    let started = Instant::now();
    futures::stream::iter(0..ORDERS)
        .map(|i| {
            let world = &world;
            async move {
                let order_id = format!("o-{i:05}");
                world.place(&order_id, &format!("c-{}", i % 100), at + time::Duration::milliseconds(i as i64)).await;
                Ok::<_, ()>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    println!("placed {ORDERS} orders in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let rebuilt = rebuild(&world.orders, &world.views, &Deadlines::default()).await.unwrap();
    let took = started.elapsed();

    assert_eq!(rebuilt, Rebuilt { projected: ORDERS, removed: 0 });
    println!("rebuilt the views of {ORDERS} orders in {:.1} s", took.as_secs_f64());
}
