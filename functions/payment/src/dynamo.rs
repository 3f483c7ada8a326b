//! The DynamoDB adapter of the payment store.
//!
//! Item (table PAYMENTS_TABLE, key `pk`/`sk`): `PAYMENT#<order>` / `PAYMENT` with order_id, customer_id,
//! amount (S, decimal string), payment_id, status (AUTHORIZED, DECLINED), reason (DECLINED only), created_at.
//! Recording is ONE `TransactWriteItems` request (the conditional put and the outbox put).

use aws_sdk_dynamodb::Client;
use orderflow_aws::dynamo::{Item, RequestError, get_s, key, s};
use orderflow_aws::outbox::put_new_with_event;
use orderflow_toolkit::OutboxRecord;
use orderflow_toolkit::outbox::Written;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{PaymentRecord, PaymentStore, StoreError};

const SK: &str = "PAYMENT";

fn pk(order_id: &str) -> String {
    format!("PAYMENT#{order_id}")
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(what.to_string())
}

impl From<RequestError> for StoreError {
    fn from(err: RequestError) -> Self {
        err.into_store_error(Self::Invalid, Self::Unavailable)
    }
}

fn payment_from_item(item: &Item) -> Result<PaymentRecord, StoreError> {
    let field = |name: &str| get_s(item, name).map(str::to_owned).map_err(invalid);
    Ok(PaymentRecord {
        order_id: field("order_id")?,
        customer_id: field("customer_id")?,
        amount: field("amount")?.parse().map_err(|e| invalid(format!("payment amount: {e}")))?,
        payment_id: field("payment_id")?,
        status: field("status")?.parse().map_err(invalid)?,
        reason: get_s(item, "reason").ok().map(str::to_owned),
    })
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
            .map_err(RequestError::from)?;
        output.item().map(payment_from_item).transpose()
    }

    async fn record(&self, payment: &PaymentRecord, outbox: &OutboxRecord) -> Result<Written, StoreError> {
        let mut item = key(pk(&payment.order_id), SK);
        item.insert("order_id".into(), s(&payment.order_id));
        item.insert("customer_id".into(), s(&payment.customer_id));
        item.insert("amount".into(), s(payment.amount.to_string()));
        item.insert("payment_id".into(), s(&payment.payment_id));
        item.insert("status".into(), s(payment.status.as_str()));
        if let Some(reason) = &payment.reason {
            item.insert("reason".into(), s(reason));
        }
        let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("the current time formats as RFC 3339");
        item.insert("created_at".into(), s(now));
        // Duplicate: the payment or its event exists, recorded by an earlier delivery.
        Ok(put_new_with_event(&self.client, &self.table, item, &self.outbox_table, outbox).await?)
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
        assert_eq!(payment.amount.to_string(), "10000.01");
        assert_eq!(payment.reason.as_deref(), Some("over the limit"));
    }
}
