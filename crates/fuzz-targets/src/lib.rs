//! The fuzz targets of orderflow: one function per target, each taking any bytes and driving the real parsing
//! code a function runs on what arrives from outside. None of them may panic, overflow or allocate without bound
//! on any input; a parser that refuses an input with an `Err` is doing its job.
//!
//! - [`envelope_registry`]: an EventBridge event (the event a rule invokes a function with, or the body of an SQS
//!   message a rule fed) read through the domain's [`registry`](orderflow_domain::events::registry) and decoded
//!   as the type it names.
//! - [`sqs_record`]: an SQS event (`aws_lambda_events` `SqsEvent`, or one `SqsMessage`) through the toolkit's
//!   [`SqsBatchProcessor`] (standard and FIFO), each record's body read as the SQS consumers read it.
//! - [`stream_image`]: a DynamoDB Streams event (or one record) through the toolkit's
//!   [`DynamoDbStreamProcessor`], each image decoded as the stream consumers decode it (the outbox relay's bus
//!   entry, order-views' event item key), and a relayed entry read back through the registry.
//! - [`http_request`]: an HTTP API request (an API Gateway v2 event, or a bare body) answered by the orders API
//!   (`orders_api::handler::Api` over memory stores: never a 5xx, always a JSON error naming what is wrong), and its
//!   body parsed as `PlaceOrder` and `Restock` and validated as the domain does, with `validate_sku` and
//!   `validate_customer_id`; a valid order is merged and priced against the dearest valid catalogue, which must
//!   not overflow.
//!
//! `fuzz/` runs them under libFuzzer (`cargo xtask fuzz`); `tests/corpus_replay.rs` replays the corpus and every
//! crash found through them in `cargo xtask test`. Besides "no panic", the targets check a few properties whose
//! failure is a bug just as a panic is (they `assert!`): what the registry accepts is at the current version of
//! its type and reads back unchanged once re-published, a batch reports only records it was given, and a valid
//! order never overflows.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use futures::executor::block_on;
use orderflow_analytics_store::memory::MemoryAnalytics;
use orderflow_aws::outbox::attributes;
use orderflow_domain::events::{
    FraudSuspected, InventoryRejected, InventoryReleaseRequested, InventoryReleased, InventoryReserved, OrderAdopted,
    OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, OrderShipped, PaymentAuthorized, PaymentDeclined,
    PaymentRequested, PaymentVoided, SalesWindowClosed, SalesWindowCorrected, ShipmentCancelled, ShipmentScheduled,
};
use orderflow_domain::inventory::{
    MAX_AVAILABLE, MAX_PRICE, Reservation, Restock, Stock, merge_lines, reserve, validate_sku,
};
use orderflow_domain::order::{Deadlines, PlaceOrder, validate_customer_id};
use orderflow_envelope::{Envelope, EnvelopeError, Event, RawEnvelope, Registry};
use orderflow_inventory_store::memory::MemoryInventory;
use orderflow_order_views::memory::InMemoryViews;
use orderflow_orders_store::EVENT_SK_PREFIX;
use orderflow_orders_store::InMemoryOrders;
use orderflow_toolkit::publish::BusEntry;
use orderflow_toolkit::stream::{RecordFailure, keys, new_image, old_image};
use orderflow_toolkit::{DynamoDbStreamProcessor, HandlerError, MemoryDeadLetters, SqsBatchProcessor, SqsRecord};
use orders_api::handler::Api;
use outbox_relay::handler::bus_entry;
use serde::Deserialize;
use serde_json::{Value, json};

/// The registry every orderflow consumer reads with, built once.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(orderflow_domain::events::registry)
}

// ---------------------------------------------------------------------------------------------------------------
// Envelope / registry read
// ---------------------------------------------------------------------------------------------------------------

