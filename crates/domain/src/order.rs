//! Orders: the request that places one, and the state machine the saga drives it through.

use orderflow_toolkit::{Envelope, Event};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::events::{
    InventoryRejected, InventoryReleaseRequested, InventoryReleased, InventoryReserved, OrderCancelled, OrderConfirmed,
    OrderLine, OrderRejected, OrderShipped, PaymentAuthorized, PaymentDeclined, PaymentRequested, ShipmentScheduled,
};

/// The most units of one SKU a single order may ask for.
pub const MAX_QUANTITY: u32 = 1_000;
/// The most lines one order may have.
pub const MAX_LINES: usize = 50;

/// The body of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
}

/// A request that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl PlaceOrder {
    /// Checks the request; lines of the same SKU are allowed and count together.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.customer_id.trim().is_empty() {
            return Err(ValidationError::new("customer_id", "must not be empty"));
        }
        if self.lines.is_empty() {
            return Err(ValidationError::new("lines", "must have at least one line"));
        }
        if self.lines.len() > MAX_LINES {
            return Err(ValidationError::new("lines", format!("must have at most {MAX_LINES} lines")));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.sku.trim().is_empty() {
                return Err(ValidationError::new(format!("lines[{i}].sku"), "must not be empty"));
            }
            if line.quantity == 0 || line.quantity > MAX_QUANTITY {
                return Err(ValidationError::new(
                    format!("lines[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
        }
        Ok(())
    }
}

/// Where an order stands. Every order ends in `Shipped`, `Rejected` or `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Confirmed,
    Shipped,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Shipped | Self::Rejected | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Reserved => "RESERVED",
            Self::Confirmed => "CONFIRMED",
            Self::Shipped => "SHIPPED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// One step of an order's history: the event type and when it happened (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: String,
}

/// An order as the saga keeps it and `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    /// Known once the catalogue priced the lines (on `InventoryReserved`).
    pub total: Option<Decimal>,
    pub history: Vec<HistoryEntry>,
    /// Incremented on every change: the condition of every write (optimistic concurrency).
    pub version: u64,
}

impl Order {
    /// A new order, as placed.
    pub fn placed(order_id: String, customer_id: String, lines: Vec<OrderLine>, at: String) -> Self {
        Self {
            order_id,
            customer_id,
            status: OrderStatus::Pending,
            lines,
            total: None,
            history: vec![HistoryEntry { event_type: "OrderPlaced".into(), at }],
            version: 1,
        }
    }

    fn has_seen(&self, event_type: &str) -> bool {
        self.history.iter().any(|entry| entry.event_type == event_type)
    }
}

/// The events the saga reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaInput {
    InventoryReserved(Envelope<InventoryReserved>),
    InventoryRejected(Envelope<InventoryRejected>),
    PaymentAuthorized(Envelope<PaymentAuthorized>),
    PaymentDeclined(Envelope<PaymentDeclined>),
    InventoryReleased(Envelope<InventoryReleased>),
    ShipmentScheduled(Envelope<ShipmentScheduled>),
}

/// The event the saga emits on a step, already caused by the input.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaOutput {
    PaymentRequested(Envelope<PaymentRequested>),
    OrderRejected(Envelope<OrderRejected>),
    OrderConfirmed(Envelope<OrderConfirmed>),
    InventoryReleaseRequested(Envelope<InventoryReleaseRequested>),
    OrderCancelled(Envelope<OrderCancelled>),
    OrderShipped(Envelope<OrderShipped>),
}

/// What the saga does with an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store `order` (conditional on the version it was read at) and emit `output` with it, atomically.
    Advance { order: Box<Order>, output: SagaOutput },
    /// A duplicate or stale event: nothing to do, acknowledge it.
    Ignore(String),
    /// The event is ahead of the order (out-of-order delivery): retry later.
    NotYet(String),
}

impl SagaInput {
    pub fn order_id(&self) -> &str {
        match self {
            Self::InventoryReserved(e) => &e.data.order_id,
            Self::InventoryRejected(e) => &e.data.order_id,
            Self::PaymentAuthorized(e) => &e.data.order_id,
            Self::PaymentDeclined(e) => &e.data.order_id,
            Self::InventoryReleased(e) => &e.data.order_id,
            Self::ShipmentScheduled(e) => &e.data.order_id,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            Self::InventoryReserved(_) => InventoryReserved::TYPE,
            Self::InventoryRejected(_) => InventoryRejected::TYPE,
            Self::PaymentAuthorized(_) => PaymentAuthorized::TYPE,
            Self::PaymentDeclined(_) => PaymentDeclined::TYPE,
            Self::InventoryReleased(_) => InventoryReleased::TYPE,
            Self::ShipmentScheduled(_) => ShipmentScheduled::TYPE,
        }
    }

