//! The DynamoDB adapter of [`AnalyticsStore`]: a consistent `GetItem` of the customer's counter, then ONE
//! `TransactWriteItems` per event (the event marker, the counters and, when raised, the outbox record). Times are
//! RFC 3339 strings ([`timestamp`]); a window's start is the sort key of its counters.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{Item, cancellation_codes, get_n, key, n, s, timestamp};
use orderflow_aws::outbox::outbox_put;
use time::OffsetDateTime;

use crate::store::{AnalyticsStore, Count, CountOutcome};

/// The item keys of the Analytics table; `window` is a window start as [`timestamp`] writes it.
fn event_key(event_id: &uuid::Uuid) -> Item {
    key(format!("EVENT#{event_id}"), "EVENT")
}

fn customer_key(customer_id: &str, window: &AttributeValue) -> Item {
    window_key(format!("CUSTOMER#{customer_id}"), window)
}

fn sales_key(sku: &str, window: &AttributeValue) -> Item {
    window_key(format!("SALES#{sku}"), window)
}

fn window_key(pk: String, window: &AttributeValue) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), window.clone())])
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

    fn event_put(&self, count: &Count, window: &AttributeValue) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_key(&count.event_id)))
            .item("event_type", s("OrderPlaced"))
            .item("order_id", s(&count.order_id))
            .item("customer_id", s(&count.customer_id))
            .item("window_start", window.clone())
            .item("counted_at", timestamp(count.counted_at)?)
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn customer_update(&self, count: &Count, window: &AttributeValue) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(customer_key(&count.customer_id, window)))
            .update_expression("SET customer_id = :customer, window_start = :window ADD orders :one")
            .expression_attribute_values(":customer", s(&count.customer_id))
            .expression_attribute_values(":window", window.clone())
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

    fn sales_update(&self, window: &AttributeValue, sku: &str, units: u64) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(sales_key(sku, window)))
            .update_expression("SET sku = :sku, window_start = :window ADD units :units, orders :one")
            .expression_attribute_values(":sku", s(sku))
            .expression_attribute_values(":window", window.clone())
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
    async fn customer_orders(&self, customer_id: &str, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        let context = || self.context(format_args!("orders of customer {customer_id} in {window_start}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(customer_key(customer_id, &timestamp(window_start)?)))
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
        let window = timestamp(count.window_start)?;
        let mut items = vec![self.event_put(count, &window)?, self.customer_update(count, &window)?];
        for line in &count.sales {
            items.push(self.sales_update(&window, &line.sku, line.units)?);
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_windows_counters_are_keyed_by_its_start_in_rfc3339() {
        let window = timestamp(datetime!(2026-11-24 10:01 UTC)).unwrap();
        assert_eq!(customer_key("c-7", &window), key("CUSTOMER#c-7", "2026-11-24T10:01:00Z"));
        assert_eq!(sales_key("SKU-1", &window), key("SALES#SKU-1", "2026-11-24T10:01:00Z"));
    }
}
