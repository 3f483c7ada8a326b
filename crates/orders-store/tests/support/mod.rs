//! The tests' Orders table: the moto server of the local cloud (started here, or the one
//! `AWS_ENDPOINT_URL` names), with the tables of `infra/stateful.yaml` itself deployed through CloudFormation.

use std::path::{Path, PathBuf};

use aws_sdk_dynamodb::types::AttributeValue;
use local_lambda::aws::sdk_config;
use local_lambda::deploy::deploy_stack;
use orderflow_aws::dynamo::Item;
use orderflow_domain::order::Deadlines;
use orderflow_local_cloud::emulator::Emulator;
use orderflow_orders_store::DynamoOrders;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct World {
    // Dropped last: stops the moto server this test started (an external emulator is left alone).
    _emulator: Emulator,
    pub store: DynamoOrders,
    pub client: aws_sdk_dynamodb::Client,
    pub orders_table: String,
}

impl World {
    pub async fn start() -> World {
        let emulator =
            Emulator::from_env_or_moto(&project_root()).await.expect("an emulator (AWS_ENDPOINT_URL or moto)");
        let config = sdk_config(emulator.endpoint());
        let stage = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let outputs = deploy_stack(
            &aws_sdk_cloudformation::Client::new(&config),
            &format!("orderflow-{stage}-stateful"),
            &project_root().join("infra/stateful.yaml"),
            &[("Stage", stage.as_str())],
        )
        .await
        .expect("infra/stateful.yaml deploys");
        let client = aws_sdk_dynamodb::Client::new(&config);
        let orders_table = outputs.get("OrdersTableName").expect("OrdersTableName").to_owned();
        World {
            store: DynamoOrders::new(client.clone(), &orders_table, Deadlines::from_seconds(60).unwrap()),
            client,
            orders_table,
            _emulator: emulator,
        }
    }

    /// The Orders table's item `pk` / `sk`, read consistently.
    pub async fn item(&self, pk: &str, sk: &str) -> Option<Item> {
        let output = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem");
        output.item
    }
}
