//! The in-memory adapter of [`NotificationStore`], with the table's semantics (a notification is written once per
//! key), for the handler's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use orderflow_aws::StoreError;

use crate::store::{Notification, NotificationStore, Recorded};

/// Notifications in memory, keyed like the table; can be told to fail the next writes.
#[derive(Debug, Clone, Default)]
pub struct MemoryNotifications {
    items: Arc<Mutex<BTreeMap<(String, String), Notification>>>,
    failures: Arc<Mutex<u32>>,
}

impl MemoryNotifications {
    pub fn notifications(&self) -> Vec<Notification> {
        self.items.lock().expect("notifications lock").values().cloned().collect()
    }

    /// The next `times` writes fail as if the table were unavailable.
    pub fn fail_next(&self, times: u32) {
        *self.failures.lock().expect("failures lock") = times;
    }
}

impl NotificationStore for MemoryNotifications {
    async fn record(&self, notification: &Notification) -> Result<Recorded, StoreError> {
        {
            let mut failures = self.failures.lock().expect("failures lock");
            if *failures > 0 {
                *failures -= 1;
                return Err(StoreError::Transient("ProvisionedThroughputExceededException: injected".into()));
            }
        }
        let mut items = self.items.lock().expect("notifications lock");
        let key = (notification.pk(), notification.sk());
        if items.contains_key(&key) {
            return Ok(Recorded::AlreadyRecorded);
        }
        items.insert(key, notification.clone());
        Ok(Recorded::New)
    }
}
