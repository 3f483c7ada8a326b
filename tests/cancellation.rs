//! Customer cancellation through the real system, racing the shipment: 60 orders, each cancelled with
//! `POST /orders/{id}/cancel` at a different moment (at once, as soon as its view shows it CONFIRMED, after a
//! jittered delay, and after it SHIPPED), all at the same time. The event store serialises the cancel against the
//! saga's `OrderShipped`, so each order ends either SHIPPED with its cancel refused (409) or CANCELLED for reason
//! `customer` with its cancel accepted (202) and every compensation done: stock released, an authorized payment
//! voided (`PaymentVoided`), the shipment cancelled. Never both, never neither, and the stock is conserved.
//!
//! Under chaos, as tests/chaos.rs runs the system: every SQS delivery duplicated at 20 % and every batch shuffled,
//! and the consumers' DynamoDB calls throttled at 5 % and killed right after 1 % of their writes (faults on the
//! wire). The API itself is left alone, so each cancel's answer is the one the race gave.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use local_lambda::runner::Chaos;
use serde_json::{Value, json};
use support::outcome::{per_order, stock_settled};
use support::{Api, attr, scan};

const SKU: &str = "SKU-CANCEL";
const ORDERS: usize = 60;
const STOCK: u64 = 1000;
/// The functions the faults hit: every consumer, not the API.
const CONSUMERS: [&str; 6] = ["inventory", "payment", "order-saga", "shipping", "analytics", "order-views"];

/// When an order's cancel is sent.
#[derive(Debug, Clone, Copy)]
enum When {
    AtOnce,
    OnceConfirmed,
    After(Duration),
    OnceShipped,
}

