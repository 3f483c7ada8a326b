//! The DynamoDB adapter of the inventory store.
//!
//! Items (table INVENTORY_TABLE, key `pk`/`sk`):
//! - `SKU#<sku>` / `STOCK`: sku (S), available, reserved, shipped (N), price (S, decimal string); written by the
//!   orders API on `PUT /inventory/{sku}`.
//! - `RESERVATION#<order>` / `RESERVATION`: order_id, status (RESERVED, REJECTED, RELEASED, SHIPPED), lines (JSON),
//!   reason (REJECTED, and the line-less RELEASED tombstone of an order cancelled before it was reserved),
//!   updated_at.
//!
//! Each write method is ONE request (a `TransactWriteItems`; the tombstone, one item without an event, a conditional
//! `PutItem`); each read is ONE consistent `BatchGetItem` or `GetItem`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update};
use orderflow_aws::dynamo::{Item, RequestError, cancellation_codes, describe, get_n, get_s, key, n, put_if_absent, s};
use orderflow_aws::outbox::outbox_put;
use orderflow_domain::Decimal;
use orderflow_domain::events::{OrderLine, PricedLine};
use orderflow_domain::inventory::Stock;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{InventoryStore, Outcome, Reservation, ReservationStatus, Snapshot, StoreError};

/// How often keys that `BatchGetItem` left unprocessed (throttling) are asked for again before giving up.
const BATCH_GET_ROUNDS: u32 = 5;

/// The reason a tombstone reservation records.
const TOMBSTONE_REASON: &str = "order cancelled before its stock was reserved";

const STOCK_SK: &str = "STOCK";
const RESERVATION_SK: &str = "RESERVATION";

fn stock_pk(sku: &str) -> String {
    format!("SKU#{sku}")
}

fn reservation_pk(order_id: &str) -> String {
    format!("RESERVATION#{order_id}")
}

fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).expect("the current time formats as RFC 3339")
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(what.to_string())
}

impl From<RequestError> for StoreError {
    fn from(err: RequestError) -> Self {
        err.into_store_error(Self::Invalid, Self::Unavailable)
    }
}

/// A number attribute that older items may lack (0 then).
fn get_count(item: &Item, name: &str) -> Result<u32, StoreError> {
    if item.contains_key(name) { get_n(item, name).map_err(invalid) } else { Ok(0) }
}

fn stock_from_item(item: &Item) -> Result<Stock, StoreError> {
    let sku = get_s(item, "sku").map_err(invalid)?.to_owned();
    let price = match item.get("price") {
        Some(AttributeValue::S(price) | AttributeValue::N(price)) => price
            .parse::<Decimal>()
            .map_err(|e| invalid(format!("stock of {sku}: price {price:?} is not a decimal: {e}")))?,
        _ => return Err(invalid(format!("stock of {sku}: price is missing"))),
    };
    Ok(Stock {
        available: get_n(item, "available").map_err(|e| invalid(format!("stock of {sku}: {e}")))?,
        reserved: get_count(item, "reserved")?,
        shipped: get_count(item, "shipped")?,
        sku,
        price,
    })
}

fn status_from_item(item: &Item) -> Result<ReservationStatus, StoreError> {
    get_s(item, "status").map_err(invalid)?.parse().map_err(invalid)
}

fn reservation_item(order_id: &str, status: ReservationStatus, lines: String, reason: Option<&str>) -> Item {
    let mut item = key(reservation_pk(order_id), RESERVATION_SK);
    item.insert("order_id".into(), s(order_id));
    item.insert("status".into(), s(status.as_str()));
    item.insert("lines".into(), s(lines));
    item.insert("updated_at".into(), s(now()));
    if let Some(reason) = reason {
        item.insert("reason".into(), s(reason));
    }
    item
}

/// What each item of a transaction is, to read its cancellation code.
enum Role {
    Reservation,
    Stock(String),
    Outbox,
}

/// The DynamoDB inventory store.
#[derive(Debug, Clone)]
pub struct DynamoInventory {
    client: Client,
    table: String,
    outbox_table: String,
}

impl DynamoInventory {
    pub fn new(client: Client, table: impl Into<String>, outbox_table: impl Into<String>) -> Self {
        Self { client, table: table.into(), outbox_table: outbox_table.into() }
    }

    fn reservation_put(
        &self,
        order_id: &str,
        status: ReservationStatus,
        lines: String,
        reason: Option<&str>,
    ) -> TransactWriteItem {
        put_if_absent(&self.table, reservation_item(order_id, status, lines, reason))
    }

