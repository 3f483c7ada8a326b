//! The DynamoDB adapter: the Inventory table (`INVENTORY_TABLE`) and, for the events of reservation writes, the
//! Outbox table. Each reservation write is ONE request (a `TransactWriteItems`; the tombstone, one item without an
//! event, a conditional `PutItem`); each read is ONE consistent `BatchGetItem` or `GetItem`; a restock is ONE
//! `UpdateItem`.

use std::fmt::Display;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeysAndAttributes, ReturnValue, TransactWriteItem, Update};
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{Item, cancellation_codes, get_s, n, put_if_absent, put_new, s, timestamp};
use orderflow_aws::outbox::outbox_put;
use orderflow_domain::events::{OrderLine, PricedLine};
use orderflow_domain::inventory::{Restock, Stock};
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use serde::Serialize;
use time::OffsetDateTime;

use crate::item::{
    RESERVATION_SK, attr, reservation_from_item, reservation_item, reservation_key, reservation_status,
    stock_from_item, stock_key,
};
use crate::{InventoryStore, Outcome, Reservation, ReservationStatus, Snapshot, StockStore};

/// How often keys that `BatchGetItem` left unprocessed (throttling) are asked for again before giving up.
const BATCH_GET_ROUNDS: u32 = 5;

/// The reason a tombstone reservation records.
const TOMBSTONE_REASON: &str = "order cancelled before its stock was reserved";

/// What each item of a transaction is, to read its cancellation code.
enum Role {
    Reservation,
    Stock(String),
    Outbox,
}

