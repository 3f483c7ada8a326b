//! The DynamoDB adapter: every change is one `TransactWriteItems` of the conditional puts of the order's new
//! events and its head (and, when placing with an idempotency key, the key's record, written by `orderflow_aws`'s
//! [`DynamoIdempotencyStore::transact_put`]).

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use orderflow_aws::dynamo::{Item, cancellation_codes, cancellation_reasons, get_n, get_s, n, s, timestamp};
use orderflow_aws::outbox::attributes;
use orderflow_aws::{DynamoIdempotencyStore, StoreError as TableError};
use orderflow_domain::events::{OrderPlaced, registry};
use orderflow_domain::order::{Deadlines, Order, OrderEvent};
use orderflow_toolkit::idempotency::IdempotencyRecord;
use orderflow_toolkit::{Envelope, OutboxRecord, RawEnvelope, Registry};
use time::OffsetDateTime;

use crate::{
    DEADLINE_INDEX, DEADLINE_SHARDS, EVENT_SK_PREFIX, EventLog, HEAD_SK, IDEMPOTENCY_PK_PREFIX, IDEMPOTENCY_SK,
    OrderStore, Placement, StoreError, StoredEvent, appended, bus_record, deadline_shard, deadline_shards, event_sk,
    indexed_deadline, order_pk, replay,
};

/// Attribute names of the event and head items.
mod attr {
    pub const ORDER_ID: &str = "order_id";
    pub const EVENT_ID: &str = "event_id";
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

/// The position of the idempotency record's put in the transaction of `place`: after the event's and the head's.
const IDEMPOTENCY_ITEM: usize = 2;

/// How often `place` tries again when DynamoDB cancels its transaction because another transaction held one of
/// its items (`TransactionConflict`: two requests with the same idempotency key at once).
const PLACE_ATTEMPTS: u32 = 3;

/// The Orders table: the event store of orders and the idempotency records of requests.
#[derive(Debug, Clone)]
pub struct DynamoOrders {
    client: Client,
    orders_table: String,
    /// When an order is due after it enters a state: the head's deadline, and the fold's.
    deadlines: Deadlines,
    /// Reads every stored event at the current version of its type.
    registry: Registry,
    /// The idempotency records' layout in the Orders table: `IDEMPOTENCY#<key>` / `IDEMPOTENCY`.
    idempotency: DynamoIdempotencyStore,
}

impl DynamoOrders {
    pub fn new(client: Client, orders_table: impl Into<String>, deadlines: Deadlines) -> Self {
        let orders_table = orders_table.into();
        let idempotency = DynamoIdempotencyStore::new(client.clone(), &orders_table)
            .with_key_prefix(IDEMPOTENCY_PK_PREFIX)
            .with_sort_key("sk", IDEMPOTENCY_SK);
        Self { client, orders_table, deadlines, registry: registry(), idempotency }
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("orders table {}, {what}", self.orders_table)
    }

