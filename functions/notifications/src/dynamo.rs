//! The DynamoDB adapter of [`NotificationStore`]: one conditional `PutItem` per notification.

use aws_sdk_dynamodb::Client;
use orderflow_aws::StoreError;
use orderflow_aws::dynamo::{s, timestamp};

use crate::store::{Notification, NotificationStore, Recorded};

/// Notifications in the Notifications table (`NOTIFICATIONS_TABLE`).
#[derive(Debug, Clone)]
pub struct DynamoNotifications {
    client: Client,
    table: String,
}

impl DynamoNotifications {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

impl NotificationStore for DynamoNotifications {
    async fn record(&self, notification: &Notification) -> Result<Recorded, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(notification.pk()))
            .item("sk", s(notification.sk()))
            .item("order_id", s(&notification.order_id))
            .item("customer_id", s(&notification.customer_id))
            .item("event_type", s(&notification.event_type))
            .item("message", s(&notification.message))
            .item("created_at", timestamp(notification.created_at)?)
            // A redelivered event finds its notification there and writes nothing.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(Recorded::AlreadyRecorded)
            }
            Err(error) => Err(StoreError::from(error).context(format_args!(
                "notifications table {}, notification of event {}",
                self.table, notification.event_id
            ))),
        }
    }
}
