//! The DynamoDB adapter: one conditional `PutItem` per view, lists from the two customer indexes.

use std::fmt::Display;

use aws_sdk_dynamodb::Client;
use orderflow_aws::dynamo::{Item, get_s, n, s};
use orderflow_domain::order::OrderStatus;

use crate::{BY_CUSTOMER, BY_CUSTOMER_STATUS, Cursor, ListQuery, OrderView, Page, StoreError, ViewStore};

/// Attribute names of a view item.
mod attr {
    pub const ORDER_ID: &str = "order_id";
    pub const CUSTOMER_ID: &str = "customer_id";
    pub const CUSTOMER_STATUS: &str = "customer_status";
    pub const LISTED_AT: &str = "listed_at";
    pub const STATUS: &str = "status";
    pub const VERSION: &str = "version";
    pub const VIEW: &str = "view";
}

/// The most items one page of a scan of the view ids asks for.
const SCAN_PAGE: i32 = 1000;

/// The OrderViews table.
#[derive(Debug, Clone)]
pub struct DynamoViews {
    client: Client,
    table: String,
}

impl DynamoViews {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("order views table {}, {what}", self.table)
    }

    fn view_from_item(&self, item: &Item) -> Result<OrderView, StoreError> {
        let json = get_s(item, attr::VIEW)?;
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("attribute {}: {e}", attr::VIEW)))
    }
}

/// The index partition of a customer's orders in `status`.
fn customer_status(customer_id: &str, status: OrderStatus) -> String {
    format!("{customer_id}#{}", status.as_str())
}

impl ViewStore for DynamoViews {
    async fn put(&self, view: &OrderView) -> Result<bool, StoreError> {
        let json = serde_json::to_string(view)
            .map_err(|e| StoreError::Permanent(format!("the view of order {} as JSON: {e}", view.order_id)))?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::ORDER_ID, s(&view.order_id))
            .item(attr::CUSTOMER_ID, s(&view.customer_id))
            .item(attr::CUSTOMER_STATUS, s(customer_status(&view.customer_id, view.status)))
            .item(attr::LISTED_AT, s(view.listed_at()))
            .item(attr::STATUS, s(view.status.as_str()))
            .item(attr::VERSION, n(view.version))
            .item(attr::VIEW, s(json))
            .condition_expression("attribute_not_exists(#order_id) OR #version <= :version")
            .expression_attribute_names("#order_id", attr::ORDER_ID)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":version", n(view.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(err) => Err(StoreError::from(err).context(self.context(format_args!("put view of {}", view.order_id)))),
        }
    }

    async fn get(&self, order_id: &str) -> Result<Option<OrderView>, StoreError> {
        let context = || self.context(format_args!("view of {order_id}"));
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ORDER_ID, s(order_id))
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        output.item.as_ref().map(|item| self.view_from_item(item).map_err(|e| e.context(context()))).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let (index, partition_attr, partition) = match query.status {
            None => (BY_CUSTOMER, attr::CUSTOMER_ID, query.customer_id.clone()),
            Some(status) => (BY_CUSTOMER_STATUS, attr::CUSTOMER_STATUS, customer_status(&query.customer_id, status)),
        };
        // The key of the last item of the previous page in this index: the table's key and the index's.
        let start_key = query.after.as_ref().map(|cursor| {
            Item::from([
                (attr::ORDER_ID.to_owned(), s(cursor.order_id())),
                (partition_attr.to_owned(), s(&partition)),
                (attr::LISTED_AT.to_owned(), s(cursor.listed_at())),
            ])
        });
        let context = || self.context(format_args!("{index} of {partition}"));
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#partition = :partition")
            .expression_attribute_names("#partition", partition_attr)
            .expression_attribute_values(":partition", s(&partition))
            .scan_index_forward(false)
            .limit(i32::from(query.limit))
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(context()))?;
        let views = output
            .items()
            .iter()
            .map(|item| self.view_from_item(item))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.context(context()))?;
        // DynamoDB stops at the limit with a last key even when nothing follows: the next page may be empty.
        let next = output.last_evaluated_key.as_ref().and(views.last()).map(Cursor::after);
        Ok(Page { views, next })
    }

    async fn order_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut order_ids = Vec::new();
        let mut start_key = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#order_id")
                .expression_attribute_names("#order_id", attr::ORDER_ID)
                .limit(SCAN_PAGE)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| StoreError::from(e).context(self.context("scan of the order ids")))?;
            for item in output.items() {
                order_ids.push(get_s(item, attr::ORDER_ID)?.to_owned());
            }
            start_key = output.last_evaluated_key;
            if start_key.is_none() {
                return Ok(order_ids);
            }
        }
    }

    async fn remove(&self, order_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(attr::ORDER_ID, s(order_id))
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(self.context(format_args!("delete view of {order_id}"))))?;
        Ok(())
    }
}