/// An EventBridge event, as a rule delivers it or as the body of an SQS message, read through the registry: as a
/// string (`read_bus_event`, what the SQS consumers call) and as parsed JSON (`read_bus_value`, what a function a
/// rule invokes directly calls). Both must agree.
pub fn envelope_registry(data: &[u8]) {
    let from_str = std::str::from_utf8(data).ok().map(|body| registry().read_bus_event(body));
    let from_value = serde_json::from_slice::<Value>(data).ok().map(|event| registry().read_bus_value(event));
    if let (Some(Ok(a)), Some(Ok(b))) = (&from_str, &from_value) {
        // A legacy body without a UUID event id gets a v5 UUID of it: deterministic, so equal too.
        assert_eq!(a, b, "read_bus_event and read_bus_value read one event differently");
    }
    for raw in [from_str, from_value].into_iter().flatten().flatten() {
        check_read_envelope(&raw);
    }
}

/// What the registry accepted: at the current version of its type, and decoded as that type (as a consumer does)
/// it reads back unchanged once re-published with its type as detail-type.
fn check_read_envelope(raw: &RawEnvelope) {
    macro_rules! by_type {
        ($($ty:ty),* $(,)?) => {
            match raw.event_type.as_str() {
                $(<$ty as Event>::TYPE => decode_and_republish::<$ty>(raw),)*
                other => panic!("the registry accepted {other:?}, which is no event type of the domain"),
            }
        };
    }
    by_type!(
        OrderPlaced,
        OrderAdopted,
        InventoryReserved,
        InventoryRejected,
        PaymentRequested,
        PaymentAuthorized,
        PaymentDeclined,
        InventoryReleaseRequested,
        InventoryReleased,
        OrderConfirmed,
        ShipmentScheduled,
        OrderShipped,
        OrderRejected,
        OrderCancelled,
        PaymentVoided,
        ShipmentCancelled,
        FraudSuspected,
        SalesWindowClosed,
        SalesWindowCorrected,
    );
}

fn decode_and_republish<T: Event + PartialEq + std::fmt::Debug>(raw: &RawEnvelope) {
    assert_eq!(raw.version, T::VERSION, "the registry returned {} at a version that is not current", T::TYPE);
    let envelope: Envelope<T> = match raw.decode() {
        Ok(envelope) => envelope,
        Err(EnvelopeError::InvalidData { .. }) => return,
        Err(other) => panic!("an envelope the registry read does not decode as its own type: {other}"),
    };
    let detail = serde_json::to_value(&envelope).expect("a decoded envelope serialises");
    let body = json!({"id": "fuzz", "source": T::SOURCE, "detail-type": T::TYPE, "detail": detail}).to_string();
    let again = registry()
        .read_bus_event(&body)
        .unwrap_or_else(|e| panic!("a re-published {} does not read back: {e}\n{body}", T::TYPE));
    let again: Envelope<T> =
        again.decode().unwrap_or_else(|e| panic!("a re-published {} does not decode: {e}\n{body}", T::TYPE));
    assert_eq!(again, envelope, "a re-published {} reads back changed", T::TYPE);
}

// ---------------------------------------------------------------------------------------------------------------
// SQS record parse
// ---------------------------------------------------------------------------------------------------------------

/// An SQS event as Lambda delivers it to a queue consumer (or one message of it), processed by the toolkit's batch
/// processor, standard and FIFO, with a handler that reads each body as the consumers do: through the registry,
/// then decoded as the type it names, plus the typed parse step [`SqsRecord::json`].
pub fn sqs_record(data: &[u8]) {
    let event = match serde_json::from_slice::<SqsEvent>(data) {
        Ok(event) => event,
        Err(_) => match serde_json::from_slice::<SqsMessage>(data) {
            Ok(message) => {
                let mut event = SqsEvent::default();
                event.records.push(message);
                event
            }
            Err(_) => return,
        },
    };
    let message_ids: BTreeSet<String> = event.records.iter().filter_map(|m| m.message_id.clone()).collect();
    // Any count parses, "0" included (SQS never sends it, and the backoff reads it as 1): no property to check.
    for message in &event.records {
        let _ = orderflow_toolkit::batch::receive_count(message);
    }
    for fifo in [false, true] {
        let dead_letters = MemoryDeadLetters::default();
        let processor = SqsBatchProcessor::new(dead_letters.clone()).with_concurrency(4);
        let processor = if fifo { processor.fifo() } else { processor };
        let Ok(outcome) = block_on(processor.process_with_retry_hints(event.clone(), consume_sqs_record)) else {
            continue; // A record without a messageId fails the whole batch: an Err, not a panic.
        };
        let failed = &outcome.response.batch_item_failures;
        for failure in failed {
            assert!(message_ids.contains(&failure.item_identifier), "reported a record it was not given");
        }
        assert!(failed.len() + dead_letters.letters().len() <= event.records.len(), "more outcomes than records");
    }
}

