//! The DynamoDB adapter: conditional transactions for counts and sales, a sparse index for the windows to close.
//! Times are RFC 3339 strings ([`timestamp`]); the watermark is in unix seconds.

use std::fmt::Display;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, TransactWriteItem, Update};
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{Item, cancellation_codes, get_n, get_s, key, n, s, timestamp, timestamp_text};
use orderflow_aws::outbox::outbox_put;
use orderflow_domain::Decimal;
use orderflow_domain::analytics::SalesTotals;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{
    Count, CountOutcome, FraudStore, OPEN_SALES, OpenSales, PublishedWindow, SALES_SHARDS, SaleWrite, SalesStore,
    ShardCount, StoredSale, WatermarkState, WindowStore,
};

/// Attribute names.
mod attr {
    pub const SALE: &str = "sale";
    pub const REVISION: &str = "revision";
    pub const SKU: &str = "sku";
    pub const WINDOW_START: &str = "window_start";
    pub const WINDOW_END: &str = "window_end";
    pub const UNITS: &str = "units";
    pub const REVENUE: &str = "revenue";
    pub const LATEST: &str = "latest";
    pub const SETTLED_THROUGH: &str = "settled_through";
}

fn published_of(item: &Item) -> Result<PublishedWindow, StoreError> {
    Ok(PublishedWindow {
        sku: get_s(item, attr::SKU)?.to_owned(),
        window_start: parse_time(item, attr::WINDOW_START)?,
        window_end: parse_time(item, attr::WINDOW_END)?,
        totals: totals_of(item)?,
        revision: get_n(item, attr::REVISION)?,
    })
}

fn event_key(event_id: &uuid::Uuid) -> Item {
    key(format!("EVENT#{event_id}"), "EVENT")
}

fn customer_key(customer_id: &str, window: &str) -> Item {
    key(format!("CUSTOMER#{customer_id}"), window)
}

fn sale_key(order_id: &str) -> Item {
    key(format!("SALE#{order_id}"), "SALE")
}

fn counter_key(window: &str, shard: u32, sku: &str) -> Item {
    key(format!("SALES#{window}#{shard}"), sku)
}

fn published_key(sku: &str, window: &str) -> Item {
    key(format!("CLOSED#{sku}"), window)
}

fn watermark_key() -> Item {
    key("WATERMARK", "WATERMARK")
}

fn parse_time(item: &Item, name: &str) -> Result<OffsetDateTime, StoreError> {
    let text = get_s(item, name)?;
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("item attribute {name}: {text} is not RFC 3339: {e}")))
}

fn totals_of(item: &Item) -> Result<SalesTotals, StoreError> {
    Ok(SalesTotals { units: get_n(item, attr::UNITS)?, revenue: get_n::<Decimal>(item, attr::REVENUE)? })
}

/// The Analytics table (`ANALYTICS_TABLE`); events go to the Outbox table (`OUTBOX_TABLE`).
#[derive(Debug, Clone)]
pub struct DynamoAnalytics {
    client: Client,
    table: String,
    outbox_table: String,
}

impl DynamoAnalytics {
    pub fn new(client: Client, table: impl Into<String>, outbox_table: impl Into<String>) -> Self {
        Self { client, table: table.into(), outbox_table: outbox_table.into() }
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("analytics table {}, {what}", self.table)
    }

    /// Sets a time of the watermark item (unix seconds) to `at` unless it holds `at` or later: it never goes back.
    async fn raise_watermark(&self, attribute: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(watermark_key()))
            .update_expression("SET #at = :at")
            .condition_expression("attribute_not_exists(#at) OR #at < :at")
            .expression_attribute_names("#at", attribute)
            .expression_attribute_values(":at", n(at.unix_timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // A later time is stored already (an overlapping writer got there first).
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => {
                Err(StoreError::from(error).context(self.context(format_args!("the watermark's {attribute}"))))
            }
        }
    }

