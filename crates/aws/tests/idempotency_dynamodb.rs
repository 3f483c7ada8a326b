//! `DynamoIdempotencyStore` against a real emulator: the moto server of the local cloud (started here, or the one
//! `AWS_ENDPOINT_URL` names), with the tables of `tests/fixtures/idempotency-tables.yaml` deployed through
//! CloudFormation. Every DynamoDB request the store sends is counted by an SDK interceptor.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_aws::DynamoIdempotencyStore;
use orderflow_aws::dynamo::{Item, cancellation_reasons, key, put_if_absent};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_toolkit::HandlerError;
use orderflow_toolkit::idempotency::{Idempotency, IdempotencyError, IdempotencyRecord, epoch_seconds, payload_hash};
use serde_json::{Value, json};

const REMAINING: Duration = Duration::from_secs(30);

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Records the operation (`PutItem`, `UpdateItem`, ...) of every HTTP request a client sends, retries included.
#[derive(Debug, Clone, Default)]
struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    /// The operations sent since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("request log"))
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "RequestLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // awsJson 1.0: `X-Amz-Target: DynamoDB_20120810.PutItem`.
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.0.lock().expect("request log").push(operation);
        Ok(())
    }
}

/// An emulator with the fixture's tables, a counted client for the store and an uncounted one for checks.
struct World {
    // Dropped last: stops the moto server this test started (an external emulator is left alone).
    _emulator: Emulator,
    requests: RequestLog,
    store_client: aws_sdk_dynamodb::Client,
    plain: aws_sdk_dynamodb::Client,
    table: String,
    sorted_table: String,
}

impl World {
    async fn start() -> World {
        let emulator =
            Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
        let config = sdk_config(emulator.endpoint());
        let stage = format!("i{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/idempotency-tables.yaml");
        let cloudformation = aws_sdk_cloudformation::Client::new(&config);
        let outputs = deploy_stack(
            &cloudformation,
            &format!("orderflow-{stage}-idempotency"),
            &template,
            &[("Stage", stage.as_str())],
        )
        .await
        .expect("fixture deploys");
        let requests = RequestLog::default();
        let counted = aws_sdk_dynamodb::config::Builder::from(&config).interceptor(requests.clone()).build();
        World {
            requests,
            store_client: aws_sdk_dynamodb::Client::from_conf(counted),
            plain: aws_sdk_dynamodb::Client::new(&config),
            table: outputs.get("TableName").expect("TableName").to_owned(),
            sorted_table: outputs.get("SortedTableName").expect("SortedTableName").to_owned(),
            _emulator: emulator,
        }
    }

    fn idempotency(&self) -> Idempotency<DynamoIdempotencyStore> {
        Idempotency::new(DynamoIdempotencyStore::new(self.store_client.clone(), &self.table))
    }

    async fn item(&self, table: &str, key: Item) -> Option<Item> {
        let output =
            self.plain.get_item().table_name(table).set_key(Some(key)).consistent_read(true).send().await.expect("get");
        output.item().cloned()
    }

    async fn record(&self, key: &str) -> Option<Item> {
        self.item(&self.table, Item::from([("pk".to_owned(), AttributeValue::S(key.to_owned()))])).await
    }
}

fn attr_s<'a>(item: &'a Item, name: &str) -> &'a str {
    item.get(name).and_then(|v| v.as_s().ok()).unwrap_or_else(|| panic!("no string {name} in {item:?}"))
}

fn attr_n(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {item:?}"))
}

/// A handler that counts its runs and answers with a receipt naming the run.
async fn charge(runs: &AtomicU32, amount: u64) -> Result<Value, HandlerError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(json!({"charged": amount, "run": run}))
}

