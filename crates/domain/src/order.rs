//! Orders: the request that places one, and the state machine the saga drives it through.

use orderflow_envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::events::{
    CANCELLED_BY_CUSTOMER, CANCELLED_BY_DEADLINE, CANCELLED_FOR_PAYMENT_MISMATCH, DEFAULT_CURRENCY, InventoryRejected,
    InventoryReleaseRequested, InventoryReleased, InventoryReserved, OrderAdopted, OrderCancelled, OrderConfirmed,
    OrderLine, OrderPlaced, OrderRejected, OrderShipped, PaymentAuthorized, PaymentDeclined, PaymentRequested,
    ShipmentScheduled,
};
use crate::inventory::validate_sku;

/// The most units one line of an order may ask for (`POST /orders`).
pub const MAX_QUANTITY: u32 = 10_000;
/// The most lines one order may have.
pub const MAX_LINES: usize = 50;
/// The longest customer id, in bytes (a token's subject).
pub const MAX_CUSTOMER_ID_BYTES: usize = 128;

/// The body of `POST /orders`. The customer is not in it: it is the caller (the token's subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
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
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Checks a customer id (the subject of the caller's token): 1 to [`MAX_CUSTOMER_ID_BYTES`] bytes, no control
/// characters. An error names the field `customer_id`.
pub fn validate_customer_id(customer_id: &str) -> Result<(), ValidationError> {
    if customer_id.is_empty() || customer_id.len() > MAX_CUSTOMER_ID_BYTES || customer_id.chars().any(char::is_control)
    {
        return Err(ValidationError::new(
            "customer_id",
            format!("must be 1 to {MAX_CUSTOMER_ID_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

impl PlaceOrder {
    /// Checks the request: 1 to [`MAX_LINES`] lines, each of a valid SKU ([`validate_sku`]) and 1 to
    /// [`MAX_QUANTITY`] units; lines of the same SKU are allowed and count together.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.lines.is_empty() {
            return Err(ValidationError::new("lines", "must have at least one line"));
        }
        if self.lines.len() > MAX_LINES {
            return Err(ValidationError::new("lines", format!("must have at most {MAX_LINES} lines")));
        }
        for (i, line) in self.lines.iter().enumerate() {
            validate_sku(&line.sku).map_err(|e| ValidationError::new(format!("lines[{i}].sku"), e.message))?;
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
    /// The statuses the public contract shows ([`OrderStatus::public`]).
    pub const PUBLIC: [Self; 6] =
        [Self::Pending, Self::Reserved, Self::Confirmed, Self::Shipped, Self::Rejected, Self::Cancelled];

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

/// An order as its events make it: the fold of its stream ([`Order::from_events`]), what the saga decides on and
/// `GET /orders/{id}` shows (with its status [`OrderStatus::public`]). Never stored: only its events are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    /// The ISO 4217 code of the currency of its prices and total.
    pub currency: String,
    /// Known once the catalogue priced the lines (on `PaymentRequested`, which carries the reserved total).
    pub total: Option<Decimal>,
    /// The order's events, their types and when they occurred.
    pub history: Vec<HistoryEntry>,
    /// How many events the order has: the next event is `version + 1`, appended only if no other writer took it.
    pub version: u64,
    /// When the order is cancelled if it is still in its current, non-final state: [`Deadlines::due`] of the
    /// event that brought it there; `None` once final.
    pub deadline_at: Option<OffsetDateTime>,
}

/// One event of an order's stream, in the event store and on the bus. The orders API writes the first
/// ([`OrderEvent::Placed`]); the saga appends the rest.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(Envelope<OrderPlaced>),
    /// The first event of an order the saga met before any `OrderPlaced` of it (a legacy producer's order, which
    /// inventory reserves straight from `OrderCreated`).
    Adopted(Envelope<OrderAdopted>),
    PaymentRequested(Envelope<PaymentRequested>),
    Rejected(Envelope<OrderRejected>),
    Confirmed(Envelope<OrderConfirmed>),
    ReleaseRequested(Envelope<InventoryReleaseRequested>),
    Cancelled(Envelope<OrderCancelled>),
    Shipped(Envelope<OrderShipped>),
}

/// Calls `$body` with the envelope of whichever variant `$event` is.
macro_rules! on_envelope {
    ($event:expr, $envelope:ident => $body:expr) => {
        match $event {
            OrderEvent::Placed($envelope) => $body,
            OrderEvent::Adopted($envelope) => $body,
            OrderEvent::PaymentRequested($envelope) => $body,
            OrderEvent::Rejected($envelope) => $body,
            OrderEvent::Confirmed($envelope) => $body,
            OrderEvent::ReleaseRequested($envelope) => $body,
            OrderEvent::Cancelled($envelope) => $body,
            OrderEvent::Shipped($envelope) => $body,
        }
    };
}

impl OrderEvent {
    pub fn event_type(&self) -> &str {
        on_envelope!(self, e => &e.event_type)
    }

    pub fn occurred_at(&self) -> OffsetDateTime {
        on_envelope!(self, e => e.occurred_at)
    }

    pub fn id(&self) -> uuid::Uuid {
        on_envelope!(self, e => e.id)
    }

    pub fn order_id(&self) -> &str {
        on_envelope!(self, e => &e.data.order_id)
    }

    /// The envelope without its type: what the event store writes and the bus carries.
    pub fn raw(&self) -> RawEnvelope {
        on_envelope!(self, e => RawEnvelope::from(e))
    }

    /// The event an envelope of the order's stream holds, once [`Registry::upcast`] brought it to the current
    /// version of its type.
    pub fn decode(raw: &RawEnvelope) -> Result<Self, EnvelopeError> {
        Ok(match raw.event_type.as_str() {
            OrderPlaced::TYPE => Self::Placed(raw.decode()?),
            OrderAdopted::TYPE => Self::Adopted(raw.decode()?),
            PaymentRequested::TYPE => Self::PaymentRequested(raw.decode()?),
            OrderRejected::TYPE => Self::Rejected(raw.decode()?),
            OrderConfirmed::TYPE => Self::Confirmed(raw.decode()?),
            InventoryReleaseRequested::TYPE => Self::ReleaseRequested(raw.decode()?),
            OrderCancelled::TYPE => Self::Cancelled(raw.decode()?),
            OrderShipped::TYPE => Self::Shipped(raw.decode()?),
            other => return Err(EnvelopeError::NotHandled(format!("{other} in an order's stream"))),
        })
    }

    /// The bus source of the event: the service that decided it.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Placed(_) => OrderPlaced::SOURCE,
            Self::Adopted(_) => OrderAdopted::SOURCE,
            Self::PaymentRequested(_) => PaymentRequested::SOURCE,
            Self::Rejected(_) => OrderRejected::SOURCE,
            Self::Confirmed(_) => OrderConfirmed::SOURCE,
            Self::ReleaseRequested(_) => InventoryReleaseRequested::SOURCE,
            Self::Cancelled(_) => OrderCancelled::SOURCE,
            Self::Shipped(_) => OrderShipped::SOURCE,
        }
    }
}

/// An order's stream that no sequence of decisions can produce: corrupt, or written by a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("the stream starts with {event_type}, not with OrderPlaced or OrderAdopted")]
    NoStart { event_type: String },
    #[error("event {version} ({event_type}) starts the order again")]
    StartedTwice { version: u64, event_type: String },
    #[error("event {version} ({event_type}) cannot follow status {status}")]
    InvalidTransition { version: u64, event_type: String, status: &'static str },
}

impl Order {
    /// The order its events make, in stream order (`None` for no events). Pure: the event store, the saga and the
    /// read models all derive an order with it and nothing else.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a OrderEvent>,
        deadlines: &Deadlines,
    ) -> Result<Option<Self>, FoldError> {
        Self::fold_onto(None, events, deadlines)
    }

    /// The order `events` make when they follow `current` (`None`: an order with no events yet).
    pub fn fold_onto<'a>(
        current: Option<&Self>,
        events: impl IntoIterator<Item = &'a OrderEvent>,
        deadlines: &Deadlines,
    ) -> Result<Option<Self>, FoldError> {
        let mut order = current.cloned();
        for event in events {
            order = Some(match order {
                None => Self::start(event, deadlines)?,
                Some(order) => order.apply(event, deadlines)?,
            });
        }
        Ok(order)
    }

    /// The order its first event starts.
    fn start(event: &OrderEvent, deadlines: &Deadlines) -> Result<Self, FoldError> {
        let (order_id, customer_id, lines, currency) = match event {
            OrderEvent::Placed(e) => (&e.data.order_id, &e.data.customer_id, &e.data.lines, e.data.currency.as_str()),
            // A legacy producer's order names no currency.
            OrderEvent::Adopted(e) => (&e.data.order_id, &e.data.customer_id, &e.data.lines, DEFAULT_CURRENCY),
            other => return Err(FoldError::NoStart { event_type: other.event_type().to_owned() }),
        };
        Ok(Self {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            status: OrderStatus::Pending,
            lines: lines.clone(),
            currency: currency.to_owned(),
            total: None,
            history: vec![HistoryEntry { event_type: event.event_type().to_owned(), at: event.occurred_at() }],
            version: 1,
            deadline_at: Some(deadlines.due(event.occurred_at())),
        })
    }

    /// The order after its next event.
    pub fn apply(mut self, event: &OrderEvent, deadlines: &Deadlines) -> Result<Self, FoldError> {
        use OrderStatus::*;
        let version = self.version + 1;
        let status = match (event, self.status) {
            (OrderEvent::Placed(_) | OrderEvent::Adopted(_), _) => {
                return Err(FoldError::StartedTwice { version, event_type: event.event_type().to_owned() });
            }
            (OrderEvent::PaymentRequested(e), Pending) => {
                self.total = Some(e.data.amount);
                Reserved
            }
            (OrderEvent::Rejected(_), Pending) => Rejected,
            (OrderEvent::Confirmed(_), Reserved) => Confirmed,
            (OrderEvent::ReleaseRequested(_), Reserved) => Releasing,
            (OrderEvent::Cancelled(_), status) if !status.is_final() => Cancelled,
            (OrderEvent::Shipped(_), Confirmed) => Shipped,
            (_, status) => {
                return Err(FoldError::InvalidTransition {
                    version,
                    event_type: event.event_type().to_owned(),
                    status: status.as_str(),
                });
            }
        };
        self.status = status;
        self.version = version;
        self.history.push(HistoryEntry { event_type: event.event_type().to_owned(), at: event.occurred_at() });
        self.deadline_at = (!status.is_final()).then(|| deadlines.due(event.occurred_at()));
        Ok(self)
    }
}

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
    /// Not a bus event: the customer asks at `now` to cancel the order (`POST /orders/{id}/cancel`). Granted
    /// until the order is final: a SHIPPED order (its shipment recorded) can no longer be cancelled.
    CancelRequested {
        order_id: String,
        now: OffsetDateTime,
    },
}