    fn event_put(&self, count: &Count, window: &str) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_key(&count.event_id)))
            .item("event_type", s("OrderPlaced"))
            .item("order_id", s(&count.order_id))
            .item("customer_id", s(&count.customer_id))
            .item(attr::WINDOW_START, s(window))
            .item("counted_at", timestamp(count.counted_at)?)
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn customer_update(&self, count: &Count, window: &str) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(customer_key(&count.customer_id, window)))
            .update_expression("SET customer_id = :customer, window_start = :window ADD orders :one")
            .expression_attribute_values(":customer", s(&count.customer_id))
            .expression_attribute_values(":window", s(window))
            .expression_attribute_values(":one", n(1));
        // Optimistic: the count the decision was made on must still be the count, so two concurrent orders can
        // neither both raise the fraud signal nor both miss it.
        let update = if count.expected_customer_orders == 0 {
            update.condition_expression("attribute_not_exists(orders)")
        } else {
            update
                .condition_expression("orders = :expected")
                .expression_attribute_values(":expected", n(count.expected_customer_orders))
        };
        Ok(TransactWriteItem::builder().update(update.build()?).build())
    }

    fn sale_put(&self, write: &SaleWrite) -> Result<TransactWriteItem, StoreError> {
        let json = serde_json::to_string(&write.sale)
            .map_err(|e| StoreError::Permanent(format!("the sale of order {} as JSON: {e}", write.order_id)))?;
        let revision = write.expected_revision.checked_add(1).ok_or_else(|| {
            StoreError::Permanent(format!("the sale of order {}: its revision overflows", write.order_id))
        })?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(sale_key(&write.order_id)))
            .item("order_id", s(&write.order_id))
            .item(attr::SALE, s(json))
            .item(attr::REVISION, n(revision));
        let put = if write.expected_revision == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("revision = :expected")
                .expression_attribute_values(":expected", n(write.expected_revision))
        };
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    /// Adds to one counter item and (re)opens it for the closer.
    fn counter_update(
        &self,
        window: &str,
        shard: u32,
        sku: &str,
        change: SalesTotals,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(counter_key(window, shard, sku)))
            .update_expression(
                "SET sku = :sku, window_start = :window, open_shard = :shard ADD units :units, revenue :revenue",
            )
            .expression_attribute_values(":sku", s(sku))
            .expression_attribute_values(":window", s(window))
            .expression_attribute_values(":shard", s(shard.to_string()))
            .expression_attribute_values(":units", n(change.units))
            .expression_attribute_values(":revenue", n(change.revenue))
            .build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

impl FraudStore for DynamoAnalytics {
    async fn customer_orders(&self, customer_id: &str, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        let context = || self.context(format_args!("orders of customer {customer_id} in {window_start}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(customer_key(customer_id, &timestamp_text(window_start)?)))
            .consistent_read(true)
            .projection_expression("orders")
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        match output.item() {
            Some(item) if item.contains_key("orders") => {
                get_n(item, "orders").map_err(|e| StoreError::from(e).context(context()))
            }
            _ => Ok(0),
        }
    }

    async fn count(&self, count: &Count) -> Result<CountOutcome, StoreError> {
        // Item 0 is the event marker and item 1 the customer's counter: the cancellation reasons say which failed.
        let window = timestamp_text(count.window_start)?;
        let mut items = vec![self.event_put(count, &window)?, self.customer_update(count, &window)?];
        if let Some(record) = &count.fraud_signal {
            items.push(outbox_put(&self.outbox_table, record)?);
        }
        let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(CountOutcome::Counted),
            Err(error) => error,
        };
        match cancellation_codes(&error) {
            Some(codes) if codes.first().is_some_and(|code| code == "ConditionalCheckFailed") => {
                Ok(CountOutcome::Duplicate)
            }
            Some(codes)
                if codes.get(1).is_some_and(|code| code == "ConditionalCheckFailed")
                    || codes.iter().any(|code| code == "TransactionConflict") =>
            {
                Ok(CountOutcome::Contended)
            }
            _ => Err(StoreError::from_transaction(&error)
                .context(self.context(format_args!("count of event {}", count.event_id)))),
        }
    }
}

impl SalesStore for DynamoAnalytics {
    async fn sale(&self, order_id: &str) -> Result<StoredSale, StoreError> {
        let context = || self.context(format_args!("sale of order {order_id}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(sale_key(order_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        let Some(item) = output.item() else {
            return Ok(StoredSale::default());
        };
        let read = || -> Result<StoredSale, StoreError> {
            let sale = serde_json::from_str(get_s(item, attr::SALE)?)
                .map_err(|e| StoreError::Corrupt(format!("item attribute {}: {e}", attr::SALE)))?;
            Ok(StoredSale { sale, revision: get_n(item, attr::REVISION)? })
        };
        read().map_err(|e| e.context(context()))
    }

    async fn write_sale(&self, write: &SaleWrite) -> Result<CountOutcome, StoreError> {
        // Item 0 is the sale: its condition failing means another writer moved it on.
        let mut items = vec![self.sale_put(write)?];
        if let Some(change) = &write.change {
            let window = timestamp_text(change.window_start)?;
            for (sku, totals) in &change.per_sku {
                items.push(self.counter_update(&window, change.shard, sku, *totals)?);
            }
        }
        let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(CountOutcome::Counted),
            Err(error) => error,
        };
        match cancellation_codes(&error) {
            Some(codes)
                if codes.first().is_some_and(|code| code == "ConditionalCheckFailed")
                    || codes.iter().any(|code| code == "TransactionConflict") =>
            {
                Ok(CountOutcome::Contended)
            }
            _ => Err(StoreError::from_transaction(&error)
                .context(self.context(format_args!("sale of order {}", write.order_id)))),
        }
    }

