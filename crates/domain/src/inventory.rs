//! Stock rules: an order's lines are reserved all or none, priced by the catalogue, never below zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::events::{OrderLine, PricedLine};
use crate::order::ValidationError;

/// One SKU of the catalogue with its stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub sku: String,
    /// Units that can still be reserved.
    pub available: u32,
    /// Units held for orders that are not shipped yet.
    pub reserved: u32,
    /// Units gone out with shipments.
    pub shipped: u32,
    pub price: Decimal,
}

/// The longest SKU, in bytes.
pub const MAX_SKU_BYTES: usize = 128;
/// The lowest price of a SKU: one cent.
pub const MIN_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, 2);
/// The highest price of a SKU: 1,000,000.00.
pub const MAX_PRICE: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 2);
/// The most units a restock may make available. Stock counters are `u32` (at most 4,294,967,295): a quarter of
/// that leaves room for the units an order gives back (a release) and the lifetime counts of reserved and shipped
/// units; a reservation, release or shipment that would take a counter past `u32::MAX` is refused, never wrapped.
pub const MAX_AVAILABLE: u32 = 1_000_000_000;

/// Checks a SKU: 1 to [`MAX_SKU_BYTES`] bytes of `[A-Za-z0-9._-]`, the SKUs the catalogue holds. An error names
/// the field `sku`.
pub fn validate_sku(sku: &str) -> Result<(), ValidationError> {
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if sku.is_empty() || sku.len() > MAX_SKU_BYTES || !sku.as_bytes().iter().all(allowed) {
        return Err(ValidationError::new("sku", format!("must be 1 to {MAX_SKU_BYTES} bytes of [A-Za-z0-9._-]")));
    }
    Ok(())
}

/// The body of `PUT /inventory/{sku}`: set the units available and the price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    pub available: u32,
    pub price: Decimal,
}

impl Restock {
    /// Checks the restock: at most [`MAX_AVAILABLE`] units, a price of [`MIN_PRICE`] to [`MAX_PRICE`] in cents
    /// (at most two decimals).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.available > MAX_AVAILABLE {
            return Err(ValidationError::new("available", format!("must be at most {MAX_AVAILABLE}")));
        }
        if !(MIN_PRICE..=MAX_PRICE).contains(&self.price) || self.price.normalize().scale() > 2 {
            return Err(ValidationError::new(
                "price",
                format!(
                    "must be a positive decimal string from {MIN_PRICE} to {MAX_PRICE} with at most two decimals, \
                     e.g. \"12.50\""
                ),
            ));
        }
        Ok(())
    }
}

/// Why stock arithmetic on an order cannot be done: a number leaves the range of its type. Permanent: a consumer
/// sends the record to its DLQ with this reason and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("{what} of SKU {sku} overflows")]
    Overflow { sku: String, what: &'static str },
}

/// Lines of one order merged by SKU (an order may name a SKU twice), in SKU order, so every reservation
/// touches each stock item once and in the same order.
pub fn merge_lines(lines: &[OrderLine]) -> Result<Vec<OrderLine>, StockError> {
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for line in lines {
        let units = merged.entry(&line.sku).or_default();
        *units = units
            .checked_add(line.quantity)
            .ok_or_else(|| StockError::Overflow { sku: line.sku.clone(), what: "the ordered units" })?;
    }
    Ok(merged.into_iter().map(|(sku, quantity)| OrderLine { sku: sku.to_owned(), quantity }).collect())
}

/// What a reservation attempt decides from a snapshot of the stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserve { lines: Vec<PricedLine>, total: Decimal },
    Reject { unavailable: Vec<String>, reason: String },
}

