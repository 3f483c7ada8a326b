//! Every sample event in `events/<function>/` validates against the committed schema of its type and version in
//! `events/schemas/`, and every sample made to be refused is refused by it: the samples the functions' tests
//! feed their handlers are the public contract's own examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orderflow_domain::events::LEGACY_ORDER_CREATED;
use serde_json::Value;

/// The samples made to be refused, relative to `events/`, each with why.
const REFUSED_SAMPLES: [(&str, &str); 7] = [
    ("analytics/malformed.json", "a quantity is a string and customer_id is missing"),
    ("inventory/malformed.json", "the body is cut off: not JSON"),
    ("notifications/unknown-type.json", "OrderTeleported has no schema"),
    ("order-saga/unknown-type.json", "OrderTeleported has no schema"),
    ("outbox-relay/insert-malformed.json", "an outbox row without its detail"),
    ("payment/unknown-version.json", "PaymentRequested has no version 2"),
    ("shipping/malformed.json", "total is missing"),
];

/// The schemas the samples exercise: each must validate at least one sample event, so the test cannot pass by
/// finding no event at all.
const SAMPLED_SCHEMAS: [&str; 13] = [
    "InventoryReleaseRequested.v1.json",
    "InventoryReserved.v1.json",
    "OrderCancelled.v1.json",
    "OrderConfirmed.v1.json",
    "OrderPlaced.v0.json",
    "OrderPlaced.v1.json",
    "OrderPlaced.v2.json",
    "OrderShipped.v1.json",
    "PaymentAuthorized.v1.json",
    "PaymentDeclined.v1.json",
    "PaymentRequested.v1.json",
    "SalesWindowClosed.v1.json",
    "ShipmentScheduled.v1.json",
];

/// An event found in a sample: where in the sample it is, and the schema file to check it against with the value
/// that file describes, or why it cannot be checked.
struct Found {
    at: String,
    event: Result<(String, Value), String>,
}

impl Found {
    fn unreadable(at: String, why: impl Into<String>) -> Self {
        Self { at, event: Err(why.into()) }
    }
}

/// The events in a sample: an EventBridge event, or the records of an SQS or DynamoDB Streams batch. An HTTP
/// request (the orders API's samples) holds none.
fn events_in(sample: &Value) -> Vec<Found> {
    match sample.get("Records").and_then(Value::as_array) {
        Some(records) => records
            .iter()
            .enumerate()
            .flat_map(|(i, record)| events_in_record(format!("Records[{i}]"), record))
            .collect(),
        None if sample.get("detail-type").is_some() => bus_event(String::new(), sample).into_iter().collect(),
        None => Vec::new(),
    }
}

fn events_in_record(at: String, record: &Value) -> Option<Found> {
    if let Some(body) = record.get("body").and_then(Value::as_str) {
        let at = format!("{at}.body");
        let body: Value = match serde_json::from_str(body) {
            Ok(body) => body,
            Err(e) => return Some(Found::unreadable(at, format!("not JSON: {e}"))),
        };
        // A Lambda destination record (a failed async invoke) carries the bus event it was invoked with.
        return match body.get("requestPayload") {
            Some(payload) => bus_event(format!("{at}.requestPayload"), payload),
            None => bus_event(at, &body),
        };
    }
    // An outbox row's stream record: the row's `detail` attribute is the envelope; a REMOVE has no new image, and
    // an item with none of the event attributes (an order's head, an idempotency record) is no event, as the relay
    // reads it.
    let image = record.pointer("/dynamodb/NewImage")?;
    if ["source", "detail_type", "detail"].iter().all(|name| image.get(name).is_none()) {
        return None;
    }
    let at = format!("{at}.dynamodb.NewImage.detail");
    Some(match image.pointer("/detail/S").and_then(Value::as_str).map(serde_json::from_str::<Value>) {
        Some(Ok(envelope)) => envelope_event(at, &envelope),
        Some(Err(e)) => Found::unreadable(at, format!("not JSON: {e}")),
        None => Found::unreadable(at, "missing"),
    })
}