    async fn advance_watermark(&self, at: OffsetDateTime) -> Result<(), StoreError> {
        self.raise_watermark(attr::LATEST, at).await
    }
}

impl WindowStore for DynamoAnalytics {
    async fn watermark(&self) -> Result<WatermarkState, StoreError> {
        let context = || self.context("the watermark");
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(watermark_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        let Some(item) = output.item() else { return Ok(WatermarkState::default()) };
        let time = |name: &str| -> Result<Option<OffsetDateTime>, StoreError> {
            if !item.contains_key(name) {
                return Ok(None);
            }
            let seconds: i64 = get_n(item, name)?;
            OffsetDateTime::from_unix_timestamp(seconds)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("item attribute {name}: {seconds}: {e}")))
        };
        let state =
            || Ok(WatermarkState { latest_event: time(attr::LATEST)?, settled_through: time(attr::SETTLED_THROUGH)? });
        state().map_err(|e: StoreError| e.context(context()))
    }

    async fn record_settled_through(&self, last_start: OffsetDateTime) -> Result<(), StoreError> {
        self.raise_watermark(attr::SETTLED_THROUGH, last_start).await
    }

    async fn open_sales(&self, last_start: OffsetDateTime, limit: usize) -> Result<Vec<OpenSales>, StoreError> {
        let last = timestamp_text(last_start)?;
        let mut open = Vec::new();
        for shard in 0..SALES_SHARDS {
            let context = || self.context(format_args!("open sales of shard {shard}"));
            let mut start = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(OPEN_SALES)
                    .key_condition_expression("open_shard = :shard AND window_start <= :last")
                    .expression_attribute_values(":shard", s(shard.to_string()))
                    .expression_attribute_values(":last", s(&last))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| StoreError::from(e).context(context()))?;
                for item in page.items() {
                    let sales = OpenSales {
                        window_start: parse_time(item, attr::WINDOW_START).map_err(|e| e.context(context()))?,
                        sku: get_s(item, attr::SKU).map_err(|e| StoreError::from(e).context(context()))?.to_owned(),
                    };
                    open.push(sales);
                }
                start = page.last_evaluated_key().cloned();
                if start.is_none() || open.len() >= limit {
                    break;
                }
            }
        }
        open.sort();
        open.dedup();
        open.truncate(limit);
        Ok(open)
    }

    async fn counted(&self, sku: &str, window_start: OffsetDateTime) -> Result<Vec<ShardCount>, StoreError> {
        let window = timestamp_text(window_start)?;
        let context = || self.context(format_args!("counters of {sku} in {window}"));
        let mut keys = KeysAndAttributes::builder().consistent_read(true);
        for shard in 0..SALES_SHARDS {
            keys = keys.keys(counter_key(&window, shard, sku));
        }
        let mut request = Some(keys.build()?);
        let mut counted = Vec::new();
        while let Some(keys) = request.take() {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(|e| StoreError::from(e).context(context()))?;
            for item in output.responses().and_then(|tables| tables.get(&self.table)).into_iter().flatten() {
                let shard = get_s(item, "pk")?
                    .rsplit_once('#')
                    .and_then(|(_, shard)| shard.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt("a counter's pk ends in no shard".into()).context(context()))?;
                counted.push(ShardCount { shard, totals: totals_of(item).map_err(|e| e.context(context()))? });
            }
            // Keys DynamoDB did not get to (throttled, or over its size limits) are asked for again.
            request = output.unprocessed_keys().and_then(|tables| tables.get(&self.table)).cloned();
        }
        counted.sort_by_key(|count| count.shard);
        Ok(counted)
    }

    async fn published(&self, sku: &str, window_start: OffsetDateTime) -> Result<Option<PublishedWindow>, StoreError> {
        let window = timestamp_text(window_start)?;
        let context = || self.context(format_args!("published window of {sku} at {window}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(published_key(sku, &window)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        output.item().map(published_of).transpose().map_err(|e| e.context(context()))
    }

    async fn publish(
        &self,
        window: &PublishedWindow,
        previous_revision: Option<u64>,
        event: &OutboxRecord,
    ) -> Result<bool, StoreError> {
        let start = timestamp_text(window.window_start)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(published_key(&window.sku, &start)))
            .item(attr::SKU, s(&window.sku))
            .item(attr::WINDOW_START, s(&start))
            .item(attr::WINDOW_END, timestamp(window.window_end)?)
            .item(attr::UNITS, n(window.totals.units))
            .item(attr::REVENUE, n(window.totals.revenue))
            .item(attr::REVISION, n(window.revision));
        let put = match previous_revision {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(revision) => {
                put.condition_expression("revision = :previous").expression_attribute_values(":previous", n(revision))
            }
        };
        let items =
            vec![TransactWriteItem::builder().put(put.build()?).build(), outbox_put(&self.outbox_table, event)?];
        let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(true),
            Err(error) => error,
        };
        match cancellation_codes(&error) {
            Some(codes) if codes.iter().any(|code| code == "ConditionalCheckFailed") => Ok(false),
            _ => Err(StoreError::from_transaction(&error)
                .context(self.context(format_args!("publishing the window of {} at {start}", window.sku)))),
        }
    }

    async fn settle(&self, sku: &str, window_start: OffsetDateTime, counted: &[ShardCount]) -> Result<(), StoreError> {
        let window = timestamp_text(window_start)?;
        for count in counted {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(counter_key(&window, count.shard, sku)))
                .update_expression("REMOVE open_shard")
                .condition_expression("units = :units AND revenue = :revenue")
                .expression_attribute_values(":units", n(count.totals.units))
                .expression_attribute_values(":revenue", n(count.totals.revenue))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // Counted into since: it stays open, and the next run publishes the change.
                Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(error) => {
                    return Err(StoreError::from(error)
                        .context(self.context(format_args!("settling shard {} of {sku} at {window}", count.shard))));
                }
            }
        }
        Ok(())
    }

    async fn closed_windows(
        &self,
        sku: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<PublishedWindow>, StoreError> {
        let context = || self.context(format_args!("closed windows of {sku}"));
        let (from_text, to_text) = (timestamp_text(from)?, timestamp_text(to)?);
        let mut windows = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(format!("CLOSED#{sku}")))
                .expression_attribute_values(":from", s(&from_text))
                .expression_attribute_values(":to", s(&to_text))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::from(e).context(context()))?;
            for item in page.items() {
                windows.push(published_of(item).map_err(|e| e.context(context()))?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        // BETWEEN includes `to`; the range is half-open.
        windows.retain(|window| window.window_start < to);
        Ok(windows)
    }
}
