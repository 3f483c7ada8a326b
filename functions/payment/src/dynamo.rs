//! The DynamoDB adapter of the payment store.
//!
//! Item (table PAYMENTS_TABLE, key `pk`/`sk`): `PAYMENT#<order>` / `PAYMENT` with order_id, customer_id,
//! amount (S, decimal string; absent on a tombstone), payment_id, status (AUTHORIZED, DECLINED, VOIDED), reason
//! (DECLINED; the cancellation's on a tombstone), created_at, voided_at (VOIDED). Recording a decision, and
//! voiding it, is ONE `TransactWriteItems` request each (the conditional change and the outbox put); a tombstone
//! is one conditional `PutItem`.
//!
//! The charges' idempotency records live in the same table, `CHARGE#<order>` / `IDEMPOTENCY`, in the layout of
//! [`DynamoIdempotencyStore`] (a `PutItem`, `UpdateItem` or `DeleteItem` each); the table's TTL on `expiration`
//! removes them. No payment item has that attribute.

use std::fmt::Display;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use orderflow_aws::dynamo::{Item, cancellation_codes, get_s, key, put_new, s, timestamp};
use orderflow_aws::outbox::{outbox_put, put_new_with_event};
use orderflow_aws::{DynamoIdempotencyStore, StoreError};
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;

use crate::store::{PaymentRecord, PaymentStatus, PaymentStore};

const SK: &str = "PAYMENT";
/// The sort key of a charge's idempotency record.
const CHARGE_LOCK_SK: &str = "IDEMPOTENCY";

fn pk(order_id: &str) -> String {
    format!("PAYMENT#{order_id}")
}

fn payment_from_item(item: &Item) -> Result<PaymentRecord, StoreError> {
    let field = |name: &str| get_s(item, name).map(str::to_owned).map_err(StoreError::from);
    let status: PaymentStatus = field("status")?.parse().map_err(StoreError::Corrupt)?;
    // Only a tombstone (VOIDED, never charged) has no amount.
    let amount = match (status, item.contains_key("amount")) {
        (PaymentStatus::Voided, false) => None,
        _ => Some(field("amount")?.parse().map_err(|e| StoreError::Corrupt(format!("payment amount: {e}")))?),
    };
    Ok(PaymentRecord {
        order_id: field("order_id")?,
        customer_id: field("customer_id")?,
        amount,
        payment_id: field("payment_id")?,
        status,
        reason: get_s(item, "reason").ok().map(str::to_owned),
    })
}

fn payment_item(payment: &PaymentRecord) -> Result<Item, StoreError> {
    let mut item = key(pk(&payment.order_id), SK);
    item.insert("order_id".into(), s(&payment.order_id));
    item.insert("customer_id".into(), s(&payment.customer_id));
    if let Some(amount) = payment.amount {
        item.insert("amount".into(), s(amount.to_string()));
    }
    item.insert("payment_id".into(), s(&payment.payment_id));
    item.insert("status".into(), s(payment.status.as_str()));
    if let Some(reason) = &payment.reason {
        item.insert("reason".into(), s(reason));
    }
    item.insert("created_at".into(), timestamp(OffsetDateTime::now_utc())?);
    Ok(item)
}

/// The DynamoDB payment store.
#[derive(Debug, Clone)]
pub struct DynamoPayments {
    client: Client,
    table: String,
    outbox_table: String,
}

impl DynamoPayments {
    pub fn new(client: Client, table: impl Into<String>, outbox_table: impl Into<String>) -> Self {
        Self { client, table: table.into(), outbox_table: outbox_table.into() }
    }

    /// The store of the charges' idempotency records, in this table.
    pub fn charge_locks(&self) -> DynamoIdempotencyStore {
        DynamoIdempotencyStore::new(self.client.clone(), &self.table).with_sort_key("sk", CHARGE_LOCK_SK)
    }

    /// What a failure names: the table and what was asked of it.
    fn context(&self, what: impl Display) -> String {
        format!("payments table {}, {what}", self.table)
    }
}

impl PaymentStore for DynamoPayments {
    async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(order_id), SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from(e).context(self.context(format_args!("payment of {order_id}"))))?;
        let payment = output.item().map(payment_from_item).transpose();
        payment.map_err(|e| e.context(self.context(format_args!("payment of {order_id}"))))
    }

    async fn record(&self, payment: &PaymentRecord, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        // Duplicate: the payment or its event exists, recorded by an earlier delivery.
        put_new_with_event(&self.client, &self.table, payment_item(payment)?, &self.outbox_table, outbox).await
    }

    async fn record_tombstone(&self, tombstone: &PaymentRecord) -> Result<Written, StoreError> {
        let mut item = payment_item(tombstone)?;
        item.insert("voided_at".into(), timestamp(OffsetDateTime::now_utc())?);
        put_new(&self.client, &self.table, item)
            .await
            .map_err(|e| e.context(self.context(format_args!("tombstone of {}", tombstone.order_id))))
    }

    async fn record_void(&self, order_id: &str, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(order_id), SK)))
            .update_expression("SET #status = :voided, voided_at = :now")
            .condition_expression("#status = :authorized")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":voided", s(PaymentStatus::Voided.as_str()))
            .expression_attribute_values(":authorized", s(PaymentStatus::Authorized.as_str()))
            .expression_attribute_values(":now", timestamp(OffsetDateTime::now_utc())?)
            .build()?;
        let items = vec![TransactWriteItem::builder().update(update).build(), outbox_put(&self.outbox_table, outbox)?];
        let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(Written::Committed),
            Err(err) => err,
        };
        match cancellation_codes(&err) {
            // Not AUTHORIZED any more, or the event exists: an earlier delivery voided it.
            Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => Ok(Written::Duplicate),
            _ => Err(StoreError::from_transaction(&err).context(self.context(format_args!("void of {order_id}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PaymentStatus;

    #[test]
    fn a_stored_payment_reads_back_with_its_decimal_amount() {
        let item = Item::from([
            ("order_id".to_owned(), s("o-1")),
            ("customer_id".to_owned(), s("c-1")),
            ("amount".to_owned(), s("10000.01")),
            ("payment_id".to_owned(), s("pay-1")),
            ("status".to_owned(), s("DECLINED")),
            ("reason".to_owned(), s("over the limit")),
        ]);
        let payment = payment_from_item(&item).unwrap();
        assert_eq!(payment.status, PaymentStatus::Declined);
        assert_eq!(payment.amount.map(|a| a.to_string()).as_deref(), Some("10000.01"));
        assert_eq!(payment.reason.as_deref(), Some("over the limit"));
    }

    #[test]
    fn a_tombstone_reads_back_without_an_amount_and_only_a_tombstone_may_lack_one() {
        let tombstone = PaymentRecord {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount: None,
            payment_id: "pay-1".into(),
            status: PaymentStatus::Voided,
            reason: Some("customer requested".into()),
        };
        let item = payment_item(&tombstone).unwrap();
        assert!(!item.contains_key("amount"));
        assert_eq!(payment_from_item(&item).unwrap(), tombstone);

        let mut authorized = item;
        authorized.insert("status".into(), s("AUTHORIZED"));
        let err = payment_from_item(&authorized).unwrap_err();
        assert_eq!(err.to_string(), "corrupt item: item attribute amount: is missing");
    }
}
