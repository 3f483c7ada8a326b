//! Publishing events to a bus in order: batched, failed entries retried with backoff, never silently dropped.
//!
//! Order is kept per partition (an order's events): one `PutEvents` call never holds two entries of the same
//! partition, and publishing stops at the first entry that still fails after its retries, so nothing behind it
//! overtakes it. The caller (e.g. a stream handler) reports the rest as failed and gets them again.
//!
//! The bus is a port ([`EventBus`]); `orderflow-aws` has the EventBridge adapter (`EventBridgeBus`).
//!
//! ```
//! use std::sync::Mutex;
//! use std::time::Duration;
//! use orderflow_toolkit::publish::{BusEntry, EventBus, PublishReport, RetryPolicy, publish_in_order};
//!
//! /// Records every call; throttles the entry `e3` while `throttles` lasts.
//! #[derive(Default)]
//! struct TestBus { throttles: Mutex<u32>, calls: Mutex<Vec<Vec<String>>> }
//!
//! impl EventBus for TestBus {
//!     async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
//!         self.calls.lock().unwrap().push(entries.iter().map(|e| e.detail.clone()).collect());
//!         let mut throttles = self.throttles.lock().unwrap();
//!         Ok(entries.iter().map(|e| {
//!             let throttled = e.detail == "e3" && *throttles > 0;
//!             *throttles -= u32::from(throttled);
//!             throttled.then(|| "ThrottlingException".to_owned())
//!         }).collect())
//!     }
//! }
//!
//! let entries: Vec<BusEntry> = (0..12).map(|i| BusEntry {
//!     partition: format!("o-{i}"), source: "orderflow.orders".into(), detail_type: "OrderPlaced".into(),
//!     detail: format!("e{i}"),
//! }).collect();
//! let retry = RetryPolicy { first_backoff: Duration::from_millis(1), ..RetryPolicy::default() };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let bus = TestBus { throttles: Mutex::new(1), ..TestBus::default() };
//! let report = publish_in_order(&bus, &entries, retry).await;
//! assert_eq!(report, PublishReport { published: 12, failed: None });
//! // Ten entries per call; the retry sends only the entry that failed.
//! let calls = bus.calls.lock().unwrap().clone();
//! assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 1, 2]);
//! assert_eq!(calls[1], ["e3"]);
//!
//! // An entry that fails every attempt stops publishing there; the caller gets `e3` and the rest again.
//! let bus = TestBus { throttles: Mutex::new(u32::MAX), ..TestBus::default() };
//! let report = publish_in_order(&bus, &entries, retry).await;
//! assert_eq!(report, PublishReport { published: 3, failed: Some((3, "ThrottlingException".into())) });
//! # });
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use crate::OutboxRecord;

/// The most entries one `PutEvents` call takes.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// The most bytes one `PutEvents` call takes, its entries counted as [`entry_size`] does.
pub const MAX_BYTES_PER_CALL: usize = 256 * 1024;
/// The most bytes one entry may have: alone, it must fit one call.
pub const MAX_ENTRY_BYTES: usize = MAX_BYTES_PER_CALL;

/// The size EventBridge counts for a `PutEvents` entry of these parts: the UTF-8 bytes of its source, detail-type
/// and detail (a `Time` or `Resources` would count too; the entries made here have neither).
pub fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    source.len() + detail_type.len() + detail.len()
}

/// One event for the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    /// Entries of one partition keep their order.
    pub partition: String,
    pub source: String,
    pub detail_type: String,
    pub detail: String,
}

impl BusEntry {
    fn size(&self) -> usize {
        entry_size(&self.source, &self.detail_type, &self.detail)
    }
}

/// The bus entry of an outbox record, in its partition.
impl From<&OutboxRecord> for BusEntry {
    fn from(record: &OutboxRecord) -> Self {
        Self {
            partition: record.partition.clone(),
            source: record.source.clone(),
            detail_type: record.detail_type.clone(),
            detail: record.detail.clone(),
        }
    }
}

/// A bus that takes a batch of entries and answers, per entry, `None` (accepted) or the error.
pub trait EventBus: Send + Sync {
    fn put_events(&self, entries: &[BusEntry]) -> impl Future<Output = Result<Vec<Option<String>>, String>> + Send;
}

/// How often and how patiently to retry failed entries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, first_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(1) }
    }
}

/// How far publishing got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Entries `0..published` are on the bus.
    pub published: usize,
    /// The first entry that could not be published, with the last error; entries from it on are not published.
    pub failed: Option<(usize, String)>,
}

/// Publishes `entries` in order (see the module docs).
pub async fn publish_in_order<B: EventBus>(bus: &B, entries: &[BusEntry], retry: RetryPolicy) -> PublishReport {
    let mut next = 0;
    while next < entries.len() {
        let batch = next_batch(&entries[next..]);
        match put_with_retries(bus, batch, retry).await {
            Ok(()) => next += batch.len(),
            Err((offset, reason)) => {
                return PublishReport { published: next + offset, failed: Some((next + offset, reason)) };
            }
        }
    }
    PublishReport { published: entries.len(), failed: None }
}

