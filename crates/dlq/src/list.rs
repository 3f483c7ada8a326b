//! `list`: every dead-letter queue with its depth and its source queues.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use crate::client::DeadLetterQueues;
use crate::error::{DlqError, is_missing_queue, sqs_error};
use crate::queue::{Depth, QueueRef, has_dlq_name};

/// A dead-letter queue found by [`DeadLetterQueues::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// The DLQ.
    pub queue: QueueRef,
    /// Its ARN.
    pub arn: String,
    /// Its depth (approximate, as SQS reports it).
    pub depth: Depth,
    /// The queues whose RedrivePolicy names it, by name; empty for a DLQ found by its name only (e.g. a Lambda
    /// on-failure destination).
    pub sources: Vec<QueueRef>,
}

impl DeadLetterQueues {
    /// Every DLQ among the queues whose name starts with `prefix` (every queue without one): the queues another
    /// listed queue's RedrivePolicy names as `deadLetterTargetArn`, and the queues with a DLQ name
    /// ([`has_dlq_name`]). Sorted by name, each with its depth and its source queues.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<DeadLetterQueue>, DlqError> {
        let mut queues = Vec::new();
        for url in self.queue_urls(prefix).await? {
            let queue = QueueRef::from_url(&url)?;
            let attributes = match self
                .sqs
                .get_queue_attributes()
                .queue_url(&queue.url)
                .attribute_names(QueueAttributeName::QueueArn)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
            {
                Ok(out) => out.attributes().cloned().unwrap_or_default(),
                // Deleted since ListQueues.
                Err(err) if is_missing_queue(&err) => continue,
                Err(err) => return Err(sqs_error("GetQueueAttributes", &queue.name, &err)),
            };
            queues.push((queue, attributes));
        }

        let mut sources: HashMap<String, Vec<QueueRef>> = HashMap::new();
        for (queue, attributes) in &queues {
            if let Some(target) = attributes.get(&QueueAttributeName::RedrivePolicy).and_then(|p| dead_letter_target(p))
            {
                sources.entry(target).or_default().push(queue.clone());
            }
        }
        let mut found = Vec::new();
        for (queue, attributes) in queues {
            let arn = attributes.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
            let mut its_sources = sources.remove(&arn).unwrap_or_default();
            if its_sources.is_empty() && !has_dlq_name(&queue.name) {
                continue;
            }
            its_sources.sort();
            let count = |name: QueueAttributeName| attributes.get(&name).and_then(|n| n.parse().ok()).unwrap_or(0);
            let depth = Depth {
                visible: count(QueueAttributeName::ApproximateNumberOfMessages),
                in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            };
            found.push(DeadLetterQueue { queue, arn, depth, sources: its_sources });
        }
        found.sort_by(|a, b| a.queue.name.cmp(&b.queue.name));
        Ok(found)
    }

    /// Every queue URL, or those whose name starts with `prefix`.
    async fn queue_urls(&self, prefix: Option<&str>) -> Result<Vec<String>, DlqError> {
        let mut urls = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sqs
                .list_queues()
                .set_queue_name_prefix(prefix.map(str::to_owned))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|err| sqs_error("ListQueues", prefix.unwrap_or("(all queues)"), &err))?;
            urls.extend(page.queue_urls().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(urls)
    }
}

/// The `deadLetterTargetArn` of a RedrivePolicy (a JSON string).
fn dead_letter_target(policy: &str) -> Option<String> {
    let policy: Value = serde_json::from_str(policy).ok()?;
    policy.get("deadLetterTargetArn")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_target_from_the_policy() {
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":"3"}"#;
        assert_eq!(dead_letter_target(policy).as_deref(), Some("arn:aws:sqs:us-east-1:123456789012:q-dlq"));
        assert_eq!(dead_letter_target("{}"), None);
        assert_eq!(dead_letter_target("not json"), None);
    }
}
