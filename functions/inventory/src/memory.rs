//! The in-memory adapter of the inventory store, for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_domain::Decimal;
use orderflow_domain::events::{OrderLine, PricedLine};
use orderflow_domain::inventory::Stock;
use orderflow_toolkit::OutboxRecord;

use crate::store::{InventoryStore, Outcome, Reservation, ReservationStatus, Snapshot, StoreError};

#[derive(Debug, Default)]
struct State {
    stock: BTreeMap<String, Stock>,
    reservations: BTreeMap<String, Reservation>,
    outbox: Vec<OutboxRecord>,
    write_requests: u64,
    read_requests: u64,
    failing_writes: u32,
}

impl State {
    /// Counts a write request and fails it when a failure was injected.
    fn begin_write(&mut self) -> Result<(), StoreError> {
        self.write_requests += 1;
        if self.failing_writes > 0 {
            self.failing_writes -= 1;
            return Err(StoreError::Unavailable("ProvisionedThroughputExceededException (injected)".into()));
        }
        Ok(())
    }

    fn outbox_exists(&self, record: &OutboxRecord) -> bool {
        self.outbox.iter().any(|r| r.partition == record.partition && r.event_id == record.event_id)
    }

    fn is_reserved(&self, order_id: &str) -> bool {
        self.reservations.get(order_id).is_some_and(|r| r.status == ReservationStatus::Reserved)
    }

    /// The SKUs whose `reserved` is below the line's quantity (or that are missing).
    fn short_of_reserved(&self, lines: &[OrderLine]) -> Vec<String> {
        lines
            .iter()
            .filter(|l| self.stock.get(&l.sku).is_none_or(|s| s.reserved < l.quantity))
            .map(|l| l.sku.clone())
            .collect()
    }
}

/// The in-memory adapter, with DynamoDB's semantics: conditional, all-or-nothing transactions, consistent reads.
/// Clones share the same state. It counts read and write requests as DynamoDB would bill them (one per request,
/// whether the transaction commits or is cancelled).
#[derive(Debug, Clone, Default)]
pub struct MemoryInventory {
    state: Arc<Mutex<State>>,
}

impl MemoryInventory {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Restocks a SKU as `PUT /inventory/{sku}` does: sets available and price, keeps reserved and shipped.
    pub fn put_stock(&self, sku: &str, available: u32, price: &str) {
        let price: Decimal = price.parse().expect("a decimal price");
        let mut state = self.lock();
        let entry = state.stock.entry(sku.to_owned()).or_insert_with(|| Stock {
            sku: sku.to_owned(),
            available: 0,
            reserved: 0,
            shipped: 0,
            price,
        });
        entry.available = available;
        entry.price = price;
    }

    pub fn stock(&self, sku: &str) -> Option<Stock> {
        self.lock().stock.get(sku).cloned()
    }

    pub fn stored_reservation(&self, order_id: &str) -> Option<Reservation> {
        self.lock().reservations.get(order_id).cloned()
    }

    pub fn outbox(&self) -> Vec<OutboxRecord> {
        self.lock().outbox.clone()
    }

    /// Write requests so far (each transaction is one request, committed or cancelled).
    pub fn write_requests(&self) -> u64 {
        self.lock().write_requests
    }

    pub fn read_requests(&self) -> u64 {
        self.lock().read_requests
    }

    /// Makes the next `n` write requests fail as throttled.
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing_writes = n;
    }
}

impl InventoryStore for MemoryInventory {
    async fn snapshot(&self, order_id: &str, skus: &[String]) -> Result<Snapshot, StoreError> {
        let snapshot = {
            let mut state = self.lock();
            state.read_requests += 1;
            Snapshot {
                reservation: state.reservations.get(order_id).map(|r| r.status),
                stock: skus.iter().filter_map(|sku| state.stock.get(sku).map(|s| (sku.clone(), s.clone()))).collect(),
            }
        };
        // Let other tasks run between this read and the write that follows, as a network round trip would.
        tokio::task::yield_now().await;
        Ok(snapshot)
    }

    async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, StoreError> {
        let mut state = self.lock();
        state.read_requests += 1;
        Ok(state.reservations.get(order_id).cloned())
    }

    async fn reserve(
        &self,
        order_id: &str,
        lines: &[PricedLine],
        outbox: &OutboxRecord,
    ) -> Result<Outcome, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if state.reservations.contains_key(order_id) || state.outbox_exists(outbox) {
            return Ok(Outcome::ReservationConflict);
        }
        let short: Vec<String> = lines
            .iter()
            .filter(|l| state.stock.get(&l.sku).is_none_or(|s| s.available < l.quantity))
            .map(|l| l.sku.clone())
            .collect();
        if !short.is_empty() {
            return Ok(Outcome::StockConflict(short));
        }
        for line in lines {
            let stock = state.stock.get_mut(&line.sku).expect("checked above");
            stock.available -= line.quantity;
            stock.reserved += line.quantity;
        }
        let lines = lines.iter().map(|l| OrderLine { sku: l.sku.clone(), quantity: l.quantity }).collect();
        state.reservations.insert(order_id.to_owned(), Reservation { status: ReservationStatus::Reserved, lines });
        state.outbox.push(outbox.clone());
        Ok(Outcome::Committed)
    }

    async fn reject(
        &self,
        order_id: &str,
        lines: &[OrderLine],
        _reason: &str,
        outbox: &OutboxRecord,
    ) -> Result<Outcome, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if state.reservations.contains_key(order_id) || state.outbox_exists(outbox) {
            return Ok(Outcome::ReservationConflict);
        }
        let reservation = Reservation { status: ReservationStatus::Rejected, lines: lines.to_vec() };
        state.reservations.insert(order_id.to_owned(), reservation);
        state.outbox.push(outbox.clone());
        Ok(Outcome::Committed)
    }

    async fn release(&self, order_id: &str, lines: &[OrderLine], outbox: &OutboxRecord) -> Result<Outcome, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if !state.is_reserved(order_id) || state.outbox_exists(outbox) {
            return Ok(Outcome::ReservationConflict);
        }
        let short = state.short_of_reserved(lines);
        if !short.is_empty() {
            return Ok(Outcome::StockConflict(short));
        }
        for line in lines {
            let stock = state.stock.get_mut(&line.sku).expect("checked above");
            stock.available += line.quantity;
            stock.reserved -= line.quantity;
        }
        state.reservations.get_mut(order_id).expect("checked above").status = ReservationStatus::Released;
        state.outbox.push(outbox.clone());
        Ok(Outcome::Committed)
    }

    async fn tombstone(&self, order_id: &str) -> Result<Outcome, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if state.reservations.contains_key(order_id) {
            return Ok(Outcome::ReservationConflict);
        }
        let tombstone = Reservation { status: ReservationStatus::Released, lines: Vec::new() };
        state.reservations.insert(order_id.to_owned(), tombstone);
        Ok(Outcome::Committed)
    }

    async fn ship(&self, order_id: &str, lines: &[OrderLine]) -> Result<Outcome, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        if !state.is_reserved(order_id) {
            return Ok(Outcome::ReservationConflict);
        }
        let short = state.short_of_reserved(lines);
        if !short.is_empty() {
            return Ok(Outcome::StockConflict(short));
        }
        for line in lines {
            let stock = state.stock.get_mut(&line.sku).expect("checked above");
            stock.reserved -= line.quantity;
            stock.shipped += line.quantity;
        }
        state.reservations.get_mut(order_id).expect("checked above").status = ReservationStatus::Shipped;
        Ok(Outcome::Committed)
    }
}
