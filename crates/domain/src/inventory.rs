//! Stock rules: an order's lines are reserved all or none, priced by the catalogue, never below zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::events::{OrderLine, PricedLine};

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

/// The body of `PUT /inventory/{sku}`: set the units available and the price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    pub available: u32,
    pub price: Decimal,
}

impl Restock {
    /// A price must be positive with at most two decimals (cents).
    pub fn validate(&self) -> Result<(), crate::order::ValidationError> {
        if self.price <= Decimal::ZERO || self.price.normalize().scale() > 2 {
            return Err(crate::order::ValidationError {
                field: "price".into(),
                message: "must be a positive decimal string with at most two decimals, e.g. \"12.50\"".into(),
            });
        }
        Ok(())
    }
}

/// Lines of one order merged by SKU (an order may name a SKU twice), in SKU order, so every reservation
/// touches each stock item once and in the same order.
pub fn merge_lines(lines: &[OrderLine]) -> Vec<OrderLine> {
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for line in lines {
        *merged.entry(&line.sku).or_default() += line.quantity;
    }
    merged.into_iter().map(|(sku, quantity)| OrderLine { sku: sku.to_owned(), quantity }).collect()
}

/// What a reservation attempt decides from a snapshot of the stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserve { lines: Vec<PricedLine>, total: Decimal },
    Reject { unavailable: Vec<String>, reason: String },
}

/// Decides a reservation for merged `lines` given the current stock of each SKU (`None`: not in the catalogue).
/// The store must still make the write conditional on `available >= quantity`, since stock can change between
/// this read and the write.
pub fn reserve<'a>(lines: &[OrderLine], stock: impl Fn(&str) -> Option<&'a Stock>) -> Reservation {
    let mut priced = Vec::with_capacity(lines.len());
    let mut unknown = Vec::new();
    let mut short = Vec::new();
    for line in lines {
        match stock(&line.sku) {
            None => unknown.push(line.sku.clone()),
            Some(s) if s.available < line.quantity => short.push(line.sku.clone()),
            Some(s) => priced.push(PricedLine { sku: line.sku.clone(), quantity: line.quantity, unit_price: s.price }),
        }
    }
    if unknown.is_empty() && short.is_empty() {
        let total = priced.iter().map(|l| l.unit_price * Decimal::from(l.quantity)).sum();
        return Reservation::Reserve { lines: priced, total };
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
    Reservation::Reject { unavailable, reason: reasons.join("; ") }
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
    fn same_sku_twice_counts_together() {
        assert_eq!(merge_lines(&[line("B", 1), line("A", 2), line("B", 3)]), vec![line("A", 2), line("B", 4)]);
    }

    #[test]
    fn all_lines_available_are_priced_and_totalled_exactly() {
        let catalogue = [stock("A", 5, "0.10"), stock("B", 5, "0.20")];
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        let Reservation::Reserve { total, .. } = reserve(&[line("A", 3), line("B", 1)], find) else { panic!() };
        assert_eq!(total.to_string(), "0.50");
    }

    #[test]
    fn one_short_line_rejects_the_whole_order_naming_it() {
        let catalogue = [stock("A", 5, "1.00"), stock("B", 1, "1.00")];
        let find = |sku: &str| catalogue.iter().find(|s| s.sku == sku);
        let decision = reserve(&[line("A", 1), line("B", 2), line("C", 1)], find);
        assert_eq!(
            decision,
            Reservation::Reject {
                unavailable: vec!["B".into(), "C".into()],
                reason: "out of stock: B; not in the catalogue: C".into()
            }
        );
    }

    #[test]
    fn restock_price_must_be_positive_cents() {
        assert!(Restock { available: 1, price: "12.50".parse().unwrap() }.validate().is_ok());
        assert!(Restock { available: 1, price: "0".parse().unwrap() }.validate().is_err());
        assert!(Restock { available: 1, price: "1.005".parse().unwrap() }.validate().is_err());
    }
}