/// What every SQS consumer does first with a record: read the body as a bus event and decode its type.
async fn consume_sqs_record(record: SqsRecord) -> Result<(), HandlerError> {
    let _ = record.json::<Value>();
    let raw = registry().read_bus_event(&record.body)?;
    check_read_envelope(&raw);
    // A body the consumers accept stays accepted: some fail transiently, which the processor must report.
    if record.receive_count.is_multiple_of(2) { Err(HandlerError::transient("fuzz: later")) } else { Ok(()) }
}

// ---------------------------------------------------------------------------------------------------------------
// Stream image decode
// ---------------------------------------------------------------------------------------------------------------

/// The key of an item of the event store, as order-views reads it (`keys`).
#[derive(Debug, Deserialize)]
struct ItemKey {
    sk: String,
}

/// What order-views reads of an event item's new image: whose event it is.
#[derive(Debug, Deserialize)]
struct EventItem {
    #[allow(dead_code)]
    order_id: String,
}

/// The outbox attributes the relay reads from a new image.
const OUTBOX_ATTRIBUTES: [&str; 3] = [attributes::SOURCE, attributes::DETAIL_TYPE, attributes::DETAIL];

/// A DynamoDB Streams event (or one record) through the toolkit's stream processor, with a handler that decodes
/// each record as the stream consumers do: order-views' key and event item (`keys`, `new_image`), the outbox
/// relay's bus entry from the new image, whose detail is then read as a consumer of the bus reads it; plus the
/// old image.
pub fn stream_image(data: &[u8]) {
    let event = match serde_json::from_slice::<StreamEvent>(data) {
        Ok(event) => event,
        Err(_) => match serde_json::from_slice::<EventRecord>(data) {
            Ok(record) => {
                let mut event = StreamEvent::default();
                event.records.push(record);
                event
            }
            Err(_) => return,
        },
    };
    let sequence_numbers: BTreeSet<String> =
        event.records.iter().filter_map(|r| r.change.sequence_number.clone()).collect();
    let dead_letters = MemoryDeadLetters::default();
    let processor = DynamoDbStreamProcessor::new(dead_letters.clone());
    let Ok(response) = block_on(processor.process_batch(event.clone(), async |records| decode_records(records))) else {
        return; // A record without a SequenceNumber fails the whole batch: an Err, not a panic.
    };
    for failure in &response.batch_item_failures {
        let sequence_number = failure.item_identifier.as_deref().expect("a failure names its record");
        assert!(sequence_numbers.contains(sequence_number), "reported a record it was not given");
    }
    assert!(dead_letters.letters().len() <= event.records.len(), "more dead letters than records");
}

fn decode_records(records: &[EventRecord]) -> Vec<RecordFailure> {
    let mut failures = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let _ = old_image::<Value>(record);
        if record.event_name != "INSERT" {
            continue;
        }
        // order-views: the event items name the orders to project.
        let order = match keys::<ItemKey>(record) {
            Ok(key) if !key.sk.starts_with(EVENT_SK_PREFIX) => Ok(()),
            Ok(_) => new_image::<EventItem>(record).map(drop),
            Err(error) => Err(error),
        };
        if let Err(error) = order {
            failures.push(RecordFailure { index, error });
            continue;
        }
        // The outbox relay: an image with any outbox attribute is an event to publish.
        if OUTBOX_ATTRIBUTES.iter().any(|name| record.change.new_image.contains_key(*name)) {
            match bus_entry(&record.change) {
                Ok(entry) => read_relayed(&entry),
                Err(reason) => failures.push(RecordFailure { index, error: HandlerError::permanent(reason) }),
            }
        }
    }
    failures
}

