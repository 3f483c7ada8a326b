//! The EventBridge adapter of the toolkit's [`EventBus`].

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use orderflow_toolkit::publish::{BusEntry, EventBus};

use crate::dynamo::describe;

/// Puts events on one EventBridge bus.
///
/// ```no_run
/// use orderflow_aws::{EventBridgeBus, load_sdk_config};
/// use orderflow_toolkit::publish::{BusEntry, RetryPolicy, publish_in_order};
///
/// # async fn example() {
/// let config = load_sdk_config().await;
/// let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), "orderflow-dev");
/// let entry = BusEntry {
///     partition: "o-1".into(),
///     source: "orderflow.orders".into(),
///     detail_type: "OrderPlaced".into(),
///     detail: r#"{"id": "...", "type": "OrderPlaced", "version": 1, "data": {}}"#.into(),
/// };
/// let report = publish_in_order(&bus, &[entry], RetryPolicy::default()).await;
/// assert_eq!(report.published, 1, "{:?}", report.failed);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        Self { client, bus_name: bus_name.into() }
    }
}

impl EventBus for EventBridgeBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
        let request_entries = entries
            .iter()
            .map(|entry| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(&entry.source)
                    .detail_type(&entry.detail_type)
                    .detail(&entry.detail)
                    .build()
            })
            .collect();
        let output =
            self.client.put_events().set_entries(Some(request_entries)).send().await.map_err(|e| describe(&e))?;
        Ok(output
            .entries()
            .iter()
            .map(|result| {
                result.error_code().map(|code| format!("{code}: {}", result.error_message().unwrap_or_default()))
            })
            .collect())
    }
}
