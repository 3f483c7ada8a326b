//! The items of the Inventory table, encoded and decoded in this one place (layout in the [crate docs](crate)).

use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{Item, ItemError, get_n, get_s, key, n, s, timestamp};
use orderflow_domain::Decimal;
use orderflow_domain::inventory::Stock;
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Reservation, ReservationStatus};

/// The partition key of a stock item is this prefix and the SKU.
pub const STOCK_PK_PREFIX: &str = "SKU#";
pub const STOCK_SK: &str = "STOCK";
/// The partition key of a reservation item is this prefix and the order id.
pub const RESERVATION_PK_PREFIX: &str = "RESERVATION#";
pub const RESERVATION_SK: &str = "RESERVATION";

/// Attribute names.
pub mod attr {
    pub const SORT_KEY: &str = "sk";
    pub const SKU: &str = "sku";
    pub const AVAILABLE: &str = "available";
    pub const RESERVED: &str = "reserved";
    pub const SHIPPED: &str = "shipped";
    pub const PRICE: &str = "price";
    pub const ORDER_ID: &str = "order_id";
    pub const STATUS: &str = "status";
    pub const LINES: &str = "lines";
    pub const REASON: &str = "reason";
    pub const UPDATED_AT: &str = "updated_at";
}

pub fn stock_key(sku: &str) -> Item {
    key(format!("{STOCK_PK_PREFIX}{sku}"), STOCK_SK)
}

pub fn reservation_key(order_id: &str) -> Item {
    key(format!("{RESERVATION_PK_PREFIX}{order_id}"), RESERVATION_SK)
}

/// The whole stock item, as a restock leaves it.
pub fn stock_item(stock: &Stock) -> Item {
    let mut item = stock_key(&stock.sku);
    item.insert(attr::SKU.into(), s(&stock.sku));
    item.insert(attr::AVAILABLE.into(), n(stock.available));
    item.insert(attr::RESERVED.into(), n(stock.reserved));
    item.insert(attr::SHIPPED.into(), n(stock.shipped));
    item.insert(attr::PRICE.into(), s(stock.price.to_string()));
    item
}

/// A stock item; `reserved` and `shipped` are 0 when absent, every other attribute is required.
pub fn stock_from_item(item: &Item) -> Result<Stock, StoreError> {
    let sku = get_s(item, attr::SKU)?;
    let corrupt = |e: ItemError| StoreError::Corrupt(format!("stock of {sku}: {} {}", e.attribute, e.problem));
    let counter = |name: &str| if item.contains_key(name) { get_n(item, name).map_err(corrupt) } else { Ok(0) };
    let price = get_s(item, attr::PRICE).map_err(corrupt)?;
    let price = price
        .parse::<Decimal>()
        .map_err(|e| StoreError::Corrupt(format!("stock of {sku}: price {price:?} is not a decimal: {e}")))?;
    Ok(Stock {
        available: get_n(item, attr::AVAILABLE).map_err(corrupt)?,
        reserved: counter(attr::RESERVED)?,
        shipped: counter(attr::SHIPPED)?,
        sku: sku.to_owned(),
        price,
    })
}

/// An order's reservation item, written now; `lines` as JSON (a reservation's priced lines, or order lines: both
/// read back as order lines).
pub fn reservation_item<L: Serialize>(
    order_id: &str,
    status: ReservationStatus,
    lines: &[L],
    reason: Option<&str>,
) -> Result<Item, StoreError> {
    let lines = serde_json::to_string(lines)
        .map_err(|e| StoreError::Permanent(format!("lines of {order_id} do not serialise as JSON: {e}")))?;
    let mut item = reservation_key(order_id);
    item.insert(attr::ORDER_ID.into(), s(order_id));
    item.insert(attr::STATUS.into(), s(status.as_str()));
    item.insert(attr::LINES.into(), s(lines));
    item.insert(attr::UPDATED_AT.into(), timestamp(OffsetDateTime::now_utc())?);
    if let Some(reason) = reason {
        item.insert(attr::REASON.into(), s(reason));
    }
    Ok(item)
}

pub fn reservation_status(item: &Item) -> Result<ReservationStatus, StoreError> {
    get_s(item, attr::STATUS)?.parse().map_err(StoreError::Corrupt)
}

pub fn reservation_from_item(item: &Item) -> Result<Reservation, StoreError> {
    let lines = serde_json::from_str(get_s(item, attr::LINES)?)
        .map_err(|e| StoreError::Corrupt(format!("lines are not JSON order lines: {e}")))?;
    Ok(Reservation { status: reservation_status(item)?, lines })
}

#[cfg(test)]
mod tests {
    use orderflow_domain::events::OrderLine;

    use super::*;

    #[test]
    fn a_stock_item_reads_back_as_written() {
        let stock = Stock { sku: "A".into(), available: 4, reserved: 2, shipped: 1, price: "12.50".parse().unwrap() };
        assert_eq!(stock_from_item(&stock_item(&stock)).unwrap(), stock);
    }

    #[test]
    fn a_stock_item_reads_with_its_decimal_price() {
        let item = Item::from([
            ("sku".to_owned(), s("SKU-1")),
            ("available".to_owned(), n(10)),
            ("reserved".to_owned(), n(2)),
            ("shipped".to_owned(), n(1)),
            ("price".to_owned(), s("12.50")),
        ]);
        let stock = stock_from_item(&item).unwrap();
        assert_eq!((stock.available, stock.reserved, stock.shipped), (10, 2, 1));
        assert_eq!(stock.price.to_string(), "12.50");
    }

    #[test]
    fn stock_items_read_with_defaults_for_counters_older_items_lack() {
        let item =
            Item::from([("sku".to_owned(), s("A")), ("available".to_owned(), n(4)), ("price".to_owned(), s("12.50"))]);
        let stock = stock_from_item(&item).unwrap();
        assert_eq!((stock.available, stock.reserved, stock.shipped), (4, 0, 0));
        assert_eq!(stock.price, "12.50".parse::<Decimal>().unwrap());
    }

    #[test]
    fn a_stock_item_without_a_price_is_invalid_naming_the_sku() {
        let item = Item::from([("sku".to_owned(), s("A")), ("available".to_owned(), n(4))]);
        assert_eq!(stock_from_item(&item).unwrap_err(), StoreError::Corrupt("stock of A: price is missing".into()));
    }

    #[test]
    fn a_price_that_is_not_a_decimal_is_corrupt() {
        let item = Item::from([
            ("sku".to_owned(), s("SKU-1")),
            ("available".to_owned(), n(10)),
            ("reserved".to_owned(), n(0)),
            ("shipped".to_owned(), n(0)),
            ("price".to_owned(), s("cheap")),
        ]);
        assert!(matches!(stock_from_item(&item), Err(StoreError::Corrupt(m)) if m.contains("price")));
    }

    #[test]
    fn a_reservation_reads_back_with_its_lines_and_an_unknown_status_is_corrupt() {
        let lines = vec![OrderLine { sku: "A".into(), quantity: 2 }];
        let mut item = reservation_item("o-1", ReservationStatus::Reserved, &lines, None).unwrap();
        assert_eq!(reservation_from_item(&item).unwrap(), Reservation { status: ReservationStatus::Reserved, lines });
        item.insert("status".into(), s("LOST"));
        assert_eq!(reservation_status(&item), Err(StoreError::Corrupt("unknown reservation status \"LOST\"".into())));
    }
}
