//! Event stream processing rules: tumbling windows, their watermark and lateness, sales per SKU, and the fraud
//! signal.
//!
//! A sale is counted in the window of its order's `OrderShipped` event time (`occurred_at`), at the prices of the
//! order's `InventoryReserved` lines; an `OrderCancelled` of a counted order subtracts the same amounts from the
//! same window. A window `[start, end)` closes when the watermark reaches `end + allowed_lateness`; an event for a
//! closed window becomes a correction of it, never a silent change.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use crate::events::PricedLine;
use crate::inventory::validate_sku;
use crate::order::ValidationError;

/// The start (in UTC) of the tumbling window of `window_seconds` that contains `at`. The window of the earliest
/// representable times may start before them: it is clamped to the earliest one.
pub fn window_start(at: OffsetDateTime, window_seconds: u32) -> OffsetDateTime {
    let window = i64::from(window_seconds.max(1));
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(window))
        .unwrap_or_else(|_| PrimitiveDateTime::MIN.assume_utc())
}

/// A customer is suspected of fraud by the order that takes them past `max_orders` in one window; only that
/// order raises the signal, so it fires once per customer and window.
pub fn raises_fraud_signal(orders_in_window: u32, max_orders: u32) -> bool {
    max_orders.checked_add(1) == Some(orders_in_window)
}

/// The window length and allowed lateness of the sales windows (from the IaC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub window_seconds: u32,
    pub allowed_lateness_seconds: u32,
}

impl WindowSpec {
    /// The `[start, end)` of the window that contains `at`.
    pub fn window_of(&self, at: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let start = window_start(at, self.window_seconds);
        (start, start.saturating_add(Duration::seconds(i64::from(self.window_seconds.max(1)))))
    }

    /// Whether the window ending at `window_end` is closed once the watermark is `watermark`: the watermark has
    /// passed its end plus the allowed lateness.
    pub fn is_closed(&self, window_end: OffsetDateTime, watermark: OffsetDateTime) -> bool {
        watermark >= window_end.saturating_add(Duration::seconds(i64::from(self.allowed_lateness_seconds)))
    }
}

/// The watermark: no event earlier than it is expected any more. It is the latest event time seen, or, when
/// traffic stops, the clock of a scheduled close minus the longest delay an event may take to arrive; it never
/// goes back.
pub fn watermark(
    latest_event_time: Option<OffsetDateTime>,
    now: Option<OffsetDateTime>,
    max_delivery_delay_seconds: u32,
) -> Option<OffsetDateTime> {
    let by_clock = now.map(|now| now.saturating_sub(Duration::seconds(i64::from(max_delivery_delay_seconds))));
    latest_event_time.max(by_clock)
}

/// Units and revenue of one SKU in one window (or a change to them). Units are signed: a cancellation is a
/// negative change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SalesTotals {
    pub units: i64,
    pub revenue: Decimal,
}

/// Why a sale cannot be counted: a permanent failure, the record goes to the DLQ with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SalesError {
    #[error("the sales of SKU {sku} overflow")]
    Overflow { sku: String },
}

impl SalesTotals {
    /// `self + other`, checked.
    pub fn checked_add(self, other: SalesTotals) -> Option<SalesTotals> {
        Some(SalesTotals {
            units: self.units.checked_add(other.units)?,
            revenue: self.revenue.checked_add(other.revenue)?,
        })
    }

    /// The opposite change: what a cancellation subtracts.
    pub fn negated(self) -> Option<SalesTotals> {
        Some(SalesTotals { units: self.units.checked_neg()?, revenue: -self.revenue })
    }

    /// The sum of shard totals, checked.
    pub fn sum(shards: impl IntoIterator<Item = SalesTotals>, sku: &str) -> Result<SalesTotals, SalesError> {
        shards.into_iter().try_fold(SalesTotals::default(), |sum, shard| {
            sum.checked_add(shard).ok_or_else(|| SalesError::Overflow { sku: sku.to_owned() })
        })
    }
}

