//! The closer of the sales windows. Each run (one tick of its schedule):
//!
//! 1. The watermark: the latest event time analytics counted, or, when traffic stops, the clock minus
//!    `SALES_WATERMARK_DELAY_SECONDS` ([`watermark`]). A window `[start, end)` is due once the watermark reaches
//!    `end + SALES_ALLOWED_LATENESS_SECONDS`.
//! 2. The due SKU windows with amounts not yet published, from the sparse `OpenSales` index.
//! 3. Each one's counters (every shard, read consistently) are summed and settled against what was published
//!    ([`settle_window`]): the first time ONE `SalesWindowClosed`; after an event later than the lateness was
//!    counted, ONE `SalesWindowCorrected` with the change and the new totals; nothing when they agree. The
//!    published totals and the event are one transaction conditional on the revision read, and the event's id
//!    derives from SKU, window and revision, so runs that overlap or repeat publish each revision once.
//! 4. The counters it read leave the index, each only if unchanged: an amount counted meanwhile keeps it there,
//!    and the next run publishes it as a correction.
//!
//! One window's failure does not stop the others; the run then fails, and the next run tries again.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use orderflow_analytics_store::{OpenSales, PublishedWindow, WindowStore};
use orderflow_domain::analytics::{SalesTotals, WindowSettlement, WindowSpec, settle_window, watermark, window_start};
use orderflow_domain::events::{SalesWindowClosed, SalesWindowCorrected};
use orderflow_toolkit::{Envelope, Event, HandlerError, OutboxRecord};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The most SKU windows one run settles, so a run stays well within the function's timeout.
pub const MAX_WINDOWS_PER_RUN: usize = 500;

/// The windows and how late their events may be (`ANALYTICS_WINDOW_SECONDS`, `SALES_ALLOWED_LATENESS_SECONDS`,
/// `SALES_WATERMARK_DELAY_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub spec: WindowSpec,
    /// When no event arrives, the watermark follows the clock this far behind.
    pub watermark_delay_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { spec: WindowSpec { window_seconds: 60, allowed_lateness_seconds: 30 }, watermark_delay_seconds: 60 }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// SKU windows due with amounts not yet published.
    pub due: usize,
    /// Of those, closed (`SalesWindowClosed`).
    pub closed: usize,
    /// Of those, corrected (`SalesWindowCorrected`).
    pub corrected: usize,
    /// Of those, already published as counted, or published by an overlapping run.
    pub unchanged: usize,
    /// Of those, not settled (the run fails so that it is tried again).
    pub failed: usize,
}

/// What settling one SKU window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Closed,
    Corrected,
    Unchanged,
}

/// Closes the sales windows of an Analytics table.
#[derive(Debug, Clone)]
pub struct Closer<S> {
    store: S,
    config: Config,
}

impl<S: WindowStore> Closer<S> {
    pub fn new(store: S, config: Config) -> Self {
        Self { store, config }
    }

    /// One invocation: `event` is the schedule's tick, whose detail is not used.
    pub async fn handle(&self, event: EventBridgeEvent) -> Result<Summary, HandlerError> {
        tracing::info!(source = event.source, detail_type = event.detail_type, "closing sales windows");
        self.close(OffsetDateTime::now_utc()).await
    }

