//! The DynamoDB adapter of the toolkit's [`IdempotencyStore`]: one item per idempotency key.
//!
//! Item (key `pk` = the idempotency key, after a fixed prefix when the table holds other items too, see
//! [`DynamoIdempotencyStore::with_key_prefix`], plus a fixed sort key when the table has one, see
//! [`DynamoIdempotencyStore::with_sort_key`]):
//!
//! | attribute            | type | what                                                                    |
//! |----------------------|------|-------------------------------------------------------------------------|
//! | `status`             | S    | `INPROGRESS` or `COMPLETED`                                             |
//! | `payload_hash`       | S    | SHA-256 (hex) of the payload's JSON                                     |
//! | `expiration`         | N    | epoch seconds; make it the table's TTL attribute so DynamoDB removes old records |
//! | `in_progress_expiry` | N    | epoch milliseconds; the end of the invocation holding an `INPROGRESS` record |
//! | `response`           | S    | the result as JSON (`COMPLETED`)                                        |
//!
//! Requests per [`Idempotency::run`](orderflow_toolkit::Idempotency::run), measured against moto by
//! `tests/idempotency_dynamodb.rs`:
//! - a new key: 2 write requests, a conditional `PutItem` (`INPROGRESS`) and an `UpdateItem` (`COMPLETED`); with
//!   the effect's own write that makes the 3 writes per message of Powertools-style idempotency;
//! - a repeat (completed, in progress, or another payload): 1, the `PutItem` whose condition fails; the existing
//!   item comes back in the error (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so no `GetItem` is needed;
//! - a failing function: 2, the `PutItem` and a `DeleteItem`.
//!
//! TTL deletion is lazy (up to days on AWS), which is why the write condition compares `expiration` itself.
//!
//! The record in the effect's own transaction (the second way of the toolkit's idempotency module docs):
//! [`DynamoIdempotencyStore::transact_put`] is the `COMPLETED` record as a `Put` of a `TransactWriteItems`, on the
//! condition of `put_in_progress`, so the transaction commits the effect and its record together, or is cancelled
//! by a live record of the key; [`DynamoIdempotencyStore::existing_record`] reads that record from the
//! cancellation, for [`IdempotencyRecord::replay`]. One write request per new key, and one per repeat.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use orderflow_toolkit::idempotency::{
    IdempotencyRecord, IdempotencyStore, PutOutcome, RecordStatus, epoch_millis, epoch_seconds,
};

use crate::StoreError;
use crate::dynamo::{Item, get_n, get_s, n, s};

/// The partition key attribute.
pub const KEY_ATTRIBUTE: &str = "pk";
pub const STATUS_ATTRIBUTE: &str = "status";
pub const PAYLOAD_HASH_ATTRIBUTE: &str = "payload_hash";
/// The TTL attribute (epoch seconds).
pub const EXPIRATION_ATTRIBUTE: &str = "expiration";
/// Epoch milliseconds.
pub const IN_PROGRESS_EXPIRY_ATTRIBUTE: &str = "in_progress_expiry";
pub const RESPONSE_ATTRIBUTE: &str = "response";

/// The write condition of [`IdempotencyStore::put_in_progress`] and [`DynamoIdempotencyStore::transact_put`], as
/// Powertools writes it.
const PUT_CONDITION: &str = "attribute_not_exists(#pk) OR #expiration < :now OR \
                             (#status = :in_progress AND #in_progress_expiry < :now_ms)";

/// The attribute names of [`PUT_CONDITION`].
fn put_condition_names() -> HashMap<String, String> {
    [
        ("#pk", KEY_ATTRIBUTE),
        ("#expiration", EXPIRATION_ATTRIBUTE),
        ("#status", STATUS_ATTRIBUTE),
        ("#in_progress_expiry", IN_PROGRESS_EXPIRY_ATTRIBUTE),
    ]
    .into_iter()
    .map(|(placeholder, name)| (placeholder.to_owned(), name.to_owned()))
    .collect()
}

/// The values of [`PUT_CONDITION`] at `now`.
fn put_condition_values(now: SystemTime) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":now".to_owned(), n(epoch_seconds(now))),
        (":now_ms".to_owned(), n(epoch_millis(now))),
        (":in_progress".to_owned(), s(RecordStatus::InProgress.as_str())),
    ])
}