/// The sale of one shipped order per SKU: units and `quantity * unit_price` of its priced lines, lines of one SKU
/// summed, checked.
pub fn sale_per_sku(lines: &[PricedLine]) -> Result<BTreeMap<String, SalesTotals>, SalesError> {
    let mut per_sku: BTreeMap<String, SalesTotals> = BTreeMap::new();
    for line in lines {
        let overflow = || SalesError::Overflow { sku: line.sku.clone() };
        let line_total = SalesTotals {
            units: i64::from(line.quantity),
            revenue: line.unit_price.checked_mul(Decimal::from(line.quantity)).ok_or_else(overflow)?,
        };
        let sku = per_sku.entry(line.sku.clone()).or_default();
        *sku = sku.checked_add(line_total).ok_or_else(overflow)?;
    }
    Ok(per_sku)
}

/// What analytics keeps per order to count its sale, whatever order its events arrive in: the reserved prices,
/// the shipping time, and whether it was cancelled or counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSale {
    pub lines: Option<Vec<PricedLine>>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub shipped_at: Option<OffsetDateTime>,
    pub cancelled: bool,
    pub counted: bool,
}

/// An event of the order that matters to its sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleFact {
    /// `InventoryReserved`: the priced lines.
    Reserved(Vec<PricedLine>),
    /// `OrderShipped`: its event time picks the window.
    Shipped(OffsetDateTime),
    /// `OrderCancelled`.
    Cancelled,
}

/// What a fact does to the sales windows: nothing yet, add the sale, or take it back, in the window of
/// `shipped_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleChange {
    Nothing,
    Count { shipped_at: OffsetDateTime, per_sku: BTreeMap<String, SalesTotals> },
    Uncount { shipped_at: OffsetDateTime, per_sku: BTreeMap<String, SalesTotals> },
}

impl OrderSale {
    /// The order's new state and the change to the windows. A sale is counted once both its prices and its
    /// shipping are known and it is not cancelled; a cancellation takes a counted sale back; a repeated fact
    /// changes nothing.
    pub fn apply(mut self, fact: SaleFact) -> Result<(OrderSale, SaleChange), SalesError> {
        match fact {
            SaleFact::Reserved(lines) if self.lines.is_none() => self.lines = Some(lines),
            SaleFact::Shipped(at) if self.shipped_at.is_none() => self.shipped_at = Some(at),
            SaleFact::Cancelled if !self.cancelled => {
                self.cancelled = true;
                if let (true, Some(lines), Some(shipped_at)) = (self.counted, &self.lines, self.shipped_at) {
                    let per_sku = sale_per_sku(lines)?
                        .into_iter()
                        .map(|(sku, sale)| {
                            sale.negated().map(|taken| (sku.clone(), taken)).ok_or(SalesError::Overflow { sku })
                        })
                        .collect::<Result<_, _>>()?;
                    self.counted = false;
                    return Ok((self, SaleChange::Uncount { shipped_at, per_sku }));
                }
                return Ok((self, SaleChange::Nothing));
            }
            _ => return Ok((self, SaleChange::Nothing)),
        }
        match (&self.lines, self.shipped_at, self.cancelled || self.counted) {
            (Some(lines), Some(shipped_at), false) => {
                let per_sku = sale_per_sku(lines)?;
                self.counted = true;
                Ok((self, SaleChange::Count { shipped_at, per_sku }))
            }
            _ => Ok((self, SaleChange::Nothing)),
        }
    }
}

/// What closing one SKU's window does, given the sum of its counters and what was published of it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSettlement {
    /// Nothing was published yet: publish these totals (`SalesWindowClosed`).
    Close(SalesTotals),
    /// The counters changed since `revision` was published (an event later than the lateness): publish the change
    /// and the new totals as revision `revision + 1` (`SalesWindowCorrected`).
    Correct { revision: u64, delta: SalesTotals, totals: SalesTotals },
    /// The published totals are the counters' sum.
    Unchanged,
}

/// Settles one SKU's window: `counted` is the sum of its counter shards, `published` the totals and revision
/// published so far (`None` before it closed), `closed_empty` whether the window closed before anything of the
/// SKU was counted in it (its first sale came later than the lateness). Never a silent change: any difference
/// from what was published, or from the empty window that closed, is a correction.
pub fn settle_window(
    sku: &str,
    counted: SalesTotals,
    published: Option<(SalesTotals, u64)>,
    closed_empty: bool,
) -> Result<WindowSettlement, SalesError> {
    let (before, revision) = match published {
        Some(published) => published,
        None if closed_empty => (SalesTotals::default(), 0),
        None => return Ok(WindowSettlement::Close(counted)),
    };
    if before == counted {
        return Ok(WindowSettlement::Unchanged);
    }
    let overflow = || SalesError::Overflow { sku: sku.to_owned() };
    let delta = before.negated().and_then(|taken| counted.checked_add(taken)).ok_or_else(overflow)?;
    Ok(WindowSettlement::Correct { revision, delta, totals: counted })
}