/// A relayed entry as EventBridge delivers it, read by a consumer through the registry.
fn read_relayed(entry: &BusEntry) {
    let Ok(detail) = serde_json::from_str::<Value>(&entry.detail) else {
        panic!("the relay published a detail that is not JSON");
    };
    let event = json!({"id": "fuzz", "source": entry.source, "detail-type": entry.detail_type,
                       "time": "2026-01-01T00:00:00Z", "detail": detail});
    if let Ok(raw) = registry().read_bus_value(event) {
        check_read_envelope(&raw);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP request parse and validation
// ---------------------------------------------------------------------------------------------------------------

/// An HTTP API request: an API Gateway v2 event as Lambda delivers it (its body, its path parameters and the `sub`
/// claim of its JWT authorizer), or a bare body. An event is answered by the orders API ([`check_answer`]); the
/// body is parsed and validated as `POST /orders` (`PlaceOrder`) and `PUT /inventory/{sku}` (`Restock`) bodies
/// are; the bytes as text are also checked as a SKU and as a customer id (a token's subject).
pub fn http_request(data: &[u8]) {
    match serde_json::from_slice::<ApiGatewayV2httpRequest>(data) {
        Ok(request) => {
            for value in request.path_parameters.values() {
                check_identifiers(value);
            }
            // The customer is the token's subject, as the JWT authorizer passes its claims on.
            let claims = request.request_context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims);
            if let Some(subject) = claims.and_then(|claims| claims.get("sub")) {
                check_identifiers(subject);
            }
            if let Some(body) = request.body.as_deref().filter(|_| !request.is_base64_encoded) {
                check_body(body.as_bytes());
            }
        }
        Err(_) => check_body(data),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_identifiers(text);
        if let Ok(event) = serde_json::from_str::<ApiGatewayV2httpRequest>(text)
            && has_a_url(&event)
            && let Ok(request) = lambda_http::request::from_str(text)
        {
            check_answer(request);
        }
    }
}

/// Whether the URL lambda_http 1.3 builds of the request (`<x-forwarded-proto>://<host><raw path>`) parses: it
/// unwraps that parse (`build_request_uri`), a panic before any code of ours runs. API Gateway sets the host and
/// `x-forwarded-proto` itself (its own domain, `https`), and the local gateway refuses a Host that is not a URL's
/// host and sets `x-forwarded-proto`, so only a hand-made event reaches it; fuzz/artifacts/http_request keeps one.
fn has_a_url(event: &ApiGatewayV2httpRequest) -> bool {
    let header = |name: &str| event.headers.get(name).and_then(|value| value.to_str().ok());
    let host = header("host").or(event.request_context.domain_name.as_deref());
    let scheme = header("x-forwarded-proto").unwrap_or("https");
    let path = event.raw_path.as_deref().unwrap_or_default();
    host.is_none_or(|host| url::Url::parse(&format!("{scheme}://{host}{path}")).is_ok())
        && url::Url::parse(&format!("http://localhost{path}")).is_ok()
}

/// The request through the orders API as the Lambda runs it, over empty memory stores (which never fail): every
/// answer is JSON, never a 5xx, and a 4xx is an error naming what is wrong.
fn check_answer(request: lambda_http::Request) {
    let deadlines = Deadlines::from_seconds(60).expect("60 s is a valid deadline");
    let api = Api::new(
        InMemoryOrders::new(deadlines),
        InMemoryViews::default(),
        MemoryInventory::default(),
        MemoryAnalytics::default(),
        "USD",
    );
    let response = block_on(api.handle(request));
    let status = response.status();
    assert!(!status.is_server_error(), "the API answered {status} though its stores did not fail");
    let body: Value = serde_json::from_slice(response.body()).expect("every answer is JSON");
    if status.is_client_error() {
        assert!(body["error"].is_string() && body["message"].is_string(), "a {status} without its error: {body}");
    }
}

fn check_identifiers(text: &str) {
    if validate_sku(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= 128 && text.is_ascii(), "a SKU out of bounds was valid");
    }
    if validate_customer_id(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= 128, "a customer id out of bounds was valid");
    }
}

fn check_body(body: &[u8]) {
    if let Ok(order) = serde_json::from_slice::<PlaceOrder>(body)
        && order.validate().is_ok()
    {
        check_valid_order(&order);
    }
    if let Ok(restock) = serde_json::from_slice::<Restock>(body)
        && restock.validate().is_ok()
    {
        assert!(restock.available <= MAX_AVAILABLE && restock.price <= MAX_PRICE, "a restock out of bounds was valid");
    }
}