/// The Inventory table, and the Outbox table the events of reservation writes go to.
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

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("inventory table {}, {what}", self.table)
    }

    fn reservation_put<L: Serialize>(
        &self,
        order_id: &str,
        status: ReservationStatus,
        lines: &[L],
        reason: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        put_if_absent(&self.table, reservation_item(order_id, status, lines, reason)?)
    }

    /// `RESERVED -> to`, conditional on the reservation still being `RESERVED`.
    fn reservation_transition(&self, order_id: &str, to: ReservationStatus) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(reservation_key(order_id)))
            .update_expression("SET #status = :to, #updated_at = :now")
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated_at", attr::UPDATED_AT)
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(ReservationStatus::Reserved.as_str()))
            .expression_attribute_values(":now", timestamp(OffsetDateTime::now_utc())?)
            .build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A conditional update of one SKU's stock counters by `quantity` (`:q`; `:zero` is 0; `:room` is the most a
    /// counter may hold before `quantity` is added, so none passes `u32::MAX`: DynamoDB would store it, and the
    /// item would no longer read).
    fn stock_update(
        &self,
        sku: &str,
        quantity: u32,
        expression: &str,
        condition: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(stock_key(sku)))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":q", n(quantity))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":room", n(u32::MAX - quantity))
            .build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Runs one transaction, the `operation` of `order_id`'s reservation. `conflict_is_retry`: a
    /// `TransactionConflict` (another transaction on the same items at the same time) is answered as a stock
    /// conflict, so the caller reads and decides again.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        roles: &[Role],
        conflict_is_retry: bool,
        (operation, order_id): (&str, &str),
    ) -> Result<Outcome, StoreError> {
        let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        let err = match result {
            Ok(_) => return Ok(Outcome::Committed),
            Err(err) => err,
        };
        let outcome = cancellation_codes(&err).and_then(|codes| cancelled(&codes, roles, conflict_is_retry));
        outcome.ok_or_else(|| {
            StoreError::from_transaction(&err).context(self.context(format_args!("{operation} {order_id}")))
        })
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

/// A stock or reservation item read by a snapshot.
fn add_to_snapshot(snapshot: &mut Snapshot, item: &Item) -> Result<(), StoreError> {
    if get_s(item, attr::SORT_KEY)? == RESERVATION_SK {
        snapshot.reservation = Some(reservation_status(item)?);
    } else {
        let stock = stock_from_item(item)?;
        snapshot.stock.insert(stock.sku.clone(), stock);
    }
    Ok(())
}

impl StockStore for DynamoInventory {
    async fn restock(&self, sku: &str, restock: &Restock) -> Result<Stock, StoreError> {
        // One UpdateItem: sets what the operator decides, keeps the units the inventory function holds.
        let context = || self.context(format_args!("restock {sku}"));
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(stock_key(sku)))
            .update_expression(
                "SET #sku = :sku, #available = :available, #price = :price, \
                 #reserved = if_not_exists(#reserved, :zero), #shipped = if_not_exists(#shipped, :zero)",
            )
            .expression_attribute_names("#sku", attr::SKU)
            .expression_attribute_names("#available", attr::AVAILABLE)
            .expression_attribute_names("#price", attr::PRICE)
            .expression_attribute_names("#reserved", attr::RESERVED)
            .expression_attribute_names("#shipped", attr::SHIPPED)
            .expression_attribute_values(":sku", s(sku))
            .expression_attribute_values(":available", n(restock.available))
            .expression_attribute_values(":price", s(restock.price.to_string()))
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        let item = output
            .attributes
            .ok_or_else(|| StoreError::Permanent(format!("{}: UpdateItem returned no attributes", context())))?;
        stock_from_item(&item).map_err(|e| e.context(context()))
    }

    async fn get(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        let context = || self.context(format_args!("stock of {sku}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(stock_key(sku)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        output.item.as_ref().map(stock_from_item).transpose().map_err(|e| e.context(context()))
    }
}

impl InventoryStore for DynamoInventory {
    async fn snapshot(&self, order_id: &str, skus: &[String]) -> Result<Snapshot, StoreError> {
        let context = || self.context(format_args!("snapshot of {order_id}"));
        let mut keys: Vec<Item> = skus.iter().map(|sku| stock_key(sku)).collect();
        keys.push(reservation_key(order_id));
        let mut snapshot = Snapshot::default();
        let mut round = 0;
        while !keys.is_empty() {
            round += 1;
            if round > BATCH_GET_ROUNDS {
                return Err(StoreError::Transient(format!(
                    "{}: {} keys still unprocessed after {BATCH_GET_ROUNDS} BatchGetItem rounds",
                    context(),
                    keys.len()
                )));
            }
            if round > 1 {
                tokio::time::sleep(Duration::from_millis(25 << round)).await;
            }
            let request = KeysAndAttributes::builder().set_keys(Some(std::mem::take(&mut keys))).consistent_read(true);
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request.build()?)
                .send()
                .await
                .map_err(|e| StoreError::from(e).context(context()))?;
            for item in output.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                add_to_snapshot(&mut snapshot, item).map_err(|e| e.context(context()))?;
            }
            if let Some(unprocessed) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                keys = unprocessed.keys().to_vec();
            }
        }
        Ok(snapshot)
    }

    async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
        let context = || self.context(format_args!("reservation of {order_id}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(reservation_key(order_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        output.item.as_ref().map(reservation_from_item).transpose().map_err(|e| e.context(context()))
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
                "available >= :q AND (attribute_not_exists(reserved) OR reserved <= :room)",
            )?);
            roles.push(Role::Stock(line.sku.clone()));
        }
        items.push(self.reservation_put(order_id, ReservationStatus::Reserved, lines, None)?);
        roles.push(Role::Reservation);
        items.push(outbox_put(&self.outbox_table, outbox)?);
        roles.push(Role::Outbox);
        self.transact(items, &roles, true, ("reserve", order_id)).await
    }

    async fn reject(
        &self,
        order_id: &str,
        lines: &[OrderLine],
        reason: &str,
        outbox: &OutboxRecord,
    ) -> Result<Outcome, StoreError> {
        let put = self.reservation_put(order_id, ReservationStatus::Rejected, lines, Some(reason))?;
        let items = vec![put, outbox_put(&self.outbox_table, outbox)?];
        self.transact(items, &[Role::Reservation, Role::Outbox], false, ("reject", order_id)).await
    }

    async fn release(&self, order_id: &str, lines: &[OrderLine], outbox: &OutboxRecord) -> Result<Outcome, StoreError> {
        let mut items = vec![self.reservation_transition(order_id, ReservationStatus::Released)?];
        let mut roles = vec![Role::Reservation];
        for line in lines {
            items.push(self.stock_update(
                &line.sku,
                line.quantity,
                "SET available = if_not_exists(available, :zero) + :q, reserved = reserved - :q",
                "reserved >= :q AND (attribute_not_exists(available) OR available <= :room)",
            )?);
            roles.push(Role::Stock(line.sku.clone()));
        }
        items.push(outbox_put(&self.outbox_table, outbox)?);
        roles.push(Role::Outbox);
        self.transact(items, &roles, false, ("release", order_id)).await
    }

    /// A plain conditional put: one item, no event, so no transaction (half the write units).
    async fn tombstone(&self, order_id: &str) -> Result<Outcome, StoreError> {
        let item = reservation_item::<OrderLine>(order_id, ReservationStatus::Released, &[], Some(TOMBSTONE_REASON))?;
        let written = put_new(&self.client, &self.table, item)
            .await
            .map_err(|e| e.context(self.context(format_args!("tombstone of {order_id}"))))?;
        Ok(match written {
            Written::Committed => Outcome::Committed,
            // The order has a reservation already (or its tombstone).
            Written::Duplicate => Outcome::ReservationConflict,
        })
    }

    async fn ship(&self, order_id: &str, lines: &[OrderLine]) -> Result<Outcome, StoreError> {
        let mut items = vec![self.reservation_transition(order_id, ReservationStatus::Shipped)?];
        let mut roles = vec![Role::Reservation];
        for line in lines {
            items.push(self.stock_update(
                &line.sku,
                line.quantity,
                "SET reserved = reserved - :q, shipped = if_not_exists(shipped, :zero) + :q",
                "reserved >= :q AND (attribute_not_exists(shipped) OR shipped <= :room)",
            )?);
            roles.push(Role::Stock(line.sku.clone()));
        }
        self.transact(items, &roles, false, ("ship", order_id)).await
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
    fn a_stock_update_leaves_room_so_no_counter_passes_u32_max() {
        let config = aws_sdk_dynamodb::Config::builder().behavior_version_latest().build();
        let inventory = DynamoInventory::new(Client::from_conf(config), "Inventory", "Outbox");

        let item = inventory.stock_update("A", 5, "SET shipped = shipped + :q", "shipped <= :room").unwrap();

        let update = item.update().unwrap();
        let values = update.expression_attribute_values().unwrap();
        assert_eq!(values[":room"].as_n().unwrap(), &(u32::MAX - 5).to_string());
        assert_eq!(values[":q"].as_n().unwrap(), "5");
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
}
