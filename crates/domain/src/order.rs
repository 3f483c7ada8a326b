//! Orders: the request that places one, and the state machine the saga drives it through.

use orderflow_envelope::{Envelope, Event};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::events::{
    CANCELLED_BY_DEADLINE, InventoryRejected, InventoryReleaseRequested, InventoryReleased, InventoryReserved,
    OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced, OrderRejected, OrderShipped, PaymentAuthorized,
    PaymentDeclined, PaymentRequested, ShipmentScheduled,
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

/// How long an order may stay in one non-final state before the deadline sweeper cancels it. One value shared by
/// the orders API (the PENDING deadline), the saga (every later state) and the sweeper; read from the
/// configuration by the functions, never from the environment here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    per_state: Duration,
}

impl Deadlines {
    /// An hour: longer than the 15 minutes of outage the system rides out, so an outage does not cancel orders.
    pub const DEFAULT_SECONDS: u64 = 3600;
    /// Thirty days: no order should hold its stock longer.
    pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

    /// A deadline of `seconds` per state, 1 to [`Self::MAX_SECONDS`].
    pub fn from_seconds(seconds: u64) -> Result<Self, ValidationError> {
        let in_range = (1..=Self::MAX_SECONDS).contains(&seconds);
        match i64::try_from(seconds) {
            Ok(seconds) if in_range => Ok(Self { per_state: Duration::seconds(seconds) }),
            _ => Err(ValidationError::new(
                "deadline_seconds",
                format!("must be between 1 and {} (got {seconds})", Self::MAX_SECONDS),
            )),
        }
    }

    /// When an order that entered a state at `entered_at` is overdue. Whole seconds: the Orders table indexes
    /// deadlines as epoch seconds, so the index and [`decide`] agree on which orders are overdue.
    pub fn due(&self, entered_at: OffsetDateTime) -> OffsetDateTime {
        let whole_second = entered_at.replace_nanosecond(0).unwrap_or(entered_at);
        whole_second.saturating_add(self.per_state)
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Self { per_state: Duration::seconds(Self::DEFAULT_SECONDS as i64) }
    }
}

/// Where an order stands. Every order ends in `Shipped`, `Rejected` or `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Reserved,
    /// Its payment was declined and the saga asked inventory to release its stock: `InventoryReleased` cancels it.
    /// The saga's own state; the public contract shows it as `RESERVED` ([`OrderStatus::public`]).
    Releasing,
    Confirmed,
    Shipped,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Shipped | Self::Rejected | Self::Cancelled)
    }

    /// The status `GET /orders/{id}` shows, one of DESIGN.md's public states (PENDING, RESERVED, CONFIRMED,
    /// SHIPPED, REJECTED, CANCELLED): the one place the saga's states map to them. An order releasing its stock
    /// shows RESERVED until it is CANCELLED, as it did before the saga named that state.
    pub fn public(self) -> Self {
        match self {
            Self::Releasing => Self::Reserved,
            status => status,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Reserved => "RESERVED",
            Self::Releasing => "RELEASING",
            Self::Confirmed => "CONFIRMED",
            Self::Shipped => "SHIPPED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// One step of an order's history: the event type and when it happened (RFC 3339 in JSON, like an event's
/// `occurred_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An order as the saga keeps it and `GET /orders/{id}` shows it (with its status [`OrderStatus::public`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredOrder")]
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
    /// When the order is cancelled if it is still in its current, non-final state; `None` once final (and for
    /// orders stored before deadlines existed).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline_at: Option<OffsetDateTime>,
}

impl Order {
    /// A new order, as placed at `placed_at`: PENDING until its deadline.
    pub fn placed(
        order_id: String,
        customer_id: String,
        lines: Vec<OrderLine>,
        placed_at: OffsetDateTime,
        deadlines: &Deadlines,
    ) -> Self {
        Self {
            order_id,
            customer_id,
            status: OrderStatus::Pending,
            lines,
            total: None,
            history: vec![HistoryEntry { event_type: OrderPlaced::TYPE.into(), at: placed_at }],
            version: 1,
            deadline_at: Some(deadlines.due(placed_at)),
        }
    }
}

/// An order as read from its JSON, before [`Order`] takes it over: the migration on read of orders stored before
/// [`OrderStatus::Releasing`] existed, which stayed RESERVED after their payment was declined (the saga then told
/// them by the `PaymentDeclined` in their history).
#[derive(Deserialize)]
struct StoredOrder {
    order_id: String,
    customer_id: String,
    status: OrderStatus,
    lines: Vec<OrderLine>,
    total: Option<Decimal>,
    history: Vec<HistoryEntry>,
    version: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    deadline_at: Option<OffsetDateTime>,
}

impl From<StoredOrder> for Order {
    fn from(stored: StoredOrder) -> Self {
        let StoredOrder { order_id, customer_id, status, lines, total, history, version, deadline_at } = stored;
        let declined = history.iter().any(|entry| entry.event_type == PaymentDeclined::TYPE);
        let status = match status {
            OrderStatus::Reserved if declined => OrderStatus::Releasing,
            status => status,
        };
        Self { order_id, customer_id, status, lines, total, history, version, deadline_at }
    }
}

/// The history entry of [`SagaInput::DeadlinePassed`].
pub const DEADLINE_PASSED: &str = "DeadlinePassed";

/// What the saga reacts to: the events of the bus, and the deadline sweeper's check.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaInput {
    InventoryReserved(Envelope<InventoryReserved>),
    InventoryRejected(Envelope<InventoryRejected>),
    PaymentAuthorized(Envelope<PaymentAuthorized>),
    PaymentDeclined(Envelope<PaymentDeclined>),
    InventoryReleased(Envelope<InventoryReleased>),
    ShipmentScheduled(Envelope<ShipmentScheduled>),
    /// Not a bus event: the sweeper asks whether the order's deadline has passed at `now`.
    DeadlinePassed {
        order_id: String,
        now: OffsetDateTime,
    },
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
            Self::DeadlinePassed { order_id, .. } => order_id,
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
            Self::DeadlinePassed { .. } => DEADLINE_PASSED,
        }
    }

    fn occurred_at(&self) -> OffsetDateTime {
        match self {
            Self::InventoryReserved(e) => e.occurred_at,
            Self::InventoryRejected(e) => e.occurred_at,
            Self::PaymentAuthorized(e) => e.occurred_at,
            Self::PaymentDeclined(e) => e.occurred_at,
            Self::InventoryReleased(e) => e.occurred_at,
            Self::ShipmentScheduled(e) => e.occurred_at,
            Self::DeadlinePassed { now, .. } => *now,
        }
    }
}

