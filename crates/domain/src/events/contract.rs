//! The committed schemas in `events/schemas/` are the contract: they must match the Rust types, and a change of
//! the Rust types must keep them backward compatible (a new optional field is fine; anything an existing producer
//! or consumer of the version would trip on needs a new version with an upcaster instead).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde_json::{Value, json};

use super::{DECIMAL_PATTERN, EventSchema, PaymentRequested, schemas};

/// schemars' schema of a `rust_decimal::Decimal`, which the committed schemas had until they said what the readers
/// accept: it allows JSON numbers, which the readers (serde-str) always refused.
const SCHEMARS_DECIMAL_PATTERN: &str = r"^-?\d+(\.\d+)?([eE]\d+)?$";

/// What a reader of a `Decimal` accepts, whatever the committed schema claimed (see
/// [`decimal_strings_of_the_pattern_are_read_and_json_numbers_are_not`]).
static DECIMAL_AS_READ: LazyLock<Value> = LazyLock::new(|| json!({"type": "string", "pattern": DECIMAL_PATTERN}));

/// Keywords that restrict the values a schema accepts: one added or changed may narrow it, so either breaks.
const RESTRICTIONS: [&str; 12] = [
    "const",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
];

/// The breaking differences between the `committed` schema of an event and the one `generated` from the Rust
/// types, each naming its property: a property removed or newly required, a type changed or narrowed.
fn breaking_changes(committed: &Value, generated: &Value) -> Vec<String> {
    let mut comparison = Comparison { committed, generated, compared_refs: BTreeSet::new(), breaks: Vec::new() };
    comparison.compare("", committed, generated);
    comparison.breaks
}

/// One comparison of two schemas, walking both at once from their roots.
struct Comparison<'a> {
    committed: &'a Value,
    generated: &'a Value,
    /// The `$ref` pairs already compared: each definition once, and recursive types end.
    compared_refs: BTreeSet<(Option<&'a str>, Option<&'a str>)>,
    breaks: Vec<String>,
}

impl<'a> Comparison<'a> {
    fn compare(&mut self, at: &str, old: &'a Value, new: &'a Value) {
        let refs = (reference(old), reference(new));
        if refs != (None, None) && !self.compared_refs.insert(refs) {
            return;
        }
        let (Some(old), Some(new)) = (self.resolve(self.committed, old, at), self.resolve(self.generated, new, at))
        else {
            return;
        };
        // A contract is the language its readers accept: narrowing a schema to what they always accepted breaks
        // no producer that worked.
        let old = if is_schemars_decimal(old) { &*DECIMAL_AS_READ } else { old };
        let place = place(at);
        self.compare_types(place, old, new);
        for keyword in RESTRICTIONS {
            if let Some(now) = new.get(keyword)
                && old.get(keyword) != Some(now)
            {
                let before = old.get(keyword).map_or("none".to_owned(), Value::to_string);
                self.breaks.push(format!("{place}: {keyword} changed from {before} to {now}"));
            }
        }
        for keyword in ["anyOf", "oneOf", "allOf"] {
            match (old.get(keyword).and_then(Value::as_array), new.get(keyword).and_then(Value::as_array)) {
                (Some(before), Some(now)) if before.len() == now.len() => {
                    for (i, (before, now)) in before.iter().zip(now).enumerate() {
                        self.compare(&child(at, &format!("{keyword}[{i}]")), before, now);
                    }
                }
                (None, None) => {}
                _ => self.breaks.push(format!("{place}: {keyword} changed")),
            }
        }
        self.compare_objects(at, old, new);
        self.compare_nested(&format!("{at}[]"), old.get("items"), new.get("items"));
    }

    /// Every type the old schema accepted is still accepted (an integer is a number).
    fn compare_types(&mut self, place: &str, old: &Value, new: &Value) {
        let Some(now) = types(new) else { return };
        let still_accepted = |t: &str| now.contains(&t) || (t == "integer" && now.contains(&"number"));
        let narrowed = match types(old) {
            Some(before) => !before.iter().all(|t| still_accepted(t)),
            None => true,
        };
        if narrowed {
            self.breaks.push(format!("{place}: type changed from {} to {}", type_of(old), type_of(new)));
        }
    }

    fn compare_objects(&mut self, at: &str, old: &'a Value, new: &'a Value) {
        let properties = |schema: &'a Value| schema.get("properties").and_then(Value::as_object);
        let now = properties(new);
        for (name, before) in properties(old).into_iter().flatten() {
            let path = child(at, name);
            match now.and_then(|now| now.get(name)) {
                Some(now) => self.compare(&path, before, now),
                None => self.breaks.push(format!("property {path} removed")),
            }
        }
        let required_before = required(old);
        for name in required(new).difference(&required_before) {
            self.breaks.push(format!("property {} newly required", child(at, name)));
        }
        match (old.get("additionalProperties"), new.get("additionalProperties")) {
            (before, Some(Value::Bool(false))) if before != Some(&Value::Bool(false)) => {
                self.breaks.push(format!("{}: unknown properties newly refused", place(at)));
            }
            (before, now) => self.compare_nested(&child(at, "*"), before, now),
        }
    }