impl When {
    fn name(self) -> &'static str {
        match self {
            Self::AtOnce => "at once",
            Self::OnceConfirmed => "once confirmed",
            Self::After(_) => "after a delay",
            Self::OnceShipped => "once shipped",
        }
    }

    fn of(i: usize) -> Self {
        match i % 4 {
            0 => Self::AtOnce,
            1 => Self::OnceConfirmed,
            // Spread over the saga's run, which takes a few seconds locally.
            2 => Self::After(Duration::from_millis((i as u64 * 397) % 4000)),
            _ => Self::OnceShipped,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_racing_the_shipment_under_chaos_has_one_winner_and_a_cancelled_order_is_fully_compensated() {
    let seed = support::chaos_seed();
    let cloud = support::start_cloud_with(|options| {
        options.chaos = Some(Chaos { duplicate_rate: 0.2, shuffle: true, seed });
        options.max_receive_count = 10;
        options.fault_seed = seed;
    })
    .await;
    let api = Api::new(&cloud);
    let faults = json!({"rules": [
        {"target": "dynamodb", "functions": CONSUMERS, "fault": "throttle", "rate": 0.05},
        {"target": "dynamodb", "functions": CONSUMERS, "fault": "crash_after_write", "rate": 0.01},
    ]});
    assert_eq!(api.send("PUT", "/_local/faults", Some(faults), &[]).await.0, 204);
    api.restock(SKU, STOCK as u32, "5.00").await;

    let runs = (0..ORDERS).map(|i| {
        let api = &api;
        async move {
            let quantity = 1 + (i % 3) as u32;
            let order_id = api.place(&format!("c-cancel-{}", i % 5), SKU, quantity).await;
            let when = When::of(i);
            match when {
                When::AtOnce => {}
                When::After(delay) => tokio::time::sleep(delay).await,
                When::OnceConfirmed => wait_for_status(api, &order_id, &["CONFIRMED", "SHIPPED"]).await,
                When::OnceShipped => wait_for_status(api, &order_id, &["SHIPPED"]).await,
            }
            let (status, body) = api.send("POST", &format!("/orders/{order_id}/cancel"), None, &[]).await;
            assert!(status == 202 || status == 409, "cancel of {order_id} ({when:?}) answered {status}: {body}");
            (order_id, quantity, when, status)
        }
    });
    let cancels = join_all(runs).await;

    let deadline = support::settle_deadline();
    let mut status_of = HashMap::new();
    for (order_id, ..) in &cancels {
        let order = support::outcome::final_order(&api, order_id, deadline).await;
        status_of.insert(order_id.clone(), order["status"].as_str().unwrap().to_owned());
    }
    let (available, reserved, shipped) = stock_settled(&api, SKU, deadline).await;
    support::wait_until_quiet(&cloud, deadline).await;

    let events = per_order(&support::published_events(&cloud).await, "", "detail_type");
    let payments = per_order(&scan(&cloud, "PaymentsTableName").await, "PAYMENT#", "status");
    let shipments = per_order(&scan(&cloud, "ShipmentsTableName").await, "SHIPMENT#", "status");
    let reasons = cancel_reasons(&cloud).await;
    let count = |types: &HashMap<String, std::collections::BTreeMap<String, usize>>, order_id: &str, name: &str| {
        types.get(order_id).and_then(|counts| counts.get(name)).copied().unwrap_or(0)
    };
    let mut shipped_units = 0;
    let (mut accepted, mut refused, mut voided) = (0, 0, 0);
    // Per moment of the cancel: (cancelled, shipped).
    let mut by_moment: std::collections::BTreeMap<&str, (u32, u32)> = std::collections::BTreeMap::new();
    for (order_id, quantity, when, cancel) in &cancels {
        let status = status_of[order_id].as_str();
        let what = format!("{order_id} ({when:?}, cancel {cancel}, {status})");
        let (shipped_events, cancelled_events) =
            (count(&events, order_id, "OrderShipped"), count(&events, order_id, "OrderCancelled"));
        assert_eq!(shipped_events + cancelled_events, 1, "{what}: shipped or cancelled, once: {:?}", events[order_id]);
        let moment = by_moment.entry(when.name()).or_default();
        match (cancel, status) {
            (202, "CANCELLED") => {
                accepted += 1;
                moment.0 += 1;
                assert_eq!(reasons.get(order_id).map(String::as_str), Some("customer"), "{what}");
                assert_eq!(
                    payments.get(order_id).map(|p| p.keys().collect::<Vec<_>>()),
                    Some(vec![&"VOIDED".to_owned()]),
                    "{what}: an authorized payment is voided, a payment not yet made is tombstoned"
                );
                if count(&events, order_id, "PaymentAuthorized") == 1 {
                    assert_eq!(count(&events, order_id, "PaymentVoided"), 1, "{what}: voided through payment");
                    voided += 1;
                }
                assert_eq!(
                    shipments.get(order_id).map(|s| s.keys().collect::<Vec<_>>()),
                    Some(vec![&"CANCELLED".to_owned()]),
                    "{what}: no shipment leaves"
                );
            }
            (409, "SHIPPED") => {
                refused += 1;
                moment.1 += 1;
                shipped_units += u64::from(*quantity);
                assert_eq!(count(&events, order_id, "PaymentVoided"), 0, "{what}");
            }
            _ => panic!("{what}: a 202 must end CANCELLED and a 409 SHIPPED"),
        }
    }
    assert!(accepted > 0 && refused > 0, "both outcomes occur: {accepted} cancelled, {refused} shipped");
    assert_eq!(
        (available, reserved, shipped),
        (STOCK - shipped_units, 0, shipped_units),
        "stock conserved: shipped orders hold their units, cancelled ones none"
    );
    let fired = cloud.runner().faults().fired();
    let chaos = cloud.runner().chaos_stats().expect("chaos is on");
    println!(
        "{ORDERS} orders: {accepted} cancelled by their customer ({voided} of them after their payment was authorized, \
         then voided), {refused} shipped with the cancel refused; (cancelled, shipped) by when the cancel was sent: \
         {by_moment:?}; chaos {chaos:?}, faults fired {fired:?}"
    );
    assert!(chaos.duplicates_delivered > 0, "no duplicate was delivered: {chaos:?}");
    assert!(fired.get("dynamodb/throttle").copied().unwrap_or(0) > 0, "no call was throttled: {fired:?}");
    cloud.shutdown().await.unwrap();
}

/// Waits until the order's view shows one of `statuses` (a final status that is not among them ends the wait too:
/// the cancel is then refused).
async fn wait_for_status(api: &Api, order_id: &str, statuses: &[&str]) {
    support::wait_for(&format!("order {order_id} to be {statuses:?}"), || async {
        let order = api.order(order_id).await?;
        let status = order["status"].as_str()?;
        (statuses.contains(&status) || ["SHIPPED", "REJECTED", "CANCELLED"].contains(&status)).then_some(())
    })
    .await
}

/// The `reason` of each order's published `OrderCancelled`.
async fn cancel_reasons(cloud: &orderflow_local_cloud::cloud::LocalCloud) -> HashMap<String, String> {
    support::published_events(cloud)
        .await
        .iter()
        .filter(|item| attr(item, "detail_type") == "OrderCancelled")
        .map(|item| {
            let detail: Value = serde_json::from_str(attr(item, "detail")).expect("an envelope");
            (attr(item, "pk").to_owned(), detail["data"]["reason"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}
