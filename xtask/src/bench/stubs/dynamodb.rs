//! A DynamoDB endpoint (the JSON 1.0 protocol) for the inventory's reservation path: `BatchGetItem` of stock and
//! reservation keys answered from its state, and `TransactWriteItems` of stock updates, a reservation put and an
//! outbox put applied to it, with the conditions the function sets (`available >= :q` with room for the reserved
//! units, a reservation not existing yet) checked. Anything else is answered with a `ValidationException` and noted, and the memory run
//! fails on it. It counts the requests, so the figures say what the hot path costs.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use orderflow_domain::Decimal;
use orderflow_domain::inventory::Stock;
use orderflow_inventory_store::ReservationStatus;
use orderflow_inventory_store::item::{RESERVATION_SK, STOCK_PK_PREFIX, STOCK_SK, attr, stock_item};
use serde_json::{Value, json};

use super::Server;

/// Units of each SKU in stock: more than a run can reserve.
const SEED_UNITS: u64 = 1_000_000_000;

/// What the DynamoDB stub saw and holds.
#[derive(Default)]
pub struct DynamoState {
    pub batch_gets: u64,
    pub transactions: u64,
    /// Reservation items written, by partition key.
    pub reservations: HashSet<String>,
    pub outbox_puts: u64,
    /// (available, reserved) by SKU; a SKU is stocked with [`SEED_UNITS`] when first read.
    pub stock: BTreeMap<String, (u64, u64)>,
    /// Requests it does not serve, or writes that break a condition; the run fails when there is one.
    pub unexpected: Vec<String>,
}

type SharedState = Arc<Mutex<DynamoState>>;

pub struct DynamoStub {
    server: Server,
    state: SharedState,
}

impl DynamoStub {
    pub async fn start() -> Result<Self> {
        let state = SharedState::default();
        let app = Router::new().route("/", post(operation)).fallback(unserved).with_state(state.clone());
        Ok(Self { server: Server::start("DynamoDB stub", app).await?, state })
    }

