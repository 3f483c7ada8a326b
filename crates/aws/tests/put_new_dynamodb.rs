//! `dynamo::put_new` against a real emulator: the moto server of the local cloud (started here, or the one
//! `AWS_ENDPOINT_URL` names), on the pk + sk table of `tests/fixtures/idempotency-tables.yaml`.

use std::path::Path;

use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_aws::dynamo::{get_s, key, put_new, s};
use orderflow_local_cloud::emulator::Emulator;
use orderflow_toolkit::outbox::Written;

#[tokio::test]
async fn a_new_item_is_put_once_and_a_second_put_of_its_key_writes_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let emulator =
        Emulator::from_env_or_moto(&root.join("../..")).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
    let config = sdk_config(emulator.endpoint());
    let stage = format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let outputs = deploy_stack(
        &aws_sdk_cloudformation::Client::new(&config),
        &format!("orderflow-{stage}-put-new"),
        &root.join("tests/fixtures/idempotency-tables.yaml"),
        &[("Stage", stage.as_str())],
    )
    .await
    .expect("fixture deploys");
    let table = outputs.get("SortedTableName").expect("SortedTableName");
    let client = aws_sdk_dynamodb::Client::new(&config);
    let item = |status: &str| {
        let mut item = key("TOMBSTONE#o-1", "TOMBSTONE");
        item.insert("status".into(), s(status));
        item
    };

    let first = put_new(&client, table, item("first")).await.unwrap();
    let second = put_new(&client, table, item("second")).await.unwrap();
    let other_sort_key = put_new(&client, table, key("TOMBSTONE#o-1", "OTHER")).await.unwrap();
    let no_table = put_new(&client, "orderflow-no-such-table", item("first")).await.unwrap_err();

    assert_eq!((first, second), (Written::Committed, Written::Duplicate));
    assert_eq!(other_sort_key, Written::Committed, "an item is new by its whole key");
    let stored = client
        .get_item()
        .table_name(table)
        .set_key(Some(key("TOMBSTONE#o-1", "TOMBSTONE")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(get_s(stored.item().unwrap(), "status").unwrap(), "first", "the duplicate changed nothing");
    assert!(no_table.to_string().contains("ResourceNotFoundException"), "an error, not a duplicate: {no_table}");
}