/// The event of an EventBridge event: the envelope in its `detail`, or the `data` of a legacy `OrderCreated`
/// (version 0 of `OrderPlaced`). AWS's own events (a schedule's tick) are not orderflow's.
fn bus_event(at: String, event: &Value) -> Option<Found> {
    let detail = event.get("detail")?;
    let at = if at.is_empty() { "detail".to_owned() } else { format!("{at}.detail") };
    if event.get("detail-type").and_then(Value::as_str) == Some(LEGACY_ORDER_CREATED) {
        return Some(match detail.get("data") {
            Some(data) => {
                Found { at: format!("{at}.data"), event: Ok(("OrderPlaced.v0.json".to_owned(), data.clone())) }
            }
            None => Found::unreadable(at, "a legacy OrderCreated without data"),
        });
    }
    let source = event.get("source").and_then(Value::as_str).unwrap_or_default();
    source.starts_with("orderflow.").then(|| envelope_event(at, detail))
}

fn envelope_event(at: String, envelope: &Value) -> Found {
    match (envelope.get("type").and_then(Value::as_str), envelope.get("version").and_then(Value::as_u64)) {
        (Some(event_type), Some(version)) => {
            Found { at, event: Ok((format!("{event_type}.v{version}.json"), envelope.clone())) }
        }
        _ => Found::unreadable(at, "an envelope without type or version"),
    }
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// Every `events/<function>/*.json`, as `<function>/<file>`, sorted.
fn sample_files() -> Vec<String> {
    let mut files = Vec::new();
    for function in std::fs::read_dir(events_dir()).unwrap() {
        let function = function.unwrap().path();
        let name = function.file_name().unwrap().to_string_lossy().into_owned();
        if name == "schemas" || !function.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&function).unwrap() {
            let file = file.unwrap().file_name().to_string_lossy().into_owned();
            if file.ends_with(".json") {
                files.push(format!("{name}/{file}"));
            }
        }
    }
    files.sort();
    files
}

/// Validators of the committed schemas, built once per file; `None` when the file does not exist.
#[derive(Default)]
struct Validators(BTreeMap<String, Option<jsonschema::Validator>>);

impl Validators {
    /// Why `value` does not validate against `schema_file`, or `Ok` when it does.
    fn check(&mut self, schema_file: &str, value: &Value) -> Result<(), String> {
        let validator = self.0.entry(schema_file.to_owned()).or_insert_with(|| {
            let text = std::fs::read_to_string(events_dir().join("schemas").join(schema_file)).ok()?;
            let schema: Value = serde_json::from_str(&text).unwrap();
            Some(jsonschema::options().should_validate_formats(true).build(&schema).unwrap())
        });
        let validator = validator.as_ref().ok_or_else(|| format!("no schema events/schemas/{schema_file}"))?;
        let errors: Vec<String> =
            validator.iter_errors(value).map(|e| format!("at {:?}: {e}", e.instance_path().as_str())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("does not validate against {schema_file}: {}", errors.join("; ")))
        }
    }
}

#[test]
fn every_sample_event_validates_against_the_schema_of_its_type_and_version() {
    let mut validators = Validators::default();
    let mut validated: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for file in sample_files() {
        let text = std::fs::read_to_string(events_dir().join(&file)).unwrap();
        let sample: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{file} is not JSON: {e}"));
        let mut refusals = Vec::new();
        for Found { at, event } in events_in(&sample) {
            match event.and_then(|(schema_file, value)| validators.check(&schema_file, &value).map(|()| schema_file)) {
                Ok(schema_file) => *validated.entry(schema_file).or_default() += 1,
                Err(why) => refusals.push(format!("{at}: {why}")),
            }
        }
        let made_to_be_refused = REFUSED_SAMPLES.iter().any(|(refused, _)| *refused == file);
        match (made_to_be_refused, refusals.is_empty()) {
            (false, false) => failures.push(format!("events/{file}: {}", refusals.join("\n  "))),
            (true, true) => {
                failures.push(format!("events/{file} is made to be refused, yet every event in it validates"))
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for schema_file in SAMPLED_SCHEMAS {
        assert!(validated.contains_key(schema_file), "no sample event validated against {schema_file}: {validated:?}");
    }
}

#[test]
fn the_samples_made_to_be_refused_exist() {
    let files = sample_files();
    for (refused, why) in REFUSED_SAMPLES {
        assert!(files.iter().any(|file| file == refused), "events/{refused} ({why}) is missing");
    }
}