/// The longest prefix that fits one call and has no partition twice.
fn next_batch(entries: &[BusEntry]) -> &[BusEntry] {
    let mut partitions = HashSet::new();
    let mut bytes = 0;
    let mut len = 0;
    for entry in entries.iter().take(MAX_ENTRIES_PER_CALL) {
        bytes += entry.size();
        if !partitions.insert(entry.partition.as_str()) || (len > 0 && bytes > MAX_BYTES_PER_CALL) {
            break;
        }
        len += 1;
    }
    &entries[..len.max(1)]
}

/// Puts one batch, retrying the entries that failed. On giving up, returns the offset of the first entry that is
/// not on the bus; entries after it in the batch are of other partitions, so publishing them did not reorder.
async fn put_with_retries<B: EventBus>(bus: &B, batch: &[BusEntry], retry: RetryPolicy) -> Result<(), (usize, String)> {
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut backoff = retry.first_backoff;
    let mut last_error = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        let entries: Vec<BusEntry> = pending.iter().map(|&i| batch[i].clone()).collect();
        match bus.put_events(&entries).await {
            Ok(results) if results.len() == entries.len() => {
                let failed: Vec<(usize, String)> =
                    pending.iter().zip(results).filter_map(|(&i, error)| error.map(|e| (i, e))).collect();
                if failed.is_empty() {
                    return Ok(());
                }
                last_error = failed[0].1.clone();
                pending = failed.into_iter().map(|(i, _)| i).collect();
            }
            Ok(results) => {
                last_error = format!("bus answered {} results for {} entries", results.len(), entries.len());
            }
            Err(error) => last_error = error,
        }
        if attempt < retry.attempts {
            tracing::warn!(attempt, pending = pending.len(), error = last_error, "retrying failed bus entries");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.max_backoff);
        }
    }
    Err((pending[0], last_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A bus that fails the entries whose detail is in `failing` for the first `fail_times` calls that carry them.
    #[derive(Default)]
    struct FlakyBus {
        failing: Vec<&'static str>,
        fail_times: Mutex<u32>,
        calls: Mutex<Vec<Vec<String>>>,
        accepted: Mutex<Vec<String>>,
    }

    impl EventBus for FlakyBus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            self.calls.lock().unwrap().push(entries.iter().map(|e| e.detail.clone()).collect());
            let mut fail_times = self.fail_times.lock().unwrap();
            let fail_now = *fail_times > 0 && entries.iter().any(|e| self.failing.contains(&e.detail.as_str()));
            if fail_now {
                *fail_times -= 1;
            }
            Ok(entries
                .iter()
                .map(|e| {
                    if fail_now && self.failing.contains(&e.detail.as_str()) {
                        Some("ThrottlingException".to_owned())
                    } else {
                        self.accepted.lock().unwrap().push(e.detail.clone());
                        None
                    }
                })
                .collect())
        }
    }

    fn entry(partition: &str, detail: &str) -> BusEntry {
        BusEntry { partition: partition.into(), source: "s".into(), detail_type: "T".into(), detail: detail.into() }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn batches_hold_at_most_ten_entries_and_one_per_partition() {
        let bus = FlakyBus::default();
        let mut entries: Vec<_> = (0..12).map(|i| entry(&format!("p{i}"), &format!("e{i}"))).collect();
        entries.insert(3, entry("p1", "p1-second"));
        let report = publish_in_order(&bus, &entries, quick()).await;
        assert_eq!(report, PublishReport { published: 13, failed: None });
        let sizes: Vec<usize> = bus.calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 10]);
    }

    #[tokio::test]
    async fn a_failed_entry_is_retried_until_accepted() {
        let bus = FlakyBus { failing: vec!["e1"], fail_times: Mutex::new(2), ..Default::default() };
        let entries = [entry("a", "e0"), entry("b", "e1"), entry("c", "e2")];
        let report = publish_in_order(&bus, &entries, quick()).await;
        assert_eq!(report.failed, None);
        assert_eq!(bus.calls.lock().unwrap()[1], ["e1"], "only the failed entry is sent again");
        assert_eq!(bus.accepted.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn publishing_stops_at_an_entry_that_keeps_failing() {
        let bus = FlakyBus { failing: vec!["a2"], fail_times: Mutex::new(100), ..Default::default() };
        let entries = [entry("a", "a1"), entry("a", "a2"), entry("a", "a3")];
        let report = publish_in_order(&bus, &entries, quick()).await;
        assert_eq!(report, PublishReport { published: 1, failed: Some((1, "ThrottlingException".into())) });
        assert_eq!(*bus.accepted.lock().unwrap(), ["a1"], "a3 must not overtake a2");
    }

    #[tokio::test]
    async fn an_oversized_batch_is_split_by_bytes() {
        let bus = FlakyBus::default();
        let big = "x".repeat(MAX_BYTES_PER_CALL / 2);
        let entries = [entry("a", &big), entry("b", &big), entry("c", &big)];
        publish_in_order(&bus, &entries, quick()).await;
        let sizes: Vec<usize> = bus.calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }
}
