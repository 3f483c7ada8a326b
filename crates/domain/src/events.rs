//! Every event of the saga, one type per event type and version, and the registry consumers read them with.
//!
//! Readers are tolerant: a field they do not know, in `data` or in the envelope, is ignored, so a producer adding
//! an optional field breaks no consumer. JSON Schemas of these types are generated into `events/schemas/` (see
//! [`schemas`]); the committed files are the contract: tests fail when they are stale, when the Rust types stop
//! being backward compatible with them, and when a sample event in `events/` does not validate against them.

use orderflow_envelope::{Event, Registry};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// A line of an order as the customer placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
}

/// A line priced by the catalogue when its stock was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: u32,
    /// Decimal string, e.g. "12.50".
    #[schemars(schema_with = "decimal_string")]
    pub unit_price: Decimal,
}

/// The schema of a [`Decimal`] field: a string of digits with an optional sign and fraction, as the writers emit it
/// and the readers (rust_decimal with serde-str) read it. schemars' own schema for it also allows JSON numbers,
/// which the readers refuse.
pub const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

fn decimal_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "pattern": DECIMAL_PATTERN})
}

macro_rules! event {
    ($(#[$doc:meta])* $name:ident, $version:literal, $source:literal { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }

        impl Event for $name {
            const TYPE: &'static str = stringify!($name);
            const VERSION: u32 = $version;
            const SOURCE: &'static str = $source;
        }
    };
}

event!(
    /// An order was accepted by the orders API (version 2, with the currency of its prices; version 1, without
    /// one, reads as an order in USD; version 0 is the legacy `OrderCreated` shape).
    OrderPlaced, 2, "orderflow.orders" {
        order_id: String, customer_id: String, lines: Vec<OrderLine>,
        /// The ISO 4217 code of the currency the catalogue prices the order in, e.g. "USD".
        currency: String
    }
);

// Version 1 of `OrderPlaced`, as orders APIs before version 2 wrote it: read through `order_placed_v1_to_v2`, and
// kept for its published schema, whose description is the doc comment below.
/// An order was accepted by the orders API (version 1; version 0 is the legacy `OrderCreated` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "OrderPlaced")]
pub struct OrderPlacedV1 {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
}

impl Event for OrderPlacedV1 {
    const TYPE: &'static str = OrderPlaced::TYPE;
    const VERSION: u32 = 1;
    const SOURCE: &'static str = OrderPlaced::SOURCE;
}

/// The currency of an order whose `OrderPlaced` names none (version 1, and the legacy version 0).
pub const DEFAULT_CURRENCY: &str = "USD";
event!(
    /// The saga took over an order it met before any `OrderPlaced` of it (a legacy producer's order, reserved by
    /// inventory from `OrderCreated`): the first event of that order's stream. Published; no service reacts to it.
    OrderAdopted, 1, "orderflow.saga" { order_id: String, customer_id: String, lines: Vec<OrderLine> }
);
event!(
    /// Every line of the order is reserved; the lines are priced by the catalogue.
    InventoryReserved, 1, "orderflow.inventory" {
        order_id: String, customer_id: String, lines: Vec<PricedLine>,
        #[schemars(schema_with = "decimal_string")] total: Decimal
    }
);
event!(
    /// Nothing was reserved: at least one line is short or not in the catalogue.
    InventoryRejected, 1, "orderflow.inventory" {
        order_id: String, customer_id: String, lines: Vec<OrderLine>,
        /// The SKUs that could not be reserved.
        unavailable: Vec<String>, reason: String
    }
);
event!(
    /// The saga asks for the order's payment.
    PaymentRequested, 1, "orderflow.saga" {
        order_id: String, customer_id: String, #[schemars(schema_with = "decimal_string")] amount: Decimal
    }
);
event!(
    /// The provider authorized the payment the saga requested: the saga confirms the order if `amount` is its
    /// total, and cancels it otherwise ([`CANCELLED_FOR_PAYMENT_MISMATCH`]).
    PaymentAuthorized, 1, "orderflow.payment" {
        order_id: String, payment_id: String, #[schemars(schema_with = "decimal_string")] amount: Decimal
    }
);
event!(
    PaymentDeclined, 1, "orderflow.payment" {
        order_id: String, #[schemars(schema_with = "decimal_string")] amount: Decimal, reason: String
    }
);
event!(
    /// The compensation of a declined payment: give the order's stock back.
    InventoryReleaseRequested, 1, "orderflow.saga" { order_id: String, reason: String }
);
event!(InventoryReleased, 1, "orderflow.inventory" { order_id: String });
event!(
    OrderConfirmed, 1, "orderflow.saga" {
        order_id: String, customer_id: String, #[schemars(schema_with = "decimal_string")] total: Decimal
    }
);
event!(ShipmentScheduled, 1, "orderflow.shipping" { order_id: String, shipment_id: String });
event!(
    OrderShipped, 1, "orderflow.saga" { order_id: String, customer_id: String, shipment_id: String, lines: Vec<OrderLine> }
);
event!(OrderRejected, 1, "orderflow.saga" { order_id: String, customer_id: String, reason: String });
event!(
    /// The order ended cancelled; inventory, payment and shipping compensate on it (release the stock, void an
    /// authorized payment, cancel a scheduled shipment). `reason` is [`CANCELLED_BY_CUSTOMER`] when its customer
    /// asked, [`CANCELLED_BY_DEADLINE`] when the order's deadline passed, [`CANCELLED_FOR_PAYMENT_MISMATCH`] when
    /// its payment was authorized for another amount than its total.
    OrderCancelled, 1, "orderflow.saga" { order_id: String, customer_id: String, reason: String }
);
event!(
    /// An authorized payment was voided at the provider because its order was cancelled.
    PaymentVoided, 1, "orderflow.payment" {
        order_id: String, payment_id: String, #[schemars(schema_with = "decimal_string")] amount: Decimal
    }
);
event!(
    /// A scheduled shipment was cancelled because its order was cancelled.
    ShipmentCancelled, 1, "orderflow.shipping" { order_id: String, shipment_id: String }
);
event!(
    /// One customer placed more orders within one window than the threshold allows.
    FraudSuspected, 1, "orderflow.analytics" {
        customer_id: String,
        /// RFC 3339 start of the window.
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(with = "String")]
        window_start: OffsetDateTime,
        orders_in_window: u32
    }
);

