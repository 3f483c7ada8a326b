//! `DynamoOrders::place` with an idempotency key against a real emulator (see [`support`]): the order's first
//! event, its head and the key's record commit in one transaction, and a repeat is answered from the record that cancelled it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orderflow_aws::dynamo::{Item, get_n, get_s};
use orderflow_domain::events::{OrderLine, OrderPlaced};
use orderflow_orders_store::{OrderStore, Placement, placement_record};
use orderflow_toolkit::Envelope;
use orderflow_toolkit::idempotency::{IdempotencyRecord, epoch_seconds, payload_hash};
use support::World;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn placed(order_id: &str) -> Envelope<OrderPlaced> {
    let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }];
    Envelope::new(
        order_id,
        OrderPlaced {
            currency: orderflow_domain::events::DEFAULT_CURRENCY.into(),
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            lines,
        },
    )
}

fn record_at(key: &str, request: &str, order_id: &str, at: SystemTime) -> IdempotencyRecord {
    placement_record("c-1", key, request, order_id, at, DAY).unwrap()
}

impl World {
    /// Places a new order `order_id` with the record of `key` for `request`, written at `at`.
    async fn place_at(&self, order_id: &str, key: &str, request: &str, at: SystemTime) -> Placement {
        self.store.place(&placed(order_id), Some(&record_at(key, request, order_id, at))).await.unwrap()
    }

    async fn place_with(&self, order_id: &str, key: &str, request: &str) -> Placement {
        self.place_at(order_id, key, request, SystemTime::now()).await
    }

    /// The first event of the order: written only by a placement that committed.
    async fn order_item(&self, order_id: &str) -> Option<Item> {
        self.item(&format!("ORDER#{order_id}"), "EVENT#0000000001").await
    }
}

#[tokio::test]
async fn a_placement_with_a_key_commits_its_record_once_and_answers_repeats_from_it() {
    let world = World::start().await;
    let before = epoch_seconds(SystemTime::now());

    assert_eq!(world.place_with("o-1", "checkout-1", "request").await, Placement::Placed);
    let record = world.item("IDEMPOTENCY#3:c-1:checkout-1", "IDEMPOTENCY").await.expect("the key's record");
    assert_eq!(get_s(&record, "status").unwrap(), "COMPLETED");
    assert_eq!(get_s(&record, "payload_hash").unwrap(), payload_hash("request").unwrap());
    assert_eq!(get_s(&record, "response").unwrap(), r#"{"order_id":"o-1"}"#);
    let expiration: u64 = get_n(&record, "expiration").unwrap();
    assert!((before + DAY.as_secs()..=before + DAY.as_secs() + 5).contains(&expiration), "{expiration}");

    // The same request again: the first order, and the new one is not written.
    let again = world.place_with("o-2", "checkout-1", "request").await;
    assert_eq!(again, Placement::Existing { order_id: "o-1".into() });
    assert!(world.order_item("o-2").await.is_none(), "a repeat writes no order");
    // Another request with the key: refused, nothing written either.
    let reused = world.place_with("o-3", "checkout-1", "another request").await;
    assert_eq!(reused, Placement::KeyReused { key: "3:c-1:checkout-1".into() });
    assert!(world.order_item("o-3").await.is_none());
    assert!(world.order_item("o-1").await.is_some());
}

#[tokio::test]
async fn an_expired_record_lingering_before_its_ttl_deletion_no_longer_holds_its_key() {
    let world = World::start().await;
    let two_days_ago = SystemTime::now() - 2 * DAY;
    assert_eq!(world.place_at("o-1", "checkout-1", "request", two_days_ago).await, Placement::Placed);
    let expired = world.item("IDEMPOTENCY#3:c-1:checkout-1", "IDEMPOTENCY").await.unwrap();
    let expiration: u64 = get_n(&expired, "expiration").unwrap();
    assert!(UNIX_EPOCH + Duration::from_secs(expiration) < SystemTime::now(), "the record is expired, not gone");

    assert_eq!(world.place_with("o-2", "checkout-1", "another request").await, Placement::Placed);
    let again = world.place_with("o-3", "checkout-1", "another request").await;
    assert_eq!(again, Placement::Existing { order_id: "o-2".into() });
}