    /// The endpoint to give a client (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, DynamoState> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<DynamoState>) -> MutexGuard<'_, DynamoState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request of the JSON protocol: the operation is named by `X-Amz-Target`.
async fn operation(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = {
        let mut state = lock(&state);
        match target {
            "DynamoDB_20120810.BatchGetItem" => Some(batch_get(&mut state, &request)),
            "DynamoDB_20120810.TransactWriteItems" => transact(&mut state, &request),
            other => {
                state.unexpected.push(format!("POST / {other:?}"));
                None
            }
        }
    };
    match answer {
        Some(body) => reply(StatusCode::OK, &body),
        None => not_served(),
    }
}

/// A request of another method or path than the protocol's.
async fn unserved(State(state): State<SharedState>, method: Method, uri: Uri) -> Response {
    lock(&state).unexpected.push(format!("{method} {uri}"));
    not_served()
}

fn not_served() -> Response {
    let error =
        json!({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": "not served by the bench"});
    reply(StatusCode::BAD_REQUEST, &error)
}

fn reply(status: StatusCode, body: &Value) -> Response {
    let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amzn-requestid", "bench")];
    (status, headers, body.to_string()).into_response()
}

/// The `kind` value (`S`, `N`) of attribute `name` of an item in DynamoDB's JSON; empty when it has none.
fn attribute<'a>(item: &'a Value, name: &str, kind: &str) -> &'a str {
    item[name][kind].as_str().unwrap_or_default()
}

/// The stock item of `sku` at 1.00, encoded by the Inventory table's owner in DynamoDB's JSON (strings and
/// numbers are all a stock item has); `None` when the units do not fit the item's counters.
fn stock_json(sku: &str, available: u64, reserved: u64) -> Option<Value> {
    let stock = Stock {
        sku: sku.to_owned(),
        available: available.try_into().ok()?,
        reserved: reserved.try_into().ok()?,
        shipped: 0,
        price: Decimal::new(100, 2),
    };
    let wire = |value: &AttributeValue| match (value.as_s(), value.as_n()) {
        (Ok(text), _) => json!({ "S": text }),
        (_, Ok(number)) => json!({ "N": number }),
        _ => Value::Null,
    };
    Some(stock_item(&stock).iter().map(|(name, value)| (name.clone(), wire(value))).collect())
}

/// Answers the stock keys from the state (stocking a SKU on its first read) and the reservation keys with nothing:
/// every order of a run is new.
fn batch_get(state: &mut DynamoState, request: &Value) -> Value {
    state.batch_gets += 1;
    let mut responses = serde_json::Map::new();
    for (table, keys) in request["RequestItems"].as_object().into_iter().flatten() {
        let mut items = Vec::new();
        for key in keys["Keys"].as_array().into_iter().flatten() {
            let pk = attribute(key, "pk", "S");
            match attribute(key, attr::SORT_KEY, "S") {
                STOCK_SK => {
                    let sku = pk.trim_start_matches(STOCK_PK_PREFIX);
                    let (available, reserved) = *state.stock.entry(sku.to_owned()).or_insert((SEED_UNITS, 0));
                    match stock_json(sku, available, reserved) {
                        Some(item) => items.push(item),
                        None => state.unexpected.push(format!("stock of {sku} beyond an item's counters")),
                    }
                }
                RESERVATION_SK if state.reservations.contains(pk) => {
                    state.unexpected.push(format!("a second read of the reservation {pk}"));
                }
                RESERVATION_SK => {}
                other => state.unexpected.push(format!("BatchGetItem of a key with sk {other:?}")),
            }
        }
        responses.insert(table.clone(), Value::Array(items));
    }
    json!({ "Responses": responses, "UnprocessedKeys": {} })
}

/// The condition of the inventory store's reservation of one SKU: enough available, and room for the reserved.
const RESERVE_CONDITION: &str = "available >= :q AND (attribute_not_exists(reserved) OR reserved <= :room)";

/// Applies a reservation transaction; `None` (a 400) for anything else.
fn transact(state: &mut DynamoState, request: &Value) -> Option<Value> {
    state.transactions += 1;
    let items = request["TransactItems"].as_array().cloned().unwrap_or_default();
    let mut stock = Vec::new();
    let mut reservation = None;
    let mut outbox = 0;
    for item in &items {
        if let Some(update) = item.get("Update") {
            let sku = attribute(&update["Key"], "pk", "S").trim_start_matches(STOCK_PK_PREFIX).to_owned();
            let values = &update["ExpressionAttributeValues"];
            let quantity: u64 = values[":q"]["N"].as_str()?.parse().ok()?;
            let room: u64 = values[":room"]["N"].as_str()?.parse().ok()?;
            if update["ConditionExpression"] != RESERVE_CONDITION {
                return None;
            }
            stock.push((sku, quantity, room));
        } else if let Some(put) = item.get("Put") {
            if attribute(&put["Item"], attr::SORT_KEY, "S") == RESERVATION_SK
                && attribute(&put["Item"], attr::STATUS, "S") == ReservationStatus::Reserved.as_str()
            {
                reservation = Some(attribute(&put["Item"], "pk", "S").to_owned());
            } else {
                outbox += 1;
            }
        }
    }
    let Some(reservation) = reservation else {
        state.unexpected.push(format!("a transaction without a reservation: {request}"));
        return None;
    };
    if stock.is_empty() || outbox != 1 || state.reservations.contains(&reservation) {
        state.unexpected.push(format!("a transaction that is not one reservation: {request}"));
        return None;
    }
    // All or nothing, as a transaction: every condition holds before anything is applied.
    for (sku, quantity, room) in &stock {
        let (available, reserved) = state.stock.get(sku).copied().unwrap_or((SEED_UNITS, 0));
        if available < *quantity || reserved > *room {
            state.unexpected.push(format!("a reservation of {quantity} {sku} with {available} available"));
            return None;
        }
    }
    for (sku, quantity, _) in stock {
        let (available, reserved) = state.stock.entry(sku).or_insert((SEED_UNITS, 0));
        *available -= quantity;
        *reserved += quantity;
    }
    state.reservations.insert(reservation);
    state.outbox_puts += 1;
    Some(json!({}))
}

#[cfg(test)]
mod tests {
    use orderflow_domain::events::PricedLine;
    use orderflow_inventory_store::{DynamoInventory, InventoryStore, Outcome};
    use orderflow_toolkit::OutboxRecord;
    use uuid::Uuid;