/// The longest range `GET /analytics/sales` serves in one answer.
pub const MAX_SALES_RANGE: Duration = Duration::days(31);

/// A validated `GET /analytics/sales?sku=&from=&to=`: the closed windows of `sku` starting in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesQuery {
    pub sku: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl SalesQuery {
    /// Reads the query parameters; an error names the parameter. `from` and `to` are RFC 3339, `from < to`, and
    /// the range is at most [`MAX_SALES_RANGE`].
    pub fn parse(sku: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<SalesQuery, ValidationError> {
        let invalid = |field: &str, message: String| ValidationError { field: field.to_owned(), message };
        let sku = sku.ok_or_else(|| invalid("sku", "is required".into()))?;
        validate_sku(sku)?;
        let time = |field: &str, value: Option<&str>| {
            let value = value.ok_or_else(|| invalid(field, "is required".into()))?;
            OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                .map_err(|_| invalid(field, "must be an RFC 3339 time, e.g. 2026-11-24T10:00:00Z".into()))
        };
        let (from, to) = (time("from", from)?, time("to", to)?);
        if to <= from {
            return Err(invalid("to", "must be later than from".into()));
        }
        if to - from > MAX_SALES_RANGE {
            return Err(invalid("to", format!("must be at most {} days after from", MAX_SALES_RANGE.whole_days())));
        }
        Ok(SalesQuery { sku: sku.to_owned(), from, to })
    }
}

/// The counter shard of a window that an order's sale is written to: the order id spread over `shards` by a
/// stable hash (FNV-1a), so one hot SKU's writes go to several items and the same order always to the same one.
pub fn shard_of(order_id: &str, shards: u32) -> u32 {
    crate::stable_hash(order_id) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use time::UtcOffset;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn windows_are_aligned_tumbling_buckets() {
        assert_eq!(window_start(datetime!(2026-11-24 10:00:59 UTC), 60), datetime!(2026-11-24 10:00:00 UTC));
        assert_eq!(window_start(datetime!(2026-11-24 10:01:00 UTC), 60), datetime!(2026-11-24 10:01:00 UTC));
    }

    #[test]
    fn a_window_starts_in_utc_whatever_the_offset_of_its_event() {
        let start = window_start(datetime!(2026-11-24 12:00:59 +02:00), 60);
        assert_eq!((start, start.offset()), (datetime!(2026-11-24 10:00:00 UTC), UtcOffset::UTC));
    }

    #[test]
    fn the_window_of_the_earliest_time_is_clamped_to_it() {
        let earliest = PrimitiveDateTime::MIN.assume_utc();
        assert_ne!(earliest.unix_timestamp().rem_euclid(7), 0, "its window would start before it");
        assert_eq!(window_start(earliest, 7), earliest);
    }

    const SPEC: WindowSpec = WindowSpec { window_seconds: 60, allowed_lateness_seconds: 30 };

    fn line(sku: &str, quantity: u32, unit_price: &str) -> PricedLine {
        PricedLine { sku: sku.into(), quantity, unit_price: unit_price.parse().unwrap() }
    }

    #[test]
    fn a_window_is_the_half_open_minute_of_its_event() {
        assert_eq!(
            SPEC.window_of(datetime!(2026-11-24 10:00:59 UTC)),
            (datetime!(2026-11-24 10:00:00 UTC), datetime!(2026-11-24 10:01:00 UTC))
        );
    }

    #[test]
    fn a_window_closes_only_when_the_watermark_passes_its_end_plus_the_lateness() {
        let end = datetime!(2026-11-24 10:01:00 UTC);
        assert!(!SPEC.is_closed(end, datetime!(2026-11-24 10:01:29 UTC)));
        assert!(SPEC.is_closed(end, datetime!(2026-11-24 10:01:30 UTC)));
    }

    #[test]
    fn the_watermark_advances_by_the_clock_when_traffic_stops_and_never_goes_back() {
        let latest = datetime!(2026-11-24 10:00:10 UTC);
        assert_eq!(watermark(Some(latest), None, 5), Some(latest));
        assert_eq!(
            watermark(Some(latest), Some(datetime!(2026-11-24 10:05:00 UTC)), 5),
            Some(datetime!(2026-11-24 10:04:55 UTC))
        );
        assert_eq!(watermark(Some(latest), Some(datetime!(2026-11-24 10:00:12 UTC)), 5), Some(latest));
        assert_eq!(watermark(None, None, 5), None);
    }

    #[test]
    fn a_sale_sums_the_lines_of_each_sku_at_their_reserved_prices() {
        let sale = sale_per_sku(&[line("A", 2, "12.50"), line("B", 1, "3.00"), line("A", 1, "12.50")]).unwrap();
        assert_eq!(sale["A"], SalesTotals { units: 3, revenue: "37.50".parse().unwrap() });
        assert_eq!(sale["B"], SalesTotals { units: 1, revenue: "3.00".parse().unwrap() });
    }

    #[test]
    fn a_cancellation_nets_its_sale_out() {
        let sale = sale_per_sku(&[line("A", 2, "12.50")]).unwrap()["A"];
        assert_eq!(sale.checked_add(sale.negated().unwrap()), Some(SalesTotals::default()));
    }

    #[test]
    fn overflowing_revenue_is_a_failure_naming_the_sku() {
        let huge = PricedLine { sku: "A".into(), quantity: u32::MAX, unit_price: Decimal::MAX };
        assert_eq!(sale_per_sku(&[huge]), Err(SalesError::Overflow { sku: "A".into() }));
        let max = SalesTotals { units: i64::MAX, revenue: Decimal::ZERO };
        let one = SalesTotals { units: 1, revenue: Decimal::ZERO };
        assert_eq!(SalesTotals::sum([max, one], "A"), Err(SalesError::Overflow { sku: "A".into() }));
    }

    fn replay(facts: Vec<SaleFact>) -> Vec<SaleChange> {
        let mut sale = OrderSale::default();
        facts
            .into_iter()
            .map(|fact| {
                let (next, change) = sale.clone().apply(fact).unwrap();
                sale = next;
                change
            })
            .collect()
    }

    fn a_sale() -> BTreeMap<String, SalesTotals> {
        sale_per_sku(&[line("A", 2, "12.50")]).unwrap()
    }

    const SHIPPED: OffsetDateTime = datetime!(2026-11-24 10:00:30 UTC);

    #[test]
    fn a_sale_is_counted_once_its_prices_and_shipping_are_known_in_either_order() {
        let count = SaleChange::Count { shipped_at: SHIPPED, per_sku: a_sale() };
        let reserved = || SaleFact::Reserved(vec![line("A", 2, "12.50")]);
        assert_eq!(replay(vec![reserved(), SaleFact::Shipped(SHIPPED)]), [SaleChange::Nothing, count.clone()]);
        assert_eq!(replay(vec![SaleFact::Shipped(SHIPPED), reserved()]), [SaleChange::Nothing, count]);
    }

    #[test]
    fn repeated_facts_count_nothing_more() {
        let reserved = || SaleFact::Reserved(vec![line("A", 2, "12.50")]);
        let changes = replay(vec![reserved(), SaleFact::Shipped(SHIPPED), reserved(), SaleFact::Shipped(SHIPPED)]);
        assert_eq!(changes[2..], [SaleChange::Nothing, SaleChange::Nothing]);
    }

    #[test]
    fn a_cancellation_takes_a_counted_sale_back_from_its_window_once() {
        let reserved = SaleFact::Reserved(vec![line("A", 2, "12.50")]);
        let changes = replay(vec![reserved, SaleFact::Shipped(SHIPPED), SaleFact::Cancelled, SaleFact::Cancelled]);
        let taken_back: BTreeMap<String, SalesTotals> =
            a_sale().into_iter().map(|(sku, sale)| (sku, sale.negated().unwrap())).collect();
        assert_eq!(
            changes[2..],
            [SaleChange::Uncount { shipped_at: SHIPPED, per_sku: taken_back }, SaleChange::Nothing]
        );
    }

    #[test]
    fn an_order_cancelled_before_its_sale_is_complete_is_never_counted() {
        let reserved = SaleFact::Reserved(vec![line("A", 2, "12.50")]);
        let changes = replay(vec![SaleFact::Cancelled, reserved, SaleFact::Shipped(SHIPPED)]);
        assert_eq!(changes, [SaleChange::Nothing, SaleChange::Nothing, SaleChange::Nothing]);
    }

    #[test]
    fn a_sales_query_reads_its_sku_and_range_in_any_offset() {
        let query = SalesQuery::parse(Some("SKU-1"), Some("2026-11-24T10:00:00Z"), Some("2026-11-24T12:00:00+01:00"));
        let expected = SalesQuery {
            sku: "SKU-1".into(),
            from: datetime!(2026-11-24 10:00:00 UTC),
            to: datetime!(2026-11-24 11:00:00 UTC),
        };
        assert_eq!(query, Ok(expected));
    }

    #[test]
    fn a_bad_sales_query_names_the_parameter() {
        let field = |sku: Option<&str>, from: Option<&str>, to: Option<&str>| {
            SalesQuery::parse(sku, from, to).unwrap_err().field
        };
        let (from, to) = (Some("2026-11-24T10:00:00Z"), Some("2026-11-24T11:00:00Z"));
        assert_eq!(field(None, from, to), "sku");
        assert_eq!(field(Some("SKU 1"), from, to), "sku");
        assert_eq!(field(Some(&"S".repeat(129)), from, to), "sku");
        assert_eq!(field(Some("SKU-1"), None, to), "from");
        assert_eq!(field(Some("SKU-1"), Some("yesterday"), to), "from");
        assert_eq!(field(Some("SKU-1"), from, None), "to");
        assert_eq!(field(Some("SKU-1"), to, from), "to");
        assert_eq!(field(Some("SKU-1"), from, Some("2026-12-26T10:00:00Z")), "to");
        assert!(SalesQuery::parse(Some("SKU-1"), from, Some("2026-12-25T10:00:00Z")).is_ok(), "31 days is allowed");
    }

    #[test]
    fn shards_are_stable_and_spread_the_orders_of_one_sku() {
        assert_eq!(shard_of("o-1", 8), shard_of("o-1", 8));
        let used: std::collections::BTreeSet<u32> = (0..200).map(|i| shard_of(&format!("o-{i}"), 8)).collect();
        assert_eq!(used.len(), 8, "200 orders should reach all 8 shards: {used:?}");
        assert_eq!(shard_of("o-1", 0), 0);
    }

    fn totals(units: i64, revenue: &str) -> SalesTotals {
        SalesTotals { units, revenue: revenue.parse().unwrap() }
    }

    #[test]
    fn a_window_closes_with_its_counted_totals_once_and_then_only_changes_by_a_correction() {
        let counted = totals(3, "37.50");
        assert_eq!(settle_window("A", counted, None, false), Ok(WindowSettlement::Close(counted)));
        assert_eq!(settle_window("A", counted, Some((counted, 0)), false), Ok(WindowSettlement::Unchanged));
        assert_eq!(
            settle_window("A", totals(4, "50.00"), Some((counted, 0)), false),
            Ok(WindowSettlement::Correct { revision: 0, delta: totals(1, "12.50"), totals: totals(4, "50.00") })
        );
        assert_eq!(
            settle_window("A", totals(1, "12.50"), Some((counted, 2)), false),
            Ok(WindowSettlement::Correct { revision: 2, delta: totals(-2, "-25.00"), totals: totals(1, "12.50") })
        );
    }

    #[test]
    fn the_first_sale_of_a_window_that_closed_empty_is_a_correction_of_nothing() {
        assert_eq!(
            settle_window("A", totals(3, "37.50"), None, true),
            Ok(WindowSettlement::Correct { revision: 0, delta: totals(3, "37.50"), totals: totals(3, "37.50") })
        );
    }

    #[test]
    fn an_order_sale_survives_its_stored_json() {
        let sale = OrderSale {
            lines: Some(vec![line("A", 2, "12.50")]),
            shipped_at: Some(SHIPPED),
            cancelled: false,
            counted: true,
        };
        let stored = serde_json::to_string(&sale).unwrap();
        assert_eq!(serde_json::from_str::<OrderSale>(&stored).unwrap(), sale);
    }

    #[test]
    fn fraud_signal_fires_once_when_the_threshold_is_crossed() {
        let fired: Vec<u32> = (1..=10).filter(|&n| raises_fraud_signal(n, 5)).collect();
        assert_eq!(fired, [6]);
    }
}
