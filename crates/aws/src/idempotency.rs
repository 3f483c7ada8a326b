//! The DynamoDB adapter of the toolkit's [`IdempotencyStore`]: one item per idempotency key.
//!
//! Item (key `pk` = the idempotency key, plus a fixed sort key when the table has one, see
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

use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
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

/// The write condition of [`IdempotencyStore::put_in_progress`], as Powertools writes it.
const PUT_CONDITION: &str = "attribute_not_exists(#pk) OR #expiration < :now OR \
                             (#status = :in_progress AND #in_progress_expiry < :now_ms)";

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
    sort_key: Option<(String, String)>,
}

impl DynamoIdempotencyStore {
    /// Records in `table`, keyed by `pk` alone.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), sort_key: None }
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

    fn key(&self, key: &str) -> Item {
        let mut item = Item::from([(KEY_ATTRIBUTE.to_owned(), s(key))]);
        if let Some((attribute, value)) = &self.sort_key {
            item.insert(attribute.clone(), s(value));
        }
        item
    }

    /// What a failure names: the table and the record's key.
    fn record_context(&self, key: &str) -> String {
        format!("idempotency table {}, record {key:?}", self.table)
    }

    fn record_from_item(&self, key: &str, item: &Item) -> Result<IdempotencyRecord, StoreError> {
        read_record(item).map_err(|e| e.context(self.record_context(key)))
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

/// A record from its item; an attribute without the shape this store writes makes it [`StoreError::Corrupt`].
fn read_record(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let in_progress_expiry = match item.get(IN_PROGRESS_EXPIRY_ATTRIBUTE) {
        None => None,
        Some(_) => Some(get_n(item, IN_PROGRESS_EXPIRY_ATTRIBUTE)?),
    };
    let response = match item.get(RESPONSE_ATTRIBUTE) {
        None => None,
        Some(_) => Some(get_s(item, RESPONSE_ATTRIBUTE)?.to_owned()),
    };
    Ok(IdempotencyRecord {
        key: get_s(item, KEY_ATTRIBUTE)?.to_owned(),
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
        let mut item = self.key(&record.key);
        item.insert(STATUS_ATTRIBUTE.into(), s(record.status.as_str()));
        item.insert(PAYLOAD_HASH_ATTRIBUTE.into(), s(&record.payload_hash));
        item.insert(EXPIRATION_ATTRIBUTE.into(), n(record.expiration));
        if let Some(expiry) = record.in_progress_expiry {
            item.insert(IN_PROGRESS_EXPIRY_ATTRIBUTE.into(), n(expiry));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(PUT_CONDITION)
            .expression_attribute_names("#pk", KEY_ATTRIBUTE)
            .expression_attribute_names("#expiration", EXPIRATION_ATTRIBUTE)
            .expression_attribute_names("#status", STATUS_ATTRIBUTE)
            .expression_attribute_names("#in_progress_expiry", IN_PROGRESS_EXPIRY_ATTRIBUTE)
            .expression_attribute_values(":now", n(epoch_seconds(now)))
            .expression_attribute_values(":now_ms", n(epoch_millis(now)))
            .expression_attribute_values(":in_progress", s(RecordStatus::InProgress.as_str()))
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
        let existing = match failed.item() {
            Some(item) => Some(self.record_from_item(&record.key, item)?),
            None => self.read(&record.key).await?,
        };
        // The condition failed but the record was gone when read back (deleted in between): a retry writes it.
        let existing = existing.ok_or_else(|| {
            StoreError::Transient(format!("{}: changed while it was written; retry", self.record_context(&record.key)))
        })?;
        Ok(PutOutcome::Exists(existing))
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

    #[test]
    fn a_corrupt_record_names_the_table_and_the_key() {
        let err = store().record_from_item("k", &Item::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt item: idempotency table idempotency, record \"k\": item attribute pk: is missing"
        );
    }
}
