//! The stock port of the orders API (`PUT`/`GET /inventory/{sku}`) and its in-memory adapter. Orders go through
//! the shared [`orderflow_orders_store::OrderStore`].

#[cfg(test)]
use std::collections::BTreeMap;
use std::future::Future;
#[cfg(test)]
use std::sync::{Arc, Mutex};

use orderflow_domain::inventory::{Restock, Stock};

/// Why a stock operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("inventory table unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt stock item: {0}")]
    Corrupt(String),
}

/// The catalogue's stock items (`SKU#<sku>` / `STOCK` in the Inventory table).
pub trait StockStore: Send + Sync {
    /// Sets the units available and the price of `sku`, keeping its reserved and shipped units (0 for a new SKU);
    /// returns the stock as written.
    fn restock(&self, sku: &str, restock: &Restock) -> impl Future<Output = Result<Stock, StockError>> + Send;

    /// The stock of `sku`, `None` when it is not in the catalogue.
    fn get(&self, sku: &str) -> impl Future<Output = Result<Option<Stock>, StockError>> + Send;
}

/// Stock in memory, for tests. Clones share the same data.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct InMemoryStock {
    items: Arc<Mutex<BTreeMap<String, Stock>>>,
}

#[cfg(test)]
impl InMemoryStock {
    /// Stores `stock` as it is (e.g. with units already reserved).
    pub fn insert(&self, stock: Stock) {
        self.items.lock().expect("stock lock").insert(stock.sku.clone(), stock);
    }
}

#[cfg(test)]
impl StockStore for InMemoryStock {
    async fn restock(&self, sku: &str, restock: &Restock) -> Result<Stock, StockError> {
        let mut items = self.items.lock().expect("stock lock");
        let stock = items.entry(sku.to_owned()).or_insert_with(|| Stock {
            sku: sku.to_owned(),
            available: 0,
            reserved: 0,
            shipped: 0,
            price: restock.price,
        });
        stock.available = restock.available;
        stock.price = restock.price;
        Ok(stock.clone())
    }

    async fn get(&self, sku: &str) -> Result<Option<Stock>, StockError> {
        Ok(self.items.lock().expect("stock lock").get(sku).cloned())
    }
}