#[tokio::test]
async fn each_rule_against_dynamodb_with_its_request_count() {
    let world = World::start().await;
    let idempotency = world.idempotency();
    let runs = AtomicU32::new(0);
    let payload = json!({"order_id": "o-1", "amount": 1250});

    // A new key: INPROGRESS put, then COMPLETED update.
    let before = epoch_seconds(SystemTime::now());
    let first = idempotency.run("payment-o-1", &payload, REMAINING, || charge(&runs, 1250)).await.expect("first run");
    assert_eq!(first, json!({"charged": 1250, "run": 1}));
    let new_key = world.requests.take();
    eprintln!("new key: {} requests {new_key:?}", new_key.len());
    assert_eq!(new_key, ["PutItem", "UpdateItem"]);
    let item = world.record("payment-o-1").await.expect("record stored");
    assert_eq!(attr_s(&item, "status"), "COMPLETED");
    assert_eq!(attr_s(&item, "payload_hash"), payload_hash(&payload).unwrap());
    assert_eq!(serde_json::from_str::<Value>(attr_s(&item, "response")).unwrap(), first);
    let expiration = attr_n(&item, "expiration");
    assert!((before + 3600..=before + 3605).contains(&expiration), "expiration {expiration}, now {before}");
    assert!(!item.contains_key("in_progress_expiry"), "the lock is removed on completion: {item:?}");

    // A repeat: the conditional put fails and returns the stored record; nothing runs, nothing else is sent.
    let again = idempotency.run("payment-o-1", &payload, REMAINING, || charge(&runs, 1250)).await.expect("repeat");
    assert_eq!(again, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let repeat = world.requests.take();
    eprintln!("repeat: {} request {repeat:?}", repeat.len());
    assert_eq!(repeat, ["PutItem"]);

    // The same key with another payload: a permanent error, one request.
    let other = json!({"order_id": "o-1", "amount": 9999});
    let err = idempotency.run("payment-o-1", &other, REMAINING, || charge(&runs, 9999)).await.unwrap_err();
    assert!(matches!(&err, IdempotencyError::PayloadMismatch { key } if key == "payment-o-1"), "{err:?}");
    assert_eq!(HandlerError::from(err).class(), "Permanent");
    assert_eq!(world.requests.take(), ["PutItem"]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A repeat while the first is in progress: a transient error, one request.
    let nested = Mutex::new(None);
    idempotency
        .run("payment-o-2", "o-2", REMAINING, || async {
            let repeat = idempotency.run("payment-o-2", "o-2", REMAINING, || charge(&runs, 2)).await;
            *nested.lock().unwrap() = Some((repeat, world.requests.take()));
            charge(&runs, 2).await
        })
        .await
        .expect("outer run");
    let (repeat, requests) = nested.into_inner().unwrap().expect("the nested run happened");
    assert!(matches!(repeat, Err(IdempotencyError::InProgress { .. })), "{repeat:?}");
    assert_eq!(requests, ["PutItem", "PutItem"], "the outer put, then the nested one that found the lock");
    assert_eq!(world.requests.take(), ["UpdateItem"]);

    // A failing function: the INPROGRESS record is deleted, so the retry runs.
    let err = idempotency
        .run("payment-o-3", "o-3", REMAINING, || async { Err::<Value, _>(HandlerError::transient("provider down")) })
        .await
        .unwrap_err();
    assert_eq!(HandlerError::from(err), HandlerError::transient("provider down"));
    let failed = world.requests.take();
    eprintln!("failing function: {} requests {failed:?}", failed.len());
    assert_eq!(failed, ["PutItem", "DeleteItem"]);
    assert_eq!(world.record("payment-o-3").await, None);
    let retried = idempotency.run("payment-o-3", "o-3", REMAINING, || charge(&runs, 3)).await.expect("retry runs");
    assert_eq!(retried["charged"], 3);
    assert_eq!(world.requests.take(), ["PutItem", "UpdateItem"]);
}

#[tokio::test]
async fn locks_of_crashed_invocations_and_expired_records_are_taken_over() {
    let world = World::start().await;
    let idempotency = world.idempotency();
    let runs = AtomicU32::new(0);

    // An invocation with 4 s left dies inside its function: the future is dropped, the INPROGRESS record stays.
    let crashed = idempotency.run("crash", "p", Duration::from_secs(4), || async {
        std::future::pending::<Result<Value, HandlerError>>().await
    });
    assert!(tokio::time::timeout(Duration::from_millis(300), crashed).await.is_err());
    let lock = world.record("crash").await.expect("the lock stays");
    assert_eq!(attr_s(&lock, "status"), "INPROGRESS");
    let err = idempotency.run("crash", "p", REMAINING, || charge(&runs, 1)).await.unwrap_err();
    assert!(matches!(err, IdempotencyError::InProgress { .. }), "before its deadline the lock holds: {err:?}");
    // Once its in-progress expiry (epoch ms) has passed, the next delivery takes the key over.
    let expiry = UNIX_EPOCH + Duration::from_millis(attr_n(&lock, "in_progress_expiry"));
    let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let taken_over = idempotency.run("crash", "p", REMAINING, || charge(&runs, 1)).await.expect("lock expired");
    assert_eq!(taken_over["run"], 1);
    assert_eq!(attr_s(&world.record("crash").await.unwrap(), "status"), "COMPLETED");

    // A COMPLETED record whose expiration has passed (TTL deletion is lazy) no longer counts, whatever its payload.
    let two_hours_ago = Idempotency::new(DynamoIdempotencyStore::new(world.store_client.clone(), &world.table))
        .with_clock(|| SystemTime::now() - Duration::from_secs(7200));
    two_hours_ago.run("old", "p", REMAINING, || charge(&runs, 2)).await.expect("written in the past");
    assert!(attr_n(&world.record("old").await.unwrap(), "expiration") < epoch_seconds(SystemTime::now()));
    let fresh = idempotency.run("old", "another payload", REMAINING, || charge(&runs, 2)).await.expect("overwritten");
    assert_eq!(fresh["run"], 3);

    // Concurrent deliveries of one message: exactly one runs, the others are told it is in progress.
    world.requests.take();
    let counter = &runs;
    let slow = move || async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        charge(counter, 4).await
    };
    let (a, b, c) = tokio::join!(
        idempotency.run("race", "p", REMAINING, slow),
        idempotency.run("race", "p", REMAINING, slow),
        idempotency.run("race", "p", REMAINING, slow),
    );
    let results = [a, b, c];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| matches!(r, Err(IdempotencyError::InProgress { .. }))).count(), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    let mut requests = world.requests.take();
    requests.sort();
    assert_eq!(requests, ["PutItem", "PutItem", "PutItem", "UpdateItem"]);
}