    use super::*;

    /// The inventory function's own store, against the stub.
    fn inventory(stub: &DynamoStub) -> DynamoInventory {
        let client = aws_sdk_dynamodb::Client::new(&local_lambda::aws::sdk_config(&stub.url()));
        DynamoInventory::new(client, "Inventory", "Outbox")
    }

    fn line(sku: &str, quantity: u32) -> PricedLine {
        PricedLine { sku: sku.to_owned(), quantity, unit_price: Decimal::new(100, 2) }
    }

    fn outbox(order_id: &str) -> OutboxRecord {
        OutboxRecord {
            partition: order_id.to_owned(),
            event_id: Uuid::from_u128(1),
            source: "orderflow.inventory".to_owned(),
            detail_type: "StockReserved".to_owned(),
            detail: "{}".to_owned(),
        }
    }

    #[tokio::test]
    async fn serves_the_reservation_path_of_the_inventory_store() {
        let stub = DynamoStub::start().await.unwrap();
        let store = inventory(&stub);
        let skus = ["SKU-A".to_owned(), "SKU-B".to_owned()];

        let before = store.snapshot("o-1", &skus).await.unwrap();
        assert_eq!(before.reservation, None);
        assert_eq!(before.stock["SKU-A"].available, SEED_UNITS as u32);
        let lines = [line("SKU-A", 1), line("SKU-B", 2)];
        assert_eq!(store.reserve("o-1", &lines, &outbox("o-1")).await.unwrap(), Outcome::Committed);
        let after = store.snapshot("o-2", &skus).await.unwrap();
        assert_eq!((after.stock["SKU-B"].available, after.stock["SKU-B"].reserved), (SEED_UNITS as u32 - 2, 2));

        let state = stub.state();
        assert_eq!(state.unexpected, Vec::<String>::new());
        assert_eq!((state.batch_gets, state.transactions, state.outbox_puts), (2, 1, 1));
        assert_eq!(state.reservations, HashSet::from(["RESERVATION#o-1".to_owned()]));
        assert_eq!(state.stock["SKU-A"], (SEED_UNITS - 1, 1));
    }

    #[tokio::test]
    async fn a_second_reservation_of_an_order_is_refused_and_noted() {
        let stub = DynamoStub::start().await.unwrap();
        let store = inventory(&stub);
        let lines = [line("SKU-A", 1)];
        store.reserve("o-1", &lines, &outbox("o-1")).await.unwrap();

        assert!(store.reserve("o-1", &lines, &outbox("o-1")).await.is_err());
        let state = stub.state();
        assert_eq!(state.stock["SKU-A"], (SEED_UNITS - 1, 1), "the refused transaction changed the stock");
        assert_eq!(state.unexpected.len(), 1, "{:?}", state.unexpected);
        assert!(state.unexpected[0].starts_with("a transaction that is not one reservation"), "{:?}", state.unexpected);
    }

    #[tokio::test]
    async fn an_operation_off_the_reservation_path_is_refused_and_noted() {
        let stub = DynamoStub::start().await.unwrap();

        assert!(inventory(&stub).reservation("o-1").await.is_err());
        assert_eq!(stub.state().unexpected, [r#"POST / "DynamoDB_20120810.GetItem""#]);
    }
}