event!(
    /// A SKU's tumbling sales window closed: the units and revenue of the orders shipped in it, net of
    /// cancellations. Exactly one per SKU and window; a later change to it is a [`SalesWindowCorrected`].
    SalesWindowClosed, 1, "orderflow.analytics" {
        sku: String,
        /// RFC 3339 start of the window (inclusive).
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(with = "String")]
        window_start: OffsetDateTime,
        /// RFC 3339 end of the window (exclusive).
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(with = "String")]
        window_end: OffsetDateTime,
        units: i64,
        #[schemars(schema_with = "decimal_string")]
        revenue: Decimal
    }
);
event!(
    /// An event arrived for a window that had already closed: the change it made and the window's new totals.
    SalesWindowCorrected, 1, "orderflow.analytics" {
        sku: String,
        /// RFC 3339 start of the window (inclusive).
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(with = "String")]
        window_start: OffsetDateTime,
        /// RFC 3339 end of the window (exclusive).
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(with = "String")]
        window_end: OffsetDateTime,
        delta_units: i64,
        #[schemars(schema_with = "decimal_string")]
        delta_revenue: Decimal,
        units: i64,
        #[schemars(schema_with = "decimal_string")]
        revenue: Decimal
    }
);

/// The `reason` of an [`OrderCancelled`] emitted because the order's deadline passed in a non-final state.
pub const CANCELLED_BY_DEADLINE: &str = "deadline";
/// The `reason` of an [`OrderCancelled`] its customer asked for (`POST /orders/{id}/cancel`).
pub const CANCELLED_BY_CUSTOMER: &str = "customer";
/// The `reason` of an [`OrderCancelled`] emitted because its `PaymentAuthorized` named another amount than the
/// order's total.
pub const CANCELLED_FOR_PAYMENT_MISMATCH: &str = "payment_amount_mismatch";

/// The seed's legacy shape, version 0 of `OrderPlaced`: a legacy producer puts
/// `{"type": "OrderCreated", "data": {...}}` on the bus with detail-type `OrderCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreatedV0 {
    pub order_id: String,
    pub user_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub status: String,
}

/// The detail-type a legacy producer uses for version 0 of `OrderPlaced`.
pub const LEGACY_ORDER_CREATED: &str = "OrderCreated";

fn order_placed_v0_to_v1(data: Value) -> Result<Value, String> {
    let legacy: OrderCreatedV0 = serde_json::from_value(data).map_err(|e| e.to_string())?;
    Ok(json!({
        "order_id": legacy.order_id,
        "customer_id": legacy.user_id,
        "lines": [{"sku": legacy.product_id, "quantity": legacy.quantity}],
    }))
}

/// Version 1 of `OrderPlaced` as version 2: the currency it did not name is [`DEFAULT_CURRENCY`]; everything else
/// is kept as it is, so the decode of version 2 judges the rest.
fn order_placed_v1_to_v2(data: Value) -> Result<Value, String> {
    let Value::Object(mut data) = data else { return Err("data is not a JSON object".to_owned()) };
    data.entry("currency").or_insert_with(|| json!(DEFAULT_CURRENCY));
    Ok(Value::Object(data))
}