    /// Compares the schemas of nested values (array items, map values) where the generated one restricts them.
    fn compare_nested(&mut self, at: &str, old: Option<&'a Value>, new: Option<&'a Value>) {
        match (old, new) {
            (Some(old), Some(new)) if old.is_object() && new.is_object() => self.compare(at, old, new),
            (None, Some(new)) if new.is_object() => self.breaks.push(format!("{at}: newly restricted to {new}")),
            _ => {}
        }
    }

    /// The schema itself, or the definition its `$ref` points at in `root` (`#/$defs/...` as schemars emits it).
    fn resolve(&mut self, root: &'a Value, schema: &'a Value, at: &str) -> Option<&'a Value> {
        let Some(target) = reference(schema) else { return Some(schema) };
        let resolved = target.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
        if resolved.is_none() {
            self.breaks.push(format!("{}: $ref {target} points at nothing", place(at)));
        }
        resolved
    }
}

fn is_schemars_decimal(schema: &Value) -> bool {
    schema.get("pattern").and_then(Value::as_str) == Some(SCHEMARS_DECIMAL_PATTERN)
        && schema.get("type") == Some(&json!(["string", "number"]))
}

/// How a break at the path `at` is named: the root is the event itself.
fn place(at: &str) -> &str {
    if at.is_empty() { "the event" } else { at }
}

/// The path of `name` within the path `at`.
fn child(at: &str, name: &str) -> String {
    if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") }
}

fn reference(schema: &Value) -> Option<&str> {
    schema.get("$ref").and_then(Value::as_str)
}

/// The JSON types a schema accepts; `None` when it does not say (any type).
fn types(schema: &Value) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => Some(many.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn type_of(schema: &Value) -> String {
    schema.get("type").map_or("any".to_owned(), Value::to_string)
}

fn required(schema: &Value) -> BTreeSet<&str> {
    schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Why `generated` cannot replace the `committed` schema of its event, in the words a developer acts on.
fn incompatibility(generated: &EventSchema, committed: &Value) -> Option<String> {
    let breaks = breaking_changes(committed, &generated.schema);
    (!breaks.is_empty()).then(|| {
        let (event_type, version) = (generated.event_type, generated.version);
        format!("{event_type} v{version}: {}; add version {} with an upcaster instead", breaks.join("; "), version + 1)
    })
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/schemas")
}

/// The committed schema of `event`, or `None` when its type or version is new (it has no contract yet).
fn committed(event: &EventSchema) -> Option<Value> {
    let path = schemas_dir().join(event.file_name());
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())))
}

