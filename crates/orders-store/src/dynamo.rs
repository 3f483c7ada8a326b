//! The DynamoDB adapter: every change is one `TransactWriteItems` of the conditional order write and its outbox
//! record (and, when placing with an idempotency key, the key's record, written by `orderflow_aws`'s
//! [`DynamoIdempotencyStore::transact_put`]).

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use orderflow_aws::dynamo::{Item, cancellation_codes, cancellation_reasons, get_n, get_s, key, n, s, timestamp};
use orderflow_aws::outbox::outbox_put;
use orderflow_aws::{DynamoIdempotencyStore, StoreError as TableError};
use orderflow_domain::order::Order;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::idempotency::IdempotencyRecord;
use time::OffsetDateTime;

use crate::{
    DEADLINE_INDEX, DEADLINE_SHARDS, IDEMPOTENCY_PK_PREFIX, IDEMPOTENCY_SK, ORDER_SK, OrderStore, Placement,
    StoreError, deadline_shard, deadline_shards, indexed_deadline, order_pk, replay,
};

/// Attribute names of the order item.
mod attr {
    pub const ORDER: &str = "order";
    pub const ORDER_ID: &str = "order_id";
    pub const CUSTOMER_ID: &str = "customer_id";
    pub const STATUS: &str = "status";
    pub const VERSION: &str = "version";
    pub const TOTAL: &str = "total";
    pub const CREATED_AT: &str = "created_at";
    pub const DEADLINE_AT: &str = "deadline_at";
    pub const DEADLINE_SHARD: &str = "deadline_shard";
}

/// The most items one page of a deadline index query asks for.
const OVERDUE_PAGE: i32 = 100;

/// The position of the idempotency record's put in the transaction of `place`: after the order's.
const IDEMPOTENCY_ITEM: usize = 1;

/// How often `place` tries again when DynamoDB cancels its transaction because another transaction held one of
/// its items (`TransactionConflict`: two requests with the same idempotency key at once).
const PLACE_ATTEMPTS: u32 = 3;

/// The Orders table (orders and the idempotency records of requests) and the Outbox table.
#[derive(Debug, Clone)]
pub struct DynamoOrders {
    client: Client,
    orders_table: String,
    outbox_table: String,
    /// The idempotency records' layout in the Orders table: `IDEMPOTENCY#<key>` / `IDEMPOTENCY`.
    idempotency: DynamoIdempotencyStore,
}

impl DynamoOrders {
    pub fn new(client: Client, orders_table: impl Into<String>, outbox_table: impl Into<String>) -> Self {
        let orders_table = orders_table.into();
        let idempotency = DynamoIdempotencyStore::new(client.clone(), &orders_table)
            .with_key_prefix(IDEMPOTENCY_PK_PREFIX)
            .with_sort_key("sk", IDEMPOTENCY_SK);
        Self { client, orders_table, outbox_table: outbox_table.into(), idempotency }
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("orders table {}, {what}", self.orders_table)
    }