    /// `RESERVED -> to`, conditional on the reservation still being `RESERVED`.
    fn reservation_transition(&self, order_id: &str, to: ReservationStatus) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(reservation_pk(order_id), RESERVATION_SK)))
            .update_expression("SET #status = :to, updated_at = :now")
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(ReservationStatus::Reserved.as_str()))
            .expression_attribute_values(":now", s(now()))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// A conditional update of one SKU's stock counters by `quantity` (`:q`; `:zero` is 0).
    fn stock_update(&self, sku: &str, quantity: u32, expression: &str, condition: &str) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(stock_pk(sku), STOCK_SK)))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":q", n(quantity))
            .expression_attribute_values(":zero", n(0))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// Runs one transaction. `conflict_is_retry`: a `TransactionConflict` (another transaction on the same items
    /// at the same time) is answered as a stock conflict, so the caller reads and decides again.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        roles: &[Role],
        conflict_is_retry: bool,
    ) -> Result<Outcome, StoreError> {
        let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        let err = match result {
            Ok(_) => return Ok(Outcome::Committed),
            Err(err) => err,
        };
        let Some(codes) = cancellation_codes(&err) else { return Err(RequestError::from(err).into()) };
        cancelled(&codes, roles, conflict_is_retry).ok_or_else(|| cancellation_error(&err, &codes))
    }
}

/// The outcome of a cancelled transaction from its per-item codes, or `None` when it is not a condition failure.
fn cancelled(codes: &[String], roles: &[Role], conflict_is_retry: bool) -> Option<Outcome> {
    let mut short = Vec::new();
    for (code, role) in codes.iter().zip(roles) {
        match (code.as_str(), role) {
            ("ConditionalCheckFailed", Role::Reservation | Role::Outbox) => return Some(Outcome::ReservationConflict),
            ("ConditionalCheckFailed", Role::Stock(sku)) => short.push(sku.clone()),
            _ => {}
        }
    }
    if !short.is_empty() {
        return Some(Outcome::StockConflict(short));
    }
    if conflict_is_retry && codes.iter().any(|c| c == "TransactionConflict") {
        return Some(Outcome::StockConflict(Vec::new()));
    }
    None
}

fn cancellation_error(err: &SdkError<TransactWriteItemsError>, codes: &[String]) -> StoreError {
    let message = format!("transaction cancelled ({}): {}", codes.join(", "), describe(err));
    if codes.iter().any(|c| c == "ValidationError") {
        StoreError::Invalid(message)
    } else {
        StoreError::Unavailable(message)
    }
}

impl InventoryStore for DynamoInventory {
    async fn snapshot(&self, order_id: &str, skus: &[String]) -> Result<Snapshot, StoreError> {
        let mut keys: Vec<Item> = skus.iter().map(|sku| key(stock_pk(sku), STOCK_SK)).collect();
        keys.push(key(reservation_pk(order_id), RESERVATION_SK));
        let mut snapshot = Snapshot::default();
        let mut round = 0;
        while !keys.is_empty() {
            round += 1;
            if round > BATCH_GET_ROUNDS {
                return Err(StoreError::Unavailable(format!(
                    "{} keys still unprocessed after {BATCH_GET_ROUNDS} BatchGetItem rounds",
                    keys.len()
                )));
            }
            if round > 1 {
                tokio::time::sleep(Duration::from_millis(25 << round)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(invalid)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(RequestError::from)?;
            for item in output.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                if get_s(item, "sk").map_err(invalid)? == RESERVATION_SK {
                    snapshot.reservation = Some(status_from_item(item)?);
                } else {
                    let stock = stock_from_item(item)?;
                    snapshot.stock.insert(stock.sku.clone(), stock);
                }
            }
            if let Some(unprocessed) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                keys = unprocessed.keys().to_vec();
            }
        }
        Ok(snapshot)
    }

    async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(reservation_pk(order_id), RESERVATION_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(RequestError::from)?;
        let Some(item) = output.item() else { return Ok(None) };
        let lines = get_s(item, "lines").map_err(invalid)?;
        let lines: Vec<OrderLine> = serde_json::from_str(lines)
            .map_err(|e| invalid(format!("reservation of {order_id}: lines are not JSON order lines: {e}")))?;
        Ok(Some(Reservation { status: status_from_item(item)?, lines }))
    }