/// The registry of every event type and version orderflow reads.
pub fn registry() -> Registry {
    Registry::new()
        .register::<OrderPlaced>()
        .upcaster(OrderPlaced::TYPE, 0, order_placed_v0_to_v1)
        .upcaster(OrderPlaced::TYPE, 1, order_placed_v1_to_v2)
        .legacy(LEGACY_ORDER_CREATED, OrderPlaced::TYPE, 0, "order_id")
        .register::<OrderAdopted>()
        .register::<InventoryReserved>()
        .register::<InventoryRejected>()
        .register::<PaymentRequested>()
        .register::<PaymentAuthorized>()
        .register::<PaymentDeclined>()
        .register::<InventoryReleaseRequested>()
        .register::<InventoryReleased>()
        .register::<OrderConfirmed>()
        .register::<ShipmentScheduled>()
        .register::<OrderShipped>()
        .register::<OrderRejected>()
        .register::<OrderCancelled>()
        .register::<PaymentVoided>()
        .register::<ShipmentCancelled>()
        .register::<FraudSuspected>()
        .register::<SalesWindowClosed>()
        .register::<SalesWindowCorrected>()
}

/// The JSON Schema of one version of one event type, as published in `events/schemas/`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    pub event_type: &'static str,
    pub version: u32,
    /// The whole envelope with its `data`; for version 0 of `OrderPlaced`, the legacy body's `data`.
    pub schema: Value,
}

impl EventSchema {
    /// Its file in `events/schemas/`: `<Type>.v<version>.json`.
    pub fn file_name(&self) -> String {
        format!("{}.v{}.json", self.event_type, self.version)
    }
}

/// The JSON Schema of every event type and version orderflow reads.
pub fn schemas() -> Vec<EventSchema> {
    fn envelope_schema<T: Event>() -> EventSchema {
        let mut schema = schemars::schema_for!(orderflow_envelope::Envelope<T>).to_value();
        schema["title"] = json!(format!("{} v{}", T::TYPE, T::VERSION));
        schema["properties"]["type"]["const"] = json!(T::TYPE);
        schema["properties"]["version"]["const"] = json!(T::VERSION);
        EventSchema { event_type: T::TYPE, version: T::VERSION, schema }
    }
    let mut legacy = schemars::schema_for!(OrderCreatedV0).to_value();
    legacy["title"] =
        json!("OrderPlaced v0 (legacy OrderCreated body: {\"type\": \"OrderCreated\", \"data\": <this>})");
    vec![
        EventSchema { event_type: OrderPlaced::TYPE, version: 0, schema: legacy },
        envelope_schema::<OrderPlacedV1>(),
        envelope_schema::<OrderPlaced>(),
        envelope_schema::<OrderAdopted>(),
        envelope_schema::<InventoryReserved>(),
        envelope_schema::<InventoryRejected>(),
        envelope_schema::<PaymentRequested>(),
        envelope_schema::<PaymentAuthorized>(),
        envelope_schema::<PaymentDeclined>(),
        envelope_schema::<InventoryReleaseRequested>(),
        envelope_schema::<InventoryReleased>(),
        envelope_schema::<OrderConfirmed>(),
        envelope_schema::<ShipmentScheduled>(),
        envelope_schema::<OrderShipped>(),
        envelope_schema::<OrderRejected>(),
        envelope_schema::<OrderCancelled>(),
        envelope_schema::<PaymentVoided>(),
        envelope_schema::<ShipmentCancelled>(),
        envelope_schema::<FraudSuspected>(),
        envelope_schema::<SalesWindowClosed>(),
        envelope_schema::<SalesWindowCorrected>(),
    ]
}