    fn order_put(&self, order: &Order) -> Result<TransactWriteItem, TableError> {
        let json = order_json(order)?;
        let mut put = Put::builder()
            .table_name(&self.orders_table)
            .item("pk", s(order_pk(&order.order_id)))
            .item("sk", s(ORDER_SK))
            .item(attr::ORDER_ID, s(&order.order_id))
            .item(attr::CUSTOMER_ID, s(&order.customer_id))
            .item(attr::STATUS, s(order.status.as_str()))
            .item(attr::VERSION, n(order.version))
            .item(attr::CREATED_AT, timestamp(OffsetDateTime::now_utc())?)
            .item(attr::ORDER, s(json))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(total) = order.total {
            put = put.item(attr::TOTAL, s(total.to_string()));
        }
        if let Some(deadline_at) = indexed_deadline(order) {
            put = put
                .item(attr::DEADLINE_AT, n(deadline_at))
                .item(attr::DEADLINE_SHARD, s(deadline_shard(&order.order_id)));
        }
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    /// Replaces the order's attributes (keeping `created_at`) if it is still at `expected_version`. The deadline
    /// index keys go with the order's deadline: removed once it is final, so the sparse index holds open orders only.
    fn order_update(&self, order: &Order, expected_version: u64) -> Result<TransactWriteItem, TableError> {
        let json = order_json(order)?;
        let mut set = vec!["#order = :order", "#status = :status", "#version = :version"];
        let mut remove = Vec::new();
        let mut update = Update::builder()
            .table_name(&self.orders_table)
            .set_key(Some(key(order_pk(&order.order_id), ORDER_SK)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#order", attr::ORDER)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#total", attr::TOTAL)
            .expression_attribute_names("#deadline_at", attr::DEADLINE_AT)
            .expression_attribute_names("#deadline_shard", attr::DEADLINE_SHARD)
            .expression_attribute_values(":order", s(json))
            .expression_attribute_values(":status", s(order.status.as_str()))
            .expression_attribute_values(":version", n(order.version))
            .expression_attribute_values(":expected", n(expected_version));
        match order.total {
            Some(total) => {
                set.push("#total = :total");
                update = update.expression_attribute_values(":total", s(total.to_string()));
            }
            None => remove.push("#total"),
        }
        match indexed_deadline(order) {
            Some(deadline_at) => {
                set.extend(["#deadline_at = :deadline_at", "#deadline_shard = :deadline_shard"]);
                update = update
                    .expression_attribute_values(":deadline_at", n(deadline_at))
                    .expression_attribute_values(":deadline_shard", s(deadline_shard(&order.order_id)));
            }
            None => remove.extend(["#deadline_at", "#deadline_shard"]),
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        Ok(TransactWriteItem::builder().update(update.update_expression(expression).build()?).build())
    }

    /// Ids of at most `limit` orders of one deadline shard due at or before `now` (epoch seconds), oldest first.
    async fn overdue_in_shard(&self, shard: &str, now: i64, limit: usize) -> Result<Vec<String>, TableError> {
        let mut order_ids = Vec::new();
        let mut start_key = None;
        while order_ids.len() < limit {
            let page = i32::try_from(limit - order_ids.len()).unwrap_or(OVERDUE_PAGE).min(OVERDUE_PAGE);
            let output = self
                .client
                .query()
                .table_name(&self.orders_table)
                .index_name(DEADLINE_INDEX)
                .key_condition_expression("#shard = :shard AND #deadline_at <= :now")
                .expression_attribute_names("#shard", attr::DEADLINE_SHARD)
                .expression_attribute_names("#deadline_at", attr::DEADLINE_AT)
                .expression_attribute_values(":shard", s(shard))
                .expression_attribute_values(":now", n(now))
                .limit(page)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| TableError::from(e).context(self.context(format_args!("overdue orders of {shard}"))))?;
            for item in output.items() {
                let order_id = get_s(item, attr::ORDER_ID)
                    .map_err(|e| TableError::from(e).context(self.context(format_args!("{DEADLINE_INDEX} item"))))?;
                order_ids.push(order_id.to_owned());
            }
            start_key = output.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        order_ids.truncate(limit);
        Ok(order_ids)
    }

    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, TableError> {
        let context = || self.context(format_args!("GetItem {pk} / {sk}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| TableError::from(e).context(context()))?;
        Ok(output.item)
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client.transact_write_items().set_transact_items(Some(items)).send().await.map(|_| ())
    }
}

/// The order as the item's JSON.
fn order_json(order: &Order) -> Result<String, TableError> {
    serde_json::to_string(order)
        .map_err(|e| TableError::Permanent(format!("order {} does not serialise as JSON: {e}", order.order_id)))
}

/// The order an item holds; its `version` attribute (the one conditions compare) is authoritative.
fn order_from_item(item: &Item) -> Result<Order, TableError> {
    let json = get_s(item, attr::ORDER)?;
    let mut order: Order =
        serde_json::from_str(json).map_err(|e| TableError::Corrupt(format!("item attribute order: {e}")))?;
    order.version = get_n(item, attr::VERSION)?;
    Ok(order)
}

fn code_at(codes: &[String], index: usize) -> &str {
    codes.get(index).map_or("None", String::as_str)
}

impl OrderStore for DynamoOrders {
    async fn place(
        &self,
        order: &Order,
        event: &OutboxRecord,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Placement, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut items = vec![self.order_put(order)?];
            if let Some(record) = idempotency {
                items.push(self.idempotency.transact_put(record, SystemTime::now())?);
            }
            items.push(outbox_put(&self.outbox_table, event)?);
            let err = match self.transact(items).await {
                Ok(()) => return Ok(Placement::Placed),
                Err(err) => err,
            };
            let failed =
                || TableError::from_transaction(&err).context(self.context(format_args!("place {}", order.order_id)));
            let Some(codes) = cancellation_codes(&err) else { return Err(failed().into()) };
            if let Some(record) = idempotency
                && let Some(reason) = cancellation_reasons(&err).and_then(|reasons| reasons.get(IDEMPOTENCY_ITEM))
                && let Some(existing) = self.idempotency.existing_record(&record.key, reason).await?
            {
                return Ok(replay(existing, record)?);
            }
            if code_at(&codes, 0) == "ConditionalCheckFailed" {
                return Err(StoreError::Conflict(format!("order {} already exists", order.order_id)));
            }
            if codes.iter().any(|code| code == "TransactionConflict") && attempt < PLACE_ATTEMPTS {
                tracing::info!(order_id = order.order_id, attempt, "place: transaction conflict, trying again");
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                continue;
            }
            return Err(failed().into());
        }
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let Some(item) = self.get_item(&order_pk(order_id), ORDER_SK).await? else { return Ok(None) };
        let order = order_from_item(&item).map_err(|e| e.context(self.context(format_args!("order {order_id}"))))?;
        Ok(Some(order))
    }

    async fn save(&self, order: &Order, expected_version: Option<u64>, event: &OutboxRecord) -> Result<(), StoreError> {
        let write = match expected_version {
            None => self.order_put(order)?,
            Some(expected) => self.order_update(order, expected)?,
        };
        let err = match self.transact(vec![write, outbox_put(&self.outbox_table, event)?]).await {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        match cancellation_codes(&err) {
            // The order changed since it was read, or another transaction is writing it right now: either way the
            // caller reloads it and decides again.
            Some(codes) if matches!(code_at(&codes, 0), "ConditionalCheckFailed" | "TransactionConflict") => {
                Err(StoreError::Conflict(format!(
                    "order {} is no longer at version {} ({})",
                    order.order_id,
                    expected_version.map_or("none".into(), |v| v.to_string()),
                    code_at(&codes, 0)
                )))
            }
            _ => Err(TableError::from_transaction(&err)
                .context(self.context(format_args!("save {}", order.order_id)))
                .into()),
        }
    }

    /// Each shard gets an equal part of `limit`, so orders that keep failing in one shard do not starve the others.
    async fn overdue(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let per_shard = limit.div_ceil(DEADLINE_SHARDS as usize);
        let mut order_ids = Vec::new();
        for shard in deadline_shards() {
            let room = per_shard.min(limit.saturating_sub(order_ids.len()));
            order_ids.extend(self.overdue_in_shard(&shard, now.unix_timestamp(), room).await?);
        }
        Ok(order_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_domain::events::OrderLine;

    #[test]
    fn an_item_without_the_order_json_is_corrupt_naming_the_attribute() {
        let item = Item::from([("version".to_owned(), n(1))]);
        assert_eq!(order_from_item(&item), Err(TableError::Corrupt("item attribute order: is missing".into())));
    }

    #[test]
    fn the_version_attribute_wins_over_the_json() {
        let mut order = Order::placed(
            "o-1".into(),
            "c-1".into(),
            vec![OrderLine { sku: "S".into(), quantity: 1 }],
            time::macros::datetime!(2026-11-24 10:00 UTC),
            &orderflow_domain::order::Deadlines::default(),
        );
        order.version = 3;
        let item =
            Item::from([("order".to_owned(), s(serde_json::to_string(&order).unwrap())), ("version".to_owned(), n(4))]);
        assert_eq!(order_from_item(&item).unwrap().version, 4);
    }
}