/// What the saga does with an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Append these events to the order's stream, after the version it was decided on, atomically.
    Append(Vec<OrderEvent>),
    /// The input contradicts the order (a payment authorized for another amount than its total): append these
    /// events, the order's compensation, as [`Decision::Append`] does, then refuse the input permanently with
    /// `reason`.
    Compensate { events: Vec<OrderEvent>, reason: String },
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
            Self::DeadlinePassed { order_id, .. } | Self::CancelRequested { order_id, .. } => order_id,
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
            Self::DeadlinePassed { .. } => "DeadlinePassed",
            Self::CancelRequested { .. } => "CancelRequested",
        }
    }
}

/// The event `data` that `cause` causes. It occurred when its cause did (event time: the order entered its new
/// state then, and its deadline counts from there), and its id derives from the cause's, so deciding again on the
/// same cause yields the same event.
fn caused_by<C, T: Event>(cause: &Envelope<C>, data: T) -> Envelope<T> {
    let mut envelope = Envelope::caused_by(cause, data);
    envelope.id = uuid::Uuid::new_v5(&cause.id, T::TYPE.as_bytes());
    envelope.occurred_at = cause.occurred_at;
    envelope
}

/// The cancellation of `order` at `now` for `reason`: a decision of the order's own (a deadline, a customer's
/// request), so it has no cause and occurs when it is decided.
fn cancelled(order: &Order, reason: &str, now: OffsetDateTime) -> OrderEvent {
    let cancelled = OrderCancelled {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        reason: reason.to_owned(),
    };
    let mut envelope = Envelope::new(order.order_id.clone(), cancelled);
    envelope.occurred_at = now;
    OrderEvent::Cancelled(envelope)
}