    fn occurred_at(&self) -> String {
        let at = match self {
            Self::InventoryReserved(e) => e.occurred_at,
            Self::InventoryRejected(e) => e.occurred_at,
            Self::PaymentAuthorized(e) => e.occurred_at,
            Self::PaymentDeclined(e) => e.occurred_at,
            Self::InventoryReleased(e) => e.occurred_at,
            Self::ShipmentScheduled(e) => e.occurred_at,
        };
        at.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339 formats any date")
    }
}

/// The saga's state machine: given the order as stored (`None` if the saga has not seen it) and an input,
/// what to store and emit. Pure, so duplicates and reordering are tested without AWS.
pub fn decide(current: Option<&Order>, input: &SagaInput) -> Decision {
    use OrderStatus::*;
    let status = current.map(|order| order.status);
    let advance = |mut order: Order, status: OrderStatus, output: SagaOutput| {
        order.status = status;
        order.version += 1;
        order.history.push(HistoryEntry { event_type: input.event_type().into(), at: input.occurred_at() });
        Decision::Advance { order: Box::new(order), output }
    };
    // An order the saga has not seen yet (event before the placed order is visible, or a legacy producer's order)
    // starts from what the inventory event says.
    let seen_or = |order_id: &str, customer_id: &str, lines: Vec<OrderLine>| {
        current
            .cloned()
            .unwrap_or_else(|| Order::placed(order_id.into(), customer_id.into(), lines, input.occurred_at()))
    };
    match (input, status) {
        (SagaInput::InventoryReserved(e), None | Some(Pending)) => {
            let d = &e.data;
            let lines = d.lines.iter().map(|l| OrderLine { sku: l.sku.clone(), quantity: l.quantity }).collect();
            let mut order = seen_or(&d.order_id, &d.customer_id, lines);
            order.total = Some(d.total);
            let request =
                PaymentRequested { order_id: d.order_id.clone(), customer_id: d.customer_id.clone(), amount: d.total };
            advance(order, Reserved, SagaOutput::PaymentRequested(Envelope::caused_by(e, request)))
        }
        (SagaInput::InventoryRejected(e), None | Some(Pending)) => {
            let d = &e.data;
            let order = seen_or(&d.order_id, &d.customer_id, d.lines.clone());
            let rejected = OrderRejected {
                order_id: d.order_id.clone(),
                customer_id: d.customer_id.clone(),
                reason: d.reason.clone(),
            };
            advance(order, Rejected, SagaOutput::OrderRejected(Envelope::caused_by(e, rejected)))
        }
        (SagaInput::PaymentAuthorized(e), Some(Reserved)) => {
            let order = current.expect("status implies order").clone();
            let confirmed = OrderConfirmed {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                total: e.data.amount,
            };
            advance(order, Confirmed, SagaOutput::OrderConfirmed(Envelope::caused_by(e, confirmed)))
        }
        (SagaInput::PaymentDeclined(e), Some(Reserved))
            if !current.is_some_and(|o| o.has_seen(PaymentDeclined::TYPE)) =>
        {
            let order = current.expect("status implies order").clone();
            let release = InventoryReleaseRequested { order_id: order.order_id.clone(), reason: e.data.reason.clone() };
            advance(order, Reserved, SagaOutput::InventoryReleaseRequested(Envelope::caused_by(e, release)))
        }
        (SagaInput::InventoryReleased(e), Some(Reserved))
            if current.is_some_and(|o| o.has_seen(PaymentDeclined::TYPE)) =>
        {
            let order = current.expect("status implies order").clone();
            let reason = "payment declined, stock released".to_owned();
            let cancelled =
                OrderCancelled { order_id: order.order_id.clone(), customer_id: order.customer_id.clone(), reason };
            advance(order, Cancelled, SagaOutput::OrderCancelled(Envelope::caused_by(e, cancelled)))
        }
        (SagaInput::ShipmentScheduled(e), Some(Confirmed)) => {
            let order = current.expect("status implies order").clone();
            let shipped = OrderShipped {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                shipment_id: e.data.shipment_id.clone(),
                lines: order.lines.clone(),
            };
            advance(order, Shipped, SagaOutput::OrderShipped(Envelope::caused_by(e, shipped)))
        }
        // Inputs that only follow a state the order has not reached: they arrived early.
        (SagaInput::PaymentAuthorized(_) | SagaInput::PaymentDeclined(_), None | Some(Pending))
        | (SagaInput::InventoryReleased(_), None | Some(Pending) | Some(Reserved))
        | (SagaInput::ShipmentScheduled(_), None | Some(Pending) | Some(Reserved)) => Decision::NotYet(format!(
            "{} for order {} arrived before the order reached the state it follows (status {})",
            input.event_type(),
            input.order_id(),
            status.map_or("unknown", OrderStatus::as_str)
        )),
        (_, status) => Decision::Ignore(format!(
            "{} for order {} already applied or superseded (status {})",
            input.event_type(),
            input.order_id(),
            status.map_or("unknown", OrderStatus::as_str)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::PricedLine;

    fn reserved() -> Envelope<InventoryReserved> {
        Envelope::new(
            "o-1",
            InventoryReserved {
                order_id: "o-1".into(),
                customer_id: "c-1".into(),
                lines: vec![PricedLine { sku: "SKU-1".into(), quantity: 2, unit_price: "12.50".parse().unwrap() }],
                total: "25.00".parse().unwrap(),
            },
        )
    }

    fn placed() -> Order {
        Order::placed("o-1".into(), "c-1".into(), vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }], "t0".into())
    }

    fn advance(current: Option<&Order>, input: &SagaInput) -> (Order, SagaOutput) {
        match decide(current, input) {
            Decision::Advance { order, output } => (*order, output),
            other => panic!("expected to advance, got {other:?}"),
        }
    }

    fn payment_declined() -> SagaInput {
        SagaInput::PaymentDeclined(Envelope::new(
            "o-1",
            PaymentDeclined { order_id: "o-1".into(), amount: "25.00".parse().unwrap(), reason: "over limit".into() },
        ))
    }

    #[test]
    fn reservation_prices_the_order_and_requests_payment_caused_by_it() {
        let input = SagaInput::InventoryReserved(reserved());
        let (order, output) = advance(Some(&placed()), &input);
        assert_eq!(order.status, OrderStatus::Reserved);
        assert_eq!(order.total, Some("25.00".parse().unwrap()));
        assert_eq!(order.version, 2);
        let SagaOutput::PaymentRequested(request) = output else { panic!("{output:?}") };
        assert_eq!(request.data.amount, "25.00".parse().unwrap());
        assert_eq!(request.correlation_id, "o-1");
        assert_eq!(request.causation_id, Some(reserved_id(&input)));
    }

    fn reserved_id(input: &SagaInput) -> uuid::Uuid {
        match input {
            SagaInput::InventoryReserved(e) => e.id,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_duplicate_reservation_is_ignored() {
        let input = SagaInput::InventoryReserved(reserved());
        let (order, _) = advance(Some(&placed()), &input);
        assert!(matches!(decide(Some(&order), &input), Decision::Ignore(_)));
    }

    #[test]
    fn an_unseen_order_starts_from_the_inventory_event() {
        let (order, _) = advance(None, &SagaInput::InventoryReserved(reserved()));
        assert_eq!(order.customer_id, "c-1");
        assert_eq!(order.lines, vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }]);
        assert_eq!(order.status, OrderStatus::Reserved);
    }

    #[test]
    fn payment_before_reservation_is_not_yet_applicable() {
        let input = SagaInput::PaymentAuthorized(Envelope::new(
            "o-1",
            PaymentAuthorized { order_id: "o-1".into(), payment_id: "p".into(), amount: "1".parse().unwrap() },
        ));
        assert!(matches!(decide(Some(&placed()), &input), Decision::NotYet(_)));
        assert!(matches!(decide(None, &input), Decision::NotYet(_)));
    }

    #[test]
    fn declined_payment_releases_stock_once_then_cancels() {
        let (order, _) = advance(Some(&placed()), &SagaInput::InventoryReserved(reserved()));
        let (order, output) = advance(Some(&order), &payment_declined());
        assert_eq!(order.status, OrderStatus::Reserved);
        assert!(matches!(output, SagaOutput::InventoryReleaseRequested(_)));
        assert!(matches!(decide(Some(&order), &payment_declined()), Decision::Ignore(_)));

        let released = SagaInput::InventoryReleased(Envelope::new("o-1", InventoryReleased { order_id: "o-1".into() }));
        let (order, output) = advance(Some(&order), &released);
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert!(matches!(output, SagaOutput::OrderCancelled(_)));
        assert!(order.status.is_final());
    }

    #[test]
    fn release_without_a_declined_payment_waits() {
        let (order, _) = advance(Some(&placed()), &SagaInput::InventoryReserved(reserved()));
        let released = SagaInput::InventoryReleased(Envelope::new("o-1", InventoryReleased { order_id: "o-1".into() }));
        assert!(matches!(decide(Some(&order), &released), Decision::NotYet(_)));
    }

    #[test]
    fn final_states_ignore_everything() {
        let mut order = placed();
        for status in [OrderStatus::Shipped, OrderStatus::Rejected, OrderStatus::Cancelled] {
            order.status = status;
            assert!(matches!(decide(Some(&order), &SagaInput::InventoryReserved(reserved())), Decision::Ignore(_)));
            assert!(matches!(decide(Some(&order), &payment_declined()), Decision::Ignore(_)));
        }
    }

    #[test]
    fn validation_names_the_offending_field() {
        let mut request =
            PlaceOrder { customer_id: "c".into(), lines: vec![OrderLine { sku: "S".into(), quantity: 1 }] };
        assert_eq!(request.validate(), Ok(()));
        request.lines.push(OrderLine { sku: "S2".into(), quantity: 0 });
        assert_eq!(request.validate().unwrap_err().field, "lines[1].quantity");
        request.lines.clear();
        assert_eq!(request.validate().unwrap_err().field, "lines");
        request.customer_id = " ".into();
        assert_eq!(request.validate().unwrap_err().field, "customer_id");
    }
}