/// Decides a reservation for merged `lines` given the current stock of each SKU (`None`: not in the catalogue).
/// The store must still make the write conditional on `available >= quantity`, since stock can change between
/// this read and the write. `Err`: the total, a line's price times its quantity, or a SKU's reserved units would
/// overflow.
pub fn reserve<'a>(lines: &[OrderLine], stock: impl Fn(&str) -> Option<&'a Stock>) -> Result<Reservation, StockError> {
    let mut priced = Vec::with_capacity(lines.len());
    let mut unknown = Vec::new();
    let mut short = Vec::new();
    for line in lines {
        match stock(&line.sku) {
            None => unknown.push(line.sku.clone()),
            Some(s) if s.available < line.quantity => short.push(line.sku.clone()),
            Some(s) => {
                priced.push((PricedLine { sku: line.sku.clone(), quantity: line.quantity, unit_price: s.price }, s))
            }
        }
    }
    if unknown.is_empty() && short.is_empty() {
        let mut total = Decimal::ZERO;
        for (line, stock) in &priced {
            let overflow = |what| StockError::Overflow { sku: line.sku.clone(), what };
            stock.reserved.checked_add(line.quantity).ok_or_else(|| overflow("the reserved units"))?;
            let line_total =
                line.unit_price.checked_mul(Decimal::from(line.quantity)).ok_or_else(|| overflow("the line total"))?;
            total = total.checked_add(line_total).ok_or_else(|| overflow("the order total"))?;
        }
        let lines = priced.into_iter().map(|(line, _)| line).collect();
        return Ok(Reservation::Reserve { lines, total });
    }
    let mut reasons = Vec::new();
    if !short.is_empty() {
        reasons.push(format!("out of stock: {}", short.join(", ")));
    }
    if !unknown.is_empty() {
        reasons.push(format!("not in the catalogue: {}", unknown.join(", ")));
    }
    let mut unavailable = short;
    unavailable.extend(unknown);
    Ok(Reservation::Reject { unavailable, reason: reasons.join("; ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(sku: &str, available: u32, price: &str) -> Stock {
        Stock { sku: sku.into(), available, reserved: 0, shipped: 0, price: price.parse().unwrap() }
    }

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine { sku: sku.into(), quantity }
    }

    #[test]
    fn same_sku_twice_counts_together_and_units_that_overflow_are_refused() {
        assert_eq!(merge_lines(&[line("B", 1), line("A", 2), line("B", 3)]), Ok(vec![line("A", 2), line("B", 4)]));
        assert_eq!(
            merge_lines(&[line("A", u32::MAX), line("A", 1)]),
            Err(StockError::Overflow { sku: "A".into(), what: "the ordered units" })
        );
    }

    #[test]
    fn all_lines_available_are_priced_and_totalled_exactly() {
        let catalogue = [stock("A", 5, "0.10"), stock("B", 5, "0.20")];
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        let Ok(Reservation::Reserve { total, .. }) = reserve(&[line("A", 3), line("B", 1)], find) else { panic!() };
        assert_eq!(total.to_string(), "0.50");
    }

    #[test]
    fn one_short_line_rejects_the_whole_order_naming_it() {
        let catalogue = [stock("A", 5, "1.00"), stock("B", 1, "1.00")];
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        let decision = reserve(&[line("A", 1), line("B", 2), line("C", 1)], find);
        assert_eq!(
            decision,
            Ok(Reservation::Reject {
                unavailable: vec!["B".into(), "C".into()],
                reason: "out of stock: B; not in the catalogue: C".into()
            })
        );
    }

    #[test]
    fn a_total_or_reserved_units_that_would_overflow_are_refused_naming_the_sku() {
        let mut catalogue = [stock("A", 5, "1.00"), stock("B", 5, "1.00")];
        catalogue[1].price = Decimal::MAX;
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        assert_eq!(
            reserve(&[line("A", 1), line("B", 2)], find),
            Err(StockError::Overflow { sku: "B".into(), what: "the line total" })
        );
        catalogue[1].price = "1.00".parse().unwrap();
        catalogue[1].reserved = u32::MAX;
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        let err = reserve(&[line("B", 1)], find).unwrap_err();
        assert_eq!(err.to_string(), "the reserved units of SKU B overflows");
    }

    #[test]
    fn a_sku_is_1_to_128_bytes_of_letters_digits_dots_underscores_and_dashes() {
        for sku in ["SKU-1", "a.b_c-9", &"S".repeat(128)] {
            assert_eq!(validate_sku(sku), Ok(()), "{sku}");
        }
        for sku in ["", "SKU 1", "SKU/1", "SKU\n", "ŚKU", &"S".repeat(129)] {
            let err = validate_sku(sku).unwrap_err();
            assert_eq!(err.to_string(), "sku: must be 1 to 128 bytes of [A-Za-z0-9._-]", "{sku:?}");
        }
    }

    #[test]
    fn a_restock_prices_in_cents_from_a_cent_to_a_million_and_bounds_the_units() {
        let restock = |available: u32, price: &str| Restock { available, price: price.parse().unwrap() }.validate();
        for price in ["0.01", "12.50", "12.5", "1000000.00", "1000000.000"] {
            assert_eq!(restock(1, price), Ok(()), "{price}");
        }
        for price in ["0", "0.009", "-1.00", "1.005", "1000000.01"] {
            let err = restock(1, price).unwrap_err();
            assert_eq!(err.field, "price", "{price}");
            assert!(err.message.starts_with("must be a positive decimal"), "{err}");
        }
        assert_eq!(restock(MAX_AVAILABLE, "1.00"), Ok(()));
        assert_eq!(
            restock(MAX_AVAILABLE + 1, "1.00").unwrap_err().to_string(),
            "available: must be at most 1000000000"
        );
    }
}
