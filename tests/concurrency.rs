//! Stock is never oversold, however many orders race for the last units.

mod support;

use futures::future::join_all;
use support::Api;

const UNITS: u32 = 10;
const ORDERS: usize = 60;

#[tokio::test(flavor = "multi_thread")]
async fn sixty_concurrent_orders_for_the_last_ten_units_never_oversell() {
    let cloud = support::start_cloud().await;
    let api = Api::new(&cloud);
    api.restock("SKU-LAST", UNITS, "1.00").await;
    let order_ids = join_all((0..ORDERS).map(|i| {
        let api = &api;
        async move { api.place(&format!("c-{i}"), "SKU-LAST", 1).await }
    }))
    .await;
    let orders = join_all(order_ids.iter().map(|id| api.final_order(id))).await;
    let count = |status: &str| orders.iter().filter(|o| o["status"] == status).count();
    assert_eq!(count("SHIPPED"), UNITS as usize, "exactly the units in stock ship");
    assert_eq!(count("REJECTED"), ORDERS - UNITS as usize, "every other order is rejected");
    support::wait_for("the shipped units to leave the reservations", || async {
        let stock = api.stock("SKU-LAST").await;
        (stock.1 == 0).then_some(())
    })
    .await;
    assert_eq!(api.stock("SKU-LAST").await, (0, 0, u64::from(UNITS)));
    cloud.shutdown().await.unwrap();
}