    async fn reserve(
        &self,
        order_id: &str,
        lines: &[PricedLine],
        outbox: &OutboxRecord,
    ) -> Result<Outcome, StoreError> {
        let mut items = Vec::with_capacity(lines.len() + 2);
        let mut roles = Vec::with_capacity(lines.len() + 2);
        for line in lines {
            items.push(self.stock_update(
                &line.sku,
                line.quantity,
                "SET available = available - :q, reserved = if_not_exists(reserved, :zero) + :q",
                "available >= :q",
            ));
            roles.push(Role::Stock(line.sku.clone()));
        }
        let lines = serde_json::to_string(lines).expect("lines serialise to JSON");
        items.push(self.reservation_put(order_id, ReservationStatus::Reserved, lines, None));
        roles.push(Role::Reservation);
        items.push(outbox_put(&self.outbox_table, outbox));
        roles.push(Role::Outbox);
        self.transact(items, &roles, true).await
    }

    async fn reject(
        &self,
        order_id: &str,
        lines: &[OrderLine],
        reason: &str,
        outbox: &OutboxRecord,
    ) -> Result<Outcome, StoreError> {
        let lines = serde_json::to_string(lines).expect("lines serialise to JSON");
        let put = self.reservation_put(order_id, ReservationStatus::Rejected, lines, Some(reason));
        let items = vec![put, outbox_put(&self.outbox_table, outbox)];
        self.transact(items, &[Role::Reservation, Role::Outbox], false).await
    }

    async fn release(&self, order_id: &str, lines: &[OrderLine], outbox: &OutboxRecord) -> Result<Outcome, StoreError> {
        let mut items = vec![self.reservation_transition(order_id, ReservationStatus::Released)];
        let mut roles = vec![Role::Reservation];
        for line in lines {
            items.push(self.stock_update(
                &line.sku,
                line.quantity,
                "SET available = if_not_exists(available, :zero) + :q, reserved = reserved - :q",
                "reserved >= :q",
            ));
            roles.push(Role::Stock(line.sku.clone()));
        }
        items.push(outbox_put(&self.outbox_table, outbox));
        roles.push(Role::Outbox);
        self.transact(items, &roles, false).await
    }

    /// A plain conditional put: one item, no event, so no transaction (half the write units).
    async fn tombstone(&self, order_id: &str) -> Result<Outcome, StoreError> {
        let item = reservation_item(order_id, ReservationStatus::Released, "[]".to_owned(), Some(TOMBSTONE_REASON));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Outcome::Committed),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(Outcome::ReservationConflict)
            }
            Err(err) => Err(RequestError::from(err).into()),
        }
    }

    async fn ship(&self, order_id: &str, lines: &[OrderLine]) -> Result<Outcome, StoreError> {
        let mut items = vec![self.reservation_transition(order_id, ReservationStatus::Shipped)];
        let mut roles = vec![Role::Reservation];
        for line in lines {
            items.push(self.stock_update(
                &line.sku,
                line.quantity,
                "SET reserved = reserved - :q, shipped = if_not_exists(shipped, :zero) + :q",
                "reserved >= :q",
            ));
            roles.push(Role::Stock(line.sku.clone()));
        }
        self.transact(items, &roles, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    fn reserve_roles() -> Vec<Role> {
        vec![Role::Stock("A".into()), Role::Stock("B".into()), Role::Reservation, Role::Outbox]
    }

    #[test]
    fn an_existing_reservation_wins_over_short_stock_so_a_duplicate_is_never_decided_again() {
        let outcome = cancelled(
            &codes(&["ConditionalCheckFailed", "None", "ConditionalCheckFailed", "None"]),
            &reserve_roles(),
            true,
        );
        assert_eq!(outcome, Some(Outcome::ReservationConflict));
    }

    #[test]
    fn short_stock_names_the_skus() {
        let outcome = cancelled(&codes(&["None", "ConditionalCheckFailed", "None", "None"]), &reserve_roles(), true);
        assert_eq!(outcome, Some(Outcome::StockConflict(vec!["B".into()])));
    }

    #[test]
    fn a_transaction_conflict_is_a_retry_only_where_asked() {
        let conflict = codes(&["TransactionConflict", "None", "None", "None"]);
        assert_eq!(cancelled(&conflict, &reserve_roles(), true), Some(Outcome::StockConflict(vec![])));
        assert_eq!(cancelled(&conflict, &reserve_roles(), false), None);
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
        assert_eq!(stock_from_item(&item).unwrap_err(), StoreError::Invalid("stock of A: price is missing".into()));
    }
}