#[cfg(test)]
mod contract;

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_envelope::{Envelope, EnvelopeError, RawEnvelope};

    #[test]
    fn order_placed_v1_reads_as_v2_in_the_default_currency_and_v2_keeps_its_own() {
        let v1 =
            Envelope::new("o-1", OrderPlacedV1 { order_id: "o-1".into(), customer_id: "c-1".into(), lines: vec![] });
        let raw = registry().upcast(RawEnvelope::from(&v1)).unwrap();
        assert_eq!(raw.version, 2);
        let placed = raw.decode::<OrderPlaced>().unwrap();
        assert_eq!((placed.id, placed.data.currency.as_str()), (v1.id, DEFAULT_CURRENCY), "only the currency is new");

        let lines = vec![OrderLine { sku: "S".into(), quantity: 1 }];
        let v2 = OrderPlaced { order_id: "o-2".into(), customer_id: "c-1".into(), lines, currency: "EUR".into() };
        let raw = registry().upcast(RawEnvelope::from(&Envelope::new("o-2", v2.clone()))).unwrap();
        assert_eq!(raw.decode::<OrderPlaced>().unwrap().data, v2);
    }

    #[test]
    fn a_reader_of_v1_data_ignores_the_currency_of_v2() {
        // What a consumer built before version 2 makes of its data: a tolerant reader, so moving a field into a
        // version is never what breaks it (its registry refusing version 2 is, which is why consumers deploy first).
        let v2 = json!({"order_id": "o-2", "customer_id": "c-1", "lines": [], "currency": "EUR"});
        let v1: OrderPlacedV1 = serde_json::from_value(v2).unwrap();
        assert_eq!(v1.order_id, "o-2");
        let unknown_version = registry().upcast(RawEnvelope {
            version: 3,
            ..RawEnvelope::from(&Envelope::new(
                "o-3",
                OrderPlacedV1 { order_id: "o-3".into(), customer_id: "c-1".into(), lines: vec![] },
            ))
        });
        assert!(matches!(unknown_version, Err(EnvelopeError::UnsupportedVersion { .. })), "{unknown_version:?}");
    }

    #[test]
    fn legacy_order_created_reads_as_order_placed() {
        let body = json!({"version": "0", "id": "0d7a3a5e-3d9c-4b9e-9b5d-1b1f3c0e2a11", "detail-type": "OrderCreated",
            "source": "legacy.orders", "time": "2026-11-24T10:00:00Z",
            "detail": {"type": "OrderCreated", "data": {"order_id": "o-7", "user_id": "c-3", "product_id": "SKU-1",
                       "quantity": 2, "status": "CREATED"}}});
        let placed = registry().read_bus_event(&body.to_string()).unwrap().decode::<OrderPlaced>().unwrap();
        assert_eq!(placed.correlation_id, "o-7");
        assert_eq!(
            placed.data,
            OrderPlaced {
                currency: crate::events::DEFAULT_CURRENCY.into(),
                order_id: "o-7".into(),
                customer_id: "c-3".into(),
                lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }],
            }
        );
    }

    #[test]
    fn legacy_order_created_with_a_missing_field_is_rejected_with_the_field_name() {
        let body = json!({"id": "0d7a3a5e-3d9c-4b9e-9b5d-1b1f3c0e2a11", "detail-type": "OrderCreated", "source": "legacy",
            "time": "2026-11-24T10:00:00Z", "detail": {"type": "OrderCreated", "data": {"order_id": "o-7"}}});
        let err = registry().read_bus_event(&body.to_string()).unwrap_err().to_string();
        assert!(err.contains("user_id"), "{err}");
    }

    #[test]
    fn prices_travel_as_decimal_strings() {
        let event =
            PaymentRequested { order_id: "o".into(), customer_id: "c".into(), amount: "10000.01".parse().unwrap() };
        assert_eq!(serde_json::to_value(&event).unwrap()["amount"], "10000.01");
    }

    fn bus_event(detail: Value) -> String {
        json!({"version": "0", "id": "0d7a3a5e-3d9c-4b9e-9b5d-1b1f3c0e2a11", "detail-type": detail["type"],
            "source": "orderflow.saga", "time": "2026-11-24T10:00:00Z", "detail": detail})
        .to_string()
    }

    fn order_confirmed() -> Envelope<OrderConfirmed> {
        Envelope::new(
            "o-1",
            OrderConfirmed { order_id: "o-1".into(), customer_id: "c-1".into(), total: "9.50".parse().unwrap() },
        )
    }

    #[test]
    fn fields_a_reader_does_not_know_in_data_and_envelope_are_ignored() {
        let sent = order_confirmed();
        let mut detail = serde_json::to_value(&sent).unwrap();
        detail["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        detail["data"]["gift_wrap"] = json!(true);
        let read = registry().read_bus_event(&bus_event(detail)).unwrap().decode::<OrderConfirmed>().unwrap();
        assert_eq!(read, sent);
    }

    #[test]
    fn unknown_types_and_versions_are_still_refused_with_their_reason() {
        let mut unknown_type = serde_json::to_value(order_confirmed()).unwrap();
        unknown_type["type"] = json!("OrderTeleported");
        let err = registry().read_bus_event(&bus_event(unknown_type)).unwrap_err();
        assert!(matches!(&err, EnvelopeError::UnknownType(t) if t == "OrderTeleported"), "{err}");

        let mut unknown_version = serde_json::to_value(order_confirmed()).unwrap();
        unknown_version["version"] = json!(2);
        let err = registry().read_bus_event(&bus_event(unknown_version)).unwrap_err();
        assert_eq!(err.to_string(), "unsupported version 2 of OrderConfirmed (this consumer reads versions 1..=1)");
    }
}