/// The append that adopts an order the saga has not seen (a legacy producer's order: inventory reserved it from
/// `OrderCreated`) from what the inventory event `cause` says, with the step `next` that event causes.
fn adopt<C>(cause: &Envelope<C>, adopted: OrderAdopted, next: OrderEvent) -> Decision {
    Decision::Append(vec![OrderEvent::Adopted(caused_by(cause, adopted)), next])
}

/// The saga's state machine: given the order as its events make it (`None` if it has none) and an input, which
/// events to append. Pure, so duplicates and reordering are tested without AWS.
///
/// A declined payment moves a RESERVED order to RELEASING (its stock release requested); only there does
/// `InventoryReleased` cancel it, and nothing else moves it on but its deadline.
///
/// A payment authorized for another amount than the order's total cancels a RESERVED order
/// ([`CANCELLED_FOR_PAYMENT_MISMATCH`]), whose compensations release its stock and void the authorization, and
/// the authorization itself is refused ([`Decision::Compensate`]).
///
/// Once final, an order ignores everything: a reply that arrives after the deadline cancelled its order changes
/// nothing, and the cancellation's compensations undo what the reply did.
pub fn decide(current: Option<&Order>, input: &SagaInput) -> Decision {
    use OrderStatus::*;
    let status = current.map(|order| order.status);
    let one = |event: OrderEvent| Decision::Append(vec![event]);
    match (input, current) {
        (SagaInput::DeadlinePassed { order_id, now }, _) => match current {
            Some(order) if !order.status.is_final() && order.deadline_at.is_some_and(|due| due <= *now) => {
                one(cancelled(order, CANCELLED_BY_DEADLINE, *now))
            }
            Some(order) => Decision::Ignore(format!(
                "order {order_id} is {} with deadline {}: not overdue at {now}",
                order.status.as_str(),
                order.deadline_at.map_or_else(|| "none".to_owned(), |due| due.to_string()),
            )),
            None => Decision::Ignore(format!("order {order_id} is unknown: no deadline to enforce")),
        },
        (SagaInput::CancelRequested { order_id, now }, _) => match current {
            Some(order) if !order.status.is_final() => one(cancelled(order, CANCELLED_BY_CUSTOMER, *now)),
            Some(order) => {
                Decision::Ignore(format!("order {order_id} is {}: too late to cancel", order.status.public().as_str()))
            }
            None => Decision::Ignore(format!("order {order_id} is unknown: nothing to cancel")),
        },
        (SagaInput::InventoryReserved(e), None | Some(Order { status: Pending, .. })) => {
            let d = &e.data;
            let request =
                PaymentRequested { order_id: d.order_id.clone(), customer_id: d.customer_id.clone(), amount: d.total };
            let next = OrderEvent::PaymentRequested(caused_by(e, request));
            if current.is_some() {
                return one(next);
            }
            let lines = d.lines.iter().map(|l| OrderLine { sku: l.sku.clone(), quantity: l.quantity }).collect();
            adopt(e, OrderAdopted { order_id: d.order_id.clone(), customer_id: d.customer_id.clone(), lines }, next)
        }
        (SagaInput::InventoryRejected(e), None | Some(Order { status: Pending, .. })) => {
            let d = &e.data;
            let rejected = OrderRejected {
                order_id: d.order_id.clone(),
                customer_id: d.customer_id.clone(),
                reason: d.reason.clone(),
            };
            let next = OrderEvent::Rejected(caused_by(e, rejected));
            if current.is_some() {
                return one(next);
            }
            let adopted = OrderAdopted {
                order_id: d.order_id.clone(),
                customer_id: d.customer_id.clone(),
                lines: d.lines.clone(),
            };
            adopt(e, adopted, next)
        }
        (SagaInput::PaymentAuthorized(e), Some(order @ Order { status: Reserved, .. }))
            if order.total != Some(e.data.amount) =>
        {
            let cancelled = OrderCancelled {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                reason: CANCELLED_FOR_PAYMENT_MISMATCH.to_owned(),
            };
            let reason = format!(
                "payment {} of order {} authorized {} {}, not the order's total {}: order cancelled",
                e.data.payment_id,
                order.order_id,
                e.data.amount,
                order.currency,
                order.total.map_or_else(|| "(unpriced)".to_owned(), |total| format!("{total} {}", order.currency)),
            );
            Decision::Compensate { events: vec![OrderEvent::Cancelled(caused_by(e, cancelled))], reason }
        }
        (SagaInput::PaymentAuthorized(e), Some(order @ Order { status: Reserved, .. })) => {
            let confirmed = OrderConfirmed {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                total: e.data.amount,
            };
            one(OrderEvent::Confirmed(caused_by(e, confirmed)))
        }
        (SagaInput::PaymentDeclined(e), Some(order @ Order { status: Reserved, .. })) => {
            let release = InventoryReleaseRequested { order_id: order.order_id.clone(), reason: e.data.reason.clone() };
            one(OrderEvent::ReleaseRequested(caused_by(e, release)))
        }
        (SagaInput::InventoryReleased(e), Some(order @ Order { status: Releasing, .. })) => {
            let reason = "payment declined, stock released".to_owned();
            let cancelled =
                OrderCancelled { order_id: order.order_id.clone(), customer_id: order.customer_id.clone(), reason };
            one(OrderEvent::Cancelled(caused_by(e, cancelled)))
        }
        (SagaInput::ShipmentScheduled(e), Some(order @ Order { status: Confirmed, .. })) => {
            let shipped = OrderShipped {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                shipment_id: e.data.shipment_id.clone(),
                lines: order.lines.clone(),
            };
            one(OrderEvent::Shipped(caused_by(e, shipped)))
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

    /// When [`placed`] places the order.
    const T0: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

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

    fn order_placed() -> OrderEvent {
        let lines = vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }];
        let placed = OrderPlaced {
            currency: crate::events::DEFAULT_CURRENCY.into(),
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines,
        };
        let mut envelope = Envelope::new("o-1", placed);
        envelope.occurred_at = T0;
        OrderEvent::Placed(envelope)
    }

    fn placed() -> Order {
        fold(&[order_placed()]).unwrap().unwrap()
    }

    fn fold(events: &[OrderEvent]) -> Result<Option<Order>, FoldError> {
        Order::from_events(events, &DEADLINES)
    }

    fn decide(current: Option<&Order>, input: &SagaInput) -> Decision {
        super::decide(current, input)
    }

    /// The order after `events` were appended to `current`.
    fn appended(current: Option<&Order>, events: &[OrderEvent]) -> Order {
        Order::fold_onto(current, events, &DEADLINES).unwrap().expect("at least one event")
    }

    /// The order after the step `input` and the last event the step appended.
    fn advance(current: Option<&Order>, input: &SagaInput) -> (Order, OrderEvent) {
        match decide(current, input) {
            Decision::Append(events) => (appended(current, &events), events.last().unwrap().clone()),
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
        let OrderEvent::PaymentRequested(request) = output else { panic!("{output:?}") };
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
        assert_eq!(order.version, 2, "OrderAdopted, then PaymentRequested");
        assert_eq!(order.history[0].event_type, "OrderAdopted");
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
        assert!(matches!(output, OrderEvent::ReleaseRequested(_)));
        assert!(matches!(decide(Some(&order), &payment_declined()), Decision::Ignore(_)));

        let released = SagaInput::InventoryReleased(Envelope::new("o-1", InventoryReleased { order_id: "o-1".into() }));
        let (order, output) = advance(Some(&order), &released);
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert!(matches!(output, OrderEvent::Cancelled(_)));
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
        /// Compensates the order into this status and refuses the input.
        Compensates(OrderStatus),
        Ignored,
        NotYet,
    }

    impl When {
        /// Checks the decision against `expected`; returns the order after it and the decision.
        fn then(self, expected: Then) -> (Order, Decision) {
            match (&expected, &self.decision) {
                (Then::Advances(status), Decision::Append(events))
                | (Then::Compensates(status), Decision::Compensate { events, .. }) => {
                    let order = appended(Some(&self.before), events);
                    assert_eq!(order.status, *status, "{:?}", self.decision);
                    assert_eq!(order.version, self.before.version + 1);
                    (order, self.decision)
                }
                (Then::Ignored, Decision::Ignore(_)) | (Then::NotYet, Decision::NotYet(_)) => {
                    (self.before, self.decision)
                }
                _ => panic!("from {:?}, expected {}, got {:?}", self.before.status, expected.name(), self.decision),
            }
        }
    }

    impl Then {
        fn name(&self) -> String {
            match self {
                Self::Advances(status) => format!("to advance to {}", status.as_str()),
                Self::Compensates(status) => format!("to compensate into {} and refuse the input", status.as_str()),
                Self::Ignored => "to be ignored".into(),
                Self::NotYet => "to wait (not yet applicable)".into(),
            }
        }
    }

    fn cancellation((order, decision): (Order, Decision)) -> (Order, Envelope<OrderCancelled>) {
        match decision {
            Decision::Append(mut events) => match events.pop() {
                Some(OrderEvent::Cancelled(cancelled)) if events.is_empty() => (order, cancelled),
                other => panic!("expected OrderCancelled alone, got {other:?}"),
            },
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
            assert_eq!((last.event_type.as_str(), last.at), ("OrderCancelled", datetime!(2026-11-24 10:10 UTC)));
        }
    }

    fn authorized_for(amount: &str, seconds: i64) -> SagaInput {
        let authorized =
            PaymentAuthorized { order_id: "o-1".into(), payment_id: "p-1".into(), amount: amount.parse().unwrap() };
        SagaInput::PaymentAuthorized(at(Envelope::new("o-1", authorized), seconds))
    }

    #[test]
    fn a_payment_authorized_for_another_amount_than_the_total_cancels_the_order_and_is_refused_with_the_reason() {
        for amount in ["24.99", "25.01", "0", "2500.00"] {
            let authorization = authorized_for(amount, 7);
            let SagaInput::PaymentAuthorized(authorized) = &authorization else { unreachable!() };
            let authorization_id = authorized.id;

            let (order, decision) =
                given(&[reserved_at(5)]).when(authorization).then(Then::Compensates(OrderStatus::Cancelled));

            let Decision::Compensate { events, reason } = decision else { unreachable!() };
            let [OrderEvent::Cancelled(cancelled)] = events.as_slice() else { panic!("{events:?}") };
            assert_eq!(cancelled.data.reason, CANCELLED_FOR_PAYMENT_MISMATCH, "{amount}");
            assert_eq!(cancelled.causation_id, Some(authorization_id), "caused by the authorization: {amount}");
            assert_eq!(cancelled.occurred_at, T0 + Duration::seconds(7));
            assert_eq!(
                reason,
                format!(
                    "payment p-1 of order o-1 authorized {amount} USD, not the order's total 25.00 USD: order cancelled"
                )
            );
            assert_eq!(
                (order.deadline_at, order.history.last().unwrap().event_type.as_str()),
                (None, "OrderCancelled")
            );
        }
    }

    #[test]
    fn the_total_written_with_other_decimals_is_the_total_and_confirms_the_order() {
        given(&[reserved_at(0)]).when(authorized_for("25.0", 1)).then(Then::Advances(OrderStatus::Confirmed));
    }

    #[test]
    fn an_authorization_of_another_amount_is_checked_once_the_order_is_priced_and_ignored_once_it_is_final() {
        given(&[]).when(authorized_for("1.00", 1)).then(Then::NotYet);
        let (cancelled, _) =
            given(&[reserved_at(0)]).when(authorized_for("1.00", 1)).then(Then::Compensates(OrderStatus::Cancelled));
        Given(cancelled.clone()).when(authorized_for("1.00", 1)).then(Then::Ignored);
        Given(cancelled).when(authorized_for("25.00", 2)).then(Then::Ignored);
        let confirmed = given(&[reserved_at(0), authorized_at(1)]);
        confirmed.when(authorized_for("1.00", 2)).then(Then::Ignored);
    }

    fn cancel_requested_at(seconds: i64) -> SagaInput {
        SagaInput::CancelRequested { order_id: "o-1".into(), now: T0 + Duration::seconds(seconds) }
    }

    #[test]
    fn a_customer_cancels_an_order_in_every_state_before_it_is_final() {
        let states: [(&str, Vec<SagaInput>); 4] = [
            ("PENDING", vec![]),
            ("RESERVED", vec![reserved_at(0)]),
            ("CONFIRMED", vec![reserved_at(0), authorized_at(1)]),
            ("RELEASING", vec![reserved_at(0), declined_at(1)]),
        ];
        for (state, inputs) in states {
            let (order, cancelled) =
                cancellation(given(&inputs).when(cancel_requested_at(5)).then(Then::Advances(OrderStatus::Cancelled)));
            assert_eq!(cancelled.data.reason, CANCELLED_BY_CUSTOMER, "{state}");
            assert_eq!(cancelled.causation_id, None, "a request, not an event, caused it: {state}");
            assert_eq!(order.history.last().unwrap().at, T0 + Duration::seconds(5), "{state}");
        }
    }

    #[test]
    fn a_shipped_order_cannot_be_cancelled_and_a_cancelled_one_is_never_shipped() {
        let shipped = [reserved_at(0), authorized_at(1), scheduled_at(2)];
        given(&shipped).when(cancel_requested_at(3)).then(Then::Ignored);
        let (cancelled, _) = given(&[reserved_at(0), authorized_at(1)])
            .when(cancel_requested_at(2))
            .then(Then::Advances(OrderStatus::Cancelled));
        let (_, decision) = Given(cancelled.clone()).when(scheduled_at(3)).then(Then::Ignored);
        assert!(matches!(decision, Decision::Ignore(_)));
        Given(cancelled).when(cancel_requested_at(4)).then(Then::Ignored);
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

    // ------------------------------------------------------------------ the fold of an order's stream

    fn request_payment(order: &Order, amount: &str, at: i64) -> OrderEvent {
        let request = PaymentRequested {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            amount: amount.parse().unwrap(),
        };
        OrderEvent::PaymentRequested(at_(Envelope::new("o-1", request), at))
    }

    fn at_<T>(mut envelope: Envelope<T>, seconds: i64) -> Envelope<T> {
        envelope.occurred_at = T0 + Duration::seconds(seconds);
        envelope
    }

    fn cancelled(at: i64) -> OrderEvent {
        let data = OrderCancelled { order_id: "o-1".into(), customer_id: "c-1".into(), reason: "customer".into() };
        OrderEvent::Cancelled(at_(Envelope::new("o-1", data), at))
    }

    #[test]
    fn a_reply_ahead_of_its_order_waits() {
        given(&[]).when(authorized_at(1)).then(Then::NotYet);
        given(&[reserved_at(0)]).when(scheduled_at(1)).then(Then::NotYet);
    }

    #[test]
    fn no_events_is_no_order() {
        assert_eq!(fold(&[]), Ok(None));
    }

    #[test]
    fn an_order_is_the_fold_of_its_events_and_its_history_is_their_types() {
        let placed = placed();
        let events = [order_placed(), request_payment(&placed, "25.00", 10), cancelled(20)];

        let order = fold(&events).unwrap().unwrap();

        assert_eq!(
            (order.status, order.version, order.total),
            (OrderStatus::Cancelled, 3, Some("25.00".parse().unwrap()))
        );
        let history: Vec<(&str, OffsetDateTime)> =
            order.history.iter().map(|entry| (entry.event_type.as_str(), entry.at)).collect();
        assert_eq!(
            history,
            [
                ("OrderPlaced", T0),
                ("PaymentRequested", T0 + Duration::seconds(10)),
                ("OrderCancelled", T0 + Duration::seconds(20))
            ]
        );
        assert_eq!(order.deadline_at, None, "final");
        assert_eq!(fold(&events[..2]).unwrap().unwrap().deadline_at, Some(T0 + Duration::seconds(70)));
    }

    #[test]
    fn every_step_the_saga_decides_folds_into_the_order_it_decided_on() {
        // The saga decides on the fold of the stream; what it appends must fold again into the state it meant.
        let mut events = vec![order_placed()];
        for input in [reserved_at(1), authorized_at(2), scheduled_at(3)] {
            let order = fold(&events).unwrap().unwrap();
            let Decision::Append(appended) = decide(Some(&order), &input) else { panic!("{input:?} must advance") };
            events.extend(appended);
        }
        let order = fold(&events).unwrap().unwrap();
        assert_eq!((order.status, order.version), (OrderStatus::Shipped, 4));
        let types: Vec<&str> = events.iter().map(OrderEvent::event_type).collect();
        assert_eq!(types, ["OrderPlaced", "PaymentRequested", "OrderConfirmed", "OrderShipped"]);
    }

    #[test]
    fn a_stream_no_decision_can_produce_is_refused_naming_the_event() {
        let placed = placed();
        assert_eq!(fold(&[cancelled(1)]), Err(FoldError::NoStart { event_type: "OrderCancelled".into() }));
        assert_eq!(
            fold(&[order_placed(), order_placed()]),
            Err(FoldError::StartedTwice { version: 2, event_type: "OrderPlaced".into() })
        );
        assert_eq!(
            fold(&[order_placed(), cancelled(1), request_payment(&placed, "1.00", 2)]),
            Err(FoldError::InvalidTransition {
                version: 3,
                event_type: "PaymentRequested".into(),
                status: "CANCELLED"
            })
        );
    }

    #[test]
    fn a_decided_event_occurs_when_its_cause_did_and_deciding_again_yields_the_same_event() {
        let input = reserved_at(7);
        let (Decision::Append(first), Decision::Append(again)) =
            (decide(Some(&placed()), &input), decide(Some(&placed()), &input))
        else {
            panic!("a reservation advances a placed order")
        };
        assert_eq!(first, again);
        assert_eq!(first[0].occurred_at(), T0 + Duration::seconds(7));
    }

    #[test]
    fn an_event_reads_back_from_its_raw_envelope() {
        let event = request_payment(&placed(), "25.00", 1);
        assert_eq!(OrderEvent::decode(&event.raw()).unwrap(), event);
        let mut foreign = event.raw();
        foreign.event_type = "InventoryReserved".into();
        assert!(OrderEvent::decode(&foreign).unwrap_err().to_string().contains("in an order's stream"));
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
        let mut request = PlaceOrder { lines: vec![OrderLine { sku: "S".into(), quantity: 1 }] };
        assert_eq!(request.validate(), Ok(()));
        request.lines.push(OrderLine { sku: "S2".into(), quantity: 0 });
        assert_eq!(request.validate().unwrap_err().field, "lines[1].quantity");
        request.lines.clear();
        assert_eq!(request.validate().unwrap_err().field, "lines");
    }

    #[test]
    fn an_order_has_1_to_50_lines_of_valid_skus_and_1_to_10000_units_each() {
        let line = |sku: &str, quantity| OrderLine { sku: sku.into(), quantity };
        let error = |lines: Vec<OrderLine>| PlaceOrder { lines }.validate().unwrap_err().to_string();
        assert_eq!(PlaceOrder { lines: vec![line("SKU-1", MAX_QUANTITY); MAX_LINES] }.validate(), Ok(()));
        assert_eq!(error(vec![line("SKU-1", 1); MAX_LINES + 1]), "lines: must have at most 50 lines");
        assert_eq!(error(vec![line("SKU-1", MAX_QUANTITY + 1)]), "lines[0].quantity: must be between 1 and 10000");
        let bad_sku = vec![line("A", 1), line("B", 1), line("C", 1), line("SKU 4", 1)];
        assert_eq!(error(bad_sku), "lines[3].sku: must be 1 to 128 bytes of [A-Za-z0-9._-]");
        assert_eq!(error(vec![line(&"S".repeat(129), 1)]), "lines[0].sku: must be 1 to 128 bytes of [A-Za-z0-9._-]");
    }

    #[test]
    fn a_customer_id_is_1_to_128_bytes_without_control_characters() {
        for customer_id in ["c-1", "auth0|5f7c8ec7c33c6c004bbafe82", "Zoë", &"c".repeat(128)] {
            assert_eq!(validate_customer_id(customer_id), Ok(()), "{customer_id}");
        }
        for customer_id in ["", "c\n1", "c\u{7f}", &"c".repeat(129)] {
            let err = validate_customer_id(customer_id).unwrap_err();
            assert_eq!(err.to_string(), "customer_id: must be 1 to 128 bytes without control characters");
        }
    }
}
