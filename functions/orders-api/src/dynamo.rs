//! The DynamoDB adapter of the stock port: `SKU#<sku>` / `STOCK` items of the Inventory table, with the
//! attributes the inventory function reads: `sku` (S), `available`, `reserved`, `shipped` (N), `price` (S).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ReturnValue;
use orderflow_aws::dynamo::{Item, describe, get_n, get_s, key, n, s};
use orderflow_domain::Decimal;
use orderflow_domain::inventory::{Restock, Stock};

use crate::store::{StockError, StockStore};

pub const STOCK_SK: &str = "STOCK";

pub fn stock_pk(sku: &str) -> String {
    format!("SKU#{sku}")
}

/// The Inventory table's stock items.
#[derive(Debug, Clone)]
pub struct DynamoStock {
    client: Client,
    table: String,
}

impl DynamoStock {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn stock_from_item(item: &Item) -> Result<Stock, StockError> {
    let corrupt = |e: orderflow_aws::dynamo::ItemError| StockError::Corrupt(e.to_string());
    let price = get_s(item, "price").map_err(corrupt)?;
    Ok(Stock {
        sku: get_s(item, "sku").map_err(corrupt)?.to_owned(),
        available: get_n(item, "available").map_err(corrupt)?,
        reserved: get_n(item, "reserved").map_err(corrupt)?,
        shipped: get_n(item, "shipped").map_err(corrupt)?,
        price: price
            .parse::<Decimal>()
            .map_err(|e| StockError::Corrupt(format!("item attribute price: {price:?} is not a decimal: {e}")))?,
    })
}

impl StockStore for DynamoStock {
    async fn restock(&self, sku: &str, restock: &Restock) -> Result<Stock, StockError> {
        // One UpdateItem: sets what the operator decides, keeps the units the inventory function holds.
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(stock_pk(sku), STOCK_SK)))
            .update_expression(
                "SET #sku = :sku, #available = :available, #price = :price, \
                 #reserved = if_not_exists(#reserved, :zero), #shipped = if_not_exists(#shipped, :zero)",
            )
            .expression_attribute_names("#sku", "sku")
            .expression_attribute_names("#available", "available")
            .expression_attribute_names("#price", "price")
            .expression_attribute_names("#reserved", "reserved")
            .expression_attribute_names("#shipped", "shipped")
            .expression_attribute_values(":sku", s(sku))
            .expression_attribute_values(":available", n(restock.available))
            .expression_attribute_values(":price", s(restock.price.to_string()))
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StockError::Unavailable(describe(&e)))?;
        let item = output.attributes.ok_or_else(|| StockError::Corrupt("UpdateItem returned no attributes".into()))?;
        stock_from_item(&item)
    }

    async fn get(&self, sku: &str) -> Result<Option<Stock>, StockError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(stock_pk(sku), STOCK_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StockError::Unavailable(describe(&e)))?;
        output.item.as_ref().map(stock_from_item).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_price_that_is_not_a_decimal_is_corrupt() {
        let item = Item::from([
            ("sku".to_owned(), s("SKU-1")),
            ("available".to_owned(), n(10)),
            ("reserved".to_owned(), n(0)),
            ("shipped".to_owned(), n(0)),
            ("price".to_owned(), s("cheap")),
        ]);
        assert!(matches!(stock_from_item(&item), Err(StockError::Corrupt(m)) if m.contains("price")));
    }
}