    /// Settles every SKU window due at `now`. `Err` when any of them failed, after trying them all.
    pub async fn close(&self, now: OffsetDateTime) -> Result<Summary, HandlerError> {
        let state = self.store.watermark().await?;
        let watermark = watermark(state.latest_event, Some(now), self.config.watermark_delay_seconds).unwrap_or(now);
        let spec = self.config.spec;
        let span = i64::from(spec.window_seconds) + i64::from(spec.allowed_lateness_seconds);
        // Whole seconds: window starts are, and the index compares them as text.
        let last_start = window_start(watermark.saturating_sub(Duration::seconds(span)), 1);
        let due = self.store.open_sales(last_start, MAX_WINDOWS_PER_RUN).await?;

        let mut summary = Summary { due: due.len(), ..Summary::default() };
        let mut failure: Option<HandlerError> = None;
        for open in &due {
            match self.settle(open, state.settled_through, now).await {
                Ok(Settled::Closed) => summary.closed += 1,
                Ok(Settled::Corrected) => summary.corrected += 1,
                Ok(Settled::Unchanged) => summary.unchanged += 1,
                Err(error) => {
                    summary.failed += 1;
                    tracing::warn!(sku = open.sku, window_start = %open.window_start, %error, "window not settled");
                    failure.get_or_insert(error);
                }
            }
        }
        let Summary { due: count, closed, corrected, unchanged, failed } = summary;
        tracing::info!(%watermark, due = count, closed, corrected, unchanged, failed, "sales windows settled");
        match failure {
            // A full run settled every window due: one counted into them from now on was late.
            None if count < MAX_WINDOWS_PER_RUN => {
                self.store.record_settled_through(last_start).await?;
                Ok(summary)
            }
            None => Ok(summary),
            Some(error) => Err(HandlerError::transient(format!(
                "{failed} of {count} sales windows failed, e.g. {}",
                error.reason()
            ))),
        }
    }

    async fn settle(
        &self,
        open: &OpenSales,
        settled_through: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Settled, HandlerError> {
        let OpenSales { sku, window_start } = open;
        let counted = self.store.counted(sku, *window_start).await?;
        let sum = SalesTotals::sum(counted.iter().map(|count| count.totals), sku).map_err(HandlerError::permanent)?;
        let published = self.store.published(sku, *window_start).await?;
        let (_, window_end) = self.config.spec.window_of(*window_start);
        let before = published.as_ref().map(|window| (window.totals, window.revision));
        let closed_empty = settled_through.is_some_and(|through| *window_start <= through);
        let settled = match settle_window(sku, sum, before, closed_empty).map_err(HandlerError::permanent)? {
            WindowSettlement::Close(totals) => {
                let window =
                    PublishedWindow { sku: sku.clone(), window_start: *window_start, window_end, totals, revision: 0 };
                let event = SalesWindowClosed {
                    sku: sku.clone(),
                    window_start: *window_start,
                    window_end,
                    units: totals.units,
                    revenue: totals.revenue,
                };
                self.publish(&window, None, event, now).await?
            }
            WindowSettlement::Correct { revision, delta, totals } => {
                let window = PublishedWindow {
                    sku: sku.clone(),
                    window_start: *window_start,
                    window_end,
                    totals,
                    revision: revision + 1,
                };
                let event = SalesWindowCorrected {
                    sku: sku.clone(),
                    window_start: *window_start,
                    window_end,
                    delta_units: delta.units,
                    delta_revenue: delta.revenue,
                    units: totals.units,
                    revenue: totals.revenue,
                };
                let previous_revision = published.is_some().then_some(revision);
                self.publish(&window, previous_revision, event, now).await?
            }
            WindowSettlement::Unchanged => Settled::Unchanged,
        };
        self.store.settle(sku, *window_start, &counted).await?;
        Ok(settled)
    }

    /// Publishes revision `window.revision` of a window with its event, unless an overlapping run did.
    async fn publish<T: Event>(
        &self,
        window: &PublishedWindow,
        previous_revision: Option<u64>,
        event: T,
        now: OffsetDateTime,
    ) -> Result<Settled, HandlerError> {
        let record = window_event(window, event, now);
        if !self.store.publish(window, previous_revision, &record).await? {
            tracing::info!(sku = window.sku, window_start = %window.window_start, "published by another run");
            return Ok(Settled::Unchanged);
        }
        tracing::info!(
            sku = window.sku,
            window_start = %window.window_start,
            revision = window.revision,
            units = window.totals.units,
            revenue = %window.totals.revenue,
            event = T::TYPE,
            "sales window published"
        );
        Ok(if window.revision == 0 { Settled::Closed } else { Settled::Corrected })
    }
}

/// The outbox record of a window's event. Its id derives from the SKU, window and revision, so it is one event
/// however often it is decided; its correlation id is the SKU's window, so a window's events keep their order.
fn window_event<T: Event>(window: &PublishedWindow, event: T, now: OffsetDateTime) -> OutboxRecord {
    let start = window.window_start.format(&Rfc3339).unwrap_or_else(|_| window.window_start.to_string());
    let correlation_id = format!("{}@{start}", window.sku);
    let mut envelope = Envelope::new(correlation_id.clone(), event);
    let name = format!("orderflow.analytics/{}/{correlation_id}/{}", T::TYPE, window.revision);
    envelope.id = Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes());
    envelope.occurred_at = now;
    OutboxRecord::new(&envelope)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use orderflow_analytics_store::{MemoryAnalytics, SaleWrite, SalesStore, WindowChange};
    use orderflow_aws::bus_function::handle_scheduled_invocation;
    use orderflow_domain::analytics::OrderSale;
    use orderflow_test_support::{Samples, envelopes};
    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;

