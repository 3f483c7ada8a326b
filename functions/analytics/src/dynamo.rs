//! The DynamoDB adapter of [`AnalyticsStore`]: a consistent `GetItem` of the customer's counter, then ONE
//! `TransactWriteItems` per event (the event marker, the counters and, when raised, the outbox record).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{cancellation_codes, get_n, key, n, s};
use orderflow_aws::outbox::outbox_put;

use crate::store::{AnalyticsStore, Count, CountOutcome};

/// The item keys of the Analytics table.
pub fn event_key(event_id: &uuid::Uuid) -> (String, String) {
    (format!("EVENT#{event_id}"), "EVENT".to_owned())
}

pub fn customer_key(customer_id: &str, window_start: &str) -> (String, String) {
    (format!("CUSTOMER#{customer_id}"), window_start.to_owned())
}

pub fn sales_key(sku: &str, window_start: &str) -> (String, String) {
    (format!("SALES#{sku}"), window_start.to_owned())
}

/// The counters in the Analytics table (`ANALYTICS_TABLE`); fraud signals go to the Outbox table (`OUTBOX_TABLE`).
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

    fn event_put(&self, count: &Count) -> Result<TransactWriteItem, StoreError> {
        let (pk, sk) = event_key(&count.event_id);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(key(pk, sk)))
            .item("event_type", s("OrderPlaced"))
            .item("order_id", s(&count.order_id))
            .item("customer_id", s(&count.customer_id))
            .item("window_start", s(&count.window_start))
            .item("counted_at", s(&count.counted_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn customer_update(&self, count: &Count) -> Result<TransactWriteItem, StoreError> {
        let (pk, sk) = customer_key(&count.customer_id, &count.window_start);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression("SET customer_id = :customer, window_start = :window ADD orders :one")
            .expression_attribute_values(":customer", s(&count.customer_id))
            .expression_attribute_values(":window", s(&count.window_start))
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

    fn sales_update(&self, count: &Count, sku: &str, units: u64) -> Result<TransactWriteItem, StoreError> {
        let (pk, sk) = sales_key(sku, &count.window_start);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression("SET sku = :sku, window_start = :window ADD units :units, orders :one")
            .expression_attribute_values(":sku", s(sku))
            .expression_attribute_values(":window", s(&count.window_start))
            .expression_attribute_values(":units", n(units))
            .expression_attribute_values(":one", n(1))
            .build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl std::fmt::Display) -> String {
        format!("analytics table {}, {what}", self.table)
    }
}

impl AnalyticsStore for DynamoAnalytics {
    async fn customer_orders(&self, customer_id: &str, window_start: &str) -> Result<u32, StoreError> {
        let context = || self.context(format_args!("orders of customer {customer_id} in {window_start}"));
        let (pk, sk) = customer_key(customer_id, window_start);
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
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
        let mut items = vec![self.event_put(count)?, self.customer_update(count)?];
        for line in &count.sales {
            items.push(self.sales_update(count, &line.sku, line.units)?);
        }
        if let Some(record) = &count.fraud_signal {
            items.push(outbox_put(&self.outbox_table, record)?);
        }
        let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        let error = match result {
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
