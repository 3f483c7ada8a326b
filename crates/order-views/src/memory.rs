//! The in-memory adapter: the DynamoDB adapter's version condition and list order, in a mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Cursor, ListQuery, OrderView, Page, StoreError, ViewStore};

/// Views by order id.
#[derive(Debug, Clone, Default)]
pub struct InMemoryViews {
    views: Arc<Mutex<BTreeMap<String, OrderView>>>,
}

impl InMemoryViews {
    fn views(&self) -> MutexGuard<'_, BTreeMap<String, OrderView>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ViewStore for InMemoryViews {
    async fn put(&self, view: &OrderView) -> Result<bool, StoreError> {
        let mut views = self.views();
        if views.get(&view.order_id).is_some_and(|stored| stored.version > view.version) {
            return Ok(false);
        }
        views.insert(view.order_id.clone(), view.clone());
        Ok(true)
    }

    async fn get(&self, order_id: &str) -> Result<Option<OrderView>, StoreError> {
        Ok(self.views().get(order_id).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut listed: Vec<OrderView> = self
            .views()
            .values()
            .filter(|view| view.customer_id == query.customer_id)
            .filter(|view| query.status.is_none_or(|status| view.status == status))
            .filter(|view| query.after.as_ref().is_none_or(|after| view.listed_at().as_str() < after.listed_at()))
            .cloned()
            .collect();
        listed.sort_by_key(|view| std::cmp::Reverse(view.listed_at()));
        let more = listed.len() > usize::from(query.limit);
        listed.truncate(usize::from(query.limit));
        let next = listed.last().filter(|_| more).map(Cursor::after);
        Ok(Page { views: listed, next })
    }

    async fn order_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.views().keys().cloned().collect())
    }

    async fn remove(&self, order_id: &str) -> Result<(), StoreError> {
        self.views().remove(order_id);
        Ok(())
    }
}