    const SAMPLES: Samples = Samples::of("sales-windows");
    const SCHEDULED_EVENT: &str = "scheduled-event.json";

    const WINDOW: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);
    /// One-minute windows, 30 s of lateness; without events, the watermark is the clock a minute ago.
    const CONFIG: Config =
        Config { spec: WindowSpec { window_seconds: 60, allowed_lateness_seconds: 30 }, watermark_delay_seconds: 60 };

    fn totals(units: i64, revenue: &str) -> SalesTotals {
        SalesTotals { units, revenue: revenue.parse().unwrap() }
    }

    /// Counts a sale of order `order_id` into `window` as analytics does (one order, one shard).
    async fn count(store: &MemoryAnalytics, order_id: &str, shard: u32, sku: &str, sale: SalesTotals) {
        let change = WindowChange { window_start: WINDOW, shard, per_sku: BTreeMap::from([(sku.to_owned(), sale)]) };
        let write = SaleWrite {
            order_id: order_id.into(),
            sale: OrderSale { counted: true, ..OrderSale::default() },
            expected_revision: 0,
            change: Some(change),
        };
        store.write_sale(&write).await.unwrap();
    }

    fn data(store: &MemoryAnalytics) -> Vec<(String, Value)> {
        envelopes(&store.outbox()).into_iter().map(|raw| (raw.event_type, raw.data)).collect()
    }

    #[tokio::test]
    async fn a_window_closes_once_when_the_watermark_passes_its_end_plus_the_lateness() {
        // Given two orders of SKU-1 counted into two shards of the 10:00 window, the latest event at 10:01:10
        let store = MemoryAnalytics::default();
        count(&store, "o-1", 0, "SKU-1", totals(2, "25.00")).await;
        count(&store, "o-2", 5, "SKU-1", totals(1, "12.50")).await;
        store.advance_watermark(datetime!(2026-11-24 10:01:10 UTC)).await.unwrap();
        let closer = Closer::new(store.clone(), CONFIG);

        // When a run's watermark is before 10:01:30, nothing closes
        let early = closer.close(datetime!(2026-11-24 10:02:29 UTC)).await.unwrap();
        assert_eq!(early, Summary::default());
        assert!(store.outbox().is_empty());

        // Then the run whose clock watermark reaches 10:01:30 closes it, with the sum of both shards
        let summary = closer.close(datetime!(2026-11-24 10:02:30 UTC)).await.unwrap();
        assert_eq!(summary, Summary { due: 1, closed: 1, ..Summary::default() });
        let expected = json!({
            "sku": "SKU-1", "window_start": "2026-11-24T10:00:00Z", "window_end": "2026-11-24T10:01:00Z",
            "units": 3, "revenue": "37.50"
        });
        assert_eq!(data(&store), [("SalesWindowClosed".to_owned(), expected)]);

        // And later runs publish nothing more
        assert_eq!(closer.close(datetime!(2026-11-24 10:05:00 UTC)).await.unwrap(), Summary::default());
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn an_event_counted_after_the_close_is_published_as_a_correction_never_a_silent_change() {
        // Given a closed window
        let store = MemoryAnalytics::default();
        count(&store, "o-1", 0, "SKU-1", totals(2, "25.00")).await;
        let closer = Closer::new(store.clone(), CONFIG);
        closer.close(datetime!(2026-11-24 10:03:00 UTC)).await.unwrap();

        // When a late sale is counted into it, and a cancellation takes an earlier one back
        count(&store, "o-late", 3, "SKU-1", totals(1, "12.50")).await;
        let summary = closer.close(datetime!(2026-11-24 10:04:00 UTC)).await.unwrap();

        // Then one correction carries the change and the new totals, and the served window shows them
        assert_eq!(summary, Summary { due: 1, corrected: 1, ..Summary::default() });
        let corrected = json!({
            "sku": "SKU-1", "window_start": "2026-11-24T10:00:00Z", "window_end": "2026-11-24T10:01:00Z",
            "delta_units": 1, "delta_revenue": "12.50", "units": 3, "revenue": "37.50"
        });
        assert_eq!(data(&store)[1], ("SalesWindowCorrected".to_owned(), corrected));
        let served = store.closed_windows("SKU-1", WINDOW, datetime!(2026-11-24 11:00 UTC)).await.unwrap();
        assert_eq!((served[0].totals, served[0].revision), (totals(3, "37.50"), 1));
        assert_eq!(closer.close(datetime!(2026-11-24 10:05:00 UTC)).await.unwrap(), Summary::default());
    }

    #[tokio::test]
    async fn the_first_sale_of_a_window_that_closed_empty_is_published_as_a_correction() {
        // Given a run that settled the 10:00 window while nothing of SKU-1 was counted in it
        let store = MemoryAnalytics::default();
        let closer = Closer::new(store.clone(), CONFIG);
        closer.close(datetime!(2026-11-24 10:03:00 UTC)).await.unwrap();

        // When a sale of SKU-1 in that window is counted after it
        count(&store, "o-late", 2, "SKU-1", totals(3, "37.50")).await;
        let summary = closer.close(datetime!(2026-11-24 10:04:00 UTC)).await.unwrap();

        // Then it is a correction of the empty window, and no SalesWindowClosed follows it
        assert_eq!(summary, Summary { due: 1, corrected: 1, ..Summary::default() });
        let (event_type, data) = &data(&store)[0];
        assert_eq!(event_type, "SalesWindowCorrected");
        assert_eq!((&data["delta_units"], &data["units"], &data["revenue"]), (&json!(3), &json!(3), &json!("37.50")));
        assert_eq!(store.outbox().len(), 1);
    }

    #[tokio::test]
    async fn each_revision_has_one_event_id_however_often_it_is_decided() {
        let window = PublishedWindow {
            sku: "SKU-1".into(),
            window_start: WINDOW,
            window_end: datetime!(2026-11-24 10:01 UTC),
            totals: totals(1, "1.00"),
            revision: 0,
        };
        let event = || SalesWindowClosed {
            sku: "SKU-1".into(),
            window_start: WINDOW,
            window_end: window.window_end,
            units: 1,
            revenue: "1.00".parse().unwrap(),
        };
        let first = window_event(&window, event(), datetime!(2026-11-24 10:02 UTC));
        let again = window_event(&window, event(), datetime!(2026-11-24 10:03 UTC));
        assert_eq!(first.event_id, again.event_id);
        assert_eq!(first.partition, "SKU-1@2026-11-24T10:00:00Z");
        let corrected = window_event(&PublishedWindow { revision: 1, ..window.clone() }, event(), WINDOW);
        assert_ne!(first.event_id, corrected.event_id);
    }

    #[tokio::test]
    async fn a_failed_publish_fails_the_run_and_the_next_run_closes_the_window() {
        let store = MemoryAnalytics::default();
        count(&store, "o-1", 0, "SKU-1", totals(2, "25.00")).await;
        let closer = Closer::new(store.clone(), CONFIG);
        store.fail_next(1);

        let error = closer.close(datetime!(2026-11-24 10:03:00 UTC)).await.unwrap_err();
        assert_eq!(error.class(), "Transient");
        assert!(store.outbox().is_empty());

        let summary = closer.close(datetime!(2026-11-24 10:03:30 UTC)).await.unwrap();
        assert_eq!(summary.closed, 1);
    }

    #[tokio::test]
    async fn the_scheduled_tick_runs_one_close_and_answers_its_summary() {
        let closer = Closer::new(MemoryAnalytics::default(), CONFIG);
        let tick: Value = SAMPLES.event(SCHEDULED_EVENT);

        let response = handle_scheduled_invocation(tick, &|event| closer.handle(event)).await.unwrap();

        assert_eq!(response, Summary::default());
    }
}