/// The saga's state machine: given the order as stored (`None` if the saga has not seen it) and an input,
/// what to store and emit. Pure, so duplicates and reordering are tested without AWS.
///
/// A declined payment moves a RESERVED order to RELEASING (its stock release requested); only there does
/// `InventoryReleased` cancel it, and nothing else moves it on but its deadline.
///
/// Every step into a non-final state sets the order's deadline to `deadlines` after the input occurred; a step
/// into a final state clears it. Once final, an order ignores everything: a reply that arrives after the deadline
/// cancelled its order changes nothing, and the cancellation's compensations undo what the reply did.
pub fn decide(current: Option<&Order>, input: &SagaInput, deadlines: &Deadlines) -> Decision {
    use OrderStatus::*;
    let status = current.map(|order| order.status);
    let advance = |mut order: Order, status: OrderStatus, output: SagaOutput| {
        order.status = status;
        order.version += 1;
        order.history.push(HistoryEntry { event_type: input.event_type().into(), at: input.occurred_at() });
        order.deadline_at = (!status.is_final()).then(|| deadlines.due(input.occurred_at()));
        Decision::Advance { order: Box::new(order), output }
    };
    // An order the saga has not seen yet (event before the placed order is visible, or a legacy producer's order)
    // starts from what the inventory event says.
    let seen_or = |order_id: &str, customer_id: &str, lines: Vec<OrderLine>| {
        current.cloned().unwrap_or_else(|| {
            Order::placed(order_id.into(), customer_id.into(), lines, input.occurred_at(), deadlines)
        })
    };
    match (input, current) {
        (SagaInput::DeadlinePassed { order_id, now }, _) => match current {
            Some(order) if !order.status.is_final() && order.deadline_at.is_some_and(|due| due <= *now) => {
                let cancelled = OrderCancelled {
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    reason: CANCELLED_BY_DEADLINE.to_owned(),
                };
                let output = SagaOutput::OrderCancelled(Envelope::new(order.order_id.clone(), cancelled));
                advance(order.clone(), Cancelled, output)
            }
            Some(order) => Decision::Ignore(format!(
                "order {order_id} is {} with deadline {}: not overdue at {now}",
                order.status.as_str(),
                order.deadline_at.map_or_else(|| "none".to_owned(), |due| due.to_string()),
            )),
            None => Decision::Ignore(format!("order {order_id} is unknown: no deadline to enforce")),
        },
        (SagaInput::InventoryReserved(e), None | Some(Order { status: Pending, .. })) => {
            let d = &e.data;
            let lines = d.lines.iter().map(|l| OrderLine { sku: l.sku.clone(), quantity: l.quantity }).collect();
            let mut order = seen_or(&d.order_id, &d.customer_id, lines);
            order.total = Some(d.total);
            let request =
                PaymentRequested { order_id: d.order_id.clone(), customer_id: d.customer_id.clone(), amount: d.total };
            advance(order, Reserved, SagaOutput::PaymentRequested(Envelope::caused_by(e, request)))
        }
        (SagaInput::InventoryRejected(e), None | Some(Order { status: Pending, .. })) => {
            let d = &e.data;
            let order = seen_or(&d.order_id, &d.customer_id, d.lines.clone());
            let rejected = OrderRejected {
                order_id: d.order_id.clone(),
                customer_id: d.customer_id.clone(),
                reason: d.reason.clone(),
            };
            advance(order, Rejected, SagaOutput::OrderRejected(Envelope::caused_by(e, rejected)))
        }
        (SagaInput::PaymentAuthorized(e), Some(order @ Order { status: Reserved, .. })) => {
            let confirmed = OrderConfirmed {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                total: e.data.amount,
            };
            advance(order.clone(), Confirmed, SagaOutput::OrderConfirmed(Envelope::caused_by(e, confirmed)))
        }
        (SagaInput::PaymentDeclined(e), Some(order @ Order { status: Reserved, .. })) => {
            let release = InventoryReleaseRequested { order_id: order.order_id.clone(), reason: e.data.reason.clone() };
            advance(order.clone(), Releasing, SagaOutput::InventoryReleaseRequested(Envelope::caused_by(e, release)))
        }
        (SagaInput::InventoryReleased(e), Some(order @ Order { status: Releasing, .. })) => {
            let reason = "payment declined, stock released".to_owned();
            let cancelled =
                OrderCancelled { order_id: order.order_id.clone(), customer_id: order.customer_id.clone(), reason };
            advance(order.clone(), Cancelled, SagaOutput::OrderCancelled(Envelope::caused_by(e, cancelled)))
        }
        (SagaInput::ShipmentScheduled(e), Some(order @ Order { status: Confirmed, .. })) => {
            let shipped = OrderShipped {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                shipment_id: e.data.shipment_id.clone(),
                lines: order.lines.clone(),
            };
            advance(order.clone(), Shipped, SagaOutput::OrderShipped(Envelope::caused_by(e, shipped)))
        }
        // Inputs that only follow a state the order has not reached: they arrived early.
        (
            SagaInput::PaymentAuthorized(_) | SagaInput::PaymentDeclined(_),
            None | Some(Order { status: Pending, .. }),
        )
        | (
            SagaInput::InventoryReleased(_) | SagaInput::ShipmentScheduled(_),
            None | Some(Order { status: Pending | Reserved, .. }),
        ) => Decision::NotYet(format!(
            "{} for order {} arrived before the order reached the state it follows (status {})",
            input.event_type(),
            input.order_id(),
            status.map_or("unknown", OrderStatus::as_str)
        )),
        _ => Decision::Ignore(format!(
            "{} for order {} already applied or superseded (status {})",
            input.event_type(),
            input.order_id(),
            status.map_or("unknown", OrderStatus::as_str)
        )),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::events::PricedLine;

    /// Deadlines of a minute, as a test configures them.
    const DEADLINES: Deadlines = Deadlines { per_state: Duration::minutes(1) };

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
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
        Order::placed("o-1".into(), "c-1".into(), lines, datetime!(2026-11-24 10:00 UTC), &DEADLINES)
    }

    fn decide(current: Option<&Order>, input: &SagaInput) -> Decision {
        super::decide(current, input, &DEADLINES)
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
        assert_eq!(order.status, OrderStatus::Releasing);
        assert_eq!(order.status.public(), OrderStatus::Reserved);
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

    // ------------------------------------------------------------------ deadlines, given / when / then

    /// When [`placed`] places the order.
    const T0: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    /// `envelope` as if it occurred `seconds` after [`T0`].
    fn at<T>(mut envelope: Envelope<T>, seconds: i64) -> Envelope<T> {
        envelope.occurred_at = T0 + Duration::seconds(seconds);
        envelope
    }

    fn reserved_at(seconds: i64) -> SagaInput {
        SagaInput::InventoryReserved(at(reserved(), seconds))
    }

    fn authorized_at(seconds: i64) -> SagaInput {
        let authorized =
            PaymentAuthorized { order_id: "o-1".into(), payment_id: "p-1".into(), amount: "25.00".parse().unwrap() };
        SagaInput::PaymentAuthorized(at(Envelope::new("o-1", authorized), seconds))
    }

    fn declined_at(seconds: i64) -> SagaInput {
        let SagaInput::PaymentDeclined(declined) = payment_declined() else { unreachable!() };
        SagaInput::PaymentDeclined(at(declined, seconds))
    }

    fn released_at(seconds: i64) -> SagaInput {
        SagaInput::InventoryReleased(at(Envelope::new("o-1", InventoryReleased { order_id: "o-1".into() }), seconds))
    }

    fn scheduled_at(seconds: i64) -> SagaInput {
        let scheduled = ShipmentScheduled { order_id: "o-1".into(), shipment_id: "s-1".into() };
        SagaInput::ShipmentScheduled(at(Envelope::new("o-1", scheduled), seconds))
    }

    fn deadline_checked_at(seconds: i64) -> SagaInput {
        SagaInput::DeadlinePassed { order_id: "o-1".into(), now: T0 + Duration::seconds(seconds) }
    }

    /// The order placed at [`T0`] after `inputs`, each of which must move it on.
    fn given(inputs: &[SagaInput]) -> Given {
        Given(inputs.iter().fold(placed(), |order, input| advance(Some(&order), input).0))
    }

    struct Given(Order);

    impl Given {
        fn when(self, input: SagaInput) -> When {
            When { decision: decide(Some(&self.0), &input), before: self.0 }
        }
    }

    struct When {
        before: Order,
        decision: Decision,
    }

    /// What the step must decide.
    enum Then {
        Advances(OrderStatus),
        Ignored,
        NotYet,
    }

    impl When {
        /// Checks the decision against `expected` and returns it.
        fn then(self, expected: Then) -> Decision {
            match (&expected, &self.decision) {
                (Then::Advances(status), Decision::Advance { order, .. }) => {
                    assert_eq!(order.status, *status, "{:?}", self.decision);
                    assert_eq!(order.version, self.before.version + 1);
                }
                (Then::Ignored, Decision::Ignore(_)) | (Then::NotYet, Decision::NotYet(_)) => {}
                _ => panic!("from {:?}, expected {}, got {:?}", self.before.status, expected.name(), self.decision),
            }
            self.decision
        }
    }

    impl Then {
        fn name(&self) -> String {
            match self {
                Self::Advances(status) => format!("to advance to {}", status.as_str()),
                Self::Ignored => "to be ignored".into(),
                Self::NotYet => "to wait (not yet applicable)".into(),
            }
        }
    }

    fn cancellation(decision: Decision) -> (Order, Envelope<OrderCancelled>) {
        match decision {
            Decision::Advance { order, output: SagaOutput::OrderCancelled(cancelled) } => (*order, cancelled),
            other => panic!("expected OrderCancelled, got {other:?}"),
        }
    }

    #[test]
    fn every_non_final_state_is_due_a_deadline_after_it_was_entered_and_a_final_state_has_none() {
        assert_eq!(placed().deadline_at, Some(T0 + Duration::minutes(1)));
        let reserved = given(&[reserved_at(10)]).0;
        assert_eq!(reserved.deadline_at, Some(T0 + Duration::seconds(70)));
        let confirmed = given(&[reserved_at(10), authorized_at(20)]).0;
        assert_eq!(confirmed.deadline_at, Some(T0 + Duration::seconds(80)));
        let awaiting_release = given(&[reserved_at(10), declined_at(30)]).0;
        assert_eq!(awaiting_release.deadline_at, Some(T0 + Duration::seconds(90)));

        assert_eq!(given(&[reserved_at(10), authorized_at(20), scheduled_at(30)]).0.deadline_at, None);
        assert_eq!(given(&[reserved_at(10), declined_at(30), released_at(40)]).0.deadline_at, None);
        let rejected = InventoryRejected {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines: vec![],
            unavailable: vec!["SKU-1".into()],
            reason: "out of stock: SKU-1".into(),
        };
        assert_eq!(given(&[SagaInput::InventoryRejected(Envelope::new("o-1", rejected))]).0.deadline_at, None);
    }

    #[test]
    fn a_deadline_is_a_whole_second_so_the_index_and_the_state_machine_agree() {
        let deadlines = Deadlines::from_seconds(5).unwrap();
        assert_eq!(deadlines.due(datetime!(2026-11-24 10:00:00.999 UTC)), datetime!(2026-11-24 10:00:05 UTC));
    }

    #[test]
    fn an_overdue_order_is_cancelled_by_its_deadline_in_every_non_final_state() {
        let states: [(&str, Vec<SagaInput>); 4] = [
            ("PENDING", vec![]),
            ("RESERVED", vec![reserved_at(0)]),
            ("CONFIRMED", vec![reserved_at(0), authorized_at(1)]),
            ("RELEASING", vec![reserved_at(0), declined_at(1)]),
        ];
        for (state, inputs) in states {
            let (order, cancelled) = cancellation(
                given(&inputs).when(deadline_checked_at(600)).then(Then::Advances(OrderStatus::Cancelled)),
            );
            assert_eq!(cancelled.data.reason, CANCELLED_BY_DEADLINE, "{state}");
            assert_eq!((cancelled.data.order_id.as_str(), cancelled.data.customer_id.as_str()), ("o-1", "c-1"));
            assert_eq!(cancelled.correlation_id, "o-1", "{state}");
            assert_eq!(cancelled.causation_id, None, "no event caused it: {state}");
            assert_eq!(order.deadline_at, None, "{state}");
            let last = order.history.last().unwrap();
            assert_eq!((last.event_type.as_str(), last.at), (DEADLINE_PASSED, datetime!(2026-11-24 10:10 UTC)));
        }
    }

    #[test]
    fn an_order_is_overdue_from_the_second_of_its_deadline_not_before() {
        given(&[reserved_at(10)]).when(deadline_checked_at(69)).then(Then::Ignored);
        given(&[reserved_at(10)]).when(deadline_checked_at(70)).then(Then::Advances(OrderStatus::Cancelled));
    }

    #[test]
    fn an_order_that_moved_on_is_judged_by_its_new_deadline() {
        // Past the PENDING deadline (T0 + 60 s), not past the RESERVED one (T0 + 110 s).
        given(&[reserved_at(50)]).when(deadline_checked_at(61)).then(Then::Ignored);
    }

    #[test]
    fn a_final_or_unknown_order_ignores_its_deadline() {
        given(&[reserved_at(0), authorized_at(1), scheduled_at(2)]).when(deadline_checked_at(600)).then(Then::Ignored);
        given(&[reserved_at(0), declined_at(1), released_at(2)]).when(deadline_checked_at(600)).then(Then::Ignored);
        given(&[deadline_checked_at(600)]).when(deadline_checked_at(601)).then(Then::Ignored);
        assert!(matches!(decide(None, &deadline_checked_at(600)), Decision::Ignore(_)));
    }

    #[test]
    fn replies_after_a_deadline_cancelled_the_order_are_ignored() {
        given(&[deadline_checked_at(600)]).when(reserved_at(601)).then(Then::Ignored);
        given(&[reserved_at(0), deadline_checked_at(600)]).when(authorized_at(601)).then(Then::Ignored);
        given(&[reserved_at(0), authorized_at(1), deadline_checked_at(600)])
            .when(scheduled_at(601))
            .then(Then::Ignored);
        given(&[reserved_at(0), declined_at(1), deadline_checked_at(600)]).when(released_at(601)).then(Then::Ignored);
    }

    #[test]
    fn an_order_stored_without_a_deadline_reads_and_is_never_overdue() {
        let mut json = serde_json::to_value(placed()).unwrap();
        assert_eq!(json["deadline_at"], "2026-11-24T10:01:00Z", "stored as RFC 3339");
        json.as_object_mut().unwrap().remove("deadline_at");
        let legacy: Order = serde_json::from_value(json).unwrap();
        assert_eq!(legacy.deadline_at, None);
        Given(legacy).when(deadline_checked_at(600)).then(Then::Ignored);
    }

    #[test]
    fn a_releasing_order_is_cancelled_by_its_release_and_ignores_the_replies_that_follow_a_paid_order() {
        let releasing = || given(&[reserved_at(0), declined_at(1)]);
        assert_eq!(releasing().0.status, OrderStatus::Releasing);
        releasing().when(released_at(2)).then(Then::Advances(OrderStatus::Cancelled));
        releasing().when(declined_at(2)).then(Then::Ignored);
        releasing().when(authorized_at(2)).then(Then::Ignored);
        releasing().when(scheduled_at(2)).then(Then::Ignored);
        releasing().when(reserved_at(2)).then(Then::Ignored);
    }

    #[test]
    fn only_a_releasing_order_shows_another_status_to_the_public_and_it_shows_reserved() {
        use OrderStatus::*;
        let statuses = [Pending, Reserved, Releasing, Confirmed, Shipped, Rejected, Cancelled];
        let public: Vec<OrderStatus> = statuses.iter().map(|status| status.public()).collect();
        assert_eq!(public, [Pending, Reserved, Reserved, Confirmed, Shipped, Rejected, Cancelled]);
        assert!(!Releasing.is_final());
    }

    #[test]
    fn a_history_entry_is_its_event_type_and_its_time_in_rfc3339() {
        let whole = HistoryEntry { event_type: "OrderPlaced".into(), at: datetime!(2026-11-24 10:00 UTC) };
        assert_eq!(serde_json::to_string(&whole).unwrap(), r#"{"type":"OrderPlaced","at":"2026-11-24T10:00:00Z"}"#);
        // As the saga stored them before the type was typed: the time of an event, to the nanosecond.
        for stored in [
            r#"{"type":"InventoryReserved","at":"2026-11-24T10:00:01.123456789Z"}"#,
            r#"{"type":"PaymentDeclined","at":"2026-11-24T10:00:02.5Z"}"#,
        ] {
            let entry: HistoryEntry = serde_json::from_str(stored).unwrap();
            assert_eq!(serde_json::to_string(&entry).unwrap(), stored, "written back byte for byte");
        }
        let entry: HistoryEntry =
            serde_json::from_str(r#"{"type":"OrderPlaced","at":"2026-11-24T10:00:01.5Z"}"#).unwrap();
        assert_eq!(entry.at, datetime!(2026-11-24 10:00:01.5 UTC));
        assert!(serde_json::from_str::<HistoryEntry>(r#"{"type":"OrderPlaced","at":"yesterday"}"#).is_err());
    }

    #[test]
    fn a_releasing_order_is_stored_as_releasing_and_reads_back_the_same() {
        let releasing = given(&[reserved_at(0), declined_at(1)]).0;
        let json = serde_json::to_value(&releasing).unwrap();
        assert_eq!(json["status"], "RELEASING");
        assert_eq!(serde_json::from_value::<Order>(json).unwrap(), releasing);
    }

    #[test]
    fn an_order_stored_reserved_after_its_payment_was_declined_reads_as_releasing_and_its_release_cancels_it() {
        let mut json = serde_json::to_value(given(&[reserved_at(0), declined_at(1)]).0).unwrap();
        json["status"] = "RESERVED".into();

        let stored: Order = serde_json::from_value(json).unwrap();

        assert_eq!(stored.status, OrderStatus::Releasing);
        assert_eq!(stored.deadline_at, Some(T0 + Duration::seconds(61)), "its deadline is kept");
        Given(stored.clone()).when(released_at(2)).then(Then::Advances(OrderStatus::Cancelled));
        Given(stored).when(declined_at(2)).then(Then::Ignored);
    }

    #[test]
    fn an_order_stored_reserved_without_a_declined_payment_reads_as_reserved() {
        let reserved = given(&[reserved_at(0)]).0;
        let stored: Order = serde_json::from_value(serde_json::to_value(&reserved).unwrap()).unwrap();
        assert_eq!(stored.status, OrderStatus::Reserved);
        Given(stored).when(released_at(2)).then(Then::NotYet);
    }

    #[test]
    fn a_deadline_is_one_second_to_thirty_days() {
        assert_eq!(Deadlines::from_seconds(0).unwrap_err().field, "deadline_seconds");
        assert_eq!(Deadlines::from_seconds(Deadlines::MAX_SECONDS + 1).unwrap_err().field, "deadline_seconds");
        assert_eq!(Deadlines::from_seconds(5).unwrap().due(T0), T0 + Duration::seconds(5));
        assert_eq!(Deadlines::default(), Deadlines::from_seconds(Deadlines::DEFAULT_SECONDS).unwrap());
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