    /// The puts of `events`, appended after `current`, and of the head of `order`, the order they make. Each event
    /// is put only if its version is free: the optimistic concurrency of the whole append.
    fn append_items(
        &self,
        current: Option<&Order>,
        events: &[OrderEvent],
        order: &Order,
    ) -> Result<Vec<TransactWriteItem>, TableError> {
        let first_version = current.map_or(1, |order| order.version + 1);
        let created_at = timestamp(OffsetDateTime::now_utc())?;
        let mut items = Vec::with_capacity(events.len() + 1);
        for (version, event) in (first_version..).zip(events) {
            let record = bus_record(event);
            // The event store is the orders' outbox: an event the bus cannot carry is never written.
            orderflow_aws::outbox::ensure_publishable(&record)?;
            let put = Put::builder()
                .table_name(&self.orders_table)
                .item("pk", s(order_pk(&order.order_id)))
                .item("sk", s(event_sk(version)))
                .item(attr::ORDER_ID, s(&order.order_id))
                .item(attr::VERSION, n(version))
                .item(attr::EVENT_ID, s(record.event_id.to_string()))
                .item(attributes::SOURCE, s(record.source))
                .item(attributes::DETAIL_TYPE, s(record.detail_type))
                .item(attributes::DETAIL, s(record.detail))
                .item(attr::CREATED_AT, created_at.clone())
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        items.push(self.head_put(order)?);
        Ok(items)
    }

    /// The head of `order`: what the deadline index and operators read without folding. Unconditional: the event
    /// puts of its transaction carry the condition.
    fn head_put(&self, order: &Order) -> Result<TransactWriteItem, TableError> {
        let mut put = Put::builder()
            .table_name(&self.orders_table)
            .item("pk", s(order_pk(&order.order_id)))
            .item("sk", s(HEAD_SK))
            .item(attr::ORDER_ID, s(&order.order_id))
            .item(attr::CUSTOMER_ID, s(&order.customer_id))
            .item(attr::STATUS, s(order.status.as_str()))
            .item(attr::VERSION, n(order.version));
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

    /// The order's events in version order, read strongly consistent.
    async fn read_events(&self, order_id: &str) -> Result<Vec<OrderEvent>, TableError> {
        let context = || self.context(format_args!("events of order {order_id}"));
        let items = self.event_items(order_id).await.map_err(|e| e.context(context()))?;
        let events = items.iter().map(|item| self.event_from_item(item)).collect::<Result<_, _>>();
        events.and_then(in_version_order).map_err(|e| e.context(context()))
    }

    /// The event items of one order (a strongly consistent Query, all pages).
    async fn event_items(&self, order_id: &str) -> Result<Vec<Item>, TableError> {
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.orders_table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :events)")
                .expression_attribute_values(":pk", s(order_pk(order_id)))
                .expression_attribute_values(":events", s(EVENT_SK_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await?;
            start_key = output.last_evaluated_key;
            items.extend(output.items.unwrap_or_default());
            if start_key.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every event item of the table (a Scan, all pages), by order id.
    async fn every_event_item(&self) -> Result<std::collections::BTreeMap<String, Vec<Item>>, TableError> {
        let mut by_order: std::collections::BTreeMap<String, Vec<Item>> = Default::default();
        let mut start_key = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.orders_table)
                .filter_expression("begins_with(sk, :events)")
                .expression_attribute_values(":events", s(EVENT_SK_PREFIX))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| TableError::from(e).context(self.context("scan of the events")))?;
            start_key = output.last_evaluated_key;
            for item in output.items.unwrap_or_default() {
                let order_id = get_s(&item, attr::ORDER_ID)?.to_owned();
                by_order.entry(order_id).or_default().push(item);
            }
            if start_key.is_none() {
                return Ok(by_order);
            }
        }
    }

    /// An event item as stored, not upcast.
    fn stored_from_item(item: &Item) -> Result<StoredEvent, TableError> {
        let version: u64 = get_n(item, attr::VERSION)?;
        let corrupt = |e: String| TableError::Corrupt(format!("event {version}: {e}"));
        let detail = get_s(item, attributes::DETAIL)?;
        let raw: RawEnvelope = serde_json::from_str(detail).map_err(|e| corrupt(e.to_string()))?;
        let order_id = get_s(item, attr::ORDER_ID)?.to_owned();
        let record = OutboxRecord {
            partition: order_id.clone(),
            event_id: raw.id,
            source: get_s(item, attributes::SOURCE)?.to_owned(),
            detail_type: get_s(item, attributes::DETAIL_TYPE)?.to_owned(),
            detail: detail.to_owned(),
        };
        Ok(StoredEvent { order_id, version, occurred_at: raw.occurred_at, record })
    }

    /// The event an item holds, with its version.
    fn event_from_item(&self, item: &Item) -> Result<(u64, OrderEvent), TableError> {
        let version: u64 = get_n(item, attr::VERSION)?;
        let corrupt = |e: String| TableError::Corrupt(format!("event {version}: {e}"));
        let raw: RawEnvelope =
            serde_json::from_str(get_s(item, attributes::DETAIL)?).map_err(|e| corrupt(e.to_string()))?;
        let raw = self.registry.upcast(raw).map_err(|e| corrupt(e.to_string()))?;
        Ok((version, OrderEvent::decode(&raw).map_err(|e| corrupt(e.to_string()))?))
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

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client.transact_write_items().set_transact_items(Some(items)).send().await.map(|_| ())
    }
}

/// An order's events sorted by version, which must run 1, 2, ... without a gap.
fn in_version_order(events: Vec<(u64, OrderEvent)>) -> Result<Vec<OrderEvent>, TableError> {
    Ok(by_version(events, |(version, _)| *version)?.into_iter().map(|(_, event)| event).collect())
}

fn stored_in_version_order(events: Vec<StoredEvent>) -> Result<Vec<StoredEvent>, TableError> {
    by_version(events, |event| event.version)
}

fn by_version<T>(mut events: Vec<T>, version_of: impl Fn(&T) -> u64) -> Result<Vec<T>, TableError> {
    events.sort_by_key(&version_of);
    for (expected, event) in (1..).zip(&events) {
        let version = version_of(event);
        if version != expected {
            return Err(TableError::Corrupt(format!("event {version} where event {expected} belongs")));
        }
    }
    Ok(events)
}

fn code_at(codes: &[String], index: usize) -> &str {
    codes.get(index).map_or("None", String::as_str)
}

impl OrderStore for DynamoOrders {
    async fn place(
        &self,
        placed: &Envelope<OrderPlaced>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Placement, StoreError> {
        let events = [OrderEvent::Placed(placed.clone())];
        let order = appended(None, &events, &self.deadlines)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut items = self.append_items(None, &events, &order)?;
            if let Some(record) = idempotency {
                items.push(self.idempotency.transact_put(record, SystemTime::now())?);
            }
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
        let events = self.read_events(order_id).await?;
        Order::from_events(&events, &self.deadlines).map_err(|err| {
            TableError::Corrupt(err.to_string()).context(self.context(format_args!("order {order_id}"))).into()
        })
    }

    async fn append(&self, current: Option<&Order>, events: &[OrderEvent]) -> Result<Order, StoreError> {
        let order = appended(current, events, &self.deadlines)?;
        let err = match self.transact(self.append_items(current, events, &order)?).await {
            Ok(()) => return Ok(order),
            Err(err) => err,
        };
        let version = current.map_or(0, |order| order.version);
        match cancellation_codes(&err) {
            // Another writer appended since the order was read, or is appending right now: either way the caller
            // reloads it and decides again.
            Some(codes)
                if codes[..events.len().min(codes.len())]
                    .iter()
                    .any(|code| matches!(code.as_str(), "ConditionalCheckFailed" | "TransactionConflict")) =>
            {
                Err(StoreError::Conflict(format!(
                    "order {} is no longer at version {version} ({})",
                    order.order_id,
                    codes.join(", ")
                )))
            }
            _ => Err(TableError::from_transaction(&err)
                .context(self.context(format_args!("append to {} after version {version}", order.order_id)))
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

impl EventLog for DynamoOrders {
    async fn events(&self, order_id: &str) -> Result<Vec<OrderEvent>, StoreError> {
        Ok(self.read_events(order_id).await?)
    }

    /// One scan of the event items, page by page; the events are grouped by order in memory (about a kilobyte
    /// per event), so one pass over the table serves every order.
    async fn streams(&self) -> Result<Vec<Vec<OrderEvent>>, StoreError> {
        let by_order = self.every_event_item().await?;
        by_order
            .into_iter()
            .map(|(order_id, items)| {
                let events = items.iter().map(|item| self.event_from_item(item)).collect::<Result<_, _>>();
                events
                    .and_then(in_version_order)
                    .map_err(|e| e.context(self.context(format_args!("order {order_id}"))).into())
            })
            .collect()
    }

    async fn stored_events(&self, order_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let context = || self.context(format_args!("stored events of order {order_id}"));
        let items = self.event_items(order_id).await.map_err(|e| e.context(context()))?;
        let stored = items.iter().map(Self::stored_from_item).collect::<Result<_, _>>();
        Ok(stored.and_then(stored_in_version_order).map_err(|e| e.context(context()))?)
    }

    async fn stored_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<StoredEvent>, StoreError> {
        let mut selected = Vec::new();
        for (order_id, items) in self.every_event_item().await? {
            let stored = items.iter().map(Self::stored_from_item).collect::<Result<_, _>>();
            let stored = stored
                .and_then(stored_in_version_order)
                .map_err(|e| e.context(self.context(format_args!("stored events of order {order_id}"))))?;
            selected.extend(stored.into_iter().filter(|event| (from..to).contains(&event.occurred_at)));
        }
        Ok(selected)
    }
}