/// Regenerate with `ORDERFLOW_WRITE_SCHEMAS=1 cargo test -p orderflow-domain schemas`; that refuses to overwrite
/// a committed schema with a breaking one.
#[test]
fn schemas_in_events_dir_match_the_rust_types() {
    let dir = schemas_dir();
    let expected = schemas();
    if std::env::var_os("ORDERFLOW_WRITE_SCHEMAS").is_some() {
        let breaking: Vec<String> =
            expected.iter().filter_map(|event| incompatibility(event, &committed(event)?)).collect();
        assert!(breaking.is_empty(), "not writing events/schemas:\n{}", breaking.join("\n"));
        std::fs::create_dir_all(&dir).unwrap();
        for event in &expected {
            let text = serde_json::to_string_pretty(&event.schema).unwrap() + "\n";
            std::fs::write(dir.join(event.file_name()), text).unwrap();
        }
    }
    for event in &expected {
        let text = serde_json::to_string_pretty(&event.schema).unwrap() + "\n";
        let path = dir.join(event.file_name());
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is stale: run ORDERFLOW_WRITE_SCHEMAS=1 cargo test -p orderflow-domain schemas",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, expected.len(), "events/schemas has files no event type generates");
}

#[test]
fn schemas_of_the_rust_types_are_backward_compatible_with_the_committed_ones() {
    let breaking: Vec<String> =
        schemas().iter().filter_map(|event| incompatibility(event, &committed(event)?)).collect();
    assert!(breaking.is_empty(), "{}", breaking.join("\n"));
}

/// An envelope schema as schemars emits it, `data` defined in `$defs`, with the given `data` schema.
fn envelope_with_data(data: Value) -> Value {
    json!({
        "$defs": {"Data": data},
        "properties": {"id": {"type": "string", "format": "uuid"}, "data": {"$ref": "#/$defs/Data"}},
        "required": ["id", "data"],
        "type": "object"
    })
}

fn placed_data() -> Value {
    json!({
        "properties": {
            "order_id": {"type": "string"},
            "quantity": {"type": "integer", "format": "uint32", "minimum": 0}
        },
        "required": ["order_id", "quantity"],
        "type": "object"
    })
}

fn assert_compatible(committed: &Value, generated: &Value) {
    let breaks = breaking_changes(committed, generated);
    assert!(breaks.is_empty(), "{breaks:?}");
}

#[test]
fn identical_schemas_are_compatible() {
    assert_compatible(&envelope_with_data(placed_data()), &envelope_with_data(placed_data()));
}

#[test]
fn a_new_optional_property_is_compatible() {
    let mut data = placed_data();
    data["properties"]["note"] = json!({"type": ["string", "null"]});
    assert_compatible(&envelope_with_data(placed_data()), &envelope_with_data(data));
}

#[test]
fn accepting_unknown_properties_is_compatible_and_refusing_them_is_breaking() {
    let mut closed = placed_data();
    closed["additionalProperties"] = json!(false);
    let (closed, open) = (envelope_with_data(closed), envelope_with_data(placed_data()));
    assert_compatible(&closed, &open);
    assert_eq!(breaking_changes(&open, &closed), ["data: unknown properties newly refused"]);
}

#[test]
fn a_removed_property_is_breaking() {
    let mut data = placed_data();
    data["properties"].as_object_mut().unwrap().remove("quantity");
    data["required"] = json!(["order_id"]);
    assert_eq!(
        breaking_changes(&envelope_with_data(placed_data()), &envelope_with_data(data)),
        ["property data.quantity removed"]
    );
}

#[test]
fn a_newly_required_property_is_breaking() {
    let mut data = placed_data();
    data["properties"]["note"] = json!({"type": "string"});
    data["required"] = json!(["order_id", "quantity", "note"]);
    assert_eq!(
        breaking_changes(&envelope_with_data(placed_data()), &envelope_with_data(data)),
        ["property data.note newly required"]
    );
}

#[test]
fn a_changed_type_is_breaking_and_a_widened_one_is_not() {
    let mut as_string = placed_data();
    as_string["properties"]["quantity"] = json!({"type": "string"});
    assert_eq!(
        breaking_changes(&envelope_with_data(placed_data()), &envelope_with_data(as_string)),
        ["data.quantity: type changed from \"integer\" to \"string\""]
    );
    let mut nullable = placed_data();
    nullable["properties"]["quantity"]["type"] = json!(["number", "null"]);
    assert_compatible(&envelope_with_data(placed_data()), &envelope_with_data(nullable));
}

#[test]
fn a_narrowed_format_inside_an_array_item_is_breaking() {
    let lines = |item: Value| envelope_with_data(json!({"properties": {"lines": {"type": "array", "items": item}}}));
    assert_eq!(
        breaking_changes(&lines(json!({"type": "string"})), &lines(json!({"type": "string", "format": "uuid"}))),
        ["data.lines[]: format changed from none to \"uuid\""]
    );
}

#[test]
fn the_message_names_the_event_what_broke_and_the_next_version() {
    let generated = EventSchema { event_type: "OrderPlaced", version: 1, schema: envelope_with_data(json!({})) };
    assert_eq!(
        incompatibility(&generated, &envelope_with_data(placed_data())).unwrap(),
        "OrderPlaced v1: property data.order_id removed; property data.quantity removed; add version 2 with an \
         upcaster instead"
    );
}

#[test]
fn decimal_strings_of_the_pattern_are_read_and_json_numbers_are_not() {
    let matches = |text: &str| jsonschema::is_valid(&DECIMAL_AS_READ, &json!(text));
    let read = |amount: Value| {
        serde_json::from_value::<PaymentRequested>(json!({"order_id": "o-1", "customer_id": "c-1", "amount": amount}))
    };
    for accepted in ["12.50", "-1", "0", "1000000.00"] {
        assert!(matches(accepted), "{accepted}");
        assert!(read(json!(accepted)).is_ok(), "{accepted}");
    }
    for number in [json!(12.5), json!(12)] {
        assert!(read(number.clone()).is_err(), "the reader accepted the JSON number {number}");
    }
    for refused_by_pattern in ["1e5", "12.", ".5", "1,5", ""] {
        assert!(!matches(refused_by_pattern), "{refused_by_pattern}");
    }
}

#[test]
fn narrowing_schemars_decimal_schema_to_what_the_readers_accept_is_compatible() {
    let amount = |schema: Value| envelope_with_data(json!({"properties": {"amount": schema}}));
    let schemars_decimal = json!({"type": ["string", "number"], "pattern": SCHEMARS_DECIMAL_PATTERN});
    assert_compatible(&amount(schemars_decimal), &amount(DECIMAL_AS_READ.clone()));
    assert_eq!(
        breaking_changes(&amount(json!({"type": ["string", "number"]})), &amount(DECIMAL_AS_READ.clone())),
        [
            "data.amount: type changed from [\"string\",\"number\"] to \"string\"".to_owned(),
            format!("data.amount: pattern changed from none to {}", json!(DECIMAL_PATTERN)),
        ],
        "only schemars' decimal schema is read as what the readers accept"
    );
}
