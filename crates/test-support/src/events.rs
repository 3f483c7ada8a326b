//! The events the rules deliver, built around [`Envelope`]: an EventBridge event per envelope, and SQS batches
//! whose bodies are such events, as an EventBridge rule with an SQS target puts them on the queue.

use aws_lambda_events::event::sqs::SqsEvent;
use orderflow_toolkit::{Envelope, Event};
use serde_json::{Value, json};
use uuid::Uuid;

/// The EventBridge event of `envelope` as a rule delivers it: `detail-type` and `source` of its type, the envelope
/// as `detail`, a new bus event id, and the envelope's `occurred_at` as the bus `time`.
pub fn bus_event<T: Event>(envelope: &Envelope<T>) -> Value {
    let detail = serde_json::to_value(envelope).unwrap_or_else(|error| panic!("envelope serialises: {error}"));
    json!({"version": "0", "id": Uuid::new_v4(), "detail-type": T::TYPE, "source": T::SOURCE,
           "account": "000000000000", "time": detail["occurred_at"], "region": "us-east-1", "resources": [],
           "detail": detail})
}

/// The SQS body a rule sends to a queue for `envelope`: its [`bus_event`] as JSON text.
pub fn bus_body<T: Event>(envelope: &Envelope<T>) -> String {
    bus_event(envelope).to_string()
}

/// An SQS batch with one record per body, in order, with message ids `m-0`, `m-1`, ...
pub fn sqs_batch(bodies: &[String]) -> SqsEvent {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(index, body)| json!({"messageId": format!("m-{index}"), "body": body, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap_or_else(|error| panic!("an SQS batch: {error}"))
}

#[cfg(test)]
mod tests {
    use orderflow_toolkit::Registry;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    struct Shipped {
        order_id: String,
    }
    impl Event for Shipped {
        const TYPE: &'static str = "Shipped";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "test.shipping";
    }

    #[test]
    fn a_bus_event_carries_the_envelope_as_its_detail_and_reads_back_through_the_registry() {
        let envelope = Envelope::new("o-1", Shipped { order_id: "o-1".into() });

        let event = bus_event(&envelope);

        assert_eq!((event["detail-type"].as_str(), event["source"].as_str()), (Some("Shipped"), Some("test.shipping")));
        assert_eq!(event["time"], event["detail"]["occurred_at"]);
        let read = Registry::new().register::<Shipped>().read_bus_event(&bus_body(&envelope)).unwrap();
        assert_eq!(read.decode::<Shipped>().unwrap(), envelope);
    }

    #[test]
    fn a_batch_has_one_record_per_body_in_order() {
        let batch = sqs_batch(&["a".to_owned(), "b".to_owned()]);

        let records: Vec<_> = batch.records.iter().map(|r| (r.message_id.as_deref(), r.body.as_deref())).collect();
        assert_eq!(records, [(Some("m-0"), Some("a")), (Some("m-1"), Some("b"))]);
    }
}
