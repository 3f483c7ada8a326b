//! The in-memory adapter, with the conditional and transactional semantics of the DynamoDB one, for handler
//! tests; it can inject failures and concurrent writers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use orderflow_aws::StoreError;
use orderflow_domain::analytics::SalesTotals;
use orderflow_toolkit::OutboxRecord;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Count, CountOutcome, FraudStore, OpenSales, PublishedWindow, SaleWrite, SalesStore, ShardCount, StoredSale,
    WatermarkState, WindowStore,
};

/// One counter item: its totals, and whether it holds amounts not yet published.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    totals: SalesTotals,
    open: bool,
}

#[derive(Debug, Default)]
struct State {
    events: BTreeSet<Uuid>,
    customers: BTreeMap<(String, OffsetDateTime), u32>,
    sales: BTreeMap<String, StoredSale>,
    /// (window start, sku, shard)
    counters: BTreeMap<(OffsetDateTime, String, u32), Counter>,
    published: BTreeMap<(String, OffsetDateTime), PublishedWindow>,
    latest: Option<OffsetDateTime>,
    settled_through: Option<OffsetDateTime>,
    outbox: Vec<OutboxRecord>,
    failures: u32,
    /// Orders another writer adds to a customer's window just before the next counts: (customer, window, orders,
    /// how many counts it happens before).
    interleaved: Option<(String, OffsetDateTime, u32, u32)>,
}

/// The Analytics table in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryAnalytics {
    state: Arc<Mutex<State>>,
}

impl MemoryAnalytics {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("analytics lock")
    }

    /// A failure injected by [`Self::fail_next`], if one is due.
    fn injected_failure(state: &mut State) -> Result<(), StoreError> {
        if state.failures > 0 {
            state.failures -= 1;
            return Err(StoreError::Transient("ProvisionedThroughputExceededException: injected".into()));
        }
        Ok(())
    }

    pub fn customer_orders_in(&self, customer_id: &str, window_start: OffsetDateTime) -> u32 {
        self.state().customers.get(&(customer_id.to_owned(), window_start)).copied().unwrap_or_default()
    }

    pub fn counted_events(&self) -> usize {
        self.state().events.len()
    }

    /// Every counter item of a SKU's window.
    fn shard_counts(&self, sku: &str, window_start: OffsetDateTime) -> Vec<ShardCount> {
        let state = self.state();
        state
            .counters
            .iter()
            .filter(|((window, counted_sku, _), _)| *window == window_start && counted_sku == sku)
            .map(|((_, _, shard), counter)| ShardCount { shard: *shard, totals: counter.totals })
            .collect()
    }

    /// The sum of a SKU's counters in a window.
    pub fn counted_sales(&self, sku: &str, window_start: OffsetDateTime) -> SalesTotals {
        let shards = self.shard_counts(sku, window_start).into_iter().map(|count| count.totals);
        SalesTotals::sum(shards, sku).expect("test sales do not overflow")
    }

    /// How many counter items a SKU's window is spread over.
    pub fn shards_used(&self, sku: &str, window_start: OffsetDateTime) -> usize {
        self.shard_counts(sku, window_start).len()
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

impl FraudStore for MemoryAnalytics {
    async fn customer_orders(&self, customer_id: &str, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        Ok(self.customer_orders_in(customer_id, window_start))
    }

    async fn count(&self, count: &Count) -> Result<CountOutcome, StoreError> {
        count.fraud_signal.as_ref().map(orderflow_aws::outbox::ensure_publishable).transpose()?;
        let mut state = self.state();
        Self::injected_failure(&mut state)?;
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
        if let Some(record) = &count.fraud_signal {
            state.outbox.push(record.clone());
        }
        Ok(CountOutcome::Counted)
    }
}

impl SalesStore for MemoryAnalytics {
    async fn sale(&self, order_id: &str) -> Result<StoredSale, StoreError> {
        Ok(self.state().sales.get(order_id).cloned().unwrap_or_default())
    }

    async fn write_sale(&self, write: &SaleWrite) -> Result<CountOutcome, StoreError> {
        let mut state = self.state();
        Self::injected_failure(&mut state)?;
        let revision = state.sales.get(&write.order_id).map_or(0, |stored| stored.revision);
        if revision != write.expected_revision {
            return Ok(CountOutcome::Contended);
        }
        let stored = StoredSale { sale: write.sale.clone(), revision: revision + 1 };
        state.sales.insert(write.order_id.clone(), stored);
        if let Some(change) = &write.change {
            for (sku, totals) in &change.per_sku {
                let counter = state.counters.entry((change.window_start, sku.clone(), change.shard)).or_default();
                counter.totals = counter.totals.checked_add(*totals).expect("test sales do not overflow");
                counter.open = true;
            }
        }
        Ok(CountOutcome::Counted)
    }

    async fn advance_watermark(&self, at: OffsetDateTime) -> Result<(), StoreError> {
        let mut state = self.state();
        let at = OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).expect("a whole second of a valid time");
        state.latest = state.latest.max(Some(at));
        Ok(())
    }
}

impl WindowStore for MemoryAnalytics {
    async fn watermark(&self) -> Result<WatermarkState, StoreError> {
        let state = self.state();
        Ok(WatermarkState { latest_event: state.latest, settled_through: state.settled_through })
    }

    async fn record_settled_through(&self, last_start: OffsetDateTime) -> Result<(), StoreError> {
        let mut state = self.state();
        state.settled_through = state.settled_through.max(Some(last_start));
        Ok(())
    }

    async fn open_sales(&self, last_start: OffsetDateTime, limit: usize) -> Result<Vec<OpenSales>, StoreError> {
        let state = self.state();
        let open: BTreeSet<OpenSales> = state
            .counters
            .iter()
            .filter(|((window, _, _), counter)| counter.open && *window <= last_start)
            .map(|((window, sku, _), _)| OpenSales { window_start: *window, sku: sku.clone() })
            .collect();
        Ok(open.into_iter().take(limit).collect())
    }

    async fn counted(&self, sku: &str, window_start: OffsetDateTime) -> Result<Vec<ShardCount>, StoreError> {
        Ok(self.shard_counts(sku, window_start))
    }

    async fn published(&self, sku: &str, window_start: OffsetDateTime) -> Result<Option<PublishedWindow>, StoreError> {
        Ok(self.state().published.get(&(sku.to_owned(), window_start)).cloned())
    }

    async fn publish(
        &self,
        window: &PublishedWindow,
        previous_revision: Option<u64>,
        event: &OutboxRecord,
    ) -> Result<bool, StoreError> {
        orderflow_aws::outbox::ensure_publishable(event)?;
        let mut state = self.state();
        Self::injected_failure(&mut state)?;
        let key = (window.sku.clone(), window.window_start);
        if state.published.get(&key).map(|published| published.revision) != previous_revision {
            return Ok(false);
        }
        state.published.insert(key, window.clone());
        state.outbox.push(event.clone());
        Ok(true)
    }

    async fn settle(&self, sku: &str, window_start: OffsetDateTime, counted: &[ShardCount]) -> Result<(), StoreError> {
        let mut state = self.state();
        for count in counted {
            if let Some(counter) = state.counters.get_mut(&(window_start, sku.to_owned(), count.shard))
                && counter.totals == count.totals
            {
                counter.open = false;
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
        let state = self.state();
        Ok(state
            .published
            .values()
            .filter(|window| window.sku == sku && window.window_start >= from && window.window_start < to)
            .cloned()
            .collect())
    }
}