#[tokio::test]
async fn a_table_with_a_sort_key_keeps_records_under_it() {
    let world = World::start().await;
    let store =
        DynamoIdempotencyStore::new(world.store_client.clone(), &world.sorted_table).with_sort_key("sk", "IDEMPOTENCY");
    let idempotency = Idempotency::new(store);
    let runs = AtomicU32::new(0);
    let first = idempotency.run("ORDER#o-9", "p", REMAINING, || charge(&runs, 9)).await.expect("first");
    let again = idempotency.run("ORDER#o-9", "p", REMAINING, || charge(&runs, 9)).await.expect("repeat");
    assert_eq!(first, again);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(world.requests.take(), ["PutItem", "UpdateItem", "PutItem"]);
    let key = Item::from([
        ("pk".to_owned(), AttributeValue::S("ORDER#o-9".into())),
        ("sk".to_owned(), AttributeValue::S("IDEMPOTENCY".into())),
    ]);
    let item = world.item(&world.sorted_table, key).await.expect("stored under pk + sk");
    assert_eq!(attr_s(&item, "status"), "COMPLETED");
}

#[tokio::test]
async fn a_record_committed_with_its_effect_answers_a_repeat_from_the_cancelled_transaction() {
    let world = World::start().await;
    let store = DynamoIdempotencyStore::new(world.store_client.clone(), &world.sorted_table)
        .with_key_prefix("IDEMPOTENCY#")
        .with_sort_key("sk", "IDEMPOTENCY");
    let request = json!({"sku": "SKU-1", "quantity": 2});
    // The effect (an order item, new) and the record of `idempotency_key` answering with the order, in one
    // transaction.
    let place = |idempotency_key: &str, order_id: &str, now: SystemTime| {
        let record = IdempotencyRecord::completed(idempotency_key, &request, order_id, now, Duration::from_secs(3600))
            .expect("a record");
        let effect = put_if_absent(&world.sorted_table, key(format!("ORDER#{order_id}"), "ORDER")).expect("a put");
        let items = vec![effect, store.transact_put(&record, now).expect("the record's put")];
        world.store_client.transact_write_items().set_transact_items(Some(items)).send()
    };
    let order = |order_id: &str| world.item(&world.sorted_table, key(format!("ORDER#{order_id}"), "ORDER"));

    place("checkout-1", "o-1", SystemTime::now()).await.expect("a new key commits with its effect");
    assert_eq!(world.requests.take(), ["TransactWriteItems"], "one write request");
    let record = world.item(&world.sorted_table, key("IDEMPOTENCY#checkout-1", "IDEMPOTENCY")).await.expect("stored");
    assert_eq!(attr_s(&record, "status"), "COMPLETED");
    assert_eq!(attr_s(&record, "payload_hash"), payload_hash(&request).unwrap());
    assert_eq!(attr_s(&record, "response"), "\"o-1\"");

    // A repeat: the live record cancels the transaction, so its effect is not written, and comes back in the
    // cancellation reason of its put, so no read is needed to answer as the first time.
    let err = place("checkout-1", "o-2", SystemTime::now()).await.expect_err("the repeat is cancelled");
    let reason = cancellation_reason(&err, 1);
    let existing = store.existing_record("checkout-1", &reason).await.expect("decoded").expect("the live record");
    assert_eq!(world.requests.take(), ["TransactWriteItems"]);
    let replayed: Result<String, IdempotencyError<Infallible>> = existing.replay(&payload_hash(&request).unwrap());
    assert_eq!(replayed.unwrap(), "o-1");
    assert_eq!(order("o-2").await, None, "the repeat's effect was not written");
    let effect_reason = cancellation_reason(&err, 0);
    assert_eq!(store.existing_record("checkout-1", &effect_reason).await.unwrap(), None, "the effect's put is not it");

    // An expired record (TTL deletion is lazy) no longer counts: the next request commits and replaces it.
    place("checkout-2", "o-3", SystemTime::now() - Duration::from_secs(7200)).await.expect("written in the past");
    place("checkout-2", "o-4", SystemTime::now()).await.expect("the expired record is replaced");
    let record = world.item(&world.sorted_table, key("IDEMPOTENCY#checkout-2", "IDEMPOTENCY")).await.unwrap();
    assert_eq!(attr_s(&record, "response"), "\"o-4\"");
    assert!(order("o-4").await.is_some());
}

/// The cancellation reason of the transaction's item at `index`.
fn cancellation_reason(
    err: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>,
    index: usize,
) -> CancellationReason {
    let reasons = cancellation_reasons(err).unwrap_or_else(|| panic!("not a cancelled transaction: {err:?}"));
    reasons[index].clone()
}
