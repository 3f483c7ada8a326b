//! The in-memory adapter, for handler tests: the conditions and all-or-nothing transactions of the DynamoDB
//! adapter, in a mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orderflow_aws::StoreError;
use orderflow_domain::Decimal;
use orderflow_domain::events::{OrderLine, PricedLine};
use orderflow_domain::inventory::{Restock, Stock};
use orderflow_toolkit::OutboxRecord;

use crate::{InventoryStore, Outcome, Reservation, ReservationStatus, Snapshot, StockStore};

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
            return Err(StoreError::Transient("ProvisionedThroughputExceededException (injected)".into()));
        }
        Ok(())
    }

    /// Sets available and price as a restock does, keeping reserved and shipped (0 for a new SKU).
    fn restock(&mut self, sku: &str, available: u32, price: Decimal) -> Stock {
        let stock = self.stock.entry(sku.to_owned()).or_insert_with(|| Stock {
            sku: sku.to_owned(),
            available: 0,
            reserved: 0,
            shipped: 0,
            price,
        });
        stock.available = available;
        stock.price = price;
        stock.clone()
    }

    fn outbox_exists(&self, record: &OutboxRecord) -> bool {
        self.outbox.iter().any(|r| r.partition == record.partition && r.event_id == record.event_id)
    }

    fn is_reserved(&self, order_id: &str) -> bool {
        self.reservations.get(order_id).is_some_and(|r| r.status == ReservationStatus::Reserved)
    }

    /// Moves each line's units as one all-or-nothing step: `step` gives a SKU's stock after `quantity` moved, or
    /// `None` when its condition fails (or a counter would overflow). Nothing changes when a SKU cannot take its
    /// line (or is missing): those SKUs are returned.
    fn move_units<'a>(
        &mut self,
        lines: impl Iterator<Item = (&'a str, u32)>,
        step: impl Fn(&Stock, u32) -> Option<Stock>,
    ) -> Result<(), Vec<String>> {
        let (mut moved, mut short) = (Vec::new(), Vec::new());
        for (sku, quantity) in lines {
            match self.stock.get(sku).and_then(|stock| step(stock, quantity)) {
                Some(stock) => moved.push(stock),
                None => short.push(sku.to_owned()),
            }
        }
        if !short.is_empty() {
            return Err(short);
        }
        for stock in moved {
            self.stock.insert(stock.sku.clone(), stock);
        }
        Ok(())
    }

    fn set_status(&mut self, order_id: &str, status: ReservationStatus) {
        if let Some(reservation) = self.reservations.get_mut(order_id) {
            reservation.status = status;
        }
    }
}

fn order_lines(lines: &[OrderLine]) -> impl Iterator<Item = (&str, u32)> {
    lines.iter().map(|line| (line.sku.as_str(), line.quantity))
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

    /// Restocks a SKU as `PUT /inventory/{sku}` does (sets available and price, keeps reserved and shipped),
    /// without counting a request: test set-up.
    ///
    /// # Panics
    /// When `price` is not a decimal: a mistake in the test.
    pub fn put_stock(&self, sku: &str, available: u32, price: &str) {
        let price: Decimal = price.parse().unwrap_or_else(|e| panic!("put_stock: price {price:?}: {e}"));
        self.lock().restock(sku, available, price);
    }

    /// Stores `stock` as it is (e.g. with units already reserved).
    pub fn insert_stock(&self, stock: Stock) {
        self.lock().stock.insert(stock.sku.clone(), stock);
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

impl StockStore for MemoryInventory {
    async fn restock(&self, sku: &str, restock: &Restock) -> Result<Stock, StoreError> {
        let mut state = self.lock();
        state.begin_write()?;
        Ok(state.restock(sku, restock.available, restock.price))
    }

    async fn get(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        let mut state = self.lock();
        state.read_requests += 1;
        Ok(state.stock.get(sku).cloned())
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
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        if state.reservations.contains_key(order_id) || state.outbox_exists(outbox) {
            return Ok(Outcome::ReservationConflict);
        }
        let units = lines.iter().map(|line| (line.sku.as_str(), line.quantity));
        let moved = state.move_units(units, |stock, quantity| {
            let (available, reserved) = (stock.available.checked_sub(quantity)?, stock.reserved.checked_add(quantity)?);
            Some(Stock { available, reserved, ..stock.clone() })
        });
        if let Err(short) = moved {
            return Ok(Outcome::StockConflict(short));
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
        orderflow_aws::outbox::ensure_publishable(outbox)?;
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
        orderflow_aws::outbox::ensure_publishable(outbox)?;
        let mut state = self.lock();
        state.begin_write()?;
        if !state.is_reserved(order_id) || state.outbox_exists(outbox) {
            return Ok(Outcome::ReservationConflict);
        }
        let moved = state.move_units(order_lines(lines), |stock, quantity| {
            let (available, reserved) = (stock.available.checked_add(quantity)?, stock.reserved.checked_sub(quantity)?);
            Some(Stock { available, reserved, ..stock.clone() })
        });
        if let Err(short) = moved {
            return Ok(Outcome::StockConflict(short));
        }
        state.set_status(order_id, ReservationStatus::Released);
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
        let moved = state.move_units(order_lines(lines), |stock, quantity| {
            let (reserved, shipped) = (stock.reserved.checked_sub(quantity)?, stock.shipped.checked_add(quantity)?);
            Some(Stock { reserved, shipped, ..stock.clone() })
        });
        if let Err(short) = moved {
            return Ok(Outcome::StockConflict(short));
        }
        state.set_status(order_id, ReservationStatus::Shipped);
        Ok(Outcome::Committed)
    }
}
