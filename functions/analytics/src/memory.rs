//! The in-memory adapter of [`AnalyticsStore`], with the same conditional and transactional semantics as the
//! DynamoDB one, for the handler's tests; it can inject failures and concurrent writers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use orderflow_aws::StoreError;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{AnalyticsStore, Count, CountOutcome};

/// Per-SKU sales of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sales {
    pub units: u64,
    pub orders: u64,
}

#[derive(Debug, Default)]
struct State {
    events: BTreeSet<Uuid>,
    sales: BTreeMap<(String, OffsetDateTime), Sales>,
    customers: BTreeMap<(String, OffsetDateTime), u32>,
    outbox: Vec<OutboxRecord>,
    failures: u32,
    /// Orders another writer adds to a customer's window just before the next counts: (customer, window, orders,
    /// how many counts it happens before).
    interleaved: Option<(String, OffsetDateTime, u32, u32)>,
}

/// The counters in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryAnalytics {
    state: Arc<Mutex<State>>,
}

impl MemoryAnalytics {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("analytics lock")
    }

    pub fn sales(&self, sku: &str, window_start: OffsetDateTime) -> Sales {
        self.state().sales.get(&(sku.to_owned(), window_start)).copied().unwrap_or_default()
    }

    pub fn customer_orders_in(&self, customer_id: &str, window_start: OffsetDateTime) -> u32 {
        self.state().customers.get(&(customer_id.to_owned(), window_start)).copied().unwrap_or_default()
    }

    pub fn counted_events(&self) -> usize {
        self.state().events.len()
    }

    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.state().outbox.clone()
    }

    /// The next `times` writes fail as if the table were throttling.
    pub fn fail_next(&self, times: u32) {
        self.state().failures = times;
    }

    /// Before each of the next `times` counts, another writer adds `orders` to the customer's window (between this
    /// handler's read and its write).
    pub fn interleave_orders(&self, customer_id: &str, window_start: OffsetDateTime, orders: u32, times: u32) {
        self.state().interleaved = Some((customer_id.to_owned(), window_start, orders, times));
    }
}

impl AnalyticsStore for MemoryAnalytics {
    async fn customer_orders(&self, customer_id: &str, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        Ok(self.customer_orders_in(customer_id, window_start))
    }

    async fn count(&self, count: &Count) -> Result<CountOutcome, StoreError> {
        let mut state = self.state();
        if state.failures > 0 {
            state.failures -= 1;
            return Err(StoreError::Transient("ProvisionedThroughputExceededException: injected".into()));
        }
        if let Some((customer, window, orders, times)) = state.interleaved.take() {
            *state.customers.entry((customer.clone(), window)).or_default() += orders;
            if times > 1 {
                state.interleaved = Some((customer, window, orders, times - 1));
            }
        }
        // The conditions of the transaction, all checked before anything is written.
        if state.events.contains(&count.event_id) {
            return Ok(CountOutcome::Duplicate);
        }
        let customer_key = (count.customer_id.clone(), count.window_start);
        if state.customers.get(&customer_key).copied().unwrap_or_default() != count.expected_customer_orders {
            return Ok(CountOutcome::Contended);
        }
        state.events.insert(count.event_id);
        *state.customers.entry(customer_key).or_default() += 1;
        for line in &count.sales {
            let sales = state.sales.entry((line.sku.clone(), count.window_start)).or_default();
            sales.units += line.units;
            sales.orders += 1;
        }
        if let Some(record) = &count.fraud_signal {
            state.outbox.push(record.clone());
        }
        Ok(CountOutcome::Counted)
    }
}