/// Idempotency records in a DynamoDB table whose partition key is `pk` (S).
///
/// ```no_run
/// use std::time::Duration;
/// use orderflow_aws::{DynamoIdempotencyStore, load_sdk_config};
/// use orderflow_toolkit::{HandlerError, Idempotency};
///
/// # async fn example() -> Result<(), HandlerError> {
/// let config = load_sdk_config().await;
/// let store = DynamoIdempotencyStore::new(aws_sdk_dynamodb::Client::new(&config), "orderflow-dev-payments")
///     .with_sort_key("sk", "IDEMPOTENCY");
/// let idempotency = Idempotency::new(store);
/// let remaining = Duration::from_secs(30); // the Lambda context's deadline minus now
/// let charge = || async { Ok::<_, HandlerError>("charged 12.50".to_owned()) };
/// // A repeat of this key and payload gets the stored receipt back without charging again.
/// let receipt = idempotency.run("payment-o-1", &"12.50", remaining, charge).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
    key_prefix: String,
    sort_key: Option<(String, String)>,
}

impl DynamoIdempotencyStore {
    /// Records in `table`, keyed by `pk` alone.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), key_prefix: String::new(), sort_key: None }
    }

    /// For a table that holds other items too: each record's `pk` is `prefix` followed by the idempotency key,
    /// e.g. `IDEMPOTENCY#<key>`. Records read back carry the key without it.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// For a table with a sort key too (like every orderflow table, `pk` + `sk`): each record gets the sort key
    /// `attribute` = `value`, e.g. `("sk", "IDEMPOTENCY")`.
    pub fn with_sort_key(mut self, attribute: impl Into<String>, value: impl Into<String>) -> Self {
        self.sort_key = Some((attribute.into(), value.into()));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The `COMPLETED` `record` (see [`IdempotencyRecord::completed`]) as a `Put` of a `TransactWriteItems`, so it
    /// commits with the effect written by the transaction's other items. Its condition is that of
    /// `put_in_progress`: a live record of the key cancels the whole transaction, and comes back in the cancellation
    /// reason of this put (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) for [`Self::existing_record`]; an
    /// expired one is replaced.
    pub fn transact_put(&self, record: &IdempotencyRecord, now: SystemTime) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item(record)))
            .condition_expression(PUT_CONDITION)
            .set_expression_attribute_names(Some(put_condition_names()))
            .set_expression_attribute_values(Some(put_condition_values(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The live record of `key` that cancelled a transaction with the [`Self::transact_put`] of `key`, from that
    /// put's `reason` (the transaction's cancellation reason at its position): `None` when that put's condition did
    /// not fail (another item cancelled the transaction).
    pub async fn existing_record(
        &self,
        key: &str,
        reason: &CancellationReason,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if reason.code() != Some("ConditionalCheckFailed") {
            return Ok(None);
        }
        self.found(key, reason.item()).await.map(Some)
    }

    fn key(&self, key: &str) -> Item {
        let mut item = Item::from([(KEY_ATTRIBUTE.to_owned(), s(format!("{}{key}", self.key_prefix)))]);
        if let Some((attribute, value)) = &self.sort_key {
            item.insert(attribute.clone(), s(value));
        }
        item
    }

    /// The item of `record`: the one encoding of a record, whose decoding is [`Self::record_from_item`].
    fn item(&self, record: &IdempotencyRecord) -> Item {
        let mut item = self.key(&record.key);
        item.insert(STATUS_ATTRIBUTE.into(), s(record.status.as_str()));
        item.insert(PAYLOAD_HASH_ATTRIBUTE.into(), s(&record.payload_hash));
        item.insert(EXPIRATION_ATTRIBUTE.into(), n(record.expiration));
        if let Some(expiry) = record.in_progress_expiry {
            item.insert(IN_PROGRESS_EXPIRY_ATTRIBUTE.into(), n(expiry));
        }
        if let Some(response) = &record.response {
            item.insert(RESPONSE_ATTRIBUTE.into(), s(response));
        }
        item
    }

    /// What a failure names: the table and the record's key.
    fn record_context(&self, key: &str) -> String {
        format!("idempotency table {}, record {key:?}", self.table)
    }

    fn record_from_item(&self, key: &str, item: &Item) -> Result<IdempotencyRecord, StoreError> {
        read_record(item, &self.key_prefix).map_err(|e| e.context(self.record_context(key)))
    }

    /// The live record of `key` a failed write condition found: the item the failure returned (`ALL_OLD`), or read
    /// back when it returned none.
    async fn found(&self, key: &str, returned: Option<&Item>) -> Result<IdempotencyRecord, StoreError> {
        let existing = match returned {
            Some(item) => Some(self.record_from_item(key, item)?),
            None => self.read(key).await?,
        };
        // The condition failed but the record was gone when read back (deleted in between): a retry writes it.
        existing.ok_or_else(|| {
            StoreError::Transient(format!("{}: changed while it was written; retry", self.record_context(key)))
        })
    }

    /// The record of `key` by a consistent `GetItem`: only used when a failed condition returned no item (an
    /// emulator without `ReturnValuesOnConditionCheckFailure`).
    async fn read(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(self.record_context(key)))?;
        output.item().map(|item| self.record_from_item(key, item)).transpose()
    }
}

/// A record from its item, whose `pk` is `key_prefix` and the key; an attribute without the shape this store writes
/// makes it [`StoreError::Corrupt`].
fn read_record(item: &Item, key_prefix: &str) -> Result<IdempotencyRecord, StoreError> {
    let pk = get_s(item, KEY_ATTRIBUTE)?;
    let key = pk.strip_prefix(key_prefix).ok_or_else(|| {
        StoreError::Corrupt(format!("item attribute {KEY_ATTRIBUTE}: {pk:?} does not start with {key_prefix:?}"))
    })?;
    let in_progress_expiry = match item.get(IN_PROGRESS_EXPIRY_ATTRIBUTE) {
        None => None,
        Some(_) => Some(get_n(item, IN_PROGRESS_EXPIRY_ATTRIBUTE)?),
    };
    let response = match item.get(RESPONSE_ATTRIBUTE) {
        None => None,
        Some(_) => Some(get_s(item, RESPONSE_ATTRIBUTE)?.to_owned()),
    };
    Ok(IdempotencyRecord {
        key: key.to_owned(),
        status: get_s(item, STATUS_ATTRIBUTE)?.parse().map_err(StoreError::Corrupt)?,
        payload_hash: get_s(item, PAYLOAD_HASH_ATTRIBUTE)?.to_owned(),
        expiration: get_n(item, EXPIRATION_ATTRIBUTE)?,
        in_progress_expiry,
        response,
    })
}

impl IdempotencyStore for DynamoIdempotencyStore {
    type Error = StoreError;

    async fn put_in_progress(&self, record: &IdempotencyRecord, now: SystemTime) -> Result<PutOutcome, Self::Error> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.item(record)))
            .condition_expression(PUT_CONDITION)
            .set_expression_attribute_names(Some(put_condition_names()))
            .set_expression_attribute_values(Some(put_condition_values(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(PutOutcome::Written),
            Err(err) => err,
        };
        let Some(PutItemError::ConditionalCheckFailedException(failed)) = err.as_service_error() else {
            return Err(StoreError::from(err).context(self.record_context(&record.key)));
        };
        Ok(PutOutcome::Exists(self.found(&record.key, failed.item()).await?))
    }

    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), Self::Error> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&record.key)))
            .update_expression(
                "SET #status = :status, #payload_hash = :payload_hash, #expiration = :expiration, \
                 #response = :response REMOVE #in_progress_expiry",
            )
            .expression_attribute_names("#status", STATUS_ATTRIBUTE)
            .expression_attribute_names("#payload_hash", PAYLOAD_HASH_ATTRIBUTE)
            .expression_attribute_names("#expiration", EXPIRATION_ATTRIBUTE)
            .expression_attribute_names("#response", RESPONSE_ATTRIBUTE)
            .expression_attribute_names("#in_progress_expiry", IN_PROGRESS_EXPIRY_ATTRIBUTE)
            .expression_attribute_values(":status", s(record.status.as_str()))
            .expression_attribute_values(":payload_hash", s(&record.payload_hash))
            .expression_attribute_values(":expiration", n(record.expiration))
            .expression_attribute_values(":response", s(record.response.as_deref().unwrap_or("null")))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from(e).context(self.record_context(&record.key)))
    }

    async fn delete(&self, key: &str) -> Result<(), Self::Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from(e).context(self.record_context(key)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use orderflow_toolkit::HandlerError;

    use super::*;

    fn store() -> DynamoIdempotencyStore {
        let config = aws_sdk_dynamodb::Config::builder().behavior_version_latest().build();
        DynamoIdempotencyStore::new(Client::from_conf(config), "idempotency")
    }

    #[test]
    fn items_read_back_as_records() {
        let store = store();
        let item = Item::from([
            ("pk".to_owned(), s("k")),
            ("status".to_owned(), s("COMPLETED")),
            ("payload_hash".to_owned(), s("abc")),
            ("expiration".to_owned(), n(1_700_003_600)),
            ("response".to_owned(), s("{\"ok\":true}")),
        ]);
        let record = store.record_from_item("k", &item).unwrap();
        assert_eq!(
            record,
            IdempotencyRecord {
                key: "k".into(),
                status: RecordStatus::Completed,
                payload_hash: "abc".into(),
                expiration: 1_700_003_600,
                in_progress_expiry: None,
                response: Some("{\"ok\":true}".into()),
            }
        );
    }

    #[test]
    fn unreadable_items_are_permanent_errors_naming_the_attribute() {
        let store = store();
        let item = Item::from([
            ("pk".to_owned(), s("k")),
            ("status".to_owned(), s("EXPIRED")),
            ("payload_hash".to_owned(), s("abc")),
            ("expiration".to_owned(), n(1)),
        ]);
        let err = store.record_from_item("k", &item).unwrap_err();
        assert!(err.to_string().contains("unknown idempotency record status \"EXPIRED\""), "{err}");
        assert_eq!(HandlerError::from(err).class(), "Permanent");
        let item = Item::from([("pk".to_owned(), s("k")), ("status".to_owned(), s("INPROGRESS"))]);
        let err = store.record_from_item("k", &item).unwrap_err();
        assert!(err.to_string().contains("payload_hash: is missing"), "{err}");
    }

    #[test]
    fn the_sort_key_is_added_to_every_key() {
        let key = store().with_sort_key("sk", "IDEMPOTENCY").key("k");
        assert_eq!(key, Item::from([("pk".to_owned(), s("k")), ("sk".to_owned(), s("IDEMPOTENCY"))]));
        assert_eq!(store().key("k"), Item::from([("pk".to_owned(), s("k"))]));
    }

    fn completed(key: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            key: key.into(),
            status: RecordStatus::Completed,
            payload_hash: "abc".into(),
            expiration: 1_700_003_600,
            in_progress_expiry: None,
            response: Some("{\"order_id\":\"o-1\"}".into()),
        }
    }

    #[test]
    fn a_key_prefix_is_added_to_every_key_and_removed_from_records_read_back() {
        let prefixed = store().with_key_prefix("IDEMPOTENCY#").with_sort_key("sk", "IDEMPOTENCY");
        let item = prefixed.item(&completed("k"));
        assert_eq!(item["pk"], s("IDEMPOTENCY#k"));
        assert_eq!(item["sk"], s("IDEMPOTENCY"));
        assert_eq!(prefixed.record_from_item("k", &item).unwrap(), completed("k"));
        let unprefixed = prefixed.record_from_item("k", &store().item(&completed("k"))).unwrap_err();
        assert_eq!(
            unprefixed.to_string(),
            "corrupt item: idempotency table idempotency, record \"k\": item attribute pk: \"k\" does not start \
             with \"IDEMPOTENCY#\""
        );
    }

    #[test]
    fn every_field_of_a_record_round_trips_through_its_item() {
        let store = store();
        let in_progress = IdempotencyRecord {
            status: RecordStatus::InProgress,
            in_progress_expiry: Some(1_700_000_030_000),
            response: None,
            ..completed("k")
        };
        for record in [completed("k"), in_progress] {
            assert_eq!(store.record_from_item("k", &store.item(&record)).unwrap(), record);
        }
    }

    #[test]
    fn the_transaction_put_writes_the_record_on_the_condition_of_put_in_progress_returning_the_old_item() {
        let store = store().with_key_prefix("IDEMPOTENCY#").with_sort_key("sk", "IDEMPOTENCY");
        let now = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        let write = store.transact_put(&completed("k"), now).unwrap();
        let put = write.put().expect("a Put");
        assert_eq!(put.table_name(), "idempotency");
        assert_eq!(put.item(), &store.item(&completed("k")));
        assert_eq!(put.condition_expression(), Some(PUT_CONDITION));
        assert_eq!(put.expression_attribute_names(), Some(&put_condition_names()));
        assert_eq!(put.expression_attribute_values().unwrap()[":now"], n(1_700_000_000_u64));
        assert_eq!(put.expression_attribute_values().unwrap()[":now_ms"], n(1_700_000_000_500_u64));
        assert_eq!(put.expression_attribute_values().unwrap()[":in_progress"], s("INPROGRESS"));
        assert_eq!(put.return_values_on_condition_check_failure(), Some(&ReturnValuesOnConditionCheckFailure::AllOld));
    }

    #[tokio::test]
    async fn a_cancellation_reason_yields_the_record_in_the_way_only_when_its_condition_failed() {
        let store = store().with_key_prefix("IDEMPOTENCY#").with_sort_key("sk", "IDEMPOTENCY");
        let failed = CancellationReason::builder()
            .code("ConditionalCheckFailed")
            .set_item(Some(store.item(&completed("k"))))
            .build();
        assert_eq!(store.existing_record("k", &failed).await.unwrap(), Some(completed("k")));
        for code in ["None", "TransactionConflict"] {
            let other = CancellationReason::builder().code(code).build();
            assert_eq!(store.existing_record("k", &other).await.unwrap(), None, "{code}");
        }
        let corrupt = CancellationReason::builder().code("ConditionalCheckFailed").set_item(Some(Item::new())).build();
        let err = store.existing_record("k", &corrupt).await.unwrap_err();
        assert_eq!(HandlerError::from(err).class(), "Permanent");
    }

    #[test]
    fn a_corrupt_record_names_the_table_and_the_key() {
        let err = store().record_from_item("k", &Item::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt item: idempotency table idempotency, record \"k\": item attribute pk: is missing"
        );
    }
}