/// A valid order merges and prices without overflow, even at the highest price and stock a restock allows.
fn check_valid_order(order: &PlaceOrder) {
    let merged = merge_lines(&order.lines).expect("the lines of a valid order merge without overflow");
    let catalogue: Vec<Stock> = merged
        .iter()
        .map(|line| Stock {
            sku: line.sku.clone(),
            available: MAX_AVAILABLE,
            reserved: 0,
            shipped: 0,
            price: MAX_PRICE,
        })
        .collect();
    let find = |sku: &str| catalogue.iter().find(|stock| stock.sku == sku);
    match reserve(&merged, find).expect("a valid order at the highest prices does not overflow") {
        Reservation::Reserve { lines, .. } => assert_eq!(lines.len(), merged.len(), "a line was not priced"),
        Reservation::Reject { .. } => panic!("a valid order was refused by a catalogue holding enough of everything"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: &str) -> Vec<u8> {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events").join(path);
        std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// The targets reach the code under test on real samples, not only its first parse.
    #[test]
    fn real_samples_get_through_every_parse_step() {
        let shipped = sample("notifications/order-shipped.json");
        let raw = registry().read_bus_event(std::str::from_utf8(&shipped).unwrap()).unwrap();
        assert_eq!(raw.decode::<OrderShipped>().unwrap().data.shipment_id, "s-9");
        envelope_registry(&shipped);

        let sqs: SqsEvent = serde_json::from_slice(&sample("inventory/order-placed.json")).unwrap();
        let body = sqs.records[0].body.as_deref().unwrap();
        assert!(registry().read_bus_event(body).unwrap().decode::<OrderPlaced>().is_ok());
        sqs_record(&sample("inventory/order-placed.json"));

        let stream: StreamEvent = serde_json::from_slice(&sample("outbox-relay/insert-event-store.json")).unwrap();
        let entry = bus_entry(&stream.records[0].change).unwrap();
        assert_eq!((entry.source.as_str(), entry.detail_type.as_str()), ("orderflow.orders", "OrderPlaced"));
        assert!(decode_records(&stream.records).is_empty(), "the sample's records all decode");
        stream_image(&sample("outbox-relay/insert-event-store.json"));

        let request: ApiGatewayV2httpRequest =
            serde_json::from_slice(&sample("orders-api/put-inventory.json")).unwrap();
        assert_eq!(request.path_parameters.get("sku").map(|sku| validate_sku(sku)), Some(Ok(())));
        let restock: Restock = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(restock.validate(), Ok(()));
        http_request(&sample("orders-api/put-inventory.json"));
        // DESIGN.md's `POST /orders` body (the customer is the caller, not in the body).
        let body = br#"{"lines": [{"sku": "SKU-1", "quantity": 2}]}"#;
        assert_eq!(serde_json::from_slice::<PlaceOrder>(body).unwrap().validate(), Ok(()));
        http_request(body);
    }

    #[test]
    fn garbage_and_edge_cases_are_refused_without_a_panic() {
        let inputs: [&[u8]; 9] = [
            b"",
            b"\xff\xfe",
            b"{\"Records\": [{}]}",
            b"{\"Records\": [{\"messageId\": \"m\", \"body\": \"{}\"}]}",
            b"{\"Records\": [{\"eventName\": \"INSERT\", \"dynamodb\": {\"SequenceNumber\": \"1\", \"NewImage\": {\"detail\": {\"S\": \"{}\"}}}}]}",
            b"{\"lines\": [{\"sku\": \"SKU-1\", \"quantity\": 4294967295}]}",
            b"{\"available\": 4294967295, \"price\": \"79228162514264337593543950335\"}",
            b"{\"detail-type\": \"OrderCreated\", \"id\": \"x\", \"time\": \"2026-01-01T00:00:00Z\", \"detail\": {\"type\": \"OrderCreated\", \"data\": {\"order_id\": 1e400}}}",
            b"{\"detail-type\": \"OrderPlaced\", \"detail\": {\"type\": \"OrderPlaced\", \"version\": 4294967295}}",
        ];
        for input in inputs {
            envelope_registry(input);
            sqs_record(input);
            stream_image(input);
            http_request(input);
        }
    }
}
