//! Queues by URL and name, and how many messages one holds.

use crate::error::DlqError;

/// A queue: its name and URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueRef {
    /// The queue name, e.g. `orderflow-dev-InventoryDlq`.
    pub name: String,
    /// The queue URL every SQS call takes.
    pub url: String,
}

impl QueueRef {
    /// The queue a URL names (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or an emulator's URL), without
    /// asking SQS whether it exists.
    pub fn from_url(url: &str) -> Result<QueueRef, DlqError> {
        let path = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(_authority, path)| path.trim_end_matches('/'));
        let name = path.rsplit('/').next().unwrap_or_default();
        if !is_queue_name(name) {
            return Err(DlqError::InvalidQueue(url.to_owned()));
        }
        Ok(QueueRef { name: name.to_owned(), url: url.to_owned() })
    }

    /// Whether it is a FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }

    /// Whether `other` is the same queue: the same name in the same account (the URL's path is
    /// `/<account>/<name>`; its host may be spelt differently).
    pub fn is_same_queue(&self, other: &QueueRef) -> bool {
        let account = |q: &QueueRef| q.url.trim_end_matches('/').rsplit('/').nth(1).map(str::to_owned);
        self.name == other.name && account(self) == account(other)
    }
}

/// Whether `name` is a valid SQS queue name: 1 to 80 letters, digits, `-` and `_`, with `.fifo` at the end of a
/// FIFO queue's name.
pub(crate) fn is_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty() && name.len() <= 80 && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether a queue's name says it is a dead-letter queue: it ends in `Dlq`, `DLQ`, `-dlq` or `_dlq` (before a
/// `.fifo`). An on-failure destination of Lambda (orderflow's `RelayDlq`) is a DLQ that no RedrivePolicy names, so
/// it is found by name.
pub fn has_dlq_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    base.ends_with("Dlq") || base.ends_with("DLQ") || lower.ends_with("-dlq") || lower.ends_with("_dlq")
}

/// How many messages a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// `ApproximateNumberOfMessages`: ready to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received by someone and not yet deleted or released.
    pub in_flight: u64,
}

impl Depth {
    /// Every message the queue holds: visible + in flight.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ref_from_url_takes_the_last_path_segment() {
        let queue = QueueRef::from_url("http://127.0.0.1:4566/123456789012/orderflow-dev-InventoryDlq").unwrap();
        assert_eq!(queue.name, "orderflow-dev-InventoryDlq");
        assert!(!queue.is_fifo());
        let fifo = QueueRef::from_url("https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq.fifo/").unwrap();
        assert_eq!(fifo.name, "orders-dlq.fifo");
        assert!(fifo.is_fifo());
        assert!(matches!(QueueRef::from_url("http://host/"), Err(DlqError::InvalidQueue(_))));
        assert!(matches!(QueueRef::from_url("ftp://host/q"), Err(DlqError::InvalidQueue(_))));
    }

    #[test]
    fn dlq_names() {
        for name in ["orderflow-dev-InventoryDlq", "orders-dlq", "orders_DLQ", "ordersDLQ", "orders-dlq.fifo"] {
            assert!(has_dlq_name(name), "{name}");
        }
        for name in ["orderflow-dev-InventoryQueue", "dlqs", "orderflow-dev-Dlqueue", "handle"] {
            assert!(!has_dlq_name(name), "{name}");
        }
    }

    #[test]
    fn queue_names() {
        assert!(is_queue_name("orderflow-dev-InventoryDlq"));
        assert!(is_queue_name("a.fifo"));
        assert!(!is_queue_name(".fifo"));
        assert!(!is_queue_name("has space"));
        assert!(!is_queue_name(&"q".repeat(81)));
    }
}
